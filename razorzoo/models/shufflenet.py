"""SPOS ``SearchableShuffleNetV2`` with its one-shot choices fixed (docs/upstream.md §2.1).

State-dict names equal MMRazor's exported subnet: a fixed ``OneShotMutableOP`` keeps its ``_candidates`` dict with
only the chosen op in it, so keys read ``layers.{s}.{b}._candidates.{op}.…`` (docs/upstream.md §7.4).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from razorzoo.models.layers import ConvModule, DepthwiseSeparableConvModule, check_out_indices, forward_stages
from razorzoo.arch.subnet import SEARCH_SPACES, SposSpace, SposSubnet

__all__ = ["SearchableShuffleNetV2", "ShuffleBlock", "ShuffleXception", "channel_shuffle"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channel groups: ``[a0, b0, a1, b1, …]`` for two groups (docs/upstream.md §7.6)."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous().view(b, c, h, w)


class _ShuffleUnit(nn.Module):
    """Split / concat / shuffle shared by both ops: stride 1 passes the first half of the channels through."""

    stride: int

    def _make_branch1(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        if self.stride > 1:
            self.branch1 = nn.Sequential(
                ConvModule(in_channels, in_channels, kernel_size, self.stride, groups=in_channels, act=None),
                ConvModule(in_channels, out_channels, 1),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        else:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleBlock(_ShuffleUnit):
    """ShuffleNetV2 unit with a ``kernel_size`` depthwise conv (candidates ``shuffle_3x3/5x5/7x7``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = out_channels // 2
        self._make_branch1(in_channels, half, kernel_size)
        self.branch2 = nn.Sequential(
            ConvModule(in_channels if stride > 1 else half, half, 1),
            ConvModule(half, half, kernel_size, stride, groups=half, act=None),  # no activation (docs/upstream.md §7.8)
            ConvModule(half, half, 1),
        )


class ShuffleXception(_ShuffleUnit):
    """Xception-like unit: three 3x3 depthwise-separable convs (candidate ``shuffle_xception``)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = out_channels // 2
        self._make_branch1(in_channels, half, 3)
        self.branch2 = nn.Sequential(
            DepthwiseSeparableConvModule(in_channels if stride > 1 else half, half, 3, stride, dw_act=None),
            DepthwiseSeparableConvModule(half, half, 3, dw_act=None),
            DepthwiseSeparableConvModule(half, half, 3, dw_act=None),
        )


def _make_op(name: str, in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if name == "shuffle_xception":
        return ShuffleXception(in_channels, out_channels, stride)
    kernel_size = int(name.removeprefix("shuffle_").split("x")[0])
    return ShuffleBlock(in_channels, out_channels, kernel_size, stride)


class _ChosenOp(nn.Module):
    """A fixed ``OneShotMutableOP``: upstream pops the other candidates but keeps the ``_candidates`` path."""

    def __init__(self, name: str, op: nn.Module) -> None:
        super().__init__()
        self.chosen = name
        self._candidates = nn.ModuleDict({name: op})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._candidates[self.chosen](x)


class SearchableShuffleNetV2(nn.Module):
    """SPOS ShuffleNetV2 backbone for a fixed subnet.

    ``conv1`` (stride 2, **no max-pool**, docs/upstream.md §7.5) then ``layers.0..3`` (stride 2 each) and ``layers.4`` (1x1 conv to
    1024 channels; only the classifier uses it, but it is in every checkpoint, docs/upstream.md §7.3). Out index ``i`` is
    ``layers.i``; calling the backbone returns the tuple of outputs at ``out_indices``.
    """

    def __init__(self, subnet: SposSubnet, out_indices: Sequence[int] = (4,)) -> None:
        super().__init__()
        self.subnet = subnet  # the architecture it was built from (e.g. to save weights with it)
        space: SposSpace = SEARCH_SPACES["spos"]  # type: ignore[assignment]
        self.out_indices = check_out_indices(out_indices, len(space.stage_channels) + 1)
        self.conv1 = ConvModule(3, space.stem_channels, 3, 2)
        in_channels = space.stem_channels
        layers = []
        for ops, out_channels in zip(subnet.choices, space.stage_channels):
            blocks = [_ChosenOp(op, _make_op(op, in_channels if b == 0 else out_channels, out_channels, 2 if b == 0
                                             else 1)) for b, op in enumerate(ops)]
            layers.append(nn.Sequential(*blocks))
            in_channels = out_channels
        layers.append(ConvModule(in_channels, space.last_channels, 1))
        self.layers = nn.ModuleList(layers)
        channels = (*space.stage_channels, space.last_channels)
        strides = (4, 8, 16, 32, 32)
        self.out_channels = tuple(channels[i] for i in self.out_indices)
        self.strides = tuple(strides[i] for i in self.out_indices)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return forward_stages(self.conv1(x), self.layers, self.out_indices, run_all=self.training)

