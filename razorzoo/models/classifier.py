"""ImageNet classifier around a NAS backbone: MMRazor's ``SearchableImageClassifier`` at test time.

``input resize (optional) -> backbone -> global average pool (the neck) -> head.fc``; state-dict keys are
``backbone.*`` and ``head.fc.*`` as in the upstream runner checkpoints (without the ``architecture.`` prefix).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from razorzoo.models.backbones import build_backbone_from_subnet

if TYPE_CHECKING:
    from razorzoo.arch.subnet import Subnet

__all__ = ["ImageClassifier", "ClsHead", "GlobalAveragePooling", "SqueezeMeanPooling", "build_classifier_from_subnet"]


class ClsHead(nn.Module):
    """mmcls ``LinearClsHead`` at test time: one ``fc`` layer on the pooled features (raw logits, no softmax)."""

    def __init__(self, in_channels: int, num_classes: int = 1000) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class GlobalAveragePooling(nn.Module):
    """mmcls ``GlobalAveragePooling`` (SPOS, OFA): an ``nn.AdaptiveAvgPool2d``, which FLOP counters count."""

    def __init__(self) -> None:
        super().__init__()
        self.gap = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gap(x).flatten(1)


class SqueezeMeanPooling(nn.Module):
    """MMRazor ``SqueezeMeanPoolingWithDropout`` at test time (AttentiveNAS): a plain mean, uncounted upstream."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


# Upstream classifier configs pick the neck per algorithm; both average, but FLOP counts differ (UPSTREAM §3).
_NECKS = {"spos": GlobalAveragePooling, "ofa": GlobalAveragePooling, "attentive": SqueezeMeanPooling}


class ImageClassifier(nn.Module):
    """``m(x)`` returns logits ``(N, num_classes)``; ``m.backbone(x)`` the tuple of stage outputs.

    ``input_shape`` (from the subnet YAML) reproduces upstream's static input resizer: every input is resized to it
    with bicubic interpolation (``align_corners=False``, no antialias) before the backbone; ``None`` = no resize.
    """

    def __init__(self, backbone: nn.Module, num_features: int, *, input_shape: tuple[int, int] | None = None,
                 num_classes: int = 1000, neck: nn.Module | None = None) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.backbone = backbone
        self.neck = neck if neck is not None else GlobalAveragePooling()
        self.head = ClsHead(num_features, num_classes)

    def resize_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_shape is None:
            return x
        return F.interpolate(x, size=list(self.input_shape), mode="bicubic", align_corners=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(N, C)`` of the last backbone output (upstream ``extract_feat(x)[-1]``)."""
        return self.neck(self.backbone(self.resize_input(x))[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def build_classifier_from_subnet(subnet: "Subnet", num_classes: int = 1000) -> ImageClassifier:
    """The upstream ImageNet classifier of ``subnet`` (backbone at its default out index, GAP, ``head.fc``)."""
    backbone = build_backbone_from_subnet(subnet)
    return ImageClassifier(backbone, backbone.out_channels[-1], input_shape=getattr(subnet, "input_shape", None),
                           num_classes=num_classes, neck=_NECKS[subnet.family]())
