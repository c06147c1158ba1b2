"""What a spec's model expects from a checkpoint: state-dict keys in model order, shapes, dtypes, tied aliases.

The one source of expected keys for verification, supernet extraction and conversion: the model itself, built on
the meta device (no memory, no init), so the three can never disagree with the model or with each other.
"""
from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from razorzoo.arch.spec import ArchSpec

if TYPE_CHECKING:
    import torch

__all__ = ["ModelKeys", "model_keys", "model_view"]


@dataclass(frozen=True)
class ModelKeys:
    """What a spec's model expects: state-dict keys in model order, their shapes/dtypes, and tied alias groups."""

    shapes: "OrderedDict[str, tuple[int, ...]]"
    dtypes: dict[str, "torch.dtype"]
    tied: tuple[tuple[str, ...], ...]  # names sharing one tensor, in model order (RTMDet shared head convs)


@functools.lru_cache(maxsize=16)
def model_keys(spec: ArchSpec) -> ModelKeys:
    """Build the spec's model on the meta device and record its state dict (cached: specs are immutable)."""
    import torch

    from razorzoo.models.factory import build_model

    with torch.device("meta"):
        state = build_model(spec).state_dict(keep_vars=True)
    groups: dict[int, list[str]] = {}
    for key, tensor in state.items():
        groups.setdefault(id(tensor), []).append(key)
    return ModelKeys(
        shapes=OrderedDict((k, tuple(v.shape)) for k, v in state.items()),
        dtypes={k: v.dtype for k, v in state.items()},
        tied=tuple(tuple(g) for g in groups.values() if len(g) > 1),
    )


def model_view(spec: ArchSpec, state_dict: Mapping[str, Any]) -> "OrderedDict[str, Any]":
    """The checkpoint entries under the model's key names: a backbone takes ``backbone.*`` of a classifier or
    detector checkpoint (upstream's ``Pretrained(prefix='backbone.')``); other tasks use the keys as they are."""
    if spec.task == "backbone" and any(k.startswith("backbone.") for k in state_dict):
        return OrderedDict((k[len("backbone."):], v) for k, v in state_dict.items() if k.startswith("backbone."))
    return OrderedDict(state_dict)
