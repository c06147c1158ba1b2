"""Comparing two sets of detections so that neither tie-breaks nor float summation order decide the result.

Two runs of the same detector on different CPUs (AVX-512 vs AVX2, 1 vs 2 threads) differ by float rounding only:
raw outputs by ~1e-7..1e-6, hence scores by ~1e-7 and boxes by ~3e-5 px (measured on the goldens here). The
tolerances below are that noise times 100, so a real change (a box moved, scores rescaled by 0.9992) still fails.

Detections are matched one-to-one as a set (same label, score within ``score_tol``, every box coordinate within
``box_tol``), not by rank, since near-equal scores may swap places. One exception: when the count hit ``max_det``,
the detections scoring at the cutoff (the lowest kept score, within ``score_tol``) are interchangeable. Upstream
keeps ``max_det`` boxes out of a group of equal scores by the order ``sort`` happens to leave them in, which is a
tie-break, not a property of the model: which members of that group survive may differ, only how many may not.
"""
from __future__ import annotations

from typing import Any

import torch

SCORE_TOL = 1e-5  # measured score noise ~1e-7, times 100
BOX_TOL = 3e-3  # measured box noise ~3e-5 px, times 100


def _triplet(detections: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(boxes, scores, labels)`` of a Detections, a ``razorzoo predict --json`` entry, a COCO results list
    (``bbox`` xywh as the box, ``category_id`` as the label) or such a tuple."""
    if isinstance(detections, list) and all(isinstance(r, dict) and "bbox" in r for r in detections):
        return (torch.tensor([r["bbox"] for r in detections], dtype=torch.float32).view(-1, 4),
                torch.tensor([r["score"] for r in detections], dtype=torch.float32),
                torch.tensor([r["category_id"] for r in detections], dtype=torch.int64))
    if isinstance(detections, dict):
        return (torch.tensor(detections["boxes"], dtype=torch.float32).view(-1, 4),
                torch.tensor(detections["scores"], dtype=torch.float32), torch.tensor(detections["labels"]))
    if isinstance(detections, (tuple, list)):
        boxes, scores, labels = detections
        return boxes, scores, labels
    return detections.boxes, detections.scores, detections.labels


def unmatched_detections(found: Any, expected: Any, max_det: int | None = None, *, score_tol: float = SCORE_TOL,
                         box_tol: float = BOX_TOL) -> list[str]:
    """Why ``found`` and ``expected`` are not the same set of detections, one line per problem (empty: same)."""
    f_boxes, f_scores, f_labels = _triplet(found)
    e_boxes, e_scores, e_labels = _triplet(expected)
    if len(f_scores) != len(e_scores):
        return [f"{len(f_scores)} detections, expected {len(e_scores)}"]
    if len(e_scores) == 0:
        return []
    cutoff = e_scores.min().item()
    at_cutoff = ((e_scores - cutoff).abs() <= score_tol) if len(e_scores) == max_det else \
        torch.zeros(len(e_scores), dtype=torch.bool)
    used = torch.zeros(len(f_scores), dtype=torch.bool)
    problems = []
    for i in (~at_cutoff).nonzero().view(-1).tolist():
        box_error = (f_boxes - e_boxes[i]).abs().amax(1)
        score_error = (f_scores - e_scores[i]).abs()
        candidates = (~used) & (f_labels == e_labels[i]) & (score_error <= score_tol) & (box_error <= box_tol)
        if candidates.any():
            used[(box_error + score_error).masked_fill(~candidates, float("inf")).argmin()] = True
        else:
            problems.append(f"expected #{i} (label {int(e_labels[i])}, score {e_scores[i].item():.7f}, box "
                            f"{[round(v, 3) for v in e_boxes[i].tolist()]}) has no partner")
    # the rest must be as many detections at the cutoff score as expected there: interchangeable ties
    rest = f_scores[~used]
    off = rest[(rest - cutoff).abs() > score_tol]
    if len(off):
        problems.append(f"{len(off)} unmatched detections off the cutoff score {cutoff:.7f}, e.g. {off[0].item():.7f}")
    return problems


def has_partner(found: Any, box: torch.Tensor, score: torch.Tensor, label: torch.Tensor, *,
                score_tol: float = SCORE_TOL, box_tol: float = BOX_TOL) -> bool:
    """Whether ``found`` holds a detection with ``label``, a score within ``score_tol`` and a box within ``box_tol``."""
    f_boxes, f_scores, f_labels = _triplet(found)
    return bool(((f_labels == label) & ((f_scores - score).abs() <= score_tol)
                 & ((f_boxes - box).abs().amax(1) <= box_tol)).any())


def assert_same_detections(found: Any, expected: Any, max_det: int | None = None, *, score_tol: float = SCORE_TOL,
                           box_tol: float = BOX_TOL, what: str = "") -> None:
    """Assert that ``found`` equals ``expected`` as a set of detections (see the module docstring).

    ``max_det`` is the cap the detections were produced with; pass it when ``len(expected)`` may have hit it, so
    that boxes tied at the cutoff score count as interchangeable.
    """
    problems = unmatched_detections(found, expected, max_det, score_tol=score_tol, box_tol=box_tol)
    assert not problems, f"{what}: {len(problems)} problems:\n" + "\n".join(problems[:10])


def unmatched_above_cutoff(found: Any, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, max_det: int,
                           iou_thr: float) -> int:
    """Expected detections without a partner in ``found`` (score within 1e-3, box within 1e-2 px: the export
    gate's tolerances): how runtimes are compared with eager, robust to exact and near ties (fixture weights give runs of scores equal to ~1e-7):

    * expected detections tied with the cut-off of a full list (``max_det`` reached) are not required: which of
      several equal scores fill the last places depends on float summation order (eager predict itself misses
      some of MMYOLO's there);
    * an expected detection whose place NMS gave to a neighbour (same label, IoU > ``iou_thr``, score within 1e-5)
      counts as matched: between two scores 1e-7 apart, the runtime's rounding decides which one suppresses the other.
    """
    cutoffs = [r.min().item() for r in (found.scores, scores) if len(r) == max_det]
    above = scores > max(cutoffs) + 1e-6 if cutoffs else torch.ones_like(scores, dtype=torch.bool)
    missing = 0
    for box, score, label in zip(boxes[above], scores[above], labels[above]):
        if has_partner(found, box, score, label, score_tol=1e-3, box_tol=1e-2):
            continue
        x1, y1 = torch.maximum(found.boxes[:, 0], box[0]), torch.maximum(found.boxes[:, 1], box[1])
        x2, y2 = torch.minimum(found.boxes[:, 2], box[2]), torch.minimum(found.boxes[:, 3], box[3])
        inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
        area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
        iou = inter / (area(found.boxes) + area(box) - inter)
        missing += not bool(((found.labels == label) & ((found.scores - score).abs() <= 1e-5) & (iou > iou_thr)).any())
    return missing
