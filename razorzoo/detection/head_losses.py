"""The training losses of the three detector heads: raw head outputs + packed targets -> MMYOLO's loss terms.

Each function transcribes the head's ``loss_by_feat`` (``mmyolo@8c4d9dc5:mmyolo/models/dense_heads/``,
docs/upstream.md §9.5-§9.7), with upstream's loss names, weights and normalisations, so that the sum of the returned
terms is the scalar MMYOLO backpropagates (its ``parse_losses`` sums every term whose name contains ``loss``).
Targets are the rows of :func:`razorzoo.detection.targets.pack_targets`. Under ``torch.distributed`` the terms are
scaled by the world size as upstream does for YOLOv5/YOLOv6 (DDP averages gradients), and RTMDet's normaliser is
averaged across processes (``reduce_mean``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist

from razorzoo.arch.recipes import RTMDetTrainConfig, TrainConfig, YOLOv5TrainConfig, YOLOv6TrainConfig
from razorzoo.detection.assigners import (atss_assign, dynamic_soft_label_assign, task_aligned_assign, yolov5_match,
                                          yolov5_normalized_targets)
from razorzoo.detection.coders import decode_distance, point_priors
from razorzoo.detection.losses import bce_with_logits_loss, giou_loss, iou_loss, quality_focal_loss, varifocal_loss
from razorzoo.detection.targets import pad_per_image

__all__ = ["head_loss", "yolov5_loss", "yolov6_loss", "rtmdet_loss"]

Outputs = Sequence[Sequence[torch.Tensor]]

def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def yolov5_loss(outputs: Outputs, rows: torch.Tensor, *, config: YOLOv5TrainConfig,
                anchors: Sequence[Sequence[tuple[float, float]]], strides: Sequence[int], num_classes: int,
                batch_hw: Sequence[int]) -> dict[str, torch.Tensor]:
    """``YOLOv5Head.loss_by_feat`` (fast path, no ignore regions): ``loss_cls``, ``loss_obj``, ``loss_bbox``."""
    cls_scores, bbox_preds, objectnesses = outputs
    device = cls_scores[0].device
    num_levels = len(strides)
    num_priors = len(anchors[0])
    # the recipe's weight formulas (configs/yolov5/yolov5_s-v61_syncbn_8xb16-300e_coco.py, num_det_layers = 3)
    cls_weight = config.cls_weight * (num_classes / 80 * 3 / num_levels)
    bbox_weight = config.bbox_weight * (3 / num_levels)
    obj_weight = config.obj_weight * ((640 / 640) ** 2 * 3 / num_levels)
    base_sizes = torch.tensor(anchors, dtype=torch.float, device=device) \
        / torch.tensor(strides, dtype=torch.float, device=device)[:, None, None]

    targets = yolov5_normalized_targets(rows, batch_hw, num_priors)
    loss_cls, loss_box, loss_obj = (torch.zeros(1, device=device, dtype=cls_scores[0].dtype) for _ in range(3))
    for i in range(num_levels):
        batch_size, _, h, w = bbox_preds[i].shape
        target_obj = torch.zeros_like(objectnesses[i])
        level_obj_weight = config.obj_level_weights[i]
        positives = yolov5_match(targets, (h, w), base_sizes[i], prior_match_thr=config.prior_match_thr,
                                 near_neighbor_thr=config.near_neighbor_thr)
        if positives is None:
            loss_box += bbox_preds[i].sum() * 0
            loss_cls += cls_scores[i].sum() * 0
            loss_obj += obj_weight * bce_with_logits_loss(objectnesses[i], target_obj) * level_obj_weight
            continue
        img_inds, prior_inds, grid_y_inds, grid_x_inds, class_inds, box_targets = positives

        box_pred = bbox_preds[i].reshape(batch_size, num_priors, -1, h, w)[img_inds, prior_inds, :, grid_y_inds,
                                                                           grid_x_inds]
        box_pred = box_pred.sigmoid()
        decoded = torch.cat((box_pred[:, :2] * 2 - 0.5, (box_pred[:, 2:] * 2) ** 2 * base_sizes[i][prior_inds]),
                            dim=-1)
        level_box_loss, iou = iou_loss(decoded, box_targets, "ciou", box_format="xywh", eps=config.ciou_eps)
        loss_box += bbox_weight * level_box_loss

        target_obj[img_inds, prior_inds, grid_y_inds, grid_x_inds] = iou.detach().clamp(0).type(target_obj.dtype)
        loss_obj += obj_weight * bce_with_logits_loss(objectnesses[i], target_obj) * level_obj_weight

        if num_classes > 1:
            cls_pred = cls_scores[i].reshape(batch_size, num_priors, -1, h, w)[img_inds, prior_inds, :, grid_y_inds,
                                                                               grid_x_inds]
            target_class = torch.full_like(cls_pred, 0.)
            target_class[range(len(class_inds)), class_inds] = 1.
            loss_cls += cls_weight * bce_with_logits_loss(cls_pred, target_class)
        else:
            loss_cls += cls_scores[i].sum() * 0

    batch_size, world_size = bbox_preds[-1].shape[0], _world_size()
    return {"loss_cls": (loss_cls * batch_size * world_size)[0], "loss_obj": (loss_obj * batch_size * world_size)[0],
            "loss_bbox": (loss_box * batch_size * world_size)[0]}


def yolov6_loss(outputs: Outputs, rows: torch.Tensor, *, config: YOLOv6TrainConfig, prior_offset: float,
                strides: Sequence[int], num_classes: int, epoch: int) -> dict[str, torch.Tensor]:
    """``YOLOv6Head.loss_by_feat``: ``loss_cls`` (VarifocalLoss / assigned score sum), ``loss_bbox`` (GIoU)."""
    cls_scores, bbox_preds = outputs[:2]
    num_imgs = cls_scores[0].shape[0]
    priors, num_level_priors = _priors_with_strides(cls_scores, strides, prior_offset)
    stride_tensor = priors[..., [2]]
    gt_labels, gt_bboxes, pad_flag = _padded_targets(rows, num_imgs)

    flat_cls = torch.cat([c.permute(0, 2, 3, 1).reshape(num_imgs, -1, num_classes) for c in cls_scores], dim=1)
    flat_boxes = torch.cat([b.permute(0, 2, 3, 1).reshape(num_imgs, -1, 4) for b in bbox_preds], dim=1)
    flat_boxes = decode_distance(priors[..., :2], flat_boxes, stride_tensor[:, 0])
    if epoch < config.initial_epoch:
        assigned = atss_assign(flat_boxes.detach(), priors, num_level_priors, gt_labels, gt_bboxes, pad_flag,
                               num_classes=num_classes, topk=config.atss_topk)
    else:
        assigned = task_aligned_assign(flat_boxes.detach(), flat_cls.sigmoid().detach(), priors, gt_labels,
                                       gt_bboxes, pad_flag, num_classes=num_classes, topk=config.tal_topk,
                                       alpha=config.tal_alpha, beta=config.tal_beta, eps=config.tal_eps)
    assigned_bboxes = assigned["assigned_bboxes"] / stride_tensor
    assigned_scores = assigned["assigned_scores"]
    fg_mask = assigned["fg_mask_pre_prior"]

    loss_cls = config.cls_weight * varifocal_loss(flat_cls, assigned_scores, alpha=config.vfl_alpha,
                                                  gamma=config.vfl_gamma, reduction="sum")
    flat_boxes = flat_boxes / stride_tensor
    scores_sum = assigned_scores.sum()
    if scores_sum > 0:
        loss_cls /= scores_sum
    if fg_mask.sum() > 0:
        box_mask = fg_mask.unsqueeze(-1).repeat([1, 1, 4])
        pred_pos = torch.masked_select(flat_boxes, box_mask).reshape([-1, 4])
        target_pos = torch.masked_select(assigned_bboxes, box_mask).reshape([-1, 4])
        box_weight = torch.masked_select(assigned_scores.sum(-1), fg_mask).unsqueeze(-1)
        loss_bbox = config.bbox_weight * iou_loss(pred_pos, target_pos, "giou", box_format="xyxy",
                                                  weight=box_weight, avg_factor=scores_sum)[0]
    else:
        loss_bbox = flat_boxes.sum() * 0
    world_size = _world_size()
    return {"loss_cls": loss_cls * world_size, "loss_bbox": loss_bbox * world_size}


def rtmdet_loss(outputs: Outputs, rows: torch.Tensor, *, config: RTMDetTrainConfig, prior_offset: float,
                strides: Sequence[int], num_classes: int) -> dict[str, torch.Tensor]:
    """``RTMDetHead.loss_by_feat``: ``loss_cls`` (QualityFocalLoss), ``loss_bbox`` (GIoU), both averaged by the
    sum of the matched predictions' IoUs (at least 1)."""
    cls_scores, bbox_preds = outputs[:2]
    num_imgs = cls_scores[0].shape[0]
    priors, _ = _priors_with_strides(cls_scores, strides, prior_offset)
    gt_labels, gt_bboxes, pad_flag = _padded_targets(rows, num_imgs)

    flat_cls = torch.cat([c.permute(0, 2, 3, 1).reshape(num_imgs, -1, num_classes) for c in cls_scores],
                         1).contiguous()
    flat_boxes = torch.cat([b.permute(0, 2, 3, 1).reshape(num_imgs, -1, 4) for b in bbox_preds], 1)
    flat_boxes = flat_boxes * priors[..., -1, None]
    points = priors[..., :2]
    flat_boxes = torch.stack([points[..., 0] - flat_boxes[..., 0], points[..., 1] - flat_boxes[..., 1],
                              points[..., 0] + flat_boxes[..., 2], points[..., 1] + flat_boxes[..., 3]], -1)
    assigned = dynamic_soft_label_assign(flat_boxes.detach(), flat_cls.detach(), priors, gt_labels, gt_bboxes,
                                         pad_flag, num_classes=num_classes, topk=config.dsl_topk,
                                         iou_weight=config.dsl_iou_weight,
                                         soft_center_radius=config.dsl_soft_center_radius)
    labels = assigned["assigned_labels"].reshape(-1)
    label_weights = assigned["assigned_labels_weights"].reshape(-1)
    box_targets = assigned["assigned_bboxes"].reshape(-1, 4)
    metrics = assigned["assign_metrics"].reshape(-1)
    cls_preds = flat_cls.reshape(-1, num_classes)
    box_preds = flat_boxes.reshape(-1, 4)
    pos_inds = ((labels >= 0) & (labels < num_classes)).nonzero().squeeze(1)
    avg_factor = _reduce_mean(metrics.sum()).clamp_(min=1).item()
    loss_cls = config.cls_weight * quality_focal_loss(cls_preds, labels, metrics, beta=config.qfl_beta,
                                                      weight=label_weights, avg_factor=avg_factor)
    if len(pos_inds) > 0:
        loss_bbox = config.bbox_weight * giou_loss(box_preds[pos_inds], box_targets[pos_inds],
                                                   weight=metrics[pos_inds], avg_factor=avg_factor)
    else:
        loss_bbox = box_preds.sum() * 0
    return {"loss_cls": loss_cls, "loss_bbox": loss_bbox}


def _reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """mmdet ``reduce_mean``: the mean over processes under ``torch.distributed``, else the tensor itself."""
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor.div_(dist.get_world_size()), op=dist.ReduceOp.SUM)
    return tensor


def _priors_with_strides(cls_scores: Sequence[torch.Tensor], strides: Sequence[int],
                         offset: float) -> tuple[torch.Tensor, list[int]]:
    """``MlvlPointGenerator.grid_priors(..., with_stride=True)``: rows ``(x, y, stride, stride)``, and the number
    of priors per level."""
    sizes = [tuple(c.shape[-2:]) for c in cls_scores]
    points = point_priors(sizes, strides, offset).to(cls_scores[0].device)
    counts = [h * w for h, w in sizes]
    level_strides = torch.cat([torch.full((n,), float(s)) for n, s in zip(counts, strides)]).to(points.device)
    return torch.cat([points, level_strides[:, None], level_strides[:, None]], dim=1), counts


def _padded_targets(rows: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image padded ``gt_labels (B, M, 1)``, ``gt_bboxes (B, M, 4)`` and ``pad_bbox_flag (B, M, 1)``.

    Upstream marks a row as padding when its coordinates sum to 0 or less (``gt_bboxes.sum(-1) > 0``), so a real
    box at the top-left corner with ``x1 + y1 + x2 + y2 <= 0`` is ignored, as it is upstream.
    """
    padded = pad_per_image(rows, batch_size)
    gt_bboxes = padded[:, :, 1:]
    return padded[:, :, :1], gt_bboxes, (gt_bboxes.sum(-1, keepdim=True) > 0).float()


def head_loss(config: TrainConfig, outputs: Outputs, rows: torch.Tensor, *, coder: object, strides: Sequence[int],
              num_classes: int, batch_hw: Sequence[int], epoch: int) -> dict[str, torch.Tensor]:
    """The loss terms of the head a recipe's ``train_cfg`` describes (``batch_hw``: the batch's height, width)."""
    if isinstance(config, YOLOv5TrainConfig):
        return yolov5_loss(outputs, rows, config=config, anchors=coder.anchors, strides=strides,
                           num_classes=num_classes, batch_hw=batch_hw)
    if isinstance(config, YOLOv6TrainConfig):
        return yolov6_loss(outputs, rows, config=config, prior_offset=coder.prior_offset, strides=strides,
                           num_classes=num_classes, epoch=epoch)
    return rtmdet_loss(outputs, rows, config=config, prior_offset=coder.prior_offset, strides=strides,
                       num_classes=num_classes)
