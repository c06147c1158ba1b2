"""A training run's resumable state as one safetensors file: tensors in the file, everything else as JSON in its
metadata, written atomically (a crash or Ctrl-C while saving leaves the previous state). Nothing is pickled.

The file holds the model's raw weights (``model.*``), the EMA weights (``ema.*``), the optimizer's per-parameter
state (``optimizer.<index>.<name>``), torch's RNG state (``rng.*``) and, in the metadata, ``razorzoo_train_state``:
the run's identity (what must match to resume), its progress (epoch, next batch, iteration, EMA steps, best AP) and
the optimizer's parameter groups.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open

from razorzoo.bounded import InputError, load_json, safe_repr
from razorzoo.errors import RazorzooError
from razorzoo.weights.convert import write_safetensors

__all__ = ["Progress", "TrainState", "save_state", "load_state", "StateError"]

STATE_KEY = "razorzoo_train_state"
FORMAT = 1


class StateError(RazorzooError):
    """A state file that cannot resume this run."""


@dataclass
class Progress:
    """Where a run is: the next batch to train is batch ``batch`` of 0-based ``epoch``; ``iteration`` batches were
    trained so far."""

    epoch: int = 0
    batch: int = 0
    iteration: int = 0
    ema_steps: int = 0
    best_ap: float | None = None
    best_epoch: int | None = None


@dataclass
class TrainState:
    """What :func:`load_state` returns: progress, the identity it was written for, and tensors to restore."""

    progress: Progress
    identity: dict[str, Any]
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: torch.Tensor


def save_state(path: Path, *, identity: Mapping[str, Any], progress: Progress, model: torch.nn.Module,
               ema: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Path:
    """Write the state atomically to ``path``."""
    tensors: dict[str, torch.Tensor] = {}
    tensors.update((f"model.{k}", v) for k, v in model.state_dict().items())
    tensors.update((f"ema.{k}", v) for k, v in ema.state_dict().items())
    optim = optimizer.state_dict()
    for index, entries in optim["state"].items():
        for name, value in entries.items():
            if not isinstance(value, torch.Tensor):
                raise StateError(f"optimizer state {name!r} is not a tensor; razorzoo saves tensors only")
            tensors[f"optimizer.{index}.{name}"] = value
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    record = {"format": FORMAT, "identity": dict(identity), "progress": asdict(progress),
              "param_groups": optim["param_groups"]}
    metadata = {"format": "pt", STATE_KEY: json.dumps(record, sort_keys=True, allow_nan=False)}
    return write_safetensors({k: v.detach() for k, v in tensors.items()}, metadata, path)


def load_state(path: Path) -> TrainState:
    """Read a state file (checked: format, JSON shape, finite numbers); raises :class:`StateError`."""
    where = safe_repr(str(path))
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise StateError(f"{where} is not a readable training state ({type(exc).__name__}); start a new run or "
                         "point --resume at the run's folder") from None
    try:
        record = load_json(metadata.get(STATE_KEY, ""), what=f"{where} metadata")
    except InputError as exc:
        raise StateError(f"{where}: {exc}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise StateError(f"{where} is not a razorzoo training state of format {FORMAT}")
    try:
        progress = Progress(**record["progress"])
        for name in ("epoch", "batch", "iteration", "ema_steps"):
            value = getattr(progress, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise TypeError(name)
        if progress.best_ap is not None and not (isinstance(progress.best_ap, float)
                                                 and math.isfinite(progress.best_ap)):
            raise TypeError("best_ap")
        groups = record["param_groups"]
        if not isinstance(groups, list) or not isinstance(record["identity"], dict):
            raise TypeError("param_groups")
    except (KeyError, TypeError) as exc:
        raise StateError(f"{where}: malformed progress record ({safe_repr(str(exc), 40)})") from None
    optimizer_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            if not index.isdigit():
                raise StateError(f"{where}: malformed optimizer entry {safe_repr(key, 60)}")
            optimizer_state.setdefault(int(index), {})[name] = value
    optimizer_state = dict(sorted(optimizer_state.items()))  # the file orders keys as strings
    if "rng.cpu" not in tensors:
        raise StateError(f"{where} has no RNG state")
    return TrainState(
        progress=progress,
        identity=record["identity"],
        model={k[6:]: v for k, v in tensors.items() if k.startswith("model.")},
        ema={k[4:]: v for k, v in tensors.items() if k.startswith("ema.")},
        optimizer={"state": optimizer_state, "param_groups": groups},
        rng=tensors["rng.cpu"],
    )
