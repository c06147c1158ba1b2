"""PAFPN necks of the three MMYOLO razor detectors (docs/upstream.md §6.2).

All three share MMYOLO's ``BaseYOLONeck`` data flow (:class:`PAFPN`); they differ only in the blocks they are made
of. Input channels are whatever the backbone produces (``backbone.out_channels``), so a custom subnet of the same
search space gets a matching neck. Channel rounding follows each upstream class (docs/upstream.md §7.11): YOLOv5 rounds up to a
multiple of 8, YOLOv6 and CSPNeXt truncate ``int(c * widen)``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from razorzoo.models.layers import BN, ConvModule, DepthwiseSeparableConvModule, make_divisible_ceil, make_round

__all__ = ["PAFPN", "YOLOv5PAFPN", "YOLOv6CSPRepPAFPN", "CSPNeXtPAFPN", "CSPLayer", "BepC3StageBlock"]

# YOLOv5/YOLOv6 necks use BN(momentum=0.03, eps=1e-3); CSPNeXtPAFPN keeps mmcv's default BN (docs/upstream.md §7.5).
YOLO_BN = BN(eps=1e-3, momentum=0.03)


class DarknetBottleneck(nn.Module):
    """mmdet ``DarknetBottleneck`` with ``expansion=1.0``: 1x1 then 3x3 conv, no identity add in these necks."""

    def __init__(self, channels: int, norm: BN, act: str) -> None:
        super().__init__()
        self.conv1 = ConvModule(channels, channels, 1, norm=norm, act=act)
        self.conv2 = ConvModule(channels, channels, 3, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class CSPNeXtBlock(nn.Module):
    """mmdet ``CSPNeXtBlock`` with ``expansion=1.0``: 3x3 conv then 5x5 depthwise-separable conv, no identity add."""

    def __init__(self, channels: int, norm: BN, act: str) -> None:
        super().__init__()
        self.conv1 = ConvModule(channels, channels, 3, norm=norm, act=act)
        self.conv2 = DepthwiseSeparableConvModule(channels, channels, 5, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


_CSP_BLOCKS = {"darknet": DarknetBottleneck, "cspnext": CSPNeXtBlock}


class CSPLayer(nn.Module):
    """mmdet ``CSPLayer``: ``final_conv(cat([blocks(main_conv(x)), short_conv(x)]))``.

    ``block`` picks the inner block: ``"darknet"`` (YOLOv5PAFPN) or ``"cspnext"`` (CSPNeXtPAFPN).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_blocks: int,
        *,
        block: str,
        norm: BN,
        act: str = "silu",
        expand_ratio: float = 0.5,
    ) -> None:
        super().__init__()
        mid = int(out_channels * expand_ratio)
        self.main_conv = ConvModule(in_channels, mid, 1, norm=norm, act=act)
        self.short_conv = ConvModule(in_channels, mid, 1, norm=norm, act=act)
        self.final_conv = ConvModule(2 * mid, out_channels, 1, norm=norm, act=act)
        self.blocks = nn.Sequential(*(_CSP_BLOCKS[block](mid, norm, act) for _ in range(num_blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_conv(torch.cat([self.blocks(self.main_conv(x)), self.short_conv(x)], 1))


class ConvWrapper(nn.Module):
    """mmyolo ``ConvWrapper``: a 3x3 ``ConvModule`` *with* conv bias (although BN follows), stored as ``block``."""

    def __init__(self, in_channels: int, out_channels: int, norm: BN) -> None:
        super().__init__()
        self.block = ConvModule(in_channels, out_channels, 3, bias=True, norm=norm, act="silu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class BottleRep(nn.Module):
    """mmyolo ``BottleRep(adaptive_weight=True)``: ``conv2(conv1(x)) + alpha * x`` (shortcut only if in == out)."""

    def __init__(self, in_channels: int, out_channels: int, norm: BN) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1))
        self.conv1 = ConvWrapper(in_channels, out_channels, norm)
        self.conv2 = ConvWrapper(out_channels, out_channels, norm)
        self.shortcut = in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return out + self.alpha * x if self.shortcut else out


class RepStageBlock(nn.Module):
    """mmyolo ``RepStageBlock`` of ``BottleRep``s: ``conv1`` then ``block`` (absent if it would be empty).

    Upstream halves the requested count for BottleRep stages (docs/upstream.md §7.11: 14 -> 7 = ``conv1`` + 6 in ``block``).
    """

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, norm: BN) -> None:
        super().__init__()
        self.conv1 = BottleRep(in_channels, out_channels, norm)
        num_blocks //= 2
        self.block = (
            nn.Sequential(*(BottleRep(out_channels, out_channels, norm) for _ in range(num_blocks - 1)))
            if num_blocks > 1
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return x if self.block is None else self.block(x)


class BepC3StageBlock(nn.Module):
    """mmyolo ``BepC3StageBlock``: ``conv3(cat([block(conv1(x)), conv2(x)]))`` with SiLU 1x1 convs."""

    def __init__(
        self, in_channels: int, out_channels: int, num_blocks: int, *, norm: BN, hidden_ratio: float = 0.5
    ) -> None:
        super().__init__()
        hidden = int(out_channels * hidden_ratio)
        self.conv1 = ConvModule(in_channels, hidden, 1, norm=norm, act="silu")
        self.conv2 = ConvModule(in_channels, hidden, 1, norm=norm, act="silu")
        self.conv3 = ConvModule(2 * hidden, out_channels, 1, norm=norm, act="silu")
        self.block = RepStageBlock(hidden, hidden, num_blocks, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.cat([self.block(self.conv1(x)), self.conv2(x)], 1))


class PAFPN(nn.Module):
    """MMYOLO ``BaseYOLONeck`` over three levels (P3, P4, P5).

    Top-down: reduce the top level, upsample it, concatenate **upsampled first** with the next lower level and fuse;
    bottom-up: downsample, concatenate with the matching top-down output and fuse; then the per-level ``out_layers``.
    Subclasses fill the six module lists (in this registration order, which is the upstream state-dict order) and
    set ``out_channels``.
    """

    out_channels: tuple[int, ...]

    def __init__(self) -> None:
        super().__init__()
        self.reduce_layers = nn.ModuleList()
        self.upsample_layers = nn.ModuleList()
        self.top_down_layers = nn.ModuleList()
        self.downsample_layers = nn.ModuleList()
        self.bottom_up_layers = nn.ModuleList()
        self.out_layers = nn.ModuleList()

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        num_levels = len(self.reduce_layers)
        if len(feats) != num_levels:
            raise ValueError(f"{type(self).__name__} expects {num_levels} feature maps, got {len(feats)}")
        reduced = [layer(x) for layer, x in zip(self.reduce_layers, feats)]
        inner = [reduced[-1]]
        for i, idx in enumerate(range(num_levels - 1, 0, -1)):
            upsampled = self.upsample_layers[i](inner[0])
            inner.insert(0, self.top_down_layers[i](torch.cat([upsampled, reduced[idx - 1]], 1)))
        outs = [inner[0]]
        for idx in range(num_levels - 1):
            downsampled = self.downsample_layers[idx](outs[-1])
            outs.append(self.bottom_up_layers[idx](torch.cat([downsampled, inner[idx + 1]], 1)))
        return tuple(layer(x) for layer, x in zip(self.out_layers, outs))


def _check_levels(in_channels: Sequence[int]) -> tuple[int, ...]:
    if len(in_channels) != 3:
        raise ValueError(f"the PAFPN necks take 3 backbone levels (strides 8, 16, 32), got channels {in_channels}")
    return tuple(int(c) for c in in_channels)


class YOLOv5PAFPN(PAFPN):
    """MMYOLO ``YOLOv5PAFPN`` (SPOS detector, docs/upstream.md §1.1): CSPLayers of DarknetBottlenecks, nearest upsampling, SiLU."""

    def __init__(
        self,
        in_channels: Sequence[int],
        *,
        deepen_factor: float = 0.33,
        widen_factor: float = 1.0,
        num_csp_blocks: int = 3,
    ) -> None:
        super().__init__()
        in_channels = _check_levels(in_channels)
        # upstream rounds every width with mmyolo's ceil-to-8 make_divisible (docs/upstream.md §7.11), including the doubled inputs
        width = lambda c: make_divisible_ceil(c, widen_factor)  # noqa: E731
        n = make_round(num_csp_blocks, deepen_factor)
        norm = YOLO_BN

        def csp(cin: int, cout: int) -> CSPLayer:
            return CSPLayer(width(cin), width(cout), n, block="darknet", norm=norm)

        c0, c1, c2 = in_channels
        reduce = ConvModule(width(c2), width(c1), 1, norm=norm, act="silu")
        self.reduce_layers.extend([nn.Identity(), nn.Identity(), reduce])
        self.upsample_layers.extend([nn.Upsample(scale_factor=2, mode="nearest") for _ in range(2)])
        lateral = ConvModule(width(c1), width(c0), 1, norm=norm, act="silu")
        self.top_down_layers.append(nn.Sequential(csp(2 * c1, c1), lateral))
        self.top_down_layers.append(csp(2 * c0, c0))
        for idx in range(2):
            c = in_channels[idx]
            self.downsample_layers.append(ConvModule(width(c), width(c), 3, 2, norm=norm, act="silu"))
            self.bottom_up_layers.append(csp(2 * c, in_channels[idx + 1]))
        self.out_layers.extend(nn.Identity() for _ in range(3))
        self.out_channels = tuple(width(c) for c in in_channels)


class YOLOv6CSPRepPAFPN(PAFPN):
    """MMYOLO ``YOLOv6CSPRepPAFPN`` (AttentiveNAS A6 detector, docs/upstream.md §1.2).

    BepC3 stages of BottleRep/ConvWrapper blocks (SiLU), ReLU reduce/top-down/downsample convs, ConvTranspose2d
    upsampling. ``out_channels`` defaults to the input channels, as in the razor config.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: Sequence[int] | None = None,
        *,
        deepen_factor: float = 1.2,
        widen_factor: float = 1.0,
        num_csp_blocks: int = 12,
        hidden_ratio: float = 0.5,
    ) -> None:
        super().__init__()
        in_channels = _check_levels(in_channels)
        out_channels = in_channels if out_channels is None else _check_levels(out_channels)
        width = lambda c: int(c * widen_factor)  # noqa: E731
        n = make_round(num_csp_blocks, deepen_factor)
        norm = YOLO_BN

        def bepc3(cin: int, cout: int) -> BepC3StageBlock:
            return BepC3StageBlock(width(cin), width(cout), n, norm=norm, hidden_ratio=hidden_ratio)

        (i0, i1, i2), (o0, o1, _) = in_channels, out_channels
        reduce = ConvModule(width(i2), width(o1), 1, norm=norm, act="relu")
        self.reduce_layers.extend([nn.Identity(), nn.Identity(), reduce])
        for o in (o1, o0):
            self.upsample_layers.append(nn.ConvTranspose2d(width(o), width(o), 2, stride=2, bias=True))
        lateral = ConvModule(width(o1), width(o0), 1, norm=norm, act="relu")
        self.top_down_layers.append(nn.Sequential(bepc3(o1 + i1, o1), lateral))
        self.top_down_layers.append(bepc3(o0 + i0, o0))
        for idx in range(2):
            o = out_channels[idx]
            self.downsample_layers.append(ConvModule(width(o), width(o), 3, 2, norm=norm, act="relu"))
            self.bottom_up_layers.append(bepc3(2 * o, out_channels[idx + 1]))
        self.out_layers.extend(nn.Identity() for _ in range(3))
        self.out_channels = tuple(width(c) for c in out_channels)


class CSPNeXtPAFPN(PAFPN):
    """MMYOLO ``CSPNeXtPAFPN`` (OFA RTMDet detector, docs/upstream.md §1.3): CSPNeXt blocks, nearest upsampling, mmcv-default BN,
    and 3x3 ``out_layers`` that bring every level to ``out_channels``."""

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int = 40,
        *,
        deepen_factor: float = 0.167,
        widen_factor: float = 1.0,
        num_csp_blocks: int = 3,
        expand_ratio: float = 0.5,
    ) -> None:
        super().__init__()
        channels = tuple(int(c * widen_factor) for c in _check_levels(in_channels))
        out_channels = int(out_channels * widen_factor)
        # plain Python round (banker's rounding), not make_round: round(3 * 0.167) = 1 (docs/upstream.md §7.11)
        n = round(num_csp_blocks * deepen_factor)
        norm = BN()

        def csp(cin: int, cout: int) -> CSPLayer:
            return CSPLayer(cin, cout, n, block="cspnext", norm=norm, expand_ratio=expand_ratio)

        c0, c1, c2 = channels
        self.reduce_layers.extend([nn.Identity(), nn.Identity(), ConvModule(c2, c1, 1, norm=norm, act="silu")])
        self.upsample_layers.extend([nn.Upsample(scale_factor=2, mode="nearest") for _ in range(2)])
        self.top_down_layers.append(nn.Sequential(csp(2 * c1, c1), ConvModule(c1, c0, 1, norm=norm, act="silu")))
        self.top_down_layers.append(csp(2 * c0, c0))
        for idx in range(2):
            self.downsample_layers.append(ConvModule(channels[idx], channels[idx], 3, 2, norm=norm, act="silu"))
            self.bottom_up_layers.append(csp(2 * channels[idx], channels[idx + 1]))
        self.out_layers.extend(ConvModule(c, out_channels, 3, norm=norm, act="silu") for c in channels)
        self.out_channels = (out_channels,) * 3
