"""The detection-set comparison every end-to-end test relies on: it accepts what float noise and ties may change,
and nothing else."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from helpers import BOX_TOL, DATA, MAX_PER_IMG, SCORE_TOL, assert_same_detections, unmatched_detections

MODEL = "rtmdet_tiny-ofa_lat31"  # image_portrait: 31 of its 100 detections tie at the cutoff score


@pytest.fixture(scope="module")
def golden():
    g = load_file(DATA / MODEL / "goldens.safetensors")
    return tuple(g[f"e2e.image_portrait.pred.{k}"] for k in ("bboxes", "scores", "labels"))


def test_reordered_and_noisy_detections_are_the_same(golden):
    boxes, scores, labels = golden
    order = torch.randperm(len(scores), generator=torch.Generator().manual_seed(0))
    noisy = (boxes[order] + BOX_TOL / 2, scores[order] - SCORE_TOL / 2, labels[order])
    assert_same_detections(noisy, golden, MAX_PER_IMG[MODEL])


def test_detections_tied_at_the_cutoff_are_interchangeable(golden):
    boxes, scores, labels = golden
    tied = (scores == scores.min()).nonzero().view(-1)
    assert len(tied) > 5  # the case the comparison exists for
    other = boxes.clone()
    other[tied[:5]] += 50.0  # other members of the tied group survived max_per_img
    assert_same_detections((other, scores, labels), golden, MAX_PER_IMG[MODEL])
    # ... but only when the count hit the cap: otherwise every box must have its partner
    assert len(unmatched_detections((other, scores, labels), golden, max_det=None)) == 5


@pytest.mark.parametrize("mutation", ["zero_boxes", "shift_one_box", "scale_scores", "relabel", "drop_top"])
def test_real_differences_fail(golden, mutation):
    boxes, scores, labels = (t.clone() for t in golden)
    top = scores.argmax()
    if mutation == "zero_boxes":
        boxes.zero_()
    elif mutation == "shift_one_box":
        boxes[top, 2] += 10 * BOX_TOL
    elif mutation == "scale_scores":
        scores *= 0.9992
    elif mutation == "relabel":
        labels[top] = (labels[top] + 1) % 80
    else:
        boxes, scores, labels = (torch.cat([t[:top], t[top + 1:]]) for t in (boxes, scores, labels))
    with pytest.raises(AssertionError):
        assert_same_detections((boxes, scores, labels), golden, MAX_PER_IMG[MODEL])
