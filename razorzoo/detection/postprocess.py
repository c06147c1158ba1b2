"""Raw head outputs -> boxes in original-image pixels: MMYOLO's ``predict_by_feat`` in plain PyTorch (§6.4).

The steps, per image: priors for every feature-map cell, box decoding (YOLOv5 anchors or distances from points),
sigmoid scores (times the objectness for YOLOv5, after a pre-filter on it), multi-label top-k, undoing the letterbox
and resize, class-aware NMS, ``max_per_img``, clamping to the image. Tensor operations follow the upstream ones in
the same order so that results match bit for bit wherever the inputs are well separated (§7.19).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from razorzoo.detection.results import Detections
from razorzoo.errors import RazorzooError

__all__ = ["anchor_priors", "point_priors", "decode_yolov5", "decode_distance", "filter_scores_and_topk", "nms",
           "batched_nms", "postprocess"]

# mmcv.ops.batched_nms switches from one NMS over offset boxes to one NMS per class at this many candidates
_NMS_SPLIT_THR = 10000
# rows of sorted boxes whose suppression is settled per step of `nms` (trades Python overhead for wasted IoUs)
_NMS_BLOCK = 128


def anchor_priors(featmap_sizes: Sequence[tuple[int, int]], strides: Sequence[int],
                  anchors: Sequence[Sequence[tuple[float, float]]]) -> torch.Tensor:
    """mmdet ``YOLOAnchorGenerator.grid_priors``: xyxy anchors, rows ordered (level, y, x, anchor)."""
    priors = []
    for (h, w), stride, sizes in zip(featmap_sizes, strides, anchors):
        center = stride / 2.0
        base = torch.tensor([[center - 0.5 * aw, center - 0.5 * ah, center + 0.5 * aw, center + 0.5 * ah]
                             for aw, ah in sizes], dtype=torch.float32)
        xx, yy = _grid(h, w, stride, 0.0)
        shifts = torch.stack([xx, yy, xx, yy], dim=-1)
        priors.append((base[None, :, :] + shifts[:, None, :]).view(-1, 4))
    return torch.cat(priors)


def point_priors(featmap_sizes: Sequence[tuple[int, int]], strides: Sequence[int], offset: float) -> torch.Tensor:
    """mmdet ``MlvlPointGenerator.grid_priors``: ``((x + offset) * s, (y + offset) * s)``, rows ordered (level, y, x)."""
    return torch.cat([torch.stack(_grid(h, w, stride, offset), dim=-1)
                      for (h, w), stride in zip(featmap_sizes, strides)])


def _grid(h: int, w: int, stride: int, offset: float) -> tuple[torch.Tensor, torch.Tensor]:
    shift_x = ((torch.arange(w) + offset) * stride).float()
    shift_y = ((torch.arange(h) + offset) * stride).float()
    return shift_x.repeat(h), shift_y.view(-1, 1).repeat(1, w).view(-1)


def decode_yolov5(priors: torch.Tensor, deltas: torch.Tensor, stride: torch.Tensor) -> torch.Tensor:
    """MMYOLO ``YOLOv5BBoxCoder.decode``: sigmoid offsets of up to two strides around the anchor centre, sizes
    ``(2 * sigmoid)^2`` times the anchor's."""
    deltas = deltas.sigmoid()
    x_center = (priors[..., 0] + priors[..., 2]) * 0.5
    y_center = (priors[..., 1] + priors[..., 3]) * 0.5
    w = priors[..., 2] - priors[..., 0]
    h = priors[..., 3] - priors[..., 1]
    x = (deltas[..., 0] - 0.5) * 2 * stride + x_center
    y = (deltas[..., 1] - 0.5) * 2 * stride + y_center
    w = (deltas[..., 2] * 2) ** 2 * w
    h = (deltas[..., 3] * 2) ** 2 * h
    return torch.stack((x - w / 2, y - h / 2, x + w / 2, y + h / 2), dim=-1)


def decode_distance(points: torch.Tensor, distances: torch.Tensor, stride: torch.Tensor) -> torch.Tensor:
    """MMYOLO ``DistancePointBBoxCoder.decode``: (left, top, right, bottom) distances in strides, not clipped."""
    distances = distances * stride[None, :, None]
    return torch.stack([points[..., 0] - distances[..., 0], points[..., 1] - distances[..., 1],
                        points[..., 0] + distances[..., 2], points[..., 1] + distances[..., 3]], dim=-1)


def filter_scores_and_topk(scores: torch.Tensor, score_thr: float, topk: int
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mmdet ``filter_scores_and_topk`` for a ``(num_boxes, num_classes)`` matrix: every (box, class) pair with
    ``score > score_thr``, best first, at most ``topk``. Returns ``(scores, labels, box_indices)``.

    Uses ``Tensor.sort(descending=True)`` like upstream, so equal scores come out in the same order.
    """
    valid_mask = scores > score_thr
    scores = scores[valid_mask]
    valid_idxs = torch.nonzero(valid_mask)
    num_topk = min(topk, valid_idxs.size(0))
    scores, idxs = scores.sort(descending=True)
    keep_idxs, labels = valid_idxs[idxs[:num_topk]].unbind(dim=1)
    return scores[:num_topk], labels, keep_idxs


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, max_num: int = -1) -> torch.Tensor:
    """Greedy NMS exactly like ``mmcv/ops/csrc/pytorch/cpu/nms.cpp`` (``offset=0``): visit boxes by descending score
    (``scores.sort(0, descending=True)``), drop every later box whose IoU with a kept one is ``> iou_threshold``.

    Returns the kept indices, best first; with ``max_num > 0`` it stops after that many. Blocks of boxes are
    settled together: one IoU matrix per block resolves it internally, and its kept boxes then suppress all later
    boxes in one vectorized step, so the Python loop runs once per block, not once per box.
    """
    order = scores.sort(0, descending=True)[1]
    x1, y1, x2, y2 = boxes[order].float().unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    alive = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    keep: list[torch.Tensor] = []
    num_kept = 0
    for start in range(0, len(order), _NMS_BLOCK):
        stop = min(start + _NMS_BLOCK, len(order))
        rows = torch.arange(start, stop, device=boxes.device)[alive[start:stop]]
        if len(rows) == 0:
            continue
        # settle the block: earlier blocks already suppressed what they could, the rest depends on order inside it
        overlaps: dict[int, list[int]] = {}
        for i, j in (_iou(x1, y1, x2, y2, areas, rows, rows) > iou_threshold).triu(1).nonzero().tolist():
            overlaps.setdefault(i, []).append(j)
        kept_in_block: list[int] = []
        dead: set[int] = set()
        for i in range(len(rows)):
            if i not in dead:
                kept_in_block.append(i)
                dead.update(overlaps.get(i, ()))
        kept = rows[kept_in_block]
        if max_num > 0 and num_kept + len(kept) >= max_num:
            keep.append(kept[: max_num - num_kept])
            break
        keep.append(kept)
        num_kept += len(kept)
        later = torch.arange(stop, len(order), device=boxes.device)[alive[stop:]]
        if len(later):
            suppressed = (_iou(x1, y1, x2, y2, areas, kept, later) > iou_threshold).any(0)
            alive[later[suppressed]] = False
    return order[torch.cat(keep)] if keep else order[:0]


def _iou(x1, y1, x2, y2, areas, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """IoU matrix of boxes ``rows`` x ``cols`` with nms.cpp's float32 formula (no +1 offset)."""
    w = (torch.minimum(x2[rows, None], x2[None, cols]) - torch.maximum(x1[rows, None], x1[None, cols])).clamp_(min=0)
    h = (torch.minimum(y2[rows, None], y2[None, cols]) - torch.maximum(y1[rows, None], y1[None, cols])).clamp_(min=0)
    inter = w * h
    return inter / (areas[rows, None] + areas[None, cols] - inter)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float,
                max_num: int = -1) -> torch.Tensor:
    """Class-aware NMS like ``mmcv.ops.batched_nms``; returns kept indices sorted by descending score.

    Boxes of different labels are moved apart by ``label * (boxes.max() + 1)`` before an ordinary NMS (upstream's
    trick, kept because it also decides the float rounding of the IoUs). From 10000 candidates on, mmcv runs one NMS
    per label and re-sorts; that path is reproduced too, as its tie order differs. ``max_num > 0`` keeps only the
    best ``max_num`` (and lets each NMS stop early).
    """
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    offsets = labels.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
    boxes_for_nms = boxes + offsets[:, None]
    if len(boxes) < _NMS_SPLIT_THR:
        return nms(boxes_for_nms, scores, iou_threshold, max_num)
    kept = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    for label in torch.unique(labels):
        members = (labels == label).nonzero().view(-1)
        kept[members[nms(boxes_for_nms[members], scores[members], iou_threshold, max_num)]] = True
    keep = kept.nonzero().view(-1)
    keep = keep[scores[keep].sort(descending=True)[1]]
    return keep[:max_num] if max_num > 0 else keep


def postprocess(
    raw_outputs: Sequence[Sequence[torch.Tensor]],
    metas: Sequence[dict[str, Any]],
    *,
    decode: dict[str, Any],
    test_cfg: dict[str, Any],
    strides: Sequence[int],
    class_names: Sequence[str],
    score_thr: float | None = None,
    iou_thr: float | None = None,
    max_det: int | None = None,
) -> list[Detections]:
    """Detector outputs -> one :class:`Detections` per image, in original-image pixels (MMYOLO ``predict_by_feat``).

    Args:
        raw_outputs: ``(cls_scores, bbox_preds)`` or ``(cls_scores, bbox_preds, objectnesses)``, each a list with one
            ``(N, C, H, W)`` tensor per level (what ``Detector.forward`` returns).
        metas: per image ``ori_shape`` (h, w), ``scale_factor`` (w, h) and, for letterboxed inputs, ``pad_param``
            (top, bottom, left, right), as :func:`razorzoo.detection.transforms.preprocess` returns them.
        decode: ``{"coder": "yolov5", "anchors": [[(w, h), ...] per level]}`` or
            ``{"coder": "distance", "prior_offset": 0.5 | 0.0}``.
        test_cfg: ``multi_label``, ``nms_pre``, ``score_thr``, ``iou_threshold``, ``max_per_img``, ``min_bbox_size``.
        strides: feature stride of each level. class_names: name of each label.
        score_thr, iou_thr, max_det: override ``test_cfg``'s ``score_thr``, ``iou_threshold``, ``max_per_img``.
    """
    cls_scores, bbox_preds, *rest = raw_outputs
    objectnesses = rest[0] if rest else None
    if decode["coder"] == "yolov5" and objectnesses is None:
        raise RazorzooError("the yolov5 box coder needs objectness outputs: pass (cls_scores, bbox_preds, objectnesses)")
    score_thr = test_cfg["score_thr"] if score_thr is None else float(score_thr)
    iou_thr = test_cfg["iou_threshold"] if iou_thr is None else float(iou_thr)
    max_det = test_cfg["max_per_img"] if max_det is None else int(max_det)
    if max_det < 1:
        raise RazorzooError(f"max_det must be a positive number of detections per image, got {max_det}")
    num_images = cls_scores[0].shape[0]
    featmap_sizes = [tuple(c.shape[2:]) for c in cls_scores]
    if decode["coder"] == "yolov5":
        priors = anchor_priors(featmap_sizes, strides, decode["anchors"])
        num_base_priors, coder = len(decode["anchors"][0]), decode_yolov5
    elif decode["coder"] == "distance":
        priors = point_priors(featmap_sizes, strides, decode["prior_offset"])
        num_base_priors, coder = 1, decode_distance
    else:
        raise RazorzooError(f"unknown box coder {decode['coder']!r}; expected 'yolov5' or 'distance'")
    num_classes = cls_scores[0].shape[1] // num_base_priors
    multi_label = test_cfg.get("multi_label", True) and num_classes > 1
    min_bbox_size = test_cfg.get("min_bbox_size")
    priors = priors.to(cls_scores[0].device)
    flat_stride = torch.cat([priors.new_full((h * w * num_base_priors,), stride)
                             for (h, w), stride in zip(featmap_sizes, strides)])

    def flatten(maps: Sequence[torch.Tensor], width: int) -> torch.Tensor:
        # (N, A*width, H, W) -> (N, H*W*A, width): row ((y * W + x) * A + a), the order of the priors
        return torch.cat([m.permute(0, 2, 3, 1).reshape(num_images, -1, width) for m in maps], dim=1)

    scores_all = flatten(cls_scores, num_classes).sigmoid()
    boxes_all = coder(priors[None], flatten(bbox_preds, 4), flat_stride)
    objectness_all = flatten(objectnesses, 1)[..., 0].sigmoid() if objectnesses is not None else None

    results = []
    for i, meta in enumerate(metas):
        boxes, scores = boxes_all[i], scores_all[i]
        if objectness_all is not None:
            objectness = objectness_all[i]
            if score_thr > 0:  # YOLOv5 drops low-objectness boxes before multiplying (§7.19)
                confident = objectness > score_thr
                boxes, scores, objectness = boxes[confident], scores[confident], objectness[confident]
            scores = scores * objectness[:, None]
        if multi_label:
            scores, labels, keep = filter_scores_and_topk(scores, score_thr, test_cfg["nms_pre"])
        else:
            scores, labels = scores.max(1, keepdim=True)
            scores, _, keep = filter_scores_and_topk(scores, score_thr, test_cfg["nms_pre"])
            labels = labels[keep, 0]
        boxes = boxes[keep]
        # undo LetterResize's centring, then the resize (before NMS, as upstream rescales first)
        if "pad_param" in meta:
            top, _, left, _ = meta["pad_param"]
            boxes = boxes - boxes.new_tensor([left, top, left, top])
        boxes = boxes / boxes.new_tensor(meta["scale_factor"]).repeat((1, 2))
        if min_bbox_size is not None and min_bbox_size >= 0:
            large = (boxes[:, 2] - boxes[:, 0] > min_bbox_size) & (boxes[:, 3] - boxes[:, 1] > min_bbox_size)
            boxes, scores, labels = boxes[large], scores[large], labels[large]
        keep = batched_nms(boxes, scores, labels, iou_thr, max_det)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        height, width = meta["ori_shape"][:2]
        boxes[:, 0::2].clamp_(0, width)
        boxes[:, 1::2].clamp_(0, height)
        results.append(Detections(boxes.float(), scores.float(), labels.long(), tuple(class_names)))
    return results
