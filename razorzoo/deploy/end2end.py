"""The ``decoded`` and ``nms`` export variants: box decoding (and class-aware NMS, ONNX ``NonMaxSuppression``)
inside the graph. :class:`Decoded` returns boxes and per-class scores for all priors, before any filtering.

:class:`EndToEnd` wraps a detector and returns ``num_dets (N, 1)``, ``boxes (N, max_det, 4)`` (xyxy, input-canvas
pixels), ``scores (N, max_det)`` and ``labels (N, max_det)`` (rows past ``num_dets`` are padding: score 0, label -1).
It follows the recipe's ``test_cfg`` as far as ONNX allows; what differs from eager ``predict`` (docs/deploy.md):
NMS runs on canvas pixels rather than original-image pixels (the two differ by the resize's per-axis rounding), and
``min_bbox_size`` is checked in canvas pixels. NMS is a custom op ``razorzoo::nms`` whose eager implementation is
razorzoo's :func:`~razorzoo.detection.nms.batched_nms` and whose ONNX translation is ``NonMaxSuppression``.

The score and IoU thresholds are graph inputs (``score_thr``, ``iou_thr``: float32 ``(1,)``), so one file serves
``predict(score_thr=...)`` at any threshold and ``val`` at the recipe's; ``max_det`` rows are the most it returns
(fewer are a slice of them: they are sorted by score).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch import nn

from razorzoo.detection.nms import batched_nms
from razorzoo.detection.postprocess import clip_boxes, decode_outputs, rescale_boxes
from razorzoo.detection.results import Detections
from razorzoo.errors import RazorzooError

if TYPE_CHECKING:
    from razorzoo.arch.recipes import TestConfig
    from razorzoo.detection.transforms import ImageMeta

__all__ = ["Decoded", "EndToEnd", "TRANSLATIONS", "OUTPUTS", "DECODED_OUTPUTS", "THRESHOLD_INPUTS", "thresholds",
           "from_end_to_end"]

OUTPUTS = ["num_dets", "boxes", "scores", "labels"]
DECODED_OUTPUTS = ["boxes", "scores"]
THRESHOLD_INPUTS = ["score_thr", "iou_thr"]  # the nms variant's inputs after "images"


@torch.library.custom_op("razorzoo::nms", mutates_args=())
def _nms(boxes: torch.Tensor, scores: torch.Tensor, max_per_class: int, iou_threshold: torch.Tensor,
         score_threshold: torch.Tensor) -> torch.Tensor:
    """ONNX ``NonMaxSuppression`` semantics: ``boxes (N, P, 4)``, ``scores (N, C, P)`` -> ``(K, 3)`` rows
    ``(image, class, box)`` of the kept boxes (score > threshold, per class IoU <= threshold); the thresholds are
    ``(1,)`` tensors."""
    rows = []
    for image in range(boxes.shape[0]):
        classes, candidates = (scores[image] > float(score_threshold)).nonzero().unbind(1)
        keep = batched_nms(boxes[image, candidates], scores[image, classes, candidates], classes,
                           float(iou_threshold))
        per_class = torch.zeros(scores.shape[1], dtype=torch.long)
        for k in keep.tolist():  # the per-class cap, in score order (reference path only, not exported)
            if per_class[classes[k]] < max_per_class:
                per_class[classes[k]] += 1
                rows.append((image, int(classes[k]), int(candidates[k])))
    return torch.tensor(rows, dtype=torch.long).view(-1, 3)


@_nms.register_fake
def _(boxes, scores, max_per_class, iou_threshold, score_threshold):
    return boxes.new_empty((torch.library.get_ctx().new_dynamic_size(), 3), dtype=torch.long)


def _nms_onnx(boxes, scores, max_per_class: int, iou_threshold, score_threshold):
    from onnxscript import opset18 as op

    return op.NonMaxSuppression(boxes, scores, op.Constant(value_ints=[max_per_class]), iou_threshold,
                                score_threshold, center_point_box=0)


TRANSLATIONS = {torch.ops.razorzoo.nms.default: _nms_onnx}  # for torch.onnx.export(custom_translation_table=)


class Decoded(nn.Module):
    """A detector with box decoding in the graph (the ``decoded`` variant): ``boxes (N, P, 4)`` xyxy in
    input-canvas pixels and ``scores (N, P, C)`` (sigmoid; times the objectness for YOLOv5) for all ``P`` priors.
    Decoding is :func:`razorzoo.detection.postprocess.decode_outputs`, the eager ``postprocess``'s own."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        boxes, scores, objectness = decode_outputs(self.detector(x), self.detector.coder, self.detector.recipe.strides)
        if objectness is not None:  # YOLOv5: its pre-filter obj > score_thr is implied, as cls * obj <= obj
            scores = scores * objectness[..., None]
        return boxes, scores


class EndToEnd(Decoded):
    """A detector with decoding, ``nms_pre``, score filtering, class-aware NMS and ``max_det`` in the graph; called
    with the images and the two thresholds (:func:`thresholds` makes them from a ``TestConfig``)."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__(detector)
        cfg = detector.test_cfg
        if not cfg.multi_label:
            raise RazorzooError("the 'nms' variant follows multi-label post-processing; this recipe is single-label")
        self.max_det, self.nms_pre, self.min_bbox_size = cfg.max_per_img, cfg.nms_pre, cfg.min_bbox_size

    def forward(self, x: torch.Tensor, score_thr: torch.Tensor, iou_thr: torch.Tensor) -> tuple[torch.Tensor, ...]:
        boxes, scores = super().forward(x)
        if self.min_bbox_size is not None and self.min_bbox_size >= 0:
            large = ((boxes[..., 2] - boxes[..., 0] > self.min_bbox_size)
                     & (boxes[..., 3] - boxes[..., 1] > self.min_bbox_size))
            scores = scores * large[..., None]
        n, p, c = scores.shape
        flat = scores.reshape(n, p * c)
        if self.nms_pre < p * c:  # keep the best nms_pre (box, class) pairs, like filter_scores_and_topk
            top = flat.topk(self.nms_pre, dim=1).indices
            flat = torch.zeros_like(flat).scatter(1, top, flat.gather(1, top))
        scores = flat.view(n, p, c).transpose(1, 2)  # (N, C, P) as NonMaxSuppression wants
        boxes, scores = boxes.float(), scores.float()  # float16 exports: runtimes' NMS takes float32
        selected = torch.ops.razorzoo.nms(boxes, scores.contiguous(), self.max_det, iou_thr, score_thr)
        kept = torch.zeros_like(scores).index_put((selected[:, 0], selected[:, 1], selected[:, 2]),
                                                  torch.ones_like(selected[:, 0], dtype=scores.dtype))
        best, index = torch.where(kept > 0, scores, -1.0).reshape(n, c * p).topk(self.max_det, dim=1)
        valid = best > 0
        # flat index = label * P + box, read from (C * P) tables: `//` and `%` by a free size do not export
        label_of = torch.arange(c, device=x.device)[:, None].expand(c, p).reshape(-1)
        box_of = torch.arange(p, device=x.device)[None, :].expand(c, p).reshape(-1)
        labels = torch.where(valid, label_of[index], -1)
        det_boxes = boxes.gather(1, box_of[index][..., None].expand(-1, -1, 4)) * valid[..., None]
        return valid.sum(1, keepdim=True), det_boxes, best.clamp(min=0), labels


def thresholds(test_cfg: "TestConfig") -> list[np.ndarray]:
    """The :data:`THRESHOLD_INPUTS` of an ``nms`` graph for ``test_cfg``, as float32 ``(1,)`` arrays."""
    return [np.array([test_cfg.score_thr], dtype=np.float32), np.array([test_cfg.iou_threshold], dtype=np.float32)]


def from_end_to_end(outputs: Sequence[torch.Tensor], metas: Sequence["ImageMeta"], class_names: Sequence[str],
                    max_det: int | None = None) -> list[Detections]:
    """:class:`EndToEnd` outputs -> :class:`Detections` in original-image pixels: undo the letterbox's centring
    and the resize, clamp to the image (the last steps of razorzoo's ``postprocess``); at most ``max_det`` per
    image (the rows are sorted by score, so fewer are the best of them)."""
    num_dets, boxes, scores, labels = outputs
    results = []
    for i, meta in enumerate(metas):
        k = int(num_dets[i, 0]) if max_det is None else min(int(num_dets[i, 0]), max_det)
        image_boxes = clip_boxes(rescale_boxes(boxes[i, :k].float(), meta), meta.ori_shape)
        results.append(Detections(image_boxes, scores[i, :k].float(), labels[i, :k].long(), tuple(class_names)))
    return results
