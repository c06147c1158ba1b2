"""Shared test helpers: model names, parameter counts, loaded fixture models, output comparisons, and the tie- and
CPU-robust comparison of detection sets.

Importable as ``helpers`` because ``[tool:pytest] pythonpath = tests`` puts ``tests/`` on ``sys.path``; that works the
same under ``--import-mode=prepend`` (the default) and ``--import-mode=importlib``.
"""
from helpers.detections import (BOX_TOL, SCORE_TOL, assert_same_detections, has_partner, unmatched_above_cutoff,
                                unmatched_detections)
from helpers.models import (
    CLASSIFIERS,
    DATA,
    DETECTOR_PARAMS,
    DETECTORS,
    MAX_PER_IMG,
    CLASSIFIER_PARAMS,
    RECIPE_OF,
    fixture_model,
    flat_outputs,
    loaded_detector,
    max_abs,
)

__all__ = ["BOX_TOL", "SCORE_TOL", "assert_same_detections", "unmatched_detections", "unmatched_above_cutoff",
           "has_partner", "CLASSIFIERS", "DATA",
           "DETECTOR_PARAMS", "DETECTORS", "MAX_PER_IMG", "CLASSIFIER_PARAMS", "RECIPE_OF", "fixture_model", "flat_outputs", "loaded_detector",
           "max_abs"]
