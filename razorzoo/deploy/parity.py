"""The parity gate: does an exported model give the eager model's outputs and detections?

:func:`check_parity` runs both on the same batches (synthetic images, plus any given) and reports the largest raw
output difference and how many detections (classifiers: top-1 labels) agree. Detections are compared as sets
(:func:`match_detections`): each one must have a partner with the same label, a score within ``score_tol`` and a box
within ``box_tol`` pixels. Ties are excused, since float summation order decides them, not the model: detections
tied with the last one kept (where ``max_det`` cuts) or at ``score_thr`` are not required, and one whose place NMS
gave to an overlapping near-tied neighbour counts as agreeing.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from razorzoo.errors import RazorzooError

if TYPE_CHECKING:
    from torch import nn

    from razorzoo.deploy.runtime import ExportedModel
    from razorzoo.detection.results import Detections

__all__ = ["ParityError", "ParityReport", "check_parity", "match_detections", "match_by_overlap", "synthetic_images",
           "default_tolerance",
           "F32_TOLERANCE", "FP16_TOLERANCE"]


class ParityError(RazorzooError):
    """An exported model's outputs or detections differ from the eager model's beyond the tolerances; ``verdict``
    is the gate's finding alone (the report's text), for messages that name the file otherwise."""

    def __init__(self, message: str, verdict: str = "") -> None:
        super().__init__(message)
        self.verdict = verdict or message


@dataclass(frozen=True)
class ParityReport:
    """Result of :func:`check_parity`. ``matched``/``total``: agreeing detections (or top-1 labels) / required."""

    max_raw_diff: float | None  # None: the outputs are not the eager forward's ('nms' variant)
    tolerance: float
    matched: int
    total: int
    what: str  # "detections", "top-1 labels" or "" (backbones: raw outputs only)
    min_agreement: float = 1.0

    @property
    def agreement(self) -> float:
        return self.matched / self.total if self.total else 1.0

    @property
    def passed(self) -> bool:
        raw_ok = self.max_raw_diff is None or self.max_raw_diff <= self.tolerance
        return raw_ok and self.agreement >= self.min_agreement

    def __str__(self) -> str:
        parts = []
        if self.max_raw_diff is not None:
            parts.append(f"max raw difference {self.max_raw_diff:.2e} (limit {self.tolerance:.0e})")
        if self.what:
            limit = f", limit {self.min_agreement:.1%}" if self.min_agreement < 1 else ""
            parts.append(f"{self.what} agreeing {self.matched}/{self.total}{limit}")
        return "; ".join(parts)

    def raise_for_failure(self, where: str) -> None:
        if not self.passed:
            raise ParityError(f"{where}: the exported model does not reproduce the eager one: {self}; nothing was "
                              "written (report this with the model and the razorzoo/torch/runtime versions)", str(self))


def synthetic_images() -> list[np.ndarray]:
    """Two deterministic BGR uint8 images (landscape and portrait): gradients, blocks and noise, so that every
    detector level and the letterbox/resize padding are exercised."""
    rng = np.random.default_rng(0)
    images = []
    for h, w in ((480, 640), (500, 333)):
        y, x = np.mgrid[0:h, 0:w]
        image = np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (h + w)], axis=-1).astype(np.int32)
        for _ in range(6):
            top, left = rng.integers(0, h - h // 4), rng.integers(0, w - w // 4)
            image[top:top + h // 4, left:left + w // 4] = rng.integers(0, 256, 3)
        image += rng.integers(-20, 21, image.shape)
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return images


def match_detections(expected: "Detections", found: "Detections", *, score_thr: float, max_det: int,
                     iou_thr: float, score_tol: float = 1e-4, box_tol: float = 1e-2) -> tuple[int, int]:
    """``(matched, required)``: the detections of ``expected`` that must appear in ``found``, and how many do.

    Required are those scoring clearly above the cutoff: ``score_thr``, or the lowest kept score of a list that
    ``max_det`` filled. Partners are one-to-one: same label, score within ``score_tol``, box within ``box_tol``.
    A detection without a partner still counts when ``found`` kept a near-tied neighbour in its place (same label,
    score within ``score_tol``, IoU > ``iou_thr``): of two overlapping boxes scoring 1e-7 apart, rounding decides
    which one NMS keeps.
    """
    cutoff = score_thr
    for result in (expected, found):
        if len(result) >= max_det:
            cutoff = max(cutoff, result.scores.min().item())
    required = (expected.scores > cutoff + score_tol).nonzero().view(-1)
    close = ((expected.labels[required, None] == found.labels[None, :])
             & ((expected.scores[required, None] - found.scores[None, :]).abs() <= score_tol)
             & ((expected.boxes[required, None, :] - found.boxes[None, :, :]).abs().amax(-1) <= box_tol))
    used = torch.zeros(len(found), dtype=torch.bool)
    unmatched = []
    for i, row in enumerate(close):  # one-to-one; candidates are near-duplicates only under exact ties
        free = (row & ~used).nonzero()
        if len(free):
            used[free[0, 0]] = True
        else:
            unmatched.append(required[i])
    if unmatched:
        rows = torch.stack(unmatched)
        neighbour = ((expected.labels[rows, None] == found.labels[None, :])
                     & ((expected.scores[rows, None] - found.scores[None, :]).abs() <= score_tol)
                     & (_iou(expected.boxes[rows], found.boxes) > iou_thr))
        unmatched = rows[~neighbour.any(1)]
    return len(required) - len(unmatched), len(required)


def match_by_overlap(expected: "Detections", found: "Detections", iou_thr: float) -> int:
    """How many of ``expected``'s detections ``found`` also reports, one to one, best score first: same label and
    IoU >= ``iou_thr`` (scores not compared). How reduced precision (int8, bf16) is measured against float32, whose
    scores it changes by more than rounding."""
    if not len(expected) or not len(found):
        return 0
    overlap = _iou(expected.boxes, found.boxes)
    candidates = (overlap >= iou_thr) & (expected.labels[:, None] == found.labels[None, :])
    used = torch.zeros(len(found), dtype=torch.bool)
    matched = 0
    for i in expected.scores.argsort(descending=True).tolist():
        free = candidates[i] & ~used
        if free.any():
            used[overlap[i].masked_fill(~free, -1).argmax()] = True
            matched += 1
    return matched


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix of xyxy boxes ``a`` x ``b``."""
    lt, rb = torch.maximum(a[:, None, :2], b[None, :, :2]), torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


F32_TOLERANCE, FP16_TOLERANCE = 1e-4, 1e-2  # raw outputs: float32 noise is ~1e-6, float16 weights' ~1e-3


def default_tolerance(metadata: dict[str, str]) -> float:
    """The raw-output tolerance an export is held to: float32's, or float16's for half weights."""
    return FP16_TOLERANCE if json.loads(metadata.get("razorzoo_fp16", "false")) else F32_TOLERANCE


def check_parity(model: "nn.Module", exported: "ExportedModel | str | os.PathLike | bytes",
                 images: Sequence[Any] | None = None, *, backend: str = "onnxruntime", precision: str = "f32",
                 threads: int | None = None, tolerance: float | None = None, score_tol: float = 1e-4,
                 box_tol: float = 1e-2, min_agreement: float = 1.0) -> ParityReport:
    """Run eager ``model`` and the exported one on the same inputs and compare every output.

    Detectors: :func:`synthetic_images` plus ``images`` go through ``model.preprocess``; a free-size graph (the
    letterbox detectors') also runs each synthetic image on its ``BatchShapePolicy`` canvas, as ``val`` does. Every
    raw head output is compared, then both are post-processed with the recipe's ``test_cfg`` and matched with
    :func:`match_detections` in both directions (a detection either side lacks fails). Classifiers and backbones: a
    seeded random normalized batch; classifiers also compare top-1 labels (a label counts as agreeing if its eager
    logit ties the eager maximum). An ``nms`` export has no raw outputs to compare: its detections are matched with
    eager ``predict``'s. A ``decoded`` export's boxes and scores are compared with eager decoding (box differences
    relative to the canvas size). The report passes when the largest raw difference is within ``tolerance``
    (default: :func:`default_tolerance` of the file) and ``min_agreement`` of the required detections (labels) agree.
    """
    from razorzoo.deploy.runtime import ExportedModel, open_exported

    if not isinstance(exported, ExportedModel):
        exported = open_exported(exported, backend=backend, precision=precision, threads=threads)
    tolerance = default_tolerance(exported.metadata) if tolerance is None else tolerance
    variant = exported.metadata["razorzoo_variant"]
    diffs: list[float] = []
    matched = total = 0
    what = {"detection": "detections", "classification": "top-1 labels"}.get(exported.task, "")
    if variant == "decoded":
        what = ""  # bare decoded outputs have no predict to compare
    for batch, metas in _gate_batches(model, exported, images):
        with torch.inference_mode():
            if variant == "decoded":
                from razorzoo.deploy.end2end import Decoded

                (boxes, scores), (found_boxes, found_scores) = Decoded(model).eval()(batch), exported(batch)
                # boxes are pixels up to the canvas size: their difference counts relative to it, scores' as is
                diffs.append(max((boxes - found_boxes).abs().max().item() / max(batch.shape[2:]),
                                 (scores - found_scores).abs().max().item()))
                continue
            eager, runtime = model(batch), exported(batch)
        if variant != "nms":
            diffs.append(_max_diff(eager, runtime))
        if exported.task == "detection":
            cfg = model.test_cfg
            with torch.inference_mode():
                for a, b in zip(model.postprocess(eager, metas), exported.postprocess(runtime, metas), strict=True):
                    for expected, found in ((a, b), (b, a)):
                        m, t = match_detections(expected, found, score_thr=cfg.score_thr, max_det=cfg.max_per_img,
                                                iou_thr=cfg.iou_threshold, score_tol=score_tol, box_tol=box_tol)
                        matched, total = matched + m, total + t
        elif exported.task == "classification":
            top = runtime.argmax(1)
            picked = eager.gather(1, top[:, None])[:, 0]
            matched += int(((eager.max(1).values - picked) <= tolerance).sum())
            total += len(top)
    return ParityReport(max(diffs) if diffs else None, tolerance, matched, total, what, min_agreement)


def _gate_batches(model: "nn.Module", exported: "ExportedModel", images: Sequence[Any] | None
                  ) -> list[tuple[torch.Tensor, Any]]:
    """The gate's ``(batch, metas)`` pairs: for detectors the images on the test canvas (one batch), then for a
    free-size graph each synthetic image alone on its batch-shape canvas; else one seeded random batch."""
    if exported.task != "detection":
        generator = torch.Generator().manual_seed(0)
        return [(torch.randn(3, 3, *exported.input_size, generator=generator), None)]
    groups = [model.preprocess([*synthetic_images(), *(images or [])])]
    if exported.size_divisor is not None:
        from razorzoo.detection.batch_shapes import batch_shape, letterbox_to_batch_shape

        resize = model.transform.resize
        for image in synthetic_images():
            shape = batch_shape(image.shape[1], image.shape[0], img_size=resize.size,
                                size_divisor=exported.size_divisor)
            canvas, meta = letterbox_to_batch_shape(image, resize.size, resize.pad_value, shape)
            groups.append(model.transform.collate([canvas], [meta]))
    return groups


def _max_diff(eager: Any, runtime: Any) -> float:
    return max((a - b).abs().max().item() for a, b in zip(_leaves(eager), _leaves(runtime), strict=True))


def _leaves(outputs: Any) -> list[torch.Tensor]:
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return [leaf for item in outputs for leaf in _leaves(item)]
