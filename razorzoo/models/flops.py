"""FLOPs and parameter counts with the convention of the published OpenMMLab numbers.

MMYOLO/MMRazor report mmengine's ``FlopAnalyzer`` (a port of fvcore), which counts **one FLOP per
multiply-accumulate** and only a few operator kinds; everything else (activations, additions, concatenations,
functional pooling, bicubic resizing) counts zero. We reproduce its per-operator rules with forward hooks on the
modules that run those operators, so no tracing is needed:

=====================  =============================================================================
convolution            ``N * C_out * H_out * W_out * C_in / groups * k_h * k_w`` (bias not counted)
transposed conv        ``N * C_in * C_out / groups * k_h * k_w * H_in * W_in``
linear                 ``input.numel() * out_features``
batch norm             eval: ``numel * 2`` (affine) or ``numel``; training: ``numel * 5`` or ``numel * 4``
upsample               nearest: ``output.numel()``; bilinear: ``4 * output.numel()``; other modes: 0
adaptive avg pool      ``input.numel()``
=====================  =============================================================================

A module called several times (RTMDet's shared head convs) is counted at every call, like the tracer does, and
results that never reach the outputs are not counted (the tracer eliminates dead code).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["FlopsReport", "count_flops"]


@dataclass(frozen=True)
class FlopsReport:
    """Result of :func:`count_flops`: ``flops`` (multiply-accumulates) and unique ``params`` of the whole model,
    plus ``by_module``: the FLOPs of each top-level child (e.g. ``backbone``, ``neck``, ``bbox_head``)."""

    flops: int
    params: int
    input_shape: tuple[int, ...]
    by_module: dict[str, int] = field(default_factory=dict)

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    def __str__(self) -> str:
        return f"{self.gflops:.2f} GFLOPs, {self.params / 1e6:.2f} M params at input {self.input_shape}"


def _conv_flops(module: "nn.Conv2d", inputs: tuple, output: "torch.Tensor") -> int:
    kernel = math.prod(module.kernel_size)
    return output.numel() * (module.in_channels // module.groups) * kernel


def _conv_transpose_flops(module: "nn.ConvTranspose2d", inputs: tuple, output: "torch.Tensor") -> int:
    x = inputs[0]
    kernel = math.prod(module.kernel_size)
    return x.shape[0] * math.prod(x.shape[2:]) * module.in_channels * (module.out_channels // module.groups) * kernel


def _linear_flops(module: "nn.Linear", inputs: tuple, output: "torch.Tensor") -> int:
    return inputs[0].numel() * module.out_features


def _batch_norm_flops(module: "nn.modules.batchnorm._BatchNorm", inputs: tuple, output: "torch.Tensor") -> int:
    # fvcore/mmengine: eval-mode BN is a scale (+ shift when affine); the training estimate is a rough 4-5x
    uses_batch_stats = module.training or not module.track_running_stats
    per_element = (5 if module.affine else 4) if uses_batch_stats else (2 if module.affine else 1)
    return inputs[0].numel() * per_element


def _upsample_flops(module: "nn.Upsample", inputs: tuple, output: "torch.Tensor") -> int:
    return output.numel() * {"nearest": 1, "bilinear": 4}.get(module.mode, 0)


def _adaptive_avg_pool_flops(module: "nn.Module", inputs: tuple, output: "torch.Tensor") -> int:
    return inputs[0].numel()


def _handlers() -> list[tuple[type, Callable[..., int]]]:
    from torch import nn

    return [
        (nn.Conv2d, _conv_flops),
        (nn.ConvTranspose2d, _conv_transpose_flops),
        (nn.Linear, _linear_flops),
        (nn.modules.batchnorm._BatchNorm, _batch_norm_flops),
        (nn.Upsample, _upsample_flops),
        (nn.AdaptiveAvgPool2d, _adaptive_avg_pool_flops),
    ]


def _tensors(value: object) -> Iterator["torch.Tensor"]:
    import torch

    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _live_nodes(outputs: object) -> set:
    """Autograd nodes the model's outputs depend on."""
    stack = [t.grad_fn for t in _tensors(outputs) if t.grad_fn is not None]
    live = set()
    while stack:
        node = stack.pop()
        if node not in live:
            live.add(node)
            stack.extend(child for child, _ in node.next_functions if child is not None)
    return live


def count_flops(model: "nn.Module", input_shape: Sequence[int]) -> FlopsReport:
    """Count the multiply-accumulates of one forward pass of ``model`` on an input of ``input_shape``.

    Like mmengine's tracer, which drops dead code, only operators whose result reaches the outputs count: a
    backbone's computed-but-unused last stage (SPOS ``layers.4``, MobileNet ``last_conv`` in the detectors) is
    free. The forward runs on a ``meta``-device copy of the model (shapes only: no memory, no compute), so
    ``model`` itself is left untouched.

    Args:
        model: any module whose ``forward`` takes one image tensor (classifier, backbone, detector).
        input_shape: ``(N, C, H, W)``, or ``(C, H, W)`` for a batch of one.

    Returns:
        A :class:`FlopsReport` for the model in eval mode; ``params`` counts shared parameters once.
    """
    import copy

    import torch

    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4:
        raise ValueError(f"input_shape must be (N, C, H, W) or (C, H, W), got {tuple(input_shape)}")

    ghost = copy.deepcopy(model).to("meta").eval()
    handlers = _handlers()
    records: list[tuple[str, int, object]] = []  # (top-level child, flops, autograd node of the result)

    def make_hook(top: str, handler: Callable[..., int]) -> Callable[..., None]:
        def hook(module: "nn.Module", inputs: tuple, output: "torch.Tensor") -> None:
            records.append((top, int(handler(module, inputs, output)), output.grad_fn))

        return hook

    for name, module in ghost.named_modules():
        for kind, handler in handlers:
            if isinstance(module, kind):
                module.register_forward_hook(make_hook(name.split(".")[0], handler))
                break

    reference = next(iter(model.parameters()), None)
    dtype = reference.dtype if reference is not None and reference.is_floating_point() else torch.float32
    # the input requires grad so that every op depending on it gets an autograd node to trace liveness with
    x = torch.zeros(shape, device="meta", dtype=dtype, requires_grad=True)
    with torch.enable_grad():
        live = _live_nodes(ghost(x))

    totals: dict[str, int] = {}
    for top, flops, node in records:
        if node is None or node in live:
            totals[top] = totals.get(top, 0) + flops
    by_module = {name: flops for name, flops in totals.items() if name}
    params = sum(p.numel() for p in model.parameters())
    return FlopsReport(flops=sum(totals.values()), params=params, input_shape=shape, by_module=by_module)
