"""``AttentiveMobileNetV3`` for a fixed AttentiveNAS (BigNAS) or OFA subnet (docs/upstream.md §2.2).

One class serves both search spaces, as upstream: the space decides activations, SE stages, strides and the residual
rule. Structural choices upstream makes on the *supernet* (max sizes) are decided the same way here, so every subnet
has exactly the tensors MMRazor's export keeps.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from razorzoo.models.layers import ConvModule, check_out_indices, forward_stages
from razorzoo.arch.subnet import MobileNetSpace, MobileNetSubnet, se_channels

__all__ = ["AttentiveMobileNetV3", "MBBlock", "SELayer", "ShortcutLayer", "ChannelMask", "build_stem", "block_plans",
           "build_tail"]


class SELayer(nn.Module):
    """mmcls ``SELayer``: global pool -> 1x1 conv (bias) + ReLU -> 1x1 conv (bias) + HSigmoid -> scale (docs/upstream.md §7.7)."""

    def __init__(self, channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.conv1 = ConvModule(channels, squeeze_channels, 1, norm=None, act="relu")
        self.conv2 = ConvModule(squeeze_channels, channels, 1, norm=None, act="hsigmoid")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv2(self.conv1(self.global_avgpool(x)))


class ShortcutLayer(nn.Module):
    """AttentiveNAS shortcut: 2x2 avg-pool when strided, then a 1x1 conv only if the widths differ (docs/upstream.md §7.9).

    The conv exists (and is in every checkpoint) even when the widths match and it is skipped.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            # upstream pads by the parity of the *width* only, on both axes (docs/upstream.md §7.20); `% 2`, not
            # `& 1`: an exported graph with a free width (a multiple of 32) then knows the parity is even
            x = F.avg_pool2d(x, self.stride, padding=x.size(-1) % 2)
        if self.conv.in_channels != self.conv.out_channels:
            x = self.conv(x)
        return x


class MBBlock(nn.Module):
    """Inverted residual: [expand 1x1] -> depthwise kxk -> [SE] -> linear 1x1, plus the space's residual."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int,
        expand_ratio: int,
        stride: int,
        act: str,
        se_channels: int | None,
        with_expand_conv: bool,
        residual: str | None,
    ) -> None:
        super().__init__()
        mid_channels = in_channels * expand_ratio
        self.residual = residual  # "identity", "attentive" or None
        if residual == "attentive":
            self.shortcut = ShortcutLayer(in_channels, out_channels, stride)
        if with_expand_conv:
            self.expand_conv = ConvModule(in_channels, mid_channels, 1, act=act)
        self.depthwise_conv = ConvModule(mid_channels, mid_channels, kernel_size, stride, groups=mid_channels, act=act)
        if se_channels is not None:
            self.se = SELayer(mid_channels, se_channels)
        self.linear_conv = ConvModule(mid_channels, out_channels, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand_conv(x) if hasattr(self, "expand_conv") else x
        out = self.depthwise_conv(out)
        if hasattr(self, "se"):
            out = self.se(out)
        out = self.linear_conv(out)
        if self.residual == "identity":
            return x + out
        if self.residual == "attentive":
            return self.shortcut(x) + out
        return out


class ChannelMask(nn.Module):
    """Holds the float32 ``mask`` buffer of a fixed ``OneShotMutableChannel`` (supernet length, first N ones).

    Unused by the forward pass, but present in every exported checkpoint, so strict loading needs it (docs/upstream.md §7.3).
    """

    def __init__(self, num_channels: int, chosen: int) -> None:
        super().__init__()
        mask = torch.zeros(num_channels)
        mask[:chosen] = 1.0
        self.register_buffer("mask", mask)


def build_stem(subnet: MobileNetSubnet) -> ConvModule:
    """The first conv (``first_conv``): 3x3, stride 2, to ``first_channels``."""
    return ConvModule(3, subnet.first_channels, 3, 2, act=subnet.space.first_act)


def block_plans(subnet: MobileNetSubnet) -> list[tuple[int, dict[str, Any]]]:
    """``(stage number, MBBlock keyword arguments)`` of every block the subnet builds, in forward order: one source
    for the backbone and for cost tables that count each distinct block once (``razorzoo.search.costs``)."""
    space: MobileNetSpace = subnet.space
    plans = []
    in_channels, in_max = subnet.first_channels, max(space.first_channels)
    for i, (stage, stage_space) in enumerate(zip(subnet.stages, space.stages), start=1):
        out_max = max(stage_space.out_channels)
        for b, block in enumerate(stage.blocks[: stage.depth]):
            block_stride = stage_space.stride if b == 0 else 1
            if space.attentive_shortcut:
                residual = "attentive"
            elif block_stride == 1 and in_max == out_max:
                # OFA: decided on the supernet's max widths, never on the subnet's (docs/upstream.md §7.9)
                residual = "identity"
            else:
                residual = None
            plans.append((i, dict(
                in_channels=in_channels,
                out_channels=stage.out_channels,
                kernel_size=block.kernel_size,
                expand_ratio=block.expand_ratio,
                stride=block_stride,
                act=stage_space.act,
                se_channels=se_channels(in_channels, block.expand_ratio_se) if stage_space.with_se else None,
                # the supernet block has no expand conv when the stage's only expand ratio is 1 (docs/upstream.md §2.2)
                with_expand_conv=max(stage_space.expand_ratios) != 1,
                residual=residual,
            )))
            in_channels, in_max = stage.out_channels, out_max
    return plans


def build_tail(subnet: MobileNetSubnet) -> nn.Sequential:
    """``last_conv``: the final 1x1 expand conv, the global pool and the feature-mix conv to ``last_channels``."""
    space: MobileNetSpace = subnet.space
    in_channels = subnet.stages[-1].out_channels
    expand_channels = in_channels * space.last_expand_ratio
    return nn.Sequential(OrderedDict(
        final_expand_layer=ConvModule(in_channels, expand_channels, 1, act=space.last_act),
        pool=nn.AdaptiveAvgPool2d(1),
        feature_mix_layer=ConvModule(expand_channels, subnet.last_channels, 1, norm=None, bias=False,
                                     act=space.last_act),
    ))


class AttentiveMobileNetV3(nn.Module):
    """MMRazor's searchable MobileNetV3 with a fixed subnet.

    Modules: ``first_conv``, ``layer1 .. layerN`` (the first ``depth`` blocks of each stage), ``last_conv``
    (``final_expand_layer``, ``pool``, ``feature_mix_layer``) and the two channel-mask holders. Out index ``i`` is
    ``layer{i+1}``; index ``N`` is ``last_conv`` (a pooled ``1x1`` map). Calling it returns the tuple of outputs
    at ``out_indices``.
    """

    def __init__(self, subnet: MobileNetSubnet, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        self.subnet = subnet  # the architecture it was built from (e.g. to save weights with it)
        space: MobileNetSpace = subnet.space
        n_stages = len(space.stages)
        self.out_indices = check_out_indices((n_stages,) if out_indices is None else out_indices, n_stages + 1)
        self.first_conv = build_stem(subnet)
        plans = block_plans(subnet)
        channels, strides, stride = [], [], 2
        for i, (stage, stage_space) in enumerate(zip(subnet.stages, space.stages), start=1):
            self.add_module(f"layer{i}", nn.Sequential(*(MBBlock(**kwargs) for s, kwargs in plans if s == i)))
            stride *= stage_space.stride
            channels.append(stage.out_channels)
            strides.append(stride)
        self.last_conv = build_tail(subnet)
        channels.append(subnet.last_channels)
        strides.append(stride)  # last_conv pools to 1x1; reported with the stride of the map it pools
        self.first_mutable_channels = ChannelMask(max(space.first_channels), subnet.first_channels)
        self.last_mutable_channels = ChannelMask(max(space.last_channels), subnet.last_channels)

        self.out_channels = tuple(channels[i] for i in self.out_indices)
        self.strides = tuple(strides[i] for i in self.out_indices)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # upstream iterates a plain (unregistered) list [layer1, ..., layerN, last_conv] (docs/upstream.md §7.2)
        stages = [module for name, module in self.named_children() if name.startswith("layer")] + [self.last_conv]
        return forward_stages(self.first_conv(x), stages, self.out_indices, run_all=self.training)
