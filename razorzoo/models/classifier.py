"""ImageNet classifier around a NAS backbone: MMRazor's ``SearchableImageClassifier`` at test time.

``input resize (optional) -> backbone -> global average pool (the neck) -> head.fc``; state-dict keys are
``backbone.*`` and ``head.fc.*`` as in the upstream runner checkpoints (without the ``architecture.`` prefix).
Like timm's ``pretrained_cfg`` or torchvision's ``weights.transforms()``, a classifier knows its test pipeline
(``preprocessing``, a :class:`~razorzoo.arch.recipes.ClassifierPreprocess`): :meth:`ImageClassifier.preprocess`
runs it and :meth:`ImageClassifier.predict` returns the top-k ImageNet classes.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from razorzoo.arch.recipes import CLASSIFIER_PREPROCESS, ClassifierPreprocess
from razorzoo.bounded import check_number
from razorzoo.detection.transforms import ClassifierTransform
from razorzoo.models.backbones import build_backbone_from_subnet

if TYPE_CHECKING:
    from razorzoo.arch.subnet import Subnet
    from razorzoo.detection.transforms import ImageInput

__all__ = ["ImageClassifier", "Classification", "ClsHead", "GlobalAveragePooling", "SqueezeMeanPooling", "build_neck",
           "build_classifier_from_subnet", "imagenet_classes"]


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in label order: each WordNet synset's first lemma (``"tench"``, ...).

    Shipped as package data (``imagenet_classes.txt``, from timm's synset lists; its header says where from).
    """
    text = (Path(__file__).parent / "imagenet_classes.txt").read_text(encoding="utf-8")
    rows = [line.split("\t", 1)[1] for line in text.splitlines() if line and not line.startswith("#")]
    return tuple(row.split(", ")[0] for row in rows)


@dataclass(frozen=True)
class Classification:
    """The ``k`` most likely classes of one image, best first: label ``indices``, class ``names``, softmax ``probs``."""

    indices: tuple[int, ...]
    names: tuple[str, ...]
    probs: tuple[float, ...]

    def __repr__(self) -> str:
        rows = [f"  {name:<24} {prob:.3f}  (class {index})"
                for index, name, prob in zip(self.indices, self.names, self.probs)]
        return "\n".join([f"Classification(top {len(self.indices)})", *rows])


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


# Upstream classifier configs pick the neck per algorithm; both average, but FLOP counts differ (UPSTREAM docs/upstream.md §3).
_NECKS = {"spos": GlobalAveragePooling, "ofa": GlobalAveragePooling, "attentive": SqueezeMeanPooling}


def build_neck(family: str) -> nn.Module:
    """The classifier neck (global pooling) the family's upstream config uses."""
    return _NECKS[family]()


class ImageClassifier(nn.Module):
    """``m(x)`` returns logits ``(N, num_classes)``; ``m.backbone(x)`` the tuple of stage outputs.

    ``input_shape`` (from the subnet YAML) reproduces upstream's static input resizer: every input is resized to it
    with bicubic interpolation (``align_corners=False``, no antialias) before the backbone; ``None`` = no resize.
    ``preprocessing`` is the test pipeline from image to ``x`` (:meth:`preprocess`).
    """

    def __init__(self, backbone: nn.Module, num_features: int, *, input_shape: tuple[int, int] | None = None,
                 num_classes: int = 1000, neck: nn.Module | None = None,
                 preprocessing: ClassifierPreprocess = ClassifierPreprocess()) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.backbone = backbone
        self.neck = neck if neck is not None else GlobalAveragePooling()
        self.head = ClsHead(num_features, num_classes)
        self.preprocessing = preprocessing
        self.transform = ClassifierTransform(preprocessing)

    @property
    def class_names(self) -> tuple[str, ...]:
        """ImageNet names for a 1000-class head; the label numbers as strings otherwise."""
        num_classes = self.head.fc.out_features
        return imagenet_classes() if num_classes == 1000 else tuple(str(i) for i in range(num_classes))

    def preprocess(self, images: "ImageInput | Sequence[ImageInput]") -> torch.Tensor:
        """Images (paths, PIL images or ``H x W x 3`` uint8 **BGR** arrays) -> the normalized ``(N, 3, crop, crop)``
        batch, exactly like the upstream test pipeline and data preprocessor."""
        return self.transform(images)

    def predict(self, images: "ImageInput | Sequence[ImageInput]", topk: int = 5
                ) -> "Classification | list[Classification]":
        """Classify: one image -> :class:`Classification`; a list or tuple of images -> a list of them."""
        single = not isinstance(images, (list, tuple))
        results = self.classify(self.preprocess([images] if single else list(images)), topk)
        return results[0] if single else results

    def classify(self, batch: torch.Tensor, topk: int = 5) -> "list[Classification]":
        """The top-k classes of each image of a batch :meth:`preprocess` made (``razorzoo predict`` prepares images
        on threads, then classifies them in batches)."""
        names = self.class_names
        topk = check_number(topk, "topk", minimum=1, maximum=len(names), integer=True)
        with torch.inference_mode():
            probs = self._logits(batch).float().softmax(dim=1)
            top, indices = probs.topk(topk, dim=1)
        return [Classification(tuple(idx), tuple(names[i] for i in idx), tuple(p))
                for idx, p in zip(indices.tolist(), top.tolist())]

    def _logits(self, batch: torch.Tensor) -> torch.Tensor:
        reference = next(self.parameters())
        return self(batch.to(device=reference.device, dtype=reference.dtype))

    def resize_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_shape is None:
            return x
        return F.interpolate(x, size=list(self.input_shape), mode="bicubic", align_corners=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(N, C)`` of the last backbone output (upstream ``extract_feat(x)[-1]``)."""
        return self.neck(self.backbone(self.resize_input(x))[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def build_classifier_from_subnet(subnet: "Subnet", num_classes: int = 1000,
                                 preprocessing: ClassifierPreprocess | None = None) -> ImageClassifier:
    """The upstream ImageNet classifier of ``subnet`` (backbone at its default out index, GAP, ``head.fc``).

    ``preprocessing`` defaults to the test pipeline of the subnet's search space (:data:`CLASSIFIER_PREPROCESS`).
    """
    backbone = build_backbone_from_subnet(subnet)
    return ImageClassifier(backbone, backbone.out_channels[-1], input_shape=getattr(subnet, "input_shape", None),
                           num_classes=num_classes, neck=build_neck(subnet.family),
                           preprocessing=preprocessing or CLASSIFIER_PREPROCESS[subnet.family])
