"""Box overlaps used by the training losses and assigners, each exactly as the upstream function it replaces.

Upstream has three IoU implementations with different ``eps`` handling, and the losses and assigners depend on
which one they call (docs/upstream.md §9.2):

* :func:`bbox_overlaps` — mmdet ``structures/bbox/bbox_overlaps.py`` (``BboxOverlaps2D``, ``GIoULoss``): the union
  and enclosing area are clamped to at least ``eps`` (1e-6).
* :func:`yolo_iou` — MMYOLO ``models/losses/iou_loss.py`` ``bbox_overlaps`` (``IoULoss``; CIoU for YOLOv5, GIoU for
  YOLOv6): ``eps`` (1e-7) is *added* to the union and the enclosing area, and the result is clamped to [-1, 1].
* :func:`yolov6_iou` — MMYOLO ``assigners/utils.py`` ``yolov6_iou_calculator`` (ATSS and task-aligned assigners):
  areas of inverted boxes clipped to 0, ``eps`` 1e-9 added to the union.

The operations follow upstream's order, so float32 results are bit-identical, not merely close.
"""
from __future__ import annotations

import math

import torch

__all__ = ["bbox_overlaps", "yolo_iou", "yolov6_iou", "cxcywh_to_xyxy"]


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """mmdet ``HorizontalBoxes.cxcywh_to_xyxy``: ``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)``."""
    center, size = boxes.split((2, 2), dim=-1)
    return torch.cat([center - size / 2, center + size / 2], dim=-1)


def bbox_overlaps(boxes1: torch.Tensor, boxes2: torch.Tensor, mode: str = "iou", *, is_aligned: bool = False,
                  eps: float = 1e-6) -> torch.Tensor:
    """mmdet ``bbox_overlaps`` (float32 on CPU and GPU alike): IoU or GIoU of xyxy boxes, ``(..., rows, cols)``
    pairwise or ``(..., rows)`` aligned. Leading batch dimensions must agree."""
    if mode not in ("iou", "giou"):
        raise ValueError(f"mode must be 'iou' or 'giou', not {mode!r}")
    rows, cols = boxes1.size(-2), boxes2.size(-2)
    batch_shape = boxes1.shape[:-2]
    if rows * cols == 0:
        return boxes1.new_zeros(batch_shape + ((rows,) if is_aligned else (rows, cols)))
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    if is_aligned:
        lt = torch.max(boxes1[..., :2], boxes2[..., :2])
        rb = torch.min(boxes1[..., 2:], boxes2[..., 2:])
        wh = (rb - lt).clamp(min=0)
        overlap = wh[..., 0] * wh[..., 1]
        union = area1 + area2 - overlap
        if mode == "giou":
            enclosed_lt = torch.min(boxes1[..., :2], boxes2[..., :2])
            enclosed_rb = torch.max(boxes1[..., 2:], boxes2[..., 2:])
    else:
        lt = torch.max(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
        rb = torch.min(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
        wh = (rb - lt).clamp(min=0)
        overlap = wh[..., 0] * wh[..., 1]
        union = area1[..., None] + area2[..., None, :] - overlap
        if mode == "giou":
            enclosed_lt = torch.min(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
            enclosed_rb = torch.max(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    eps_tensor = union.new_tensor([eps])
    union = torch.max(union, eps_tensor)
    ious = overlap / union
    if mode == "iou":
        return ious
    enclose_wh = (enclosed_rb - enclosed_lt).clamp(min=0)
    enclose_area = torch.max(enclose_wh[..., 0] * enclose_wh[..., 1], eps_tensor)
    return ious - (enclose_area - union) / enclose_area


def yolo_iou(pred: torch.Tensor, target: torch.Tensor, mode: str = "ciou", *, box_format: str = "xywh",
             eps: float = 1e-7) -> torch.Tensor:
    """MMYOLO's aligned ``bbox_overlaps`` of ``IoULoss``: CIoU or GIoU of ``pred`` vs ``target`` row by row,
    clamped to [-1, 1]. CIoU's ``alpha`` is computed without gradient, as upstream."""
    if mode not in ("ciou", "giou"):
        raise ValueError(f"mode must be 'ciou' or 'giou', not {mode!r}")
    if box_format == "xywh":
        pred, target = cxcywh_to_xyxy(pred), cxcywh_to_xyxy(target)
    b1_x1, b1_y1, b1_x2, b1_y2 = pred[..., 0], pred[..., 1], pred[..., 2], pred[..., 3]
    b2_x1, b2_y1, b2_x2, b2_y2 = target[..., 0], target[..., 1], target[..., 2], target[..., 3]
    overlap = ((torch.min(b1_x2, b2_x2) - torch.max(b1_x1, b2_x1)).clamp(0)
               * (torch.min(b1_y2, b2_y2) - torch.max(b1_y1, b2_y1)).clamp(0))
    w1, h1 = b1_x2 - b1_x1, b1_y2 - b1_y1
    w2, h2 = b2_x2 - b2_x1, b2_y2 - b2_y1
    union = (w1 * h1) + (w2 * h2) - overlap + eps
    h1 = b1_y2 - b1_y1 + eps
    h2 = b2_y2 - b2_y1 + eps
    ious = overlap / union
    enclose_wh = (torch.max(pred[..., 2:], target[..., 2:]) - torch.min(pred[..., :2], target[..., :2])).clamp(min=0)
    enclose_w, enclose_h = enclose_wh[..., 0], enclose_wh[..., 1]
    if mode == "ciou":
        enclose_area = enclose_w**2 + enclose_h**2 + eps
        rho2 = ((b2_x1 + b2_x2) - (b1_x1 + b1_x2)) ** 2 / 4 + ((b2_y1 + b2_y2) - (b1_y1 + b1_y2)) ** 2 / 4
        wh_ratio = (4 / (math.pi**2)) * torch.pow(torch.atan(w2 / h2) - torch.atan(w1 / h1), 2)
        with torch.no_grad():
            alpha = wh_ratio / (wh_ratio - ious + (1 + eps))
        ious = ious - ((rho2 / enclose_area) + (alpha * wh_ratio))
    else:
        convex_area = enclose_w * enclose_h + eps
        ious = ious - (convex_area - union) / convex_area
    return ious.clamp(min=-1.0, max=1.0)


def yolov6_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """MMYOLO ``yolov6_iou_calculator``: pairwise IoU ``(B, M1, M2)`` of batched xyxy boxes ``(B, M1, 4)`` and
    ``(B, M2, 4)``."""
    boxes1 = boxes1.unsqueeze(2)
    boxes2 = boxes2.unsqueeze(1)
    b1_x1y1, b1_x2y2 = boxes1[:, :, :, 0:2], boxes1[:, :, :, 2:4]
    b2_x1y1, b2_x2y2 = boxes2[:, :, :, 0:2], boxes2[:, :, :, 2:4]
    overlap = (torch.minimum(b1_x2y2, b2_x2y2) - torch.maximum(b1_x1y1, b2_x1y1)).clip(0).prod(-1)
    area1 = (b1_x2y2 - b1_x1y1).clip(0).prod(-1)
    area2 = (b2_x2y2 - b2_x1y1).clip(0).prod(-1)
    union = area1 + area2 - overlap + eps
    return overlap / union
