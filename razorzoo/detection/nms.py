"""Non-maximum suppression exactly like mmcv's CPU ops (``nms``, ``batched_nms``), in plain PyTorch.

Upstream's visiting order and float32 IoU formula are kept, so the same boxes survive (docs/upstream.md §6.4).
"""
from __future__ import annotations

import torch

__all__ = ["nms", "batched_nms"]

# mmcv.ops.batched_nms switches from one NMS over offset boxes to one NMS per class at this many candidates
_NMS_SPLIT_THR = 10000
# rows of sorted boxes whose suppression is settled per step of `nms` (trades Python overhead for wasted IoUs)
_NMS_BLOCK = 128


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
