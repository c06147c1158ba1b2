"""The parity gate's rules on their own, without an export: which detections are required, what counts as a
partner, which ties are excused, how reduced precision is matched, and when a report passes. Every export test
goes through these; here each rule is pinned at its boundary, by hand-made detections whose values are exact in
float32 (tolerances of 2**-4 and 0.5), so that ``<`` and ``<=`` are told apart.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from razorzoo.deploy.parity import (F32_TOLERANCE, FP16_TOLERANCE, ParityError, ParityReport, default_tolerance,
                                    match_by_overlap, match_detections, synthetic_images)
from razorzoo.detection.results import Detections

SCORE_TOL, BOX_TOL = 2 ** -4, 0.5


def dets(*rows: tuple[float, float, float, float, float, int]) -> Detections:
    """Detections from ``(x1, y1, x2, y2, score, label)`` rows."""
    table = torch.tensor(rows, dtype=torch.float32).view(-1, 6)
    return Detections(table[:, :4], table[:, 4], table[:, 5].long(), ("a", "b", "c"))


def match(expected: Detections, found: Detections, *, score_thr: float = 0.25, max_det: int = 100,
          iou_thr: float = 0.5) -> tuple[int, int]:
    return match_detections(expected, found, score_thr=score_thr, max_det=max_det, iou_thr=iou_thr,
                            score_tol=SCORE_TOL, box_tol=BOX_TOL)


A = (0, 0, 10, 10, 0.5, 0)


def test_required_are_the_detections_clearly_above_the_score_threshold():
    at_the_edge = (20, 20, 30, 30, 0.25 + SCORE_TOL, 1)  # within score_tol of score_thr: a tie, not required
    above = (40, 40, 50, 50, 0.25 + 2 * SCORE_TOL, 2)
    expected = dets(A, at_the_edge, above)
    assert match(expected, dets()) == (0, 2)
    assert match(expected, dets(A)) == (1, 2)
    assert match(expected, dets(A, above)) == (2, 2)
    assert match(expected, dets(A, above), score_thr=0.25 + SCORE_TOL) == (1, 1)  # `above` is now at the edge


def test_a_list_that_max_det_filled_sets_the_cutoff_on_either_side():
    expected = dets((0, 0, 10, 10, 0.875, 0), (20, 20, 30, 30, 0.75, 0), (40, 40, 50, 50, 0.5, 0))
    # the lowest kept detection of a full list is tied with whatever max_det cut: not required
    assert match(expected, dets((0, 0, 10, 10, 0.875, 0), (20, 20, 30, 30, 0.75, 0)), max_det=3) == (2, 2)
    assert match(expected, dets((0, 0, 10, 10, 0.875, 0), (20, 20, 30, 30, 0.75, 0)), max_det=4) == (2, 3)
    # only the runtime's list is full: its lowest score is the cutoff for the eager list too
    eager = dets((0, 0, 10, 10, 0.875, 0), (40, 40, 50, 50, 0.5, 0))
    runtime = dets((0, 0, 10, 10, 0.875, 0), (60, 60, 70, 70, 0.75, 1), (80, 80, 90, 90, 0.625, 2))
    assert match(eager, runtime, max_det=3) == (1, 1)
    assert match(eager, runtime, max_det=4) == (1, 2)


@pytest.mark.parametrize("partner, agrees", [
    ((0, 0, 10, 10, 0.5, 0), True),
    ((0, 0, 10, 10, 0.5 + SCORE_TOL, 0), True),  # score within score_tol, inclusive
    ((0, 0, 10, 10, 0.5 - SCORE_TOL, 0), True),
    ((0, 0, 10, 10, 0.5 + 2 * SCORE_TOL, 0), False),
    ((0, 0, 10 + BOX_TOL, 10, 0.5, 0), True),  # each coordinate within box_tol, inclusive
    ((-BOX_TOL, 0, 10, 10, 0.5, 0), True),
    ((0, 0, 10, 10 + 2 * BOX_TOL, 0.5, 0), False),
    ((0, -2 * BOX_TOL, 10, 10, 0.5, 0), False),
    ((0, 0, 10, 10, 0.5, 1), False),  # another label
], ids=["same", "score+tol", "score-tol", "score+2tol", "x2+tol", "x1-tol", "y2+2tol", "y1-2tol", "label"])
def test_a_partner_has_the_label_a_close_score_and_a_close_box(partner, agrees):
    # iou_thr 1: no near-tied neighbour excuses a missing partner (IoU > 1 never)
    assert match(dets(A), dets(partner), iou_thr=1.0) == (int(agrees), 1)


@pytest.mark.parametrize("iou_thr", [1.0, 0.5], ids=["partner", "neighbour"])
def test_no_other_label_agrees_above_or_below(iou_thr):
    for eager, runtime in ((1, 0), (1, 2)):
        assert match(dets((0, 0, 10, 10, 0.5, eager)), dets((0, 0, 10, 10, 0.5, runtime)), iou_thr=iou_thr) == (0, 1)
        assert match_by_overlap(dets((0, 0, 10, 10, 0.5, eager)), dets((0, 0, 10, 10, 0.5, runtime)), 0.5) == 0


def test_partners_are_one_to_one():
    assert match(dets(A, A), dets(A), iou_thr=1.0) == (1, 2)  # iou_thr 1: no neighbour excuse (IoU > 1 never)
    assert match(dets(A, A), dets(A, A), iou_thr=1.0) == (2, 2)


def test_the_default_tolerances_are_1e_4_for_scores_and_a_hundredth_of_a_pixel_for_boxes():
    def agrees(score: float, x2: float) -> bool:
        matched, required = match_detections(dets(A), dets((0, 0, x2, 10, score, 0)), score_thr=0.25, max_det=100,
                                             iou_thr=1.0)
        return matched == required == 1

    assert agrees(0.5 + 5e-5, 10.005) and not agrees(0.5 + 2e-4, 10) and not agrees(0.5, 10.02)


@pytest.mark.parametrize("neighbour, iou_thr, agrees", [
    ((0, 0, 10, 12, 0.5 + 2 ** -6, 0), 0.8, True),  # IoU 100/120 = 0.833 > 0.8: NMS kept the near-tied neighbour
    ((0, 0, 10, 12, 0.5 - SCORE_TOL, 0), 0.8, True),  # tied within score_tol, inclusive
    ((0, 0, 10, 12, 0.5 + 2 ** -6, 0), 0.85, False),  # overlapping too little
    ((0, 0, 10, 12, 0.5 + 2 ** -6, 1), 0.8, False),  # another label
    ((0, 0, 10, 12, 0.5 + 2 * SCORE_TOL, 0), 0.8, False),  # not tied
], ids=["kept-instead", "tied-at-the-tolerance", "too-little-overlap", "other-label", "not-tied"])
def test_a_near_tied_overlapping_neighbour_excuses_a_missing_partner(neighbour, iou_thr, agrees):
    assert match(dets(A), dets(neighbour), iou_thr=iou_thr) == (int(agrees), 1)


def test_reduced_precision_is_matched_by_overlap_best_score_first():
    assert match_by_overlap(dets(), dets(A), 0.5) == match_by_overlap(dets(A), dets(), 0.5) == 0
    # `low` overlaps both runtime boxes (f1 better), `high` only f1: best score first, high takes f1 and low f2.
    # In list order, low would take f1 and leave high without a partner
    low, high = (0, 0, 10, 10, 0.25, 0), (0, 0, 10, 12, 0.875, 0)
    f1, f2 = (0, 0, 10, 11, 0.5, 0), (0, 1, 10, 10, 0.5, 0)
    assert match_by_overlap(dets(low, high), dets(f1, f2), 0.8) == 2
    assert match_by_overlap(dets(low, high), dets(f1), 0.8) == 1
    # scores are not compared; labels are, and the IoU threshold is inclusive (IoU 100/125 = 0.8)
    assert match_by_overlap(dets(A), dets((0, 0, 10, 10, 0.01, 0)), 0.8) == 1
    assert match_by_overlap(dets(A), dets((0, 0, 10, 10, 0.5, 2)), 0.8) == 0
    assert match_by_overlap(dets(A), dets((0, 0, 10, 12.5, 0.5, 0)), 0.8) == 1
    assert match_by_overlap(dets(A), dets((0, 0, 10, 12.5, 0.5, 0)), 0.81) == 0
    # one to one: two eager detections on one runtime box
    assert match_by_overlap(dets(A, A), dets(A), 0.5) == 1
    # each takes its best-overlapping free partner: x takes f1 (IoU 1, not f2's 0.8); y and z then share f2
    x, y, z = (0, 0, 10, 10, 0.875, 0), (0, 0, 10, 12.5, 0.5, 0), (0, 0, 10, 12.5, 0.25, 0)
    assert match_by_overlap(dets(x, y, z), dets((0, 0, 10, 10, 0.5, 0), (0, 0, 10, 12.5, 0.5, 0)), 0.8) == 2


@pytest.mark.parametrize("other, iou", [
    ((25, 22, 55, 42), 120 / 780),  # 15 x 8 of 30 x 10 and 30 x 20 boxes
    ((39.5, 20, 69.5, 30), 5 / 595),  # half a pixel wide: an overlap under one pixel is not rounded up
    ((40, 30, 50, 40), 0.0),  # touching corners
])
def test_overlap_is_the_intersection_over_the_union_of_offset_boxes(other, iou):
    box = (10, 20, 40, 30, 0.5, 0)  # not at the origin, not square: every coordinate counts
    for a, b in ((box, (*other, 0.5, 0)), ((*other, 0.5, 0), box)):
        assert match_by_overlap(dets(a), dets(b), iou * 0.99 if iou else 1e-9) == (1 if iou else 0)
        assert match_by_overlap(dets(a), dets(b), iou * 1.01 if iou else 1e-9) == 0


def test_a_report_passes_within_its_tolerance_and_agreement():
    assert ParityReport(1e-4, 1e-4, 5, 5, "detections").passed  # the tolerance itself is within
    assert not ParityReport(1.5e-4, 1e-4, 5, 5, "detections").passed
    assert not ParityReport(1e-6, 1e-4, 4, 5, "detections").passed  # every required detection, by default
    assert ParityReport(1e-6, 1e-4, 4, 5, "detections", min_agreement=0.8).passed
    assert not ParityReport(1e-6, 1e-4, 3, 5, "detections", min_agreement=0.8).passed
    assert ParityReport(None, 1e-4, 2, 2, "detections").passed  # an nms graph: no raw outputs
    nothing_required = ParityReport(1e-6, 1e-4, 0, 0, "detections")
    assert nothing_required.agreement == 1.0 and nothing_required.passed
    assert ParityReport(None, 1e-4, 3, 4, "detections").agreement == 0.75


def test_a_reports_text_names_what_was_compared():
    assert str(ParityReport(2.5e-5, 1e-4, 5, 5, "detections")) == \
        "max raw difference 2.50e-05 (limit 1e-04); detections agreeing 5/5"
    assert str(ParityReport(None, 1e-4, 3, 4, "detections", min_agreement=0.75)) == \
        "detections agreeing 3/4, limit 75.0%"
    assert str(ParityReport(3e-6, 1e-2, 0, 0, "")) == "max raw difference 3.00e-06 (limit 1e-02)"  # a backbone
    ParityReport(1e-6, 1e-4, 3, 3, "top-1 labels").raise_for_failure("m.onnx")  # passed: nothing raised
    failed = ParityReport(2e-4, 1e-4, 2, 3, "top-1 labels")
    with pytest.raises(ParityError) as info:
        failed.raise_for_failure("m.onnx")
    assert info.value.verdict == str(failed) == "max raw difference 2.00e-04 (limit 1e-04); top-1 labels agreeing 2/3"
    message = str(info.value)
    assert message.startswith(f"m.onnx: the exported model does not reproduce the eager one: {failed}; nothing was "
                              "written") and "\n" not in message


def test_float16_weights_are_held_to_float16s_tolerance_and_everything_else_to_float32s():
    assert (F32_TOLERANCE, FP16_TOLERANCE) == (1e-4, 1e-2)
    assert default_tolerance({}) == default_tolerance({"razorzoo_fp16": "false"}) == F32_TOLERANCE
    assert default_tolerance({"razorzoo_fp16": "true"}) == FP16_TOLERANCE


def test_the_gates_synthetic_images_are_one_landscape_and_one_portrait_image_every_time():
    first, second = synthetic_images(), synthetic_images()
    assert [image.shape for image in first] == [(480, 640, 3), (500, 333, 3)]
    assert all(image.dtype == np.uint8 for image in first)
    assert all((a == b).all() for a, b in zip(first, second, strict=True))
    assert all(len({int(v) for v in image.reshape(-1, 3)[:, c][::97]}) > 50 for image in first for c in range(3))
