"""Building blocks shared by backbones, necks and heads.

State-dict names follow mmcv's ``ConvModule`` (``conv``, ``bn``, ``activate``) so that our modules load upstream
checkpoints with ``strict=True``. Each upstream rounding helper exists exactly once here, named for what it does
(docs/upstream.md §7.11), instead of the several same-named ``make_divisible`` variants upstream has; mmcls' nearest-
multiple variant, used only for SE widths, lives in ``razorzoo.arch.subnet`` (which must not import torch).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import nn

from razorzoo.errors import RazorzooError

__all__ = [
    "BN",
    "check_out_indices",
    "ConvModule",
    "DepthwiseSeparableConvModule",
    "forward_stages",
    "HSigmoid",
    "make_activation",
    "Swish",
    "make_divisible_ceil",
    "make_round",
]


@dataclass(frozen=True)
class BN:
    """BatchNorm settings; upstream parts differ (backbones 1e-5/0.1, YOLO necks 1e-3/0.03)."""

    eps: float = 1e-5
    momentum: float = 0.1


class HSigmoid(nn.Module):
    """mmcv >= 1.4.4 HSigmoid: ``clamp((x + 3) / 6, 0, 1)`` (not torch's hardsigmoid op order)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 3) / 6).clamp(0, 1)


class Swish(nn.Module):
    """mmcv ``Swish``: ``x * sigmoid(x)`` as two ops. Equal to SiLU in exact arithmetic, but torch's fused SiLU
    rounds differently; over a deep AttentiveNAS backbone that drifts outputs by ~1e-6 and, in training, gradients by
    ~1e-3, so the upstream formula is kept (docs/upstream.md §9.8)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


_ACTIVATIONS = {
    "relu": lambda: nn.ReLU(inplace=True),
    "silu": lambda: nn.SiLU(inplace=True),  # mmcv/mmyolo configs' SiLU is torch's nn.SiLU
    "swish": Swish,
    "hswish": lambda: nn.Hardswish(inplace=True),  # mmcv maps HSwish to torch Hardswish for torch >= 1.7
    "hsigmoid": HSigmoid,
}


def make_activation(name: str | None) -> nn.Module | None:
    """Activation module by (case-insensitive) upstream name; ``None`` means no activation."""
    if name is None:
        return None
    try:
        return _ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(_ACTIVATIONS)}") from None


class ConvModule(nn.Module):
    """Conv2d -> optional BatchNorm2d -> optional activation, named like mmcv's ``ConvModule``.

    ``bias="auto"`` gives the conv a bias only when no norm follows (mmcv's rule); padding defaults to ``k // 2``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        *,
        padding: int | None = None,
        groups: int = 1,
        bias: bool | str = "auto",
        norm: BN | None = BN(),
        act: str | None = "relu",
    ) -> None:
        super().__init__()
        if bias == "auto":
            bias = norm is None
        padding = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bool(bias))
        if norm is not None:
            self.bn = nn.BatchNorm2d(out_channels, eps=norm.eps, momentum=norm.momentum)
        activate = make_activation(act)
        if activate is not None:
            self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if hasattr(self, "bn"):
            x = self.bn(x)
        if hasattr(self, "activate"):
            x = self.activate(x)
        return x


class DepthwiseSeparableConvModule(nn.Module):
    """mmcv ``DepthwiseSeparableConvModule``: depthwise ``ConvModule`` then pointwise ``ConvModule``.

    ``dw_act`` defaults to ``act``; SPOS' ShuffleXception passes ``dw_act=None`` (no activation after depthwise).
    """

    _SAME = object()

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        *,
        norm: BN | None = BN(),
        act: str | None = "relu",
        dw_act: str | None | object = _SAME,
    ) -> None:
        super().__init__()
        dw_act = act if dw_act is self._SAME else dw_act
        self.depthwise_conv = ConvModule(
            in_channels, in_channels, kernel_size, stride, groups=in_channels, norm=norm, act=dw_act
        )
        self.pointwise_conv = ConvModule(in_channels, out_channels, 1, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


def forward_stages(x: torch.Tensor, stages: Iterable[nn.Module], out_indices: Sequence[int], *,
                   run_all: bool = False) -> tuple[torch.Tensor, ...]:
    """Run ``stages`` in order and return the outputs at ``out_indices`` (in stage order, as upstream backbones do).

    Stops after the last index needed unless ``run_all``: later stages (e.g. the vestigial last convs, docs/upstream.md
    §7.3) change no output, but upstream runs them, and in training their BatchNorms update their running statistics
    (docs/upstream.md §9.8), so backbones pass ``run_all=self.training``.
    """
    outs = []
    last = -1 if run_all else max(out_indices)
    for i, stage in enumerate(stages):
        x = stage(x)
        if i in out_indices:
            outs.append(x)
        if i == last:
            break
    return tuple(outs)


def make_divisible_ceil(channels: float, widen_factor: float, divisor: int = 8) -> int:
    """mmyolo ``make_divisible`` (YOLOv5 neck/head): ``ceil(channels * widen / divisor) * divisor``."""
    return math.ceil(channels * widen_factor / divisor) * divisor


def make_round(num_blocks: float, deepen_factor: float) -> int:
    """mmyolo ``make_round``: ``max(round(n * deepen), 1)`` (CSPNeXtPAFPN uses plain ``round`` instead)."""
    return max(round(num_blocks * deepen_factor), 1) if num_blocks > 1 else num_blocks


def check_out_indices(out_indices: Sequence[int], n_outputs: int) -> tuple[int, ...]:
    """Validate upstream out indices: increasing, each in ``0 .. n_outputs - 1``."""
    indices = tuple(int(i) for i in out_indices)
    if not indices or any(i not in range(n_outputs) for i in indices) or list(indices) != sorted(set(indices)):
        raise RazorzooError(
            f"out_indices {tuple(out_indices)!r} must be increasing stage indices in 0..{n_outputs - 1}"
        )
    return indices
