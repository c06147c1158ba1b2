"""Raw head outputs -> boxes in original-image pixels: MMYOLO's ``predict_by_feat`` in plain PyTorch (docs/upstream.md
docs/upstream.md §6.4).

The steps, per image: the coder's priors for every feature-map cell and its box decoding, sigmoid scores (times the
objectness for YOLOv5, after a pre-filter on it), multi-label top-k, undoing the letterbox and resize, class-aware
NMS, ``max_per_img``, clamping to the image. Tensor operations follow the upstream ones in the same order so that
results match bit for bit wherever the inputs are well separated (docs/upstream.md §7.19).
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from razorzoo.arch.recipes import TestConfig
from razorzoo.bounded import check_number
from razorzoo.detection.nms import batched_nms
from razorzoo.detection.results import Detections
from razorzoo.detection.sort_prefix import sort_prefix
from razorzoo.errors import RazorzooError

if TYPE_CHECKING:
    from razorzoo.detection.coders import BoxCoder
    from razorzoo.detection.transforms import ImageMeta

__all__ = ["filter_scores_and_topk", "with_overrides", "flatten_levels", "decode_outputs", "rescale_boxes",
           "clip_boxes", "postprocess"]


def filter_scores_and_topk(scores: torch.Tensor, score_thr: float, topk: int
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mmdet ``filter_scores_and_topk`` for a ``(num_boxes, num_classes)`` matrix: every (box, class) pair with
    ``score > score_thr``, best first, at most ``topk``. Returns ``(scores, labels, box_indices)``.

    The order is upstream's ``Tensor.sort(descending=True)`` of the valid scores, equal scores included, but only its
    first ``topk`` places are computed (:func:`~razorzoo.detection.sort_prefix.sort_prefix`): at the evaluation
    threshold that is 30000 places of two million scores, whose full sort would cost more than the network.
    """
    flat = scores.detach().cpu().numpy().reshape(-1)  # row-major (box, class): the order of torch.nonzero
    valid = flat > np.float32(score_thr)
    if valid.all():  # the evaluation threshold on a dense model: no gather needed
        kept = sort_prefix(flat.copy(), topk)
    else:
        positions = np.flatnonzero(valid)
        kept = sort_prefix(flat[positions], topk, positions)
    kept = torch.from_numpy(kept).to(scores.device)
    num_classes = scores.shape[1]
    return scores.reshape(-1)[kept], kept % num_classes, kept // num_classes


def with_overrides(test_cfg: TestConfig, *, score_thr: float | None = None, iou_thr: float | None = None,
                   max_det: int | None = None) -> TestConfig:
    """``test_cfg`` with the user's thresholds, each checked: scores and IoUs in 0..1, at least one detection."""
    changes: dict[str, float | int] = {}
    if score_thr is not None:
        changes["score_thr"] = check_number(score_thr, "score_thr", minimum=0, maximum=1)
    if iou_thr is not None:
        changes["iou_threshold"] = check_number(iou_thr, "iou_thr", minimum=0, maximum=1)
    if max_det is not None:
        changes["max_per_img"] = check_number(max_det, "max_det", minimum=1, integer=True)
    return replace(test_cfg, **changes)


def flatten_levels(maps: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    """Per-level ``(N, A*width, H, W)`` maps -> ``(N, P, width)``: row ``(y * W + x) * A + a`` of each level, the
    order of the coder's priors."""
    return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, width) for m in maps], dim=1)


def decode_outputs(raw_outputs: Sequence[Sequence[torch.Tensor]], coder: "BoxCoder", strides: Sequence[int]
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Head outputs -> ``boxes (N, P, 4)`` (xyxy, input-canvas pixels), sigmoid class ``scores (N, P, C)`` and
    sigmoid ``objectness (N, P)`` (``None`` without objectness outputs), for all ``P`` priors, before any filtering."""
    cls_scores, bbox_preds, *rest = raw_outputs
    objectnesses = rest[0] if rest else None
    if coder.needs_objectness and objectnesses is None:
        raise RazorzooError("the yolov5 box coder needs objectness outputs: pass (cls_scores, bbox_preds, objectnesses)")
    featmap_sizes = [tuple(c.shape[2:]) for c in cls_scores]
    num_base_priors = coder.num_base_priors
    priors = coder.grid_priors(featmap_sizes, strides).to(cls_scores[0].device)
    num_classes = cls_scores[0].shape[1] // num_base_priors
    flat_stride = torch.cat([priors.new_full((h * w * num_base_priors,), stride)
                             for (h, w), stride in zip(featmap_sizes, strides)])
    scores = flatten_levels(cls_scores, num_classes).sigmoid_()  # in place: flatten_levels made a new tensor
    boxes = coder.decode(priors[None], flatten_levels(bbox_preds, 4), flat_stride)
    objectness = flatten_levels(objectnesses, 1)[..., 0].sigmoid() if objectnesses is not None else None
    return boxes, scores, objectness


def rescale_boxes(boxes: torch.Tensor, meta: "ImageMeta") -> torch.Tensor:
    """Input-canvas boxes -> original-image pixels: undo the letterbox's centring, then the resize (not clipped)."""
    if meta.pad_param is not None:
        top, _, left, _ = meta.pad_param
        boxes = boxes - boxes.new_tensor([left, top, left, top])
    return boxes / boxes.new_tensor(meta.scale_factor).repeat((1, 2))


def clip_boxes(boxes: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Clamp xyxy ``boxes`` in place to an image of ``shape`` ``(h, w)``; returns them."""
    height, width = shape
    boxes[:, 0::2].clamp_(0, width)
    boxes[:, 1::2].clamp_(0, height)
    return boxes


def postprocess(
    raw_outputs: Sequence[Sequence[torch.Tensor]],
    metas: Sequence["ImageMeta"],
    *,
    coder: "BoxCoder",
    test_cfg: TestConfig,
    strides: Sequence[int],
    class_names: Sequence[str],
) -> list[Detections]:
    """Detector outputs -> one :class:`Detections` per image, in original-image pixels (MMYOLO ``predict_by_feat``).

    Args:
        raw_outputs: ``(cls_scores, bbox_preds)`` or ``(cls_scores, bbox_preds, objectnesses)``, each a list with one
            ``(N, C, H, W)`` tensor per level (what ``Detector.forward`` returns).
        metas: one :class:`~razorzoo.detection.transforms.ImageMeta` per image, as the detector's transform made it.
        coder: priors and box decoding (:func:`razorzoo.detection.coders.build_coder`).
        test_cfg: thresholds and limits (:func:`with_overrides` applies a user's).
        strides: feature stride of each level. class_names: name of each label.
    """
    score_thr, nms_pre = test_cfg.score_thr, test_cfg.nms_pre
    boxes_all, scores_all, objectness_all = decode_outputs(raw_outputs, coder, strides)
    multi_label = test_cfg.multi_label and scores_all.shape[-1] > 1
    results = []
    for i, meta in enumerate(metas):
        boxes, scores = boxes_all[i], scores_all[i]
        if objectness_all is not None:
            objectness = objectness_all[i]
            if score_thr > 0:  # YOLOv5 drops low-objectness boxes before multiplying (docs/upstream.md §7.19)
                confident = objectness > score_thr
                if not bool(confident.all()):  # (copying all of them would change nothing)
                    boxes, scores, objectness = boxes[confident], scores[confident], objectness[confident]
            scores = scores * objectness[:, None]
        if multi_label:
            scores, labels, keep = filter_scores_and_topk(scores, score_thr, nms_pre)
        else:
            scores, labels = scores.max(1, keepdim=True)
            scores, _, keep = filter_scores_and_topk(scores, score_thr, nms_pre)
            labels = labels[keep, 0]
        boxes = rescale_boxes(boxes[keep], meta)  # before NMS, as upstream rescales first
        min_bbox_size = test_cfg.min_bbox_size
        if min_bbox_size is not None and min_bbox_size >= 0:
            large = (boxes[:, 2] - boxes[:, 0] > min_bbox_size) & (boxes[:, 3] - boxes[:, 1] > min_bbox_size)
            boxes, scores, labels = boxes[large], scores[large], labels[large]
        keep = batched_nms(boxes, scores, labels, test_cfg.iou_threshold, test_cfg.max_per_img)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        clip_boxes(boxes, meta.ori_shape)
        results.append(Detections(boxes.float(), scores.float(), labels.long(), tuple(class_names)))
    return results
