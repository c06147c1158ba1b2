"""The loss functions of the three detector recipes, each as the mmdet/MMYOLO loss class it replaces (docs/upstream.md
§9.3): the same formula, the same ``weight``/``avg_factor``/``reduction`` handling, the same operation order.

``loss_weight`` is applied by the callers (``razorzoo.detection.head_losses``), as upstream's loss modules do after
reduction.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from razorzoo.detection.iou import bbox_overlaps, yolo_iou

__all__ = ["weight_reduce_loss", "bce_with_logits_loss", "iou_loss", "giou_loss", "varifocal_loss",
           "quality_focal_loss"]


def weight_reduce_loss(loss: torch.Tensor, weight: torch.Tensor | None = None, reduction: str = "mean",
                       avg_factor: float | torch.Tensor | None = None) -> torch.Tensor:
    """mmdet ``weight_reduce_loss``: multiply by ``weight``, then ``mean``/``sum``, or ``sum / (avg_factor + eps)``
    (float32 machine epsilon) when ``avg_factor`` is given with ``mean``."""
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        if reduction == "mean":
            return loss.mean()
        if reduction == "sum":
            return loss.sum()
        return loss
    if reduction == "mean":
        return loss.sum() / (avg_factor + torch.finfo(torch.float32).eps)
    if reduction == "none":
        return loss
    raise ValueError('avg_factor can not be used with reduction="sum"')


def bce_with_logits_loss(pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """mmdet ``CrossEntropyLoss(use_sigmoid=True)`` with same-shape float targets: every element is valid
    (weight 1), so this is ``binary_cross_entropy_with_logits`` reduced by ``weight_reduce_loss``."""
    valid = ((target >= 0) & (target != -100)).float()
    loss = F.binary_cross_entropy_with_logits(pred, target.float(), reduction="none")
    return weight_reduce_loss(loss, valid, reduction)


def iou_loss(pred: torch.Tensor, target: torch.Tensor, mode: str, *, box_format: str, eps: float = 1e-7,
             weight: torch.Tensor | None = None, avg_factor: float | torch.Tensor | None = None,
             reduction: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """MMYOLO ``IoULoss`` (CIoU/GIoU): ``(reduced 1 - iou, iou)``. With a ``weight`` that has no positive entry the
    loss is ``(pred * weight).sum()`` (a zero that keeps the graph), exactly as upstream."""
    if weight is not None and not torch.any(weight > 0):
        if pred.dim() == weight.dim() + 1:
            weight = weight.unsqueeze(1)
        return (pred * weight).sum(), pred.new_zeros(pred.shape[:-1])
    if weight is not None and weight.dim() > 1:
        weight = weight.mean(-1)
    iou = yolo_iou(pred, target, mode, box_format=box_format, eps=eps)
    return weight_reduce_loss(1.0 - iou, weight, reduction, avg_factor), iou


def giou_loss(pred: torch.Tensor, target: torch.Tensor, *, weight: torch.Tensor | None = None,
              avg_factor: float | torch.Tensor | None = None, eps: float = 1e-6,
              reduction: str = "mean") -> torch.Tensor:
    """mmdet ``GIoULoss`` on aligned xyxy boxes (``eps`` 1e-6 through :func:`bbox_overlaps`)."""
    if weight is not None and not torch.any(weight > 0):
        if pred.dim() == weight.dim() + 1:
            weight = weight.unsqueeze(1)
        return (pred * weight).sum()
    if weight is not None and weight.dim() > 1:
        weight = weight.mean(-1)
    loss = 1 - bbox_overlaps(pred, target, "giou", is_aligned=True, eps=eps)
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


def varifocal_loss(pred: torch.Tensor, target: torch.Tensor, *, alpha: float = 0.75, gamma: float = 2.0,
                   iou_weighted: bool = True, reduction: str = "mean",
                   avg_factor: float | torch.Tensor | None = None) -> torch.Tensor:
    """mmdet ``VarifocalLoss`` (sigmoid): positives (``target > 0``) weighted by their IoU-aware target, negatives
    by ``alpha * |sigmoid(pred) - target| ** gamma``."""
    pred_sigmoid = pred.sigmoid()
    target = target.type_as(pred)
    positive = (target > 0.0).float()
    negative = alpha * (pred_sigmoid - target).abs().pow(gamma) * (target <= 0.0).float()
    focal_weight = (target * positive if iou_weighted else positive) + negative
    loss = F.binary_cross_entropy_with_logits(pred, target, reduction="none") * focal_weight
    return weight_reduce_loss(loss, None, reduction, avg_factor)


def quality_focal_loss(pred: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, *, beta: float = 2.0,
                       weight: torch.Tensor | None = None, avg_factor: float | torch.Tensor | None = None,
                       reduction: str = "mean") -> torch.Tensor:
    """mmdet ``QualityFocalLoss`` (sigmoid, label + score targets): each row's loss summed over classes.

    ``pred`` is ``(N, C)`` logits; ``labels`` ``(N,)`` with ``C`` for background; ``scores`` ``(N,)`` the soft
    targets of the positives' label.
    """
    pred_sigmoid = pred.sigmoid()
    scale_factor = pred_sigmoid
    zero_label = scale_factor.new_zeros(pred.shape)
    loss = F.binary_cross_entropy_with_logits(pred, zero_label, reduction="none") * scale_factor.pow(beta)
    background = pred.size(1)
    pos = ((labels >= 0) & (labels < background)).nonzero().squeeze(1)
    pos_label = labels[pos].long()
    scale_factor = scores[pos] - pred_sigmoid[pos, pos_label]
    loss[pos, pos_label] = F.binary_cross_entropy_with_logits(
        pred[pos, pos_label], scores[pos], reduction="none") * scale_factor.abs().pow(beta)
    return weight_reduce_loss(loss.sum(dim=1, keepdim=False), weight, reduction, avg_factor)
