"""The exported-model cache: a converted model exported once into ``<cache>/exported/<key>/model.onnx``, reused
afterwards (``load_detector(..., backend=)`` and friends, :mod:`razorzoo.loading`)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from razorzoo.deploy.export import export
from razorzoo.storage.cache import Cache, sha256_of_file
from razorzoo.version import __version__

__all__ = ["cached_export", "EXPORTS_DIR"]

EXPORTS_DIR = "exported"  # <cache>/exported/<content key>/model.onnx


def cached_export(converted: Path, task: str, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """The cached export of the converted ``.safetensors`` file ``converted`` as ``task``: made once (parity gate
    on, written atomically, one process at a time), keyed by the weights' hash, the task and the razorzoo and torch
    versions."""
    key = hashlib.sha256(json.dumps({"weights": sha256_of_file(converted), "task": task, "razorzoo": __version__,
                                     "torch": torch.__version__}, sort_keys=True).encode()).hexdigest()[:32]
    cache = Cache(cache_dir)
    target = cache.root / EXPORTS_DIR / key / "model.onnx"
    if not target.is_file():
        with cache.lock(target.parent):  # N processes: one exports, the others wait
            if not target.is_file():
                export(converted, target, task=task)
    return target
