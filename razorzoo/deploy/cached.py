"""The exported-model cache: a converted model exported once into ``<cache>/exported/<key>/model.onnx``, reused
afterwards (``load_detector(..., backend=)`` and friends, :mod:`razorzoo.loading`).

The key is the content hash of the weights (never their file name: other weights under the same name are another
export), the task, every export setting, and the razorzoo and torch versions. A parity gate that refused an export
is recorded beside it, so the same settings are not exported and refused again on every load.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from razorzoo.bounded import InputError, read_text, safe_repr, terminal_safe
from razorzoo.deploy.export import end_to_end_or_raw, export
from razorzoo.deploy.parity import ParityError
from razorzoo.files import write_bytes_atomic
from razorzoo.progress import step
from razorzoo.storage.cache import Cache, sha256_of_file
from razorzoo.version import __version__

__all__ = ["cached_export", "detector_export", "export_dir"]

REFUSED = "parity_refused.txt"  # the gate's one-line verdict on an export it refused
_VERDICT_CHARS = 300  # of a recorded verdict, in a message


def _key(weights: str, task: str, options: dict[str, Any]) -> str:
    settings = {"weights": weights, "task": task, "options": options, "razorzoo": __version__,
                "torch": torch.__version__}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]


def export_dir(converted: Path, task: str, *, cache_dir: str | os.PathLike | None = None, **options: Any) -> Path:
    """The cache folder of :func:`cached_export`'s export with these arguments (``model.onnx``, or the gate's
    ``parity_refused.txt``)."""
    return Cache(cache_dir).export_dir(_key(sha256_of_file(Path(converted)), task, options))


def cached_export(converted: Path, task: str, *, cache_dir: str | os.PathLike | None = None,
                  **options: Any) -> Path:
    """The cached export of the converted ``.safetensors`` file ``converted`` as ``task`` with :func:`export`'s
    ``options`` (JSON values: ``variant``, ``opset``...): made once (parity gate on, written atomically, one process
    at a time). Raises :class:`ParityError` when the gate refuses it, now or on an earlier call."""
    cache = Cache(cache_dir)
    key_options = dict(options)
    if options.get("int8"):  # keyed by the calibration set's content, which is read (not decoded) for that
        from razorzoo.deploy.quantize import calibration_digest, calibration_items

        items = calibration_items(options.get("calib"))
        key_options["calib"] = calibration_digest(items, options.get("calib_n", 300))
        options["calib"] = items
    weights = sha256_of_file(converted)
    folder = cache.export_dir(_key(weights, task, key_options))
    target = folder / ("model.xml" if options.get("int8") else "model.onnx")
    if not target.is_file():
        with cache.lock(folder):  # N processes: one exports, the others wait
            if not target.is_file():
                refused = folder / REFUSED
                if refused.is_file():
                    verdict = _recorded_verdict(refused)
                    raise ParityError(f"{target}: the parity gate refused this export earlier: {verdict}", verdict)
                what = f"{options['variant']} " if options.get("variant") else ""
                try:
                    with step(f"first use of a runtime: exporting {converted} to {what}ONNX, parity gate on (once: "
                              f"later loads reuse {target})"):
                        export(converted, target, task=task, **options)
                except ParityError as exc:
                    write_bytes_atomic(refused, exc.verdict.encode())
                    raise
                finally:  # `cache rm NAME` finds the export, or the refusal, by the weights it was made from
                    if target.is_file() or refused.is_file():
                        cache.record_export(folder, converted_sha256=weights, task=task)
    return target


def _recorded_verdict(refused: Path) -> str:
    """The gate's recorded one-line verdict, bounded and without terminal escapes; a damaged record says how to
    export again instead."""
    try:
        text = read_text(refused, what=f"the parity gate's recorded verdict {safe_repr(str(refused), 512)}",
                         limit=4096)
    except InputError as exc:
        raise InputError(f"{exc}; delete it to export again") from None
    return " ".join(terminal_safe(text).split())[:_VERDICT_CHARS]


def detector_export(converted: Path, *, cache_dir: str | os.PathLike | None = None, **options: Any) -> Path:
    """The fastest cached export of a detector that reproduces eager ``predict``: the end-to-end ``nms`` variant
    (decoding and NMS in the runtime) when its parity gate passes, else the ``raw`` one, saying why once.
    ``options`` are :func:`cached_export`'s (``int8``, ``calib``...)."""
    return end_to_end_or_raw(lambda variant: cached_export(converted, "detection", variant=variant,
                                                           cache_dir=cache_dir, **options), str(converted))
