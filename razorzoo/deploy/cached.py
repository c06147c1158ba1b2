"""The exported-model cache: a converted model exported once into ``<cache>/exported/<key>/model.onnx``, reused
afterwards (``load_detector(..., backend=)`` and friends, :mod:`razorzoo.loading`)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from razorzoo.deploy.export import export
from razorzoo.progress import step
from razorzoo.storage.cache import Cache, sha256_of_file
from razorzoo.version import __version__

__all__ = ["cached_export"]


def cached_export(converted: Path, task: str, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """The cached export of the converted ``.safetensors`` file ``converted`` as ``task``: made once (parity gate
    on, written atomically, one process at a time), keyed by the weights' hash, the task and the razorzoo and torch
    versions."""
    weights = sha256_of_file(converted)
    key = hashlib.sha256(json.dumps({"weights": weights, "task": task, "razorzoo": __version__,
                                     "torch": torch.__version__}, sort_keys=True).encode()).hexdigest()[:32]
    cache = Cache(cache_dir)
    target = cache.export_dir(key) / "model.onnx"
    if not target.is_file():
        with cache.lock(target.parent):  # N processes: one exports, the others wait
            if not target.is_file():
                with step(f"first use of a runtime: exporting {converted} to ONNX, parity gate on (once: later "
                          f"loads reuse {target})"):
                    export(converted, target, task=task)
                cache.record_export(target.parent, converted_sha256=weights, task=task)  # `cache rm NAME` finds it
    return target
