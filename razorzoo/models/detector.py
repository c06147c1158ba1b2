"""Detectors: NAS backbone + PAFPN neck + dense head, with MMYOLO's state-dict names and raw outputs.

The test-time settings of the three MMYOLO razor detectors are typed :class:`~razorzoo.arch.recipes.Recipe`s; this
module maps each recipe id to its neck and head modules. The neck reads its input widths from the backbone, so any
subnet of any of the three search spaces can be combined with any recipe; only the upstream pairings (``yolov5_s`` +
SPOS, ``yolov6_l_d12`` + AttentiveNAS, ``rtmdet_tiny`` + OFA) have published weights.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from razorzoo.arch.recipes import PYRAMID_OUT_INDICES, RECIPES, Recipe, TestConfig
from razorzoo.arch.spec import check_class_names, check_input_size
from razorzoo.bounded import safe_repr
from razorzoo.detection.coders import build_coder
from razorzoo.detection.head_losses import head_loss
from razorzoo.detection.postprocess import postprocess, with_overrides
from razorzoo.detection.targets import pack_targets
from razorzoo.detection.transforms import DetectionTransform
from razorzoo.errors import RazorzooError
from razorzoo.models.heads import RTMDetSepBNHeadModule, YOLOv5HeadModule, YOLOv6HeadModule
from razorzoo.models.layers import ConvModule
from razorzoo.models.necks import CSPNeXtPAFPN, YOLOv5PAFPN, YOLOv6CSPRepPAFPN

if TYPE_CHECKING:
    from razorzoo.arch.subnet import Subnet
    from razorzoo.detection.results import Detections
    from razorzoo.detection.transforms import ImageInput, ImageMeta

__all__ = ["NECKS_AND_HEADS", "Detector", "build_detector_from_subnet"]

# recipe id -> (neck(in_channels), head_module(neck.out_channels))
NECKS_AND_HEADS: dict[str, tuple[Callable[[Sequence[int]], nn.Module], Callable[[Sequence[int]], nn.Module]]] = {
    "yolov5_s": (YOLOv5PAFPN, YOLOv5HeadModule),
    "yolov6_l_d12": (YOLOv6CSPRepPAFPN, YOLOv6HeadModule),
    # every CSPNeXtPAFPN level has the same width (its out_channels)
    "rtmdet_tiny": (CSPNeXtPAFPN, lambda channels: RTMDetSepBNHeadModule(channels[0])),
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
    images to boxes with the detector's typed parts: ``transform`` (the test pipeline), ``coder`` (priors and box
    decoding) and ``test_cfg`` (thresholds), all from its ``recipe``; :meth:`loss` gives MMYOLO's training losses.
    Detectors are built in eval mode.
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, head_module: nn.Module, recipe: Recipe) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.bbox_head = BBoxHead(head_module)
        self.recipe = recipe
        self.transform = DetectionTransform(recipe.preprocess, recipe.normalize)
        self.coder = build_coder(recipe.coder)
        self.test_cfg = recipe.test_cfg
        self._fused = False
        self.eval()

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.recipe.class_names

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], ...]:
        return self.bbox_head(self.neck(self.backbone(x)))

    @property
    def num_classes(self) -> int:
        return self.bbox_head.head_module.num_classes

    def loss(self, batch: torch.Tensor, targets: Sequence[Mapping[str, Any]], *,
             epoch: int | None = None) -> dict[str, torch.Tensor]:
        """MMYOLO's training loss terms for a batch (docs/upstream.md §9): their sum is the scalar to backpropagate.

        ``batch`` is normalized, ``N x 3 x H x W`` with ``H`` and ``W`` multiples of the largest stride (what
        :meth:`preprocess` or the training pipeline gives); ``targets`` holds one ``{"boxes": M x 4 xyxy in batch
        pixels, "labels": M int64}`` per image (``M`` may be 0), torchvision's convention. Returns YOLOv5's
        ``loss_cls``, ``loss_obj``, ``loss_bbox`` or YOLOv6's/RTMDet's ``loss_cls``, ``loss_bbox``, with upstream's
        weights and normalisations. ``epoch`` (0-based, default 0) matters where upstream reads it: YOLOv6 assigns
        with ATSS before ``train_cfg.initial_epoch`` and task-aligned after. The model must be in ``train()`` mode,
        so that BatchNorm uses batch statistics as upstream does; malformed targets raise one
        :class:`~razorzoo.detection.targets.TargetError` line.
        """
        if self._fused:
            raise RazorzooError("this detector was fuse()d for inference (BatchNorm folded into convs); its loss "
                                "would not be the recipe's: build or load the model again to train it")
        if not self.training:
            raise RazorzooError("Detector.loss() needs train mode (BatchNorm batch statistics, as upstream): call "
                                "detector.train() first")
        if self.recipe.train_cfg is None:
            raise RazorzooError(f"recipe {self.recipe.id!r} has no training settings")
        if epoch is not None and (not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0):
            raise RazorzooError(f"epoch must be a non-negative integer, not {safe_repr(epoch)}")
        rows = pack_targets(targets, batch, self.num_classes)
        stride = max(self.recipe.strides)
        height, width = batch.shape[-2:]
        if height % stride or width % stride:
            raise RazorzooError(f"the batch is {width} x {height}; training needs sides that are multiples of "
                                f"{stride} (the largest stride), as the train pipelines produce")
        outputs = self(batch)
        device_type = batch.device.type
        if torch.is_autocast_enabled(device_type):  # mixed precision: the network in float16, the loss in float32
            outputs = tuple([level.float() for level in part] for part in outputs)
        with torch.autocast(device_type, enabled=False):
            return head_loss(self.recipe.train_cfg, outputs, rows, coder=self.coder, strides=self.recipe.strides,
                             num_classes=self.num_classes, batch_hw=(height, width), epoch=epoch or 0)

    def set_classes(self, class_names: Sequence[str]) -> "Detector":
        """Give the detector these classes, in place: with another class count the class-dependent head layers are
        replaced and initialised as upstream initialises them (YOLOv5: all ``convs_pred``; YOLOv6: ``cls_preds``;
        RTMDet: ``rtm_cls``), everything else keeps its weights; with the same count only the names change.
        New layers use torch's global RNG (``torch.manual_seed`` makes them repeatable)."""
        class_names = check_class_names(class_names)
        if len(class_names) != self.num_classes:
            head = self.bbox_head.head_module
            device, mode = next(head.parameters()).device, head.training
            head.reset_classes(len(class_names))
            head.to(device).train(mode)
        self.recipe = replace(self.recipe, class_names=class_names)
        return self

    def set_input_size(self, size: int) -> "Detector":
        """Predict on a ``size x size`` canvas (a multiple of 32), as a detector trained at that size does upstream;
        in place, weights unchanged."""
        self.recipe = self.recipe.at_size(check_input_size(size))
        self.transform = DetectionTransform(self.recipe.preprocess, self.recipe.normalize)
        return self

    def tie_weights(self) -> None:
        """Re-share tied head weights (RTMDet) after a load that replaced tensors; a no-op for other heads."""
        tie = getattr(self.bbox_head.head_module, "tie_weights", None)
        if tie is not None:
            tie()

    def preprocess(self, images: "ImageInput | Sequence[ImageInput]") -> tuple[torch.Tensor, list["ImageMeta"]]:
        """Images (paths, PIL images or ``H x W x 3`` uint8 **BGR** arrays) -> normalized batch + one
        :class:`~razorzoo.detection.transforms.ImageMeta` per image, exactly like the upstream test pipeline."""
        return self.transform(images)

    def postprocess(
        self,
        raw_outputs: Sequence[Sequence[torch.Tensor]],
        metas: Sequence["ImageMeta"],
        *,
        score_thr: float | None = None,
        iou_thr: float | None = None,
        max_det: int | None = None,
    ) -> list["Detections"]:
        """Raw head outputs -> boxes in original-image pixels (MMYOLO ``predict_by_feat``: decode, filter, NMS).

        ``score_thr``, ``iou_thr`` and ``max_det`` override ``test_cfg`` when given (scores and IoUs in 0..1,
        ``max_det >= 1``; anything else raises :class:`~razorzoo.bounded.InputError`).
        """
        test_cfg = with_overrides(self.test_cfg, score_thr=score_thr, iou_thr=iou_thr, max_det=max_det)
        return self._postprocess(raw_outputs, metas, test_cfg)

    def _postprocess(self, raw_outputs: Sequence[Sequence[torch.Tensor]], metas: Sequence["ImageMeta"],
                     test_cfg: TestConfig) -> list["Detections"]:
        return postprocess(raw_outputs, metas, coder=self.coder, test_cfg=test_cfg, strides=self.recipe.strides,
                           class_names=self.class_names)

    def predict(
        self,
        images: "ImageInput | Sequence[ImageInput]",
        *,
        score_thr: float | None = None,
        iou_thr: float | None = None,
        max_det: int | None = None,
    ) -> "Detections | list[Detections]":
        """Detect objects: one image -> :class:`Detections`; a list or tuple of images -> a list of them."""
        single = not isinstance(images, (list, tuple))
        test_cfg = with_overrides(self.test_cfg, score_thr=score_thr, iou_thr=iou_thr, max_det=max_det)  # fail early
        batch, metas = self.preprocess([images] if single else list(images))
        with torch.inference_mode():
            detections = self._detect(batch, metas, test_cfg)
        return detections[0] if single else detections

    def detect(self, batch: torch.Tensor, metas: Sequence["ImageMeta"], *, score_thr: float | None = None,
               iou_thr: float | None = None, max_det: int | None = None) -> list["Detections"]:
        """The network and post-processing on a preprocessed batch (``preprocess``'s output, or any canvases of
        one size with their metas): one :class:`Detections` per image, thresholds as in :meth:`postprocess`."""
        test_cfg = with_overrides(self.test_cfg, score_thr=score_thr, iou_thr=iou_thr, max_det=max_det)
        with torch.inference_mode():
            return self._detect(batch, metas, test_cfg)

    def _detect(self, batch: torch.Tensor, metas: Sequence["ImageMeta"], test_cfg: TestConfig) -> list["Detections"]:
        return self._postprocess(self._forward(batch), metas, test_cfg)

    def _forward(self, batch: torch.Tensor) -> tuple[list[torch.Tensor], ...]:
        """The network on a preprocessed batch, moved to the weights' device and dtype."""
        reference = next(self.parameters())
        return self(batch.to(device=reference.device, dtype=reference.dtype))

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
        self._fused = True
        return self


def build_detector_from_subnet(subnet: "Subnet", recipe: str, class_names: Sequence[str] | None = None,
                               input_size: int | None = None) -> Detector:
    """Detector for ``subnet`` with the neck/head/test settings of ``recipe`` (a key of
    :data:`razorzoo.arch.recipes.RECIPES`), predicting ``class_names`` (default: the recipe's COCO-80) on an
    ``input_size`` canvas (default: the recipe's).

    The backbone feeds its stride 8/16/32 outputs (:data:`PYRAMID_OUT_INDICES` of the subnet's search space) to the
    neck, whose widths follow the backbone's ``out_channels``; any search space works with any recipe.
    """
    from razorzoo.models.backbones import build_backbone_from_subnet

    if recipe not in RECIPES:
        raise RazorzooError(f"unknown detector recipe {safe_repr(recipe)}; expected one of {', '.join(RECIPES)}")
    make_neck, make_head = NECKS_AND_HEADS[recipe]
    backbone = build_backbone_from_subnet(subnet, PYRAMID_OUT_INDICES[subnet.family])
    neck = make_neck(tuple(backbone.out_channels))
    head = make_head(neck.out_channels)
    settings = RECIPES[recipe]
    if class_names is not None:
        settings = replace(settings, class_names=check_class_names(class_names))
        head.reset_classes(len(settings.class_names))
    if input_size is not None:
        settings = settings.at_size(check_input_size(input_size))
    return Detector(backbone, neck, head, settings)
