"""Non-maximum suppression exactly like mmcv's CPU ops (``nms``, ``batched_nms``), in plain PyTorch.

Upstream's visiting order and float32 IoU formula are kept, so the same boxes survive (docs/upstream.md §6.4).
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["nms", "batched_nms"]

# mmcv.ops.batched_nms switches from one NMS over offset boxes to one NMS per class at this many candidates
_NMS_SPLIT_THR = 10000
# rows of sorted boxes whose suppression is settled per step of `_greedy` (trades Python overhead for wasted IoUs)
_NMS_BLOCK = 128


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, max_num: int = -1) -> torch.Tensor:
    """Greedy NMS exactly like ``mmcv/ops/csrc/pytorch/cpu/nms.cpp`` (``offset=0``): visit boxes by descending score
    (``scores.sort(0, descending=True)``), drop every later box whose IoU with a kept one is ``> iou_threshold``.

    Returns the kept indices, best first; with ``max_num > 0`` it stops after that many.
    """
    return _greedy(boxes, scores.sort(0, descending=True)[1], iou_threshold, max_num)


def _greedy(boxes: torch.Tensor, order: torch.Tensor, iou_threshold: float, max_num: int = -1) -> torch.Tensor:
    """Greedy NMS visiting ``boxes`` in ``order``; the kept indices in that order (at most ``max_num`` if > 0).

    Blocks of boxes are settled together: the boxes kept so far suppress the whole block in one IoU matrix, one more
    resolves it internally, so the work grows with (boxes visited) x (boxes kept), and with ``max_num`` it stops
    once that many are kept, however many candidates wait behind them.
    """
    x1, y1, x2, y2 = boxes[order].float().unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    kept = torch.zeros(0, dtype=torch.long, device=boxes.device)
    for start in range(0, len(order), _NMS_BLOCK):
        rows = torch.arange(start, min(start + _NMS_BLOCK, len(order)), device=boxes.device)
        if len(kept):  # earlier kept boxes come first in the order: they suppress before anything in the block
            rows = rows[~(_iou(x1, y1, x2, y2, areas, rows, kept) > iou_threshold).any(1)]
        if len(rows) == 0:
            continue
        overlaps = (_iou(x1, y1, x2, y2, areas, rows, rows) > iou_threshold).cpu().numpy()
        alive = np.ones(len(rows), dtype=bool)
        for i in range(len(rows)):  # inside the block the order decides: an earlier kept row removes later ones
            if alive[i]:
                alive[i + 1:] &= ~overlaps[i, i + 1:]
        kept = torch.cat([kept, rows[torch.from_numpy(alive).to(rows.device)]])
        if 0 < max_num <= len(kept):
            kept = kept[:max_num]
            break
    return order[kept]


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
    per label and re-sorts; that path is reproduced too, as its tie order differs: each label's boxes are visited in
    the order of their own sort, and since offset boxes of different labels never overlap, all labels are visited
    together, best score first. ``max_num > 0`` keeps only the best ``max_num``, and stops visiting once that many
    are kept (a box's fate depends only on better boxes of its label, so the rest could only tie the last one).
    """
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    offsets = labels.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
    boxes_for_nms = boxes + offsets[:, None]
    if len(boxes) < _NMS_SPLIT_THR:
        return nms(boxes_for_nms, scores, iou_threshold, max_num)
    per_label = []
    for label in torch.unique(labels):
        members = (labels == label).nonzero().view(-1)
        per_label.append(members[scores[members].sort(descending=True)[1]])
    order = torch.cat(per_label)
    order = order[scores[order].sort(descending=True, stable=True)[1]]  # keeps each label's own order of ties
    keep = _greedy(boxes_for_nms, order, iou_threshold, max_num).sort().values  # mmcv: kept in index order,
    keep = keep[scores[keep].sort(descending=True)[1]]  # then sorted by score
    return keep[:max_num] if max_num > 0 else keep
