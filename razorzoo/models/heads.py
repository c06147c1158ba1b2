"""Dense head modules of the three MMYOLO razor detectors (docs/upstream.md §6.3).

Only the ``head_module`` part of MMYOLO's heads has weights; prior generation, box decoding and NMS live in
``razorzoo.detection.postprocess``. Each module maps the neck's per-level features to MMYOLO's raw ``mode='tensor'``
outputs: a tuple of per-level lists ``(cls_scores, bbox_preds[, objectnesses])``.

``reset_classes(n)`` gives a head ``n`` classes: it replaces only the layers whose shape depends on the class count,
initialised as the upstream head's ``init_weights`` does (docs/upstream.md §9.9), so a detector trained on COCO can be
fine-tuned on other classes with everything else kept.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from razorzoo.models.layers import BN, ConvModule, make_divisible_ceil

__all__ = ["YOLOv5HeadModule", "YOLOv6HeadModule", "RTMDetSepBNHeadModule", "PRIOR_PROB_BIAS"]

Outputs = tuple[list[torch.Tensor], ...]

# mmengine ``bias_init_with_prob(0.01)``: the class logits' bias when every class starts at probability 0.01
PRIOR_PROB_BIAS = float(-math.log((1 - 0.01) / 0.01))


def _fresh_conv(like: nn.Conv2d, out_channels: int) -> nn.Conv2d:
    """A new ``Conv2d`` like ``like`` (in channels, kernel, bias) with ``out_channels`` outputs and torch's default
    initialisation, on ``like``'s device and dtype."""
    return nn.Conv2d(like.in_channels, out_channels, like.kernel_size, bias=like.bias is not None,
                     device=like.weight.device, dtype=like.weight.dtype)


class YOLOv5HeadModule(nn.Module):
    """MMYOLO ``YOLOv5HeadModule``: one 1x1 ``convs_pred.i`` per level predicting ``A x (4 + 1 + classes)``.

    The channel layout is anchor-major (``view(B, A, 5 + classes, H, W)``, attributes ``tx ty tw th obj cls...``);
    ``forward`` splits it into ``cls (B, A*classes)``, ``bbox (B, A*4)`` and ``objectness (B, A)`` maps.
    """

    def __init__(
        self, in_channels: Sequence[int], num_classes: int = 80, *, num_base_priors: int = 3, widen_factor: float = 1.0,
        strides: Sequence[int] = (8, 16, 32),
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_base_priors = num_base_priors
        self.strides = tuple(strides)
        num_attrib = 5 + num_classes
        self.convs_pred = nn.ModuleList(
            nn.Conv2d(make_divisible_ceil(c, widen_factor), num_base_priors * num_attrib, 1) for c in in_channels
        )

    def reset_classes(self, num_classes: int) -> None:
        """Every ``convs_pred`` predicts classes, so all are replaced: torch's default init, then upstream's bias
        priors (objectness for ~8 objects per 640 image, classes at ``0.6 / (num_classes - 0.999999)``)."""
        self.num_classes = num_classes
        for i, (conv, stride) in enumerate(zip(self.convs_pred, self.strides)):
            fresh = _fresh_conv(conv, self.num_base_priors * (5 + num_classes))
            with torch.no_grad():
                bias = fresh.bias.view(self.num_base_priors, -1)
                bias[:, 4] += math.log(8 / (640 / stride) ** 2)
                bias[:, 5:5 + num_classes] += math.log(0.6 / (num_classes - 0.999999))
            self.convs_pred[i] = fresh

    def forward(self, feats: Sequence[torch.Tensor]) -> Outputs:
        cls_scores, bbox_preds, objectnesses = [], [], []
        for x, conv in zip(feats, self.convs_pred):
            pred = conv(x)
            b, _, h, w = pred.shape
            pred = pred.view(b, self.num_base_priors, 5 + self.num_classes, h, w)
            cls_scores.append(pred[:, :, 5:].reshape(b, -1, h, w))
            bbox_preds.append(pred[:, :, :4].reshape(b, -1, h, w))
            objectnesses.append(pred[:, :, 4:5].reshape(b, -1, h, w))
        return cls_scores, bbox_preds, objectnesses


class YOLOv6HeadModule(nn.Module):
    """MMYOLO ``YOLOv6HeadModule`` (``reg_max=0``): per level a 1x1 ``stems.i``, then separate 3x3 ``cls_convs.i`` /
    ``reg_convs.i`` and 1x1 ``cls_preds.i`` / ``reg_preds.i``. Box outputs are raw distances (no DFL)."""

    def __init__(
        self, in_channels: Sequence[int], num_classes: int = 80, *, widen_factor: float = 1.0, norm: BN = BN(1e-3, 0.03)
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        channels = [int(c * widen_factor) for c in in_channels]
        # registration order = upstream state-dict order (stems last)
        self.cls_convs = nn.ModuleList(ConvModule(c, c, 3, norm=norm, act="silu") for c in channels)
        self.reg_convs = nn.ModuleList(ConvModule(c, c, 3, norm=norm, act="silu") for c in channels)
        self.cls_preds = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in channels)
        self.reg_preds = nn.ModuleList(nn.Conv2d(c, 4, 1) for c in channels)
        self.stems = nn.ModuleList(ConvModule(c, c, 1, norm=norm, act="silu") for c in channels)

    def reset_classes(self, num_classes: int) -> None:
        """New ``cls_preds`` as upstream initialises them: weights 0, bias ``bias_init_with_prob(0.01)``."""
        self.num_classes = num_classes
        for i, conv in enumerate(self.cls_preds):
            fresh = _fresh_conv(conv, num_classes)
            with torch.no_grad():
                fresh.weight.fill_(0.0)
                fresh.bias.fill_(PRIOR_PROB_BIAS)
            self.cls_preds[i] = fresh

    def forward(self, feats: Sequence[torch.Tensor]) -> Outputs:
        cls_scores, bbox_preds = [], []
        for i, x in enumerate(feats):
            y = self.stems[i](x)
            cls_scores.append(self.cls_preds[i](self.cls_convs[i](y)))
            bbox_preds.append(self.reg_preds[i](self.reg_convs[i](y)))
        return cls_scores, bbox_preds


class RTMDetSepBNHeadModule(nn.Module):
    """MMYOLO ``RTMDetSepBNHeadModule`` (``share_conv=True``): per level ``stacked_convs`` 3x3 ``cls_convs.L.j`` /
    ``reg_convs.L.j`` whose ``conv`` is shared by all levels while the BatchNorms are per level, then 1x1
    ``rtm_cls.L`` / ``rtm_reg.L``.

    The shared convs appear in ``state_dict()`` under every level's name (same storage, like upstream), and
    ``parameters()`` yields them once. Loading a state dict writes every alias in turn, so the last level's value
    wins, exactly as with torch/mmengine upstream. :meth:`tie_weights` restores the sharing after something
    replaced the modules' tensors one alias at a time (e.g. ``load_state_dict(..., assign=True)``).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int = 80,
        *,
        feat_channels: int | None = None,
        stacked_convs: int = 2,
        num_levels: int = 3,
        widen_factor: float = 1.0,
        norm: BN = BN(),
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        in_channels = int(in_channels * widen_factor)
        feat_channels = in_channels if feat_channels is None else int(feat_channels * widen_factor)

        def tower() -> nn.ModuleList:
            return nn.ModuleList(
                ConvModule(in_channels if j == 0 else feat_channels, feat_channels, 3, norm=norm, act="silu")
                for j in range(stacked_convs)
            )

        self.cls_convs = nn.ModuleList(tower() for _ in range(num_levels))
        self.reg_convs = nn.ModuleList(tower() for _ in range(num_levels))
        self.rtm_cls = nn.ModuleList(nn.Conv2d(feat_channels, num_classes, 1) for _ in range(num_levels))
        self.rtm_reg = nn.ModuleList(nn.Conv2d(feat_channels, 4, 1) for _ in range(num_levels))
        self.tie_weights()

    def reset_classes(self, num_classes: int) -> None:
        """New ``rtm_cls`` as upstream initialises them: ``normal_init(std=0.01, bias=bias_init_with_prob(0.01))``."""
        self.num_classes = num_classes
        for i, conv in enumerate(self.rtm_cls):
            fresh = _fresh_conv(conv, num_classes)
            with torch.no_grad():
                nn.init.normal_(fresh.weight, 0.0, 0.01)
                fresh.bias.fill_(PRIOR_PROB_BIAS)
            self.rtm_cls[i] = fresh

    def tie_weights(self) -> None:
        """Share each tower position's ``conv`` across levels, keeping the last level's module (last alias wins).

        A no-op after ``Detector.fuse()``: folding the per-level BatchNorms gives every level its own conv.
        """
        for towers in (self.cls_convs, self.reg_convs):
            for j, shared in enumerate(towers[-1]):
                if not hasattr(shared, "bn"):
                    continue
                for tower in towers[:-1]:
                    tower[j].conv = shared.conv

    def forward(self, feats: Sequence[torch.Tensor]) -> Outputs:
        cls_scores, bbox_preds = [], []
        for i, x in enumerate(feats):
            cls_feat = reg_feat = x
            for layer in self.cls_convs[i]:
                cls_feat = layer(cls_feat)
            for layer in self.reg_convs[i]:
                reg_feat = layer(reg_feat)
            cls_scores.append(self.rtm_cls[i](cls_feat))
            bbox_preds.append(self.rtm_reg[i](reg_feat))
        return cls_scores, bbox_preds
