"""Label assignment on hand-made cases whose right answer can be worked out on paper (docs/upstream.md §9.4).

Each assigner gets: a box exactly on a prior, two boxes competing for one prior, an empty image, a tiny box, a box at
the border. Predictions are set by hand (the assigners take them as inputs), so every IoU below is exact.
"""
from __future__ import annotations

import math

import pytest
import torch

from razorzoo.detection.assigners import (atss_assign, dynamic_soft_label_assign, task_aligned_assign, yolov5_match,
                                          yolov5_normalized_targets)
from razorzoo.detection.targets import pack_targets
from razorzoo.detection.head_losses import _padded_targets  # the per-image padding every point head uses


def grid_priors(size: int, stride: int, offset: float) -> torch.Tensor:
    """``(x, y, stride, stride)`` rows of one square level, row-major like MlvlPointGenerator."""
    coords = (torch.arange(size) + offset) * stride
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten(), torch.full((size * size,), float(stride)),
                        torch.full((size * size,), float(stride))], dim=1)


def padded(boxes: list[list[float]], labels: list[int], batch_hw=(64, 64)):
    batch = torch.zeros(1, 3, *batch_hw)
    target = {"boxes": torch.tensor(boxes).reshape(-1, 4), "labels": torch.tensor(labels, dtype=torch.long)}
    rows = pack_targets([target], batch, num_classes=3)
    return _padded_targets(rows, 1)


# ---- YOLOv5: anchor ratio and neighbouring cells --------------------------------------------------------------------
# level 0 of the recipe: stride 8, anchors (10,13), (16,30), (33,23) px = (1.25,1.625), (2,3.75), (4.125,2.875) cells
ANCHORS_P3 = torch.tensor([[10, 13], [16, 30], [33, 23]], dtype=torch.float) / 8


def yolov5_cells(box: list[float], label: int = 1, batch_hw=(64, 64)):
    rows = torch.tensor([[0.0, float(label), *box]])
    targets = yolov5_normalized_targets(rows, batch_hw, num_priors=3)
    return yolov5_match(targets, (batch_hw[0] // 8, batch_hw[1] // 8), ANCHORS_P3)


def test_yolov5_a_box_is_positive_in_its_cell_and_the_neighbours_its_centre_is_near():
    # 16 x 16 px box centred at (18, 22) px = cell coordinates (2.25, 2.75): every anchor matches (ratios 1.6, 1.875,
    # 2.06 < 4); the centre is in the left quarter (left neighbour) and the bottom quarter (bottom neighbour)
    found = yolov5_cells([10, 14, 26, 30])
    cells = sorted(zip(found.prior.tolist(), found.grid_y.tolist(), found.grid_x.tolist()))
    assert cells == sorted((a, y, x) for a in range(3) for y, x in [(2, 2), (2, 1), (3, 2)])
    assert set(found.label.tolist()) == {1} and set(found.image.tolist()) == {0}
    by_cell = {(y, x): box.tolist() for y, x, box in zip(found.grid_y.tolist(), found.grid_x.tolist(), found.box)}
    assert by_cell[(2, 2)] == pytest.approx([0.25, 0.75, 2.0, 2.0])  # offset from the cell's corner, size in cells
    assert by_cell[(2, 1)] == pytest.approx([1.25, 0.75, 2.0, 2.0])
    assert by_cell[(3, 2)] == pytest.approx([0.25, -0.25, 2.0, 2.0])


def test_yolov5_anchor_ratio_is_strictly_below_the_threshold():
    # a 64 x 64 px box is 8 x 8 cells: anchor 0 ratio 6.4, anchor 1 exactly 4 (not < 4), anchor 2 1.94 / 2.78
    found = yolov5_cells([0, 0, 64, 64])
    assert set(found.prior.tolist()) == {2}


def test_yolov5_box_exactly_on_a_cell_corner_repeats_its_own_cell_like_upstream():
    # centre (24, 24) px = (3.0, 3.0) cells: left and up neighbours, and the "right"/"bottom" offsets round back to the
    # own cell (upstream's rule: (W - cx) % 1 == 0 < 0.5), so the own cell is listed three times per anchor
    found = yolov5_cells([20, 20, 28, 28])
    anchor0 = [(y, x) for a, y, x in zip(found.prior.tolist(), found.grid_y.tolist(), found.grid_x.tolist()) if a == 0]
    assert sorted(anchor0) == sorted([(3, 3), (3, 2), (2, 3), (3, 3), (3, 3)])


def test_yolov5_border_box_has_no_neighbour_outside_the_map_and_empty_or_flat_boxes_match_nothing():
    # centre (2, 2) px = (0.25, 0.25) cells: near the left/top sides, but cells 0 have no left/up neighbour
    found = yolov5_cells([0, 0, 4, 4])
    assert set(zip(found.grid_y.tolist(), found.grid_x.tolist())) == {(0, 0)}
    assert yolov5_cells([10, 10, 10, 30]) is None  # zero width: ratio 0 -> 1/0 = inf, never < 4
    empty = yolov5_normalized_targets(torch.zeros((0, 6)), (64, 64), num_priors=3)
    assert yolov5_match(empty, (8, 8), ANCHORS_P3) is None


# ---- YOLOv6's task-aligned assigner ---------------------------------------------------------------------------------
# four points (4,4), (12,4), (4,12), (12,12) of a stride-8 level, three classes
TAL_PRIORS = grid_priors(2, 8, 0.5)


def tal(boxes, labels, pred_boxes, class_scores, topk=2):
    gt_labels, gt_bboxes, pad_flag = padded(boxes, labels)
    scores = torch.tensor(class_scores, dtype=torch.float)[None]
    return task_aligned_assign(torch.tensor(pred_boxes, dtype=torch.float)[None], scores, TAL_PRIORS, gt_labels,
                               gt_bboxes, pad_flag, num_classes=3, topk=topk)


def test_task_aligned_takes_the_topk_by_score_times_iou_to_the_sixth():
    # predictions with IoU 1, 0.5, 0.25 and 0 to the box, equal scores 0.5 for its class: alignment 0.5 * IoU^6
    preds = [[0, 0, 16, 16], [0, 0, 16, 8], [0, 0, 8, 8], [20, 20, 30, 30]]
    result = tal([[0, 0, 16, 16]], [1], preds, [[0.1, 0.5, 0.1]] * 4)
    assert result["fg_mask_pre_prior"][0].tolist() == [True, True, False, False]
    scores = result["assigned_scores"][0]
    # normalised: alignment * (best IoU among the positives = 1) / (best alignment = 0.5)
    assert scores[0].tolist() == pytest.approx([0, 1, 0], abs=1e-6)
    assert scores[1].tolist() == pytest.approx([0, 0.5**6, 0], abs=1e-6)
    assert scores[2:].abs().sum() == 0
    assert result["assigned_bboxes"][0, :2].tolist() == [[0, 0, 16, 16]] * 2


def test_task_aligned_prior_claimed_by_two_boxes_goes_to_the_one_its_prediction_overlaps_more():
    # prior 0's prediction equals box B exactly (IoU 1) and half-covers box A (IoU 0.5); with topk=1 both claim it
    preds = [[0, 0, 16, 8], [30, 30, 31, 31], [30, 30, 31, 31], [30, 30, 31, 31]]
    result = tal([[0, 0, 16, 16], [0, 0, 16, 8]], [0, 2], preds, [[0.5, 0.5, 0.5]] * 4, topk=1)
    assert result["fg_mask_pre_prior"][0].tolist() == [True, False, False, False]
    assert result["assigned_scores"][0, 0].argmax() == 2  # box B's class
    assert result["assigned_bboxes"][0, 0].tolist() == [0, 0, 16, 8]


@pytest.mark.parametrize("boxes", [[], [[5, 5, 6, 6]], [[4, 4, 12, 12]]],
                         ids=["empty image", "tiny box between points", "points on the box's border"])
def test_task_aligned_no_prior_strictly_inside_means_no_positive(boxes):
    preds = [[0, 0, 16, 16]] * 4
    result = tal(boxes, [0] * len(boxes), preds, [[0.9, 0.9, 0.9]] * 4)
    assert not result["fg_mask_pre_prior"].any()
    assert result["assigned_scores"].abs().sum() == 0


# ---- YOLOv6's initial ATSS assigner ---------------------------------------------------------------------------------
def atss_reference(priors, num_level_priors, boxes, pred_boxes, topk, num_classes, labels):
    """ATSS from its definition, box by box in plain Python (an independent oracle for the batched code)."""
    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / max(union, 1e-6)

    prior_boxes = [[x - 2.5 * s, y - 2.5 * s, x + 2.5 * s, y + 2.5 * s] for x, y, s, _ in priors.tolist()]
    claims = {}  # prior -> [(IoU of its 5-stride box with the gt, gt index)]
    for g, box in enumerate(boxes):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        candidates, start = [], 0
        for count in num_level_priors:
            by_distance = sorted(range(start, start + count), key=lambda p: math.dist((cx, cy), priors[p, :2].tolist()))
            near, next_one = (math.dist((cx, cy), priors[p, :2].tolist()) for p in by_distance[topk - 1:topk + 1])
            assert next_one - near > 1e-3, "a tie at the top-k cutoff: choose a box whose answer is not a tie-break"
            candidates += by_distance[:topk]
            start += count
        overlaps = [iou(box, prior_boxes[p]) for p in candidates]
        mean = sum(overlaps) / len(overlaps)
        std = math.sqrt(sum((o - mean) ** 2 for o in overlaps) / (len(overlaps) - 1))
        for p, overlap in zip(candidates, overlaps):
            x, y = priors[p, :2].tolist()
            inside = min(x - box[0], y - box[1], box[2] - x, box[3] - y) > 1e-9
            if overlap > mean + std and inside:
                claims.setdefault(p, []).append((iou(box, prior_boxes[p]), g))
    expected = {}
    for p, options in claims.items():
        g = max(options, key=lambda option: (option[0], -option[1]))[1]  # highest IoU, the first box on ties
        expected[p] = (labels[g], iou(boxes[g], pred_boxes[p]))
    return expected


@pytest.mark.parametrize("boxes,labels", [
    ([[13.1, 10.3, 33.5, 27.1]], [1]),  # around the prior point (20, 20) but not centred on it
    ([[4, 4, 36, 36]], [0]),  # exactly centred on the prior point (20, 20)
    ([[10.4, 6.2, 40.6, 30.2], [14.3, 12.1, 34.7, 40.5]], [0, 2]),  # two boxes competing for the priors between them
    ([[0, 0, 30, 26]], [2]),  # at the image's top-left border
], ids=["off-centre", "centred on a prior", "two boxes compete", "at the border"])
def test_atss_matches_its_definition(boxes, labels):
    priors = torch.cat([grid_priors(8, 8, 0.5), grid_priors(4, 16, 0.5)])  # two levels, 64 + 16 priors
    pred_boxes = [[x - 6.0, y - 5.0, x + 7.0, y + 4.0] for x, y in priors[:, :2].tolist()]
    gt_labels, gt_bboxes, pad_flag = padded(boxes, labels)
    result = atss_assign(torch.tensor(pred_boxes)[None], priors, [64, 16], gt_labels, gt_bboxes, pad_flag,
                         num_classes=3, topk=9)
    expected = atss_reference(priors, [64, 16], boxes, pred_boxes, 9, 3, labels)
    assert expected, "the case must have positives"
    assert sorted(result["fg_mask_pre_prior"][0].nonzero().flatten().tolist()) == sorted(expected)
    for p, (label, pred_iou) in expected.items():
        assert result["assigned_labels"][0, p] == label
        assert result["assigned_scores"][0, p].tolist() == pytest.approx(
            [pred_iou if c == label else 0.0 for c in range(3)], abs=1e-6)
    assert (result["assigned_labels"][0][~result["fg_mask_pre_prior"][0]] == 3).all()


def test_atss_empty_image_and_tiny_box_have_no_positive():
    priors = grid_priors(8, 8, 0.5)
    empty = atss_assign(None, priors, [64], *padded([], []), num_classes=3)
    assert not empty["fg_mask_pre_prior"].any() and (empty["assigned_labels"] == 3).all()
    tiny = atss_assign(None, priors, [64], *padded([[21, 21, 22, 22]], [1]), num_classes=3)
    assert not tiny["fg_mask_pre_prior"].any()


# ---- RTMDet's dynamic soft-label assigner ---------------------------------------------------------------------------
# a 4 x 4 stride-8 level with offset 0: points at (0|8|16|24, 0|8|16|24)
DSL_PRIORS = grid_priors(4, 8, 0.0)


def dsl(boxes, labels, pred_boxes, logits=None):
    gt_labels, gt_bboxes, pad_flag = padded(boxes, labels)
    logits = torch.zeros(1, 16, 3) if logits is None else logits
    return dynamic_soft_label_assign(torch.tensor(pred_boxes, dtype=torch.float)[None], logits, DSL_PRIORS,
                                     gt_labels, gt_bboxes, pad_flag, num_classes=3)


def far_preds() -> list[list[float]]:
    return [[40.0, 40.0, 41.0, 41.0]] * 16  # overlap nothing: every IoU 0


def test_dynamic_soft_label_box_exactly_predicted_on_its_prior_takes_it_with_iou_1():
    # box (2, 2, 14, 14) contains only the point (8, 8) = prior 5; its prediction is the box itself -> k = 1
    preds = far_preds()
    preds[5] = [2, 2, 14, 14]
    result = dsl([[2, 2, 14, 14]], [1], preds)
    assert result["assigned_labels"][0].tolist() == [3] * 5 + [1] + [3] * 10
    assert result["assign_metrics"][0, 5] == pytest.approx(1.0, abs=1e-6)
    assert result["assigned_bboxes"][0, 5].tolist() == [2, 2, 14, 14]
    assert (result["assigned_labels_weights"] == 1).all()


def test_dynamic_soft_label_prior_claimed_by_two_boxes_goes_to_the_cheaper():
    # both boxes contain only prior 5 (8, 8); its prediction equals box B, so B's cost (-log IoU) is the lower one
    preds = far_preds()
    preds[5] = [4, 4, 12, 12]
    result = dsl([[2, 2, 14, 14], [4, 4, 12, 12]], [0, 2], preds)
    assert result["assigned_labels"][0, 5] == 2
    assert (result["assigned_labels"][0] != 3).sum() == 1


def test_dynamic_soft_label_empty_image_is_all_background():
    result = dsl([], [], far_preds())
    assert (result["assigned_labels"] == 3).all() and (result["assign_metrics"] == 0).all()
    assert (result["assigned_labels_weights"] == 1).all()


@pytest.mark.parametrize("box", [[1, 1, 2, 2], [0, 0, 8, 8]], ids=["tiny box between points", "points on its border"])
def test_dynamic_soft_label_box_without_inside_prior_still_gets_one_prior_like_upstream(box):
    # no prior strictly inside: every cost is the padding value, k is clamped to 1, so upstream hands the box one
    # prior anyway (which of the equal costs wins is a tie-break); its metric is that prediction's IoU, here 0
    result = dsl([box], [2], far_preds())
    positive = (result["assigned_labels"][0] != 3).nonzero().flatten()
    assert len(positive) == 1
    assert result["assigned_labels"][0, positive[0]] == 2
    assert result["assign_metrics"][0, positive[0]] == 0
