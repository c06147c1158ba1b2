"""Label assignment: which priors learn which ground-truth box, and with what soft score.

YOLOv5's anchor matching (:func:`yolov5_match`, from ``YOLOv5Head.loss_by_feat``: anchors whose width and height
ratios to the box are under ``prior_match_thr``, in the box's cell and the two neighbouring cells its centre is
nearest to), and three batched assigners of the point-based heads, each a transcription of the MMYOLO class
(``mmyolo@8c4d9dc5:mmyolo/models/task_modules/assigners/``, docs/upstream.md §9.4) that keeps its operation order, its ``eps`` values and its tie-breaks
(``torch.topk``, ``argmax`` and ``sort`` pick among equal values exactly as upstream's calls do, because they are the
same calls on the same shapes):

* :func:`atss_assign` — YOLOv6's initial assigner (``BatchATSSAssigner``): per level the ``topk`` priors nearest to
  each box centre, kept where their IoU with a ``5 * stride`` prior box exceeds the mean + std of the candidates'.
* :func:`task_aligned_assign` — YOLOv6 (``BatchTaskAlignedAssigner``): the ``topk`` priors by
  ``score ** alpha * iou ** beta``, soft targets normalised per box.
* :func:`dynamic_soft_label_assign` — RTMDet (``BatchDynamicSoftLabelAssigner``): a cost of soft-label BCE,
  ``-log(iou)`` and a centre prior, with ``k`` per box from the sum of its top IoUs.

Inputs are padded per image: ``gt_labels`` ``(B, M, 1)``, ``gt_bboxes`` ``(B, M, 4)`` xyxy and ``pad_bbox_flag``
``(B, M, 1)`` (1 for real boxes). Everything runs without gradient.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F

from razorzoo.detection.iou import bbox_overlaps, yolov6_iou

__all__ = ["yolov5_normalized_targets", "yolov5_match", "YOLOv5Positives", "atss_assign", "task_aligned_assign",
           "dynamic_soft_label_assign", "select_candidates_in_gts", "select_highest_overlaps"]

# YOLOv5: the cell itself and its left, up, right and bottom neighbours (mmyolo YOLOv5Head.special_init). A list, not
# a module-level tensor: the module may first be imported under `with torch.device("meta")` (razorzoo.weights.keys).
_GRID_OFFSETS = [[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]]


class YOLOv5Positives(NamedTuple):
    """YOLOv5's positives on one level, one entry per (box, anchor, cell): indices into the ``(B, A, H, W)`` maps,
    the box's label, and its target ``(x, y, w, h)`` in cells (``x, y`` relative to the cell's corner, in -0.5..1.5)."""

    image: torch.Tensor
    prior: torch.Tensor
    grid_y: torch.Tensor
    grid_x: torch.Tensor
    label: torch.Tensor
    box: torch.Tensor


def yolov5_normalized_targets(rows: torch.Tensor, batch_hw: Sequence[int], num_priors: int) -> torch.Tensor:
    """``YOLOv5Head._convert_gt_to_norm_format``: ``(num_priors, num_boxes, 7)`` rows ``[image, label, cx, cy, w, h,
    prior]``, the box normalized by the batch's height and width (``batch_input_shape``)."""
    height, width = batch_hw
    rows = rows.clone()
    xy1, xy2 = rows[:, 2:].split((2, 2), dim=-1)
    xywh = torch.cat([(xy2 + xy1) / 2, (xy2 - xy1)], dim=-1)
    xywh[:, 1::2] /= height
    xywh[:, 0::2] /= width
    rows[:, 2:] = xywh
    normed = rows.repeat(num_priors, 1, 1)
    prior_inds = torch.arange(num_priors, device=rows.device).float().view(num_priors, 1)
    return torch.cat((normed, prior_inds.repeat(1, normed.shape[1])[..., None]), 2)


def yolov5_match(targets: torch.Tensor, featmap_hw: Sequence[int], base_sizes: torch.Tensor, *,
                 prior_match_thr: float = 4.0, near_neighbor_thr: float = 0.5) -> YOLOv5Positives | None:
    """The positives of one level (``base_sizes``: its anchors' ``(w, h)`` in cells), or None when no box matches.

    ``targets`` are :func:`yolov5_normalized_targets`. A box matches an anchor when ``max(r, 1/r) <
    prior_match_thr`` for both its width and height ratio ``r``; each match is positive in the box centre's cell and
    in the left/up/right/bottom neighbour whose side the centre is within ``near_neighbor_thr`` of (not on the map's
    outer cells).
    """
    if targets.shape[1] == 0:
        return None
    h, w = featmap_hw
    scaled_factor = torch.ones(7, device=targets.device)
    scaled_factor[2:6] = torch.tensor([w, h, w, h])
    scaled = targets * scaled_factor
    wh_ratio = scaled[..., 4:6] / base_sizes[:, None]
    matched = scaled[torch.max(wh_ratio, 1 / wh_ratio).max(2)[0] < prior_match_thr]
    if matched.shape[0] == 0:
        return None
    cxcy = matched[:, 2:4]
    from_far_side = scaled_factor[[2, 3]] - cxcy
    left, up = ((cxcy % 1 < near_neighbor_thr) & (cxcy > 1)).T
    right, bottom = ((from_far_side % 1 < near_neighbor_thr) & (from_far_side > 1)).T
    offset_inds = torch.stack((torch.ones_like(left), left, up, right, bottom))
    matched = matched.repeat((5, 1, 1))[offset_inds]
    grid_offsets = torch.tensor(_GRID_OFFSETS, device=targets.device).float()[:, None]
    offsets = grid_offsets.repeat(1, offset_inds.shape[1], 1)[offset_inds]

    img_class_inds, grid_xy, grid_wh, prior_inds = matched.chunk(4, 1)
    prior_inds, (img_inds, class_inds) = prior_inds.long().view(-1), img_class_inds.long().T
    grid_xy_long = (grid_xy - offsets * near_neighbor_thr).long()
    grid_x_inds, grid_y_inds = grid_xy_long.T
    return YOLOv5Positives(img_inds, prior_inds, grid_y_inds, grid_x_inds, class_inds,
                           torch.cat((grid_xy - grid_xy_long, grid_wh), 1))


def select_candidates_in_gts(points: torch.Tensor, gt_bboxes: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """``(B, M, N)`` float mask of the prior points strictly inside each box (by more than ``eps``)."""
    batch_size, num_gt, _ = gt_bboxes.size()
    gt_bboxes = gt_bboxes.reshape([-1, 4])
    num_points = points.size(0)
    points = points.unsqueeze(0).repeat(batch_size * num_gt, 1, 1)
    gt_lt = gt_bboxes[:, 0:2].unsqueeze(1).repeat(1, num_points, 1)
    gt_rb = gt_bboxes[:, 2:4].unsqueeze(1).repeat(1, num_points, 1)
    deltas = torch.cat([points - gt_lt, gt_rb - points], dim=-1).reshape([batch_size, num_gt, num_points, -1])
    return (deltas.min(axis=-1)[0] > eps).to(gt_bboxes.dtype)


def select_highest_overlaps(pos_mask: torch.Tensor, overlaps: torch.Tensor,
                            num_gt: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A prior claimed by several boxes keeps only the one it overlaps most (``argmax``: the first on ties).

    Returns ``(gt index per prior (B, N), foreground mask (B, N), pos_mask (B, M, N))``.
    """
    fg_mask = pos_mask.sum(axis=-2)
    if fg_mask.max() > 1:
        multi_gts = (fg_mask.unsqueeze(1) > 1).repeat([1, num_gt, 1])
        is_max = F.one_hot(overlaps.argmax(axis=1), num_gt).permute(0, 2, 1).to(overlaps.dtype)
        pos_mask = torch.where(multi_gts, is_max, pos_mask)
        fg_mask = pos_mask.sum(axis=-2)
    return pos_mask.argmax(axis=-2), fg_mask, pos_mask


def _empty_result(batch_size: int, num_priors: int, num_classes: int, like: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "assigned_labels": like.new_full([batch_size, num_priors], num_classes),
        "assigned_bboxes": like.new_full([batch_size, num_priors, 4], 0),
        "assigned_scores": like.new_full([batch_size, num_priors, num_classes], 0),
        "fg_mask_pre_prior": like.new_full([batch_size, num_priors], 0),
    }


@torch.no_grad()
def atss_assign(pred_bboxes: torch.Tensor | None, priors: torch.Tensor, num_level_priors: Sequence[int],
                gt_labels: torch.Tensor, gt_bboxes: torch.Tensor, pad_bbox_flag: torch.Tensor, *, num_classes: int,
                topk: int = 9) -> dict[str, torch.Tensor]:
    """MMYOLO ``BatchATSSAssigner``. ``priors`` are ``(N, 4)`` rows ``(x, y, stride_w, stride_h)``.

    Returns ``assigned_labels (B, N)`` (``num_classes`` = background), ``assigned_bboxes (B, N, 4)``,
    ``assigned_scores (B, N, C)`` (one-hot, times the prediction's IoU when ``pred_bboxes`` is given) and
    ``fg_mask_pre_prior (B, N)``.
    """
    half = priors[:, 2:] * 2.5
    prior_boxes = torch.zeros_like(priors)
    prior_boxes[:, :2] = priors[:, :2] - half
    prior_boxes[:, 2:] = priors[:, :2] + half
    batch_size = gt_bboxes.size(0)
    num_gt, num_priors = gt_bboxes.size(1), prior_boxes.size(0)
    result = _empty_result(batch_size, num_priors, num_classes, gt_bboxes)
    if num_gt == 0:
        return result

    overlaps = bbox_overlaps(gt_bboxes.reshape([-1, 4]), prior_boxes).reshape([batch_size, -1, num_priors])
    distances, prior_points = _center_distances(gt_bboxes.reshape([-1, 4]), prior_boxes)
    distances = distances.reshape([batch_size, -1, num_priors])
    is_in_candidate, candidate_idxs = _atss_topk_candidates(distances, num_level_priors, pad_bbox_flag, topk)
    threshold, candidate_overlaps = _atss_threshold(is_in_candidate, candidate_idxs, overlaps, num_priors,
                                                    batch_size, num_gt)
    is_pos = torch.where(candidate_overlaps > threshold.repeat([1, 1, num_priors]), is_in_candidate,
                         torch.zeros_like(is_in_candidate))
    pos_mask = is_pos * select_candidates_in_gts(prior_points, gt_bboxes) * pad_bbox_flag
    gt_idx, fg_mask, pos_mask = select_highest_overlaps(pos_mask, overlaps, num_gt)

    batch_index = torch.arange(batch_size, dtype=gt_labels.dtype, device=gt_labels.device)[..., None]
    flat_idx = (gt_idx + batch_index * num_gt).long().flatten()
    labels = gt_labels.flatten()[flat_idx].reshape([batch_size, num_priors])
    labels = torch.where(fg_mask > 0, labels, torch.full_like(labels, num_classes))
    bboxes = gt_bboxes.reshape([-1, 4])[flat_idx].reshape([batch_size, num_priors, 4])
    scores = F.one_hot(labels.long(), num_classes + 1).float()[:, :, :num_classes]
    if pred_bboxes is not None:
        ious = (yolov6_iou(gt_bboxes, pred_bboxes) * pos_mask).max(axis=-2)[0].unsqueeze(-1)
        scores *= ious
    result.update(assigned_labels=labels.long(), assigned_bboxes=bboxes, assigned_scores=scores,
                  fg_mask_pre_prior=fg_mask.bool())
    return result


def _center_distances(bboxes: torch.Tensor, priors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances between box centres ``(M, 2)`` and prior-box centres ``(N, 2)``, and the prior centres."""
    box_points = torch.stack(((bboxes[:, 0] + bboxes[:, 2]) / 2.0, (bboxes[:, 1] + bboxes[:, 3]) / 2.0), dim=1)
    prior_points = torch.stack(((priors[:, 0] + priors[:, 2]) / 2.0, (priors[:, 1] + priors[:, 3]) / 2.0), dim=1)
    return (box_points[:, None, :] - prior_points[None, :, :]).pow(2).sum(-1).sqrt(), prior_points


def _atss_topk_candidates(distances: torch.Tensor, num_level_priors: Sequence[int], pad_bbox_flag: torch.Tensor,
                          topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    is_in_candidate_list, candidate_idxs = [], []
    start = 0
    pad_flag = pad_bbox_flag.repeat(1, 1, topk).bool()
    for level_distances, level_priors in zip(torch.split(distances, list(num_level_priors), dim=-1),
                                             num_level_priors):
        k = min(topk, level_priors)
        _, idxs = level_distances.topk(k, dim=-1, largest=False)
        candidate_idxs.append(idxs + start)
        # upstream masks with all `topk` columns and fails on a level of fewer priors; the first k are the same mask
        idxs = torch.where(pad_flag[..., :k], idxs, torch.zeros_like(idxs))
        is_in = F.one_hot(idxs, level_priors).sum(dim=-2)
        is_in = torch.where(is_in > 1, torch.zeros_like(is_in), is_in)
        is_in_candidate_list.append(is_in.to(distances.dtype))
        start += level_priors
    return torch.cat(is_in_candidate_list, dim=-1), torch.cat(candidate_idxs, dim=-1)


def _atss_threshold(is_in_candidate: torch.Tensor, candidate_idxs: torch.Tensor, overlaps: torch.Tensor,
                    num_priors: int, batch_size: int, num_gt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per box: mean + std (unbiased) of its candidates' IoUs; and the IoUs masked to candidates."""
    candidate_overlaps = torch.where(is_in_candidate > 0, overlaps, torch.zeros_like(overlaps))
    candidate_idxs = candidate_idxs.reshape([batch_size * num_gt, -1])
    offsets = (num_priors * torch.arange(batch_size * num_gt, device=candidate_idxs.device))[:, None]
    picked = candidate_overlaps.reshape(-1)[candidate_idxs + offsets].reshape([batch_size, num_gt, -1])
    return picked.mean(axis=-1, keepdim=True) + picked.std(axis=-1, keepdim=True), candidate_overlaps


@torch.no_grad()
def task_aligned_assign(pred_bboxes: torch.Tensor, pred_scores: torch.Tensor, priors: torch.Tensor,
                        gt_labels: torch.Tensor, gt_bboxes: torch.Tensor, pad_bbox_flag: torch.Tensor, *,
                        num_classes: int, topk: int = 13, alpha: float = 1.0, beta: float = 6.0,
                        eps: float = 1e-7) -> dict[str, torch.Tensor]:
    """MMYOLO ``BatchTaskAlignedAssigner`` (IoU by :func:`yolov6_iou`). ``pred_scores`` are probabilities
    ``(B, N, C)``; the result has the keys of :func:`atss_assign`."""
    points = priors[:, :2]
    batch_size, num_gt = pred_scores.size(0), gt_bboxes.size(1)
    result = {
        "assigned_labels": gt_bboxes.new_full(pred_scores[..., 0].shape, num_classes),
        "assigned_bboxes": gt_bboxes.new_full(pred_bboxes.shape, 0),
        "assigned_scores": gt_bboxes.new_full(pred_scores.shape, 0),
        "fg_mask_pre_prior": gt_bboxes.new_full(pred_scores[..., 0].shape, 0),
    }
    if num_gt == 0:
        return result

    # box metrics: the predicted score of each box's class, times IoU
    idx = torch.zeros([2, batch_size, num_gt], dtype=torch.long)
    idx[0] = torch.arange(end=batch_size).view(-1, 1).repeat(1, num_gt)
    idx[1] = gt_labels.to(torch.long).squeeze(-1)
    box_scores = pred_scores.permute(0, 2, 1)[idx[0], idx[1]]
    overlaps = yolov6_iou(gt_bboxes, pred_bboxes)
    alignment = box_scores.pow(alpha) * overlaps.pow(beta)

    is_in_gts = select_candidates_in_gts(points, gt_bboxes)
    topk_mask = pad_bbox_flag.repeat([1, 1, topk]).bool()
    metrics = alignment * is_in_gts
    num_priors = metrics.shape[-1]
    _, topk_idxs = torch.topk(metrics, topk, axis=-1, largest=True)
    topk_idxs = torch.where(topk_mask, topk_idxs, torch.zeros_like(topk_idxs))
    is_in_topk = F.one_hot(topk_idxs, num_priors).sum(axis=-2)
    is_in_topk = torch.where(is_in_topk > 1, torch.zeros_like(is_in_topk), is_in_topk).to(metrics.dtype)
    pos_mask = is_in_topk * is_in_gts * pad_bbox_flag

    gt_idx, fg_mask, pos_mask = select_highest_overlaps(pos_mask, overlaps, num_gt)
    batch_ind = torch.arange(end=batch_size, dtype=torch.int64, device=gt_labels.device)[..., None]
    gt_idx = gt_idx + batch_ind * num_gt
    labels = gt_labels.long().flatten()[gt_idx]
    bboxes = gt_bboxes.reshape([-1, 4])[gt_idx]
    labels[labels < 0] = 0
    scores = F.one_hot(labels, num_classes)
    scores = torch.where(fg_mask[:, :, None].repeat(1, 1, num_classes) > 0, scores, torch.full_like(scores, 0))

    alignment *= pos_mask
    pos_align = alignment.max(axis=-1, keepdim=True)[0]
    pos_overlaps = (overlaps * pos_mask).max(axis=-1, keepdim=True)[0]
    norm_align = (alignment * pos_overlaps / (pos_align + eps)).max(-2)[0].unsqueeze(-1)
    result.update(assigned_labels=labels, assigned_bboxes=bboxes, assigned_scores=scores * norm_align,
                  fg_mask_pre_prior=fg_mask.bool())
    return result


_DSL_INF = 100000000
_DSL_EPS = 1.0e-7


@torch.no_grad()
def dynamic_soft_label_assign(pred_bboxes: torch.Tensor, pred_logits: torch.Tensor, priors: torch.Tensor,
                              gt_labels: torch.Tensor, gt_bboxes: torch.Tensor, pad_bbox_flag: torch.Tensor, *,
                              num_classes: int, topk: int = 13, iou_weight: float = 3.0,
                              soft_center_radius: float = 3.0) -> dict[str, torch.Tensor]:
    """MMYOLO ``BatchDynamicSoftLabelAssigner`` (IoU by mmdet :func:`bbox_overlaps`). ``pred_logits`` are class
    logits ``(B, N, C)``; ``priors`` rows ``(x, y, stride_w, stride_h)``.

    Returns ``assigned_labels (B, N)`` (``num_classes`` = background), ``assigned_labels_weights (B, N)``,
    ``assigned_bboxes (B, N, 4)`` and ``assign_metrics (B, N)`` (the matched prediction's IoU).
    """
    num_gt = gt_bboxes.size(1)
    batch_size, num_bboxes, _ = pred_bboxes.size()
    if num_gt == 0 or num_bboxes == 0:
        return {
            "assigned_labels": gt_labels.new_full(pred_logits[..., 0].shape, num_classes, dtype=torch.long),
            "assigned_labels_weights": gt_bboxes.new_full(pred_logits[..., 0].shape, 1),
            "assigned_bboxes": gt_bboxes.new_full(pred_bboxes.shape, 0),
            "assign_metrics": gt_bboxes.new_full(pred_logits[..., 0].shape, 0),
        }
    prior_centers = priors[:, :2]
    lt = prior_centers[:, None, None] - gt_bboxes[..., :2]
    rb = gt_bboxes[..., 2:] - prior_centers[:, None, None]
    is_in_gts = torch.cat([lt, rb], dim=-1).min(dim=-1).values > 0
    is_in_gts = (is_in_gts * pad_bbox_flag[..., 0][None]).permute(1, 0, 2)
    valid_mask = is_in_gts.sum(dim=-1) > 0

    gt_centers = (gt_bboxes[..., :2] + gt_bboxes[..., 2:]) / 2.0
    strides = priors[..., 2]
    distance = (priors[None].unsqueeze(2)[..., :2] - gt_centers[:, None, :, :]).pow(2).sum(-1).sqrt() \
        / strides[None, :, None]
    distance = distance * valid_mask.unsqueeze(-1)
    soft_center_prior = torch.pow(10, distance - soft_center_radius)

    pairwise_ious = bbox_overlaps(pred_bboxes, gt_bboxes)
    iou_cost = -torch.log(pairwise_ious + _DSL_EPS) * iou_weight

    idx = torch.zeros([2, batch_size, num_gt], dtype=torch.long)
    idx[0] = torch.arange(end=batch_size).view(-1, 1).repeat(1, num_gt)
    idx[1] = gt_labels.long().squeeze(-1)
    pairwise_logits = pred_logits.permute(0, 2, 1)[idx[0], idx[1]].permute(0, 2, 1)
    scale_factor = pairwise_ious - pairwise_logits.sigmoid()
    cls_cost = F.binary_cross_entropy_with_logits(pairwise_logits, pairwise_ious, reduction="none") \
        * scale_factor.abs().pow(2.0)
    cost = cls_cost + iou_cost + soft_center_prior
    cost = torch.where(valid_mask[..., None].repeat(1, 1, num_gt), cost, torch.ones_like(cost) * _DSL_INF)

    matched_ious, matched_gt_inds, fg_mask = _dynamic_k_matching(cost, pairwise_ious, pad_bbox_flag, topk)
    batch_index = (fg_mask > 0).nonzero(as_tuple=True)[0]
    labels = gt_labels.new_full(pred_logits[..., 0].shape, num_classes)
    labels[fg_mask] = gt_labels[batch_index, matched_gt_inds].squeeze(-1)
    bboxes = gt_bboxes.new_full(pred_bboxes.shape, 0)
    bboxes[fg_mask] = gt_bboxes[batch_index, matched_gt_inds]
    metrics = gt_bboxes.new_full(pred_logits[..., 0].shape, 0)
    metrics[fg_mask] = matched_ious
    return {
        "assigned_labels": labels.long(),
        "assigned_labels_weights": gt_bboxes.new_full(pred_logits[..., 0].shape, 1),
        "assigned_bboxes": bboxes,
        "assign_metrics": metrics,
    }


def _dynamic_k_matching(cost: torch.Tensor, pairwise_ious: torch.Tensor, pad_bbox_flag: torch.Tensor,
                        topk: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each box takes its ``k`` cheapest priors (``k`` = the sum of its top IoUs, at least 1); a prior taken by
    several boxes keeps the cheapest (``torch.min``: the first on ties)."""
    matching = torch.zeros_like(cost, dtype=torch.uint8)
    topk_ious, _ = torch.topk(pairwise_ious, min(topk, pairwise_ious.size(1)), dim=1)
    dynamic_ks = torch.clamp(topk_ious.sum(1).int(), min=1)
    num_gts = pad_bbox_flag.sum((1, 2)).int()
    _, sorted_indices = torch.sort(cost, dim=1)
    for b in range(pad_bbox_flag.shape[0]):
        for gt_idx in range(num_gts[b]):
            matching[b, :, gt_idx][sorted_indices[b, :dynamic_ks[b, gt_idx], gt_idx]] = 1
    multi = matching.sum(2) > 1
    if multi.sum() > 0:
        _, cost_argmin = torch.min(cost[multi, :], dim=1)
        matching[multi, :] *= 0
        matching[multi, cost_argmin] = 1
    fg_mask = matching.sum(2) > 0
    matched_ious = (matching * pairwise_ious).sum(2)[fg_mask]
    return matched_ious, matching[fg_mask, :].argmax(1), fg_mask
