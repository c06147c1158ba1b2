"""razorzoo: MMRazor NAS subnets and their MMYOLO detectors as pure-PyTorch models.

The public API is the names in ``__all__``. They are imported lazily (PEP 562) so that ``import razorzoo`` and the
card-browsing CLI stay fast and never import torch; torch is imported the first time a model is built.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from razorzoo.version import __version__

# public name -> module that defines it
_EXPORTS = {
    # architectures (no network, no weights)
    "build_classifier": "razorzoo.builder",
    "build_backbone": "razorzoo.builder",
    "build_detector": "razorzoo.builder",
    "load_subnet": "razorzoo.arch.subnet",
    "extract_subnet": "razorzoo.weights.extract",
    "count_flops": "razorzoo.models.flops",
    # ready models with weights (download, verify, convert, cache)
    "load_classifier": "razorzoo.loading",
    "load_backbone": "razorzoo.loading",
    "load_detector": "razorzoo.loading",
    "convert_checkpoint": "razorzoo.weights.convert",
    "verify_pair": "razorzoo.weights.verify",
    # deployment (ONNX export; runtimes via load_detector/load_classifier(..., backend=))
    "export": "razorzoo.loading",
    # the zoo
    "list_models": "razorzoo.zoo.registry",
    "get_card": "razorzoo.zoo.registry",
    "push_to_hub": "razorzoo.publish",
    # specialize a supernet for your budget and hardware
    "calibrate_bn": "razorzoo.search.calibrate",
    "specialize": "razorzoo.search.specialize",
    # train and fine-tune detectors with their MMYOLO recipes
    "train": "razorzoo.training.trainer",
    # detection results
    "Detector": "razorzoo.models.detector",
    "Detections": "razorzoo.detection.results",
    # evaluation and streaming
    "evaluate_coco": "razorzoo.evaluation.coco",
    "evaluate_imagenet": "razorzoo.evaluation.imagenet",
    "predict_stream": "razorzoo.evaluation.sources",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'razorzoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # static type checkers and IDEs see the real objects
    from razorzoo.builder import build_backbone, build_classifier, build_detector
    from razorzoo.weights.convert import convert_checkpoint
    from razorzoo.detection.results import Detections
    from razorzoo.evaluation.coco import evaluate_coco
    from razorzoo.evaluation.imagenet import evaluate_imagenet
    from razorzoo.evaluation.sources import predict_stream
    from razorzoo.weights.extract import extract_subnet
    from razorzoo.models.flops import count_flops
    from razorzoo.publish import push_to_hub
    from razorzoo.search.calibrate import calibrate_bn
    from razorzoo.search.specialize import specialize
    from razorzoo.training.trainer import train
    from razorzoo.loading import export, load_backbone, load_classifier, load_detector
    from razorzoo.models.detector import Detector
    from razorzoo.zoo.registry import get_card, list_models
    from razorzoo.arch.subnet import load_subnet
    from razorzoo.weights.verify import verify_pair
