"""Training targets: checking what a user passes to ``Detector.loss`` and packing it the way MMYOLO's heads read it.

The user-facing form is torchvision's: one dict per image, ``{"boxes": M x 4 xyxy in batch pixels, "labels": M
int64}``. Upstream's fast path (``yolov5_collate``) packs a batch into rows ``[image, label, x1, y1, x2, y2]``, and
the point-based heads pad them per image (``gt_instances_preprocess``); both forms are built here, once.

What is refused, and why (docs/upstream.md §9.1): non-finite numbers, boxes with ``x2 < x1`` or ``y2 < y1``, labels
outside ``0 .. num_classes - 1``, and coordinates outside the batch canvas (upstream's pipelines clip every box to the
canvas; YOLOv5's matching would index outside the feature map). Boxes of zero width or height are accepted and
treated exactly as upstream treats them (never matched by YOLOv5's or YOLOv6's assigners; RTMDet's assigner still
gives each one prior).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from razorzoo.errors import RazorzooError

__all__ = ["TargetError", "pack_targets", "pad_per_image"]


class TargetError(RazorzooError, ValueError):
    """Malformed training targets or batch."""


def pack_targets(targets: Sequence[Mapping[str, Any]], batch: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Check ``targets`` against the normalized ``batch`` (``N x 3 x H x W``) and return the float32 rows
    ``[image, label, x1, y1, x2, y2]`` (image order, then the order given), on the batch's device (float64 for a
    float64 batch: a double-precision run stays double throughout)."""
    if not isinstance(batch, torch.Tensor) or batch.dim() != 4 or batch.shape[1] != 3:
        shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
        raise TargetError(f"the batch must be an N x 3 x H x W tensor, got {shape}")
    if not batch.is_floating_point():
        raise TargetError(f"the batch must be normalized floats (Detector.preprocess), got {batch.dtype}")
    if isinstance(targets, Mapping) or not isinstance(targets, Sequence):
        raise TargetError("targets must be a list with one {'boxes': ..., 'labels': ...} dict per image")
    if len(targets) != batch.shape[0]:
        raise TargetError(f"got {len(targets)} target dicts for a batch of {batch.shape[0]} images")
    height, width = batch.shape[-2:]
    rows = []
    for index, target in enumerate(targets):
        boxes, labels = _image_targets(target, index)
        where = f"targets[{index}]"
        if not torch.isfinite(boxes).all():
            raise TargetError(f"{where}['boxes'] holds NaN or infinite coordinates")
        if boxes.numel():
            if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
                row = int(((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).nonzero()[0])
                raise TargetError(f"{where}['boxes'][{row}] has x2 < x1 or y2 < y1; boxes are (x1, y1, x2, y2)")
            outside = (boxes[:, :2] < 0).any(1) | (boxes[:, 2] > width) | (boxes[:, 3] > height)
            if outside.any():
                row = int(outside.nonzero()[0])
                raise TargetError(f"{where}['boxes'][{row}] leaves the {width} x {height} batch; clip boxes to "
                                  f"the image they are in (batch pixels)")
            bad = (labels < 0) | (labels >= num_classes)
            if bad.any():
                row = int(bad.nonzero()[0])
                raise TargetError(f"{where}['labels'][{row}] = {int(labels[row])} is not a class of this "
                                  f"{num_classes}-class detector (0..{num_classes - 1})")
        image = torch.full((len(boxes), 1), float(index))
        rows.append(torch.cat([image, labels[:, None].float(), boxes], dim=1))
    packed = torch.cat(rows) if rows else torch.zeros((0, 6))
    return packed.to(batch.device, torch.float64 if batch.dtype == torch.float64 else torch.float32)


def _image_targets(target: Any, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    where = f"targets[{index}]"
    if not isinstance(target, Mapping) or "boxes" not in target or "labels" not in target:
        raise TargetError(f"{where} must be a dict with 'boxes' (M x 4) and 'labels' (M)")
    try:
        boxes = torch.as_tensor(target["boxes"]).detach().cpu()
        labels = torch.as_tensor(target["labels"]).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise TargetError(f"{where}: 'boxes' and 'labels' must be tensors or arrays of numbers") from None
    if boxes.numel() == 0 and labels.numel() == 0:
        return torch.zeros((0, 4)), torch.zeros((0,), dtype=torch.int64)
    if boxes.dim() != 2 or boxes.shape[1] != 4 or not (boxes.is_floating_point() or _is_integer(boxes)):
        raise TargetError(f"{where}['boxes'] must be M x 4 numbers (x1, y1, x2, y2), got shape {tuple(boxes.shape)}")
    if labels.dim() != 1 or not _is_integer(labels):
        raise TargetError(f"{where}['labels'] must be a 1-D integer tensor, got {labels.dtype} of shape "
                          f"{tuple(labels.shape)}")
    if len(labels) != len(boxes):
        raise TargetError(f"{where} has {len(boxes)} boxes but {len(labels)} labels")
    return boxes.float(), labels.long()


def _is_integer(tensor: torch.Tensor) -> bool:
    return not tensor.is_floating_point() and not tensor.is_complex() and tensor.dtype != torch.bool


def pad_per_image(rows: torch.Tensor, batch_size: int) -> torch.Tensor:
    """MMYOLO ``gt_instances_preprocess`` (fast path): rows -> ``(B, max boxes per image, 5)`` ``[label, x1, y1, x2,
    y2]``, zero-padded after each image's boxes."""
    if len(rows) == 0:
        return torch.zeros((batch_size, 0, 5), dtype=rows.dtype, device=rows.device)
    image_indexes = rows[:, 0]
    max_boxes = image_indexes.unique(return_counts=True)[1].max()
    padded = torch.zeros((batch_size, max_boxes, 5), dtype=rows.dtype, device=rows.device)
    for i in range(batch_size):
        match = image_indexes == i
        count = match.sum()
        if count:
            padded[i, :count] = rows[match, 1:]
    return padded
