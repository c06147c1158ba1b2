"""Detectors: NAS backbone + PAFPN neck + dense head, with MMYOLO's state-dict names and raw outputs.

A :class:`Recipe` is everything about a detector that is not the backbone: which backbone outputs feed the neck,
the neck and head, the test-time pre-processing, box decoding and NMS settings (UPSTREAM.md §1.1-§1.3). The three
recipes of the MMYOLO razor table are in :data:`RECIPES`. The neck reads its input widths from the backbone, so any
subnet of any of the three search spaces can be combined with any recipe; only the upstream pairings
(``yolov5_s`` + SPOS, ``yolov6_l_d12`` + AttentiveNAS, ``rtmdet_tiny`` + OFA) have published weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from razorzoo.errors import RazorzooError
from razorzoo.models.heads import RTMDetSepBNHeadModule, YOLOv5HeadModule, YOLOv6HeadModule
from razorzoo.models.layers import ConvModule
from razorzoo.models.necks import CSPNeXtPAFPN, YOLOv5PAFPN, YOLOv6CSPRepPAFPN

if TYPE_CHECKING:
    from razorzoo.detection.results import Detections
    from razorzoo.arch.subnet import Subnet

__all__ = ["COCO_CLASSES", "PYRAMID_OUT_INDICES", "Recipe", "RECIPES", "Detector", "build_detector_from_subnet"]

# mmdet CocoDataset.METAINFO["classes"]: label i of every head is COCO_CLASSES[i]
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # fmt: skip

# Backbone outputs at strides 8, 16, 32 in each search space (§1.1-§1.3): SPOS layers.1-3; AttentiveNAS layer3, 5, 7;
# OFA layer3, 5, 6. They depend only on the space's stage strides, so every subnet of a space uses the same ones.
PYRAMID_OUT_INDICES = {"spos": (1, 2, 3), "attentive": (2, 4, 6), "ofa": (2, 4, 5)}

# YOLOv5KeepRatioResize + LetterResize, RGB / 255 (§1.1, §1.2, §6.1)
_LETTERBOX_640 = {"type": "letterbox", "size": 640, "pad_value": 114, "bgr_to_rgb": True, "mean": [0.0, 0.0, 0.0],
                  "std": [255.0, 255.0, 255.0]}
_YOLO_TEST_CFG = {"multi_label": True, "nms_pre": 30000, "score_thr": 0.001, "iou_threshold": 0.65,
                  "max_per_img": 300, "min_bbox_size": None}


@dataclass(frozen=True)
class Recipe:
    """Neck, head and test-time settings of one upstream detector config.

    ``neck(in_channels)`` builds the neck for the backbone's widths; ``head(neck.out_channels)`` builds the
    ``head_module``. ``preprocess``, ``decode`` and ``test_cfg`` are plain dicts read by ``razorzoo.detection``
    (their keys are documented in docs/ARCHITECTURE.md); treat them as read-only.
    """

    id: str
    family: str  # search space of the upstream backbone (the only pairing with published weights)
    out_indices: tuple[int, ...]
    neck: Callable[[Sequence[int]], nn.Module] = field(repr=False)
    head: Callable[[Sequence[int]], nn.Module] = field(repr=False)
    test_size: int
    preprocess: dict[str, Any] = field(repr=False)
    decode: dict[str, Any] = field(repr=False)
    test_cfg: dict[str, Any] = field(repr=False)
    strides: tuple[int, ...] = (8, 16, 32)
    num_classes: int = 80
    class_names: tuple[str, ...] = field(default=COCO_CLASSES, repr=False)


RECIPES: dict[str, Recipe] = {
    recipe.id: recipe
    for recipe in (
        Recipe(
            id="yolov5_s",
            family="spos",
            out_indices=PYRAMID_OUT_INDICES["spos"],
            neck=YOLOv5PAFPN,
            head=YOLOv5HeadModule,
            test_size=640,
            preprocess=dict(_LETTERBOX_640),
            decode={"coder": "yolov5", "anchors": [[(10, 13), (16, 30), (33, 23)], [(30, 61), (62, 45), (59, 119)],
                                                   [(116, 90), (156, 198), (373, 326)]]},
            test_cfg=dict(_YOLO_TEST_CFG),
        ),
        Recipe(
            id="yolov6_l_d12",
            family="attentive",
            out_indices=PYRAMID_OUT_INDICES["attentive"],
            neck=YOLOv6CSPRepPAFPN,
            head=YOLOv6HeadModule,
            test_size=640,
            preprocess=dict(_LETTERBOX_640),
            decode={"coder": "distance", "prior_offset": 0.5},
            test_cfg=dict(_YOLO_TEST_CFG),
        ),
        Recipe(
            id="rtmdet_tiny",
            family="ofa",
            out_indices=PYRAMID_OUT_INDICES["ofa"],
            neck=CSPNeXtPAFPN,
            # every CSPNeXtPAFPN level has the same width (its out_channels)
            head=lambda channels: RTMDetSepBNHeadModule(channels[0]),
            test_size=960,
            # mmdet Resize(keep_ratio) + Pad bottom/right; the image stays BGR, ImageNet mean/std in BGR order
            preprocess={"type": "resize_pad", "size": 960, "pad_value": 114, "bgr_to_rgb": False,
                        "mean": [103.53, 116.28, 123.675], "std": [57.375, 57.12, 58.395]},
            decode={"coder": "distance", "prior_offset": 0.0},
            test_cfg={"multi_label": True, "nms_pre": 1000, "score_thr": 0.05, "iou_threshold": 0.6,
                      "max_per_img": 100, "min_bbox_size": 0},
        ),
    )
}


class BBoxHead(nn.Module):
    """Holds the ``head_module`` (MMYOLO's dense heads keep all weights there, hence the key prefix)."""

    def __init__(self, head_module: nn.Module) -> None:
        super().__init__()
        self.head_module = head_module

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], ...]:
        return self.head_module(feats)


class Detector(nn.Module):
    """A MMYOLO ``YOLODetector`` as a plain module: ``backbone`` -> ``neck`` -> ``bbox_head.head_module``.

    Calling it on a normalized ``(N, 3, H, W)`` batch returns MMYOLO's ``mode='tensor'`` output: a tuple of
    per-level lists ``(cls_scores, bbox_preds)``, plus ``objectnesses`` for YOLOv5. :meth:`predict` goes from
    images to boxes. Detectors are built in eval mode (razorzoo has no training losses).
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, head_module: nn.Module, recipe: Recipe) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.bbox_head = BBoxHead(head_module)
        self.recipe = recipe
        self.eval()

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.recipe.class_names

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], ...]:
        return self.bbox_head(self.neck(self.backbone(x)))

    def tie_weights(self) -> None:
        """Re-share tied head weights (RTMDet) after a load that replaced tensors; a no-op for other heads."""
        tie = getattr(self.bbox_head.head_module, "tie_weights", None)
        if tie is not None:
            tie()

    def preprocess(self, images: Any) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """Images (paths, PIL images or ``H x W x 3`` uint8 **BGR** arrays) -> normalized batch + per-image metas,
        exactly like the upstream test pipeline and data preprocessor."""
        from razorzoo.detection.transforms import preprocess

        return preprocess(images, self.recipe.preprocess)

    def postprocess(
        self,
        raw_outputs: Sequence[Sequence[torch.Tensor]],
        metas: list[dict[str, Any]],
        *,
        score_thr: float | None = None,
        iou_thr: float | None = None,
        max_det: int | None = None,
    ) -> list["Detections"]:
        """Raw head outputs -> boxes in original-image pixels (MMYOLO ``predict_by_feat``: decode, filter, NMS).

        ``score_thr``, ``iou_thr`` and ``max_det`` override the recipe's ``test_cfg`` when given.
        """
        from razorzoo.detection.postprocess import postprocess

        return postprocess(
            raw_outputs,
            metas,
            decode=self.recipe.decode,
            test_cfg=self.recipe.test_cfg,
            strides=self.recipe.strides,
            class_names=self.class_names,
            score_thr=score_thr,
            iou_thr=iou_thr,
            max_det=max_det,
        )

    def predict(
        self,
        images: Any,
        *,
        score_thr: float | None = None,
        iou_thr: float | None = None,
        max_det: int | None = None,
    ) -> "Detections | list[Detections]":
        """Detect objects: one image -> :class:`Detections`; a list or tuple of images -> a list of them."""
        single = not isinstance(images, (list, tuple))
        batch, metas = self.preprocess([images] if single else list(images))
        reference = next(self.parameters())
        with torch.inference_mode():
            raw = self(batch.to(device=reference.device, dtype=reference.dtype))
            detections = self.postprocess(raw, metas, score_thr=score_thr, iou_thr=iou_thr, max_det=max_det)
        return detections[0] if single else detections

    def fuse(self) -> "Detector":
        """Fold every BatchNorm into the convolution before it, in place, for faster inference.

        Applies to all conv-BN pairs (``ConvModule`` and everything built from it: ``ConvWrapper``, depthwise-
        separable convs). Outputs stay within float error (1e-4) of the unfused model. Afterwards ``state_dict()``
        no longer has the ``*.bn.*`` entries (convs gain a ``bias``), so save or convert weights *before* fusing;
        RTMDet's shared head convs become per-level convs. Eval mode only; calling it again is a no-op.
        """
        if self.training:
            raise RazorzooError("Detector.fuse() folds BatchNorm running statistics: call .eval() first")
        for module in self.modules():
            if isinstance(module, ConvModule) and hasattr(module, "bn"):
                module.conv = fuse_conv_bn_eval(module.conv, module.bn)
                del module.bn
        return self


def build_detector_from_subnet(subnet: "Subnet", recipe: str) -> Detector:
    """Detector for ``subnet`` with the neck/head/test settings of ``recipe`` (an id of :data:`RECIPES`).

    The backbone feeds its stride 8/16/32 outputs (:data:`PYRAMID_OUT_INDICES` of the subnet's search space) to the
    neck, whose widths follow the backbone's ``out_channels``; any search space works with any recipe.
    """
    from razorzoo.models.backbones import build_backbone_from_subnet

    try:
        spec = RECIPES[recipe]
    except KeyError:
        raise RazorzooError(f"unknown detector recipe {recipe!r}; expected one of {sorted(RECIPES)}") from None
    backbone = build_backbone_from_subnet(subnet, PYRAMID_OUT_INDICES[subnet.family])
    neck = spec.neck(tuple(backbone.out_channels))
    return Detector(backbone, neck, spec.head(neck.out_channels), spec)
