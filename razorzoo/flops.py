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

A module called several times (RTMDet's shared head convs) is counted at every call, like the tracer does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

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


def count_flops(model: "nn.Module", input_shape: Sequence[int]) -> FlopsReport:
    """Count the multiply-accumulates of one forward pass of ``model`` on a zero tensor of ``input_shape``.

    Args:
        model: any module whose ``forward`` takes one image tensor (classifier, backbone, detector).
        input_shape: ``(N, C, H, W)``, or ``(C, H, W)`` for a batch of one.

    Returns:
        A :class:`FlopsReport`. The model is run in eval mode (its train/eval state is restored afterwards), on the
        device and dtype of its parameters, without gradients.
    """
    import torch

    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4:
        raise ValueError(f"input_shape must be (N, C, H, W) or (C, H, W), got {tuple(input_shape)}")

    handlers = _handlers()
    totals: dict[str, int] = {}
    hooks = []

    def make_hook(top: str, handler: Callable[..., int]) -> Callable[..., None]:
        def hook(module: "nn.Module", inputs: tuple, output: "torch.Tensor") -> None:
            totals[top] = totals.get(top, 0) + int(handler(module, inputs, output))

        return hook

    for name, module in model.named_modules():
        for kind, handler in handlers:
            if isinstance(module, kind):
                hooks.append(module.register_forward_hook(make_hook(name.split(".")[0], handler)))
                break

    modes = {module: module.training for module in model.modules()}
    reference = next(iter(model.parameters()), None)
    x = torch.zeros(shape, device=reference.device if reference is not None else None,
                    dtype=reference.dtype if reference is not None else None)
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for handle in hooks:
            handle.remove()
        for module, training in modes.items():
            module.training = training

    by_module = {name: flops for name, flops in totals.items() if name}
    params = sum(p.numel() for p in model.parameters())
    return FlopsReport(flops=sum(totals.values()), params=params, input_shape=shape, by_module=by_module)
