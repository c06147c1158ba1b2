"""``ArchSpec``: everything needed to build a model's architecture, and nothing else.

A spec is a subnet (the choices made in a search space) plus what the card adds: the task and, for detectors, the
neck/head recipe; for classifiers, the test pipeline when the card gives one.
It round-trips through a plain dict (``config.json`` on the Hub, safetensors metadata), so a
converted file alone rebuilds its model.

The task names live here, once, for every layer above: :data:`TASKS` are what a built model is, :data:`CARD_TASKS`
what a model card describes (a supernet card has weights to slice from, not a model to build).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from razorzoo.arch.recipes import ClassifierPreprocess
from razorzoo.bounded import safe_repr
from razorzoo.errors import RazorzooError

__all__ = ["TASKS", "CARD_TASKS", "ArchSpec"]

TASKS = ("classification", "backbone", "detection")
CARD_TASKS = ("classification", "detection", "supernet")


@dataclass(frozen=True)
class ArchSpec:
    """Architecture of a razorzoo model: ``task`` + ``subnet`` (+ detector ``recipe`` / backbone ``out_indices``)."""

    task: str
    subnet: Any  # razorzoo.arch.subnet.Subnet
    recipe: str | None = None  # detector recipe id, e.g. "yolov6_l_d12" (razorzoo.models.detector.RECIPES)
    out_indices: tuple[int, ...] | None = None  # backbone task only; None = upstream default
    preprocessing: ClassifierPreprocess | None = None  # classification only; None = the search space's default

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise RazorzooError(f"unknown task {safe_repr(self.task)}; expected one of {', '.join(TASKS)}")
        if (self.task == "detection") != (self.recipe is not None):
            raise RazorzooError("a detection spec needs a detector recipe, and only detection specs take one")
        if self.preprocessing is not None and self.task != "classification":
            raise RazorzooError("only classification specs take a preprocessing pipeline")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form; the subnet is stored as its canonical YAML text."""
        data: dict[str, Any] = {"task": self.task, "family": self.subnet.family, "subnet": self.subnet.to_yaml()}
        if self.recipe is not None:
            data["recipe"] = self.recipe
        if self.out_indices is not None:
            data["out_indices"] = list(self.out_indices)
        if self.preprocessing is not None:
            data["preprocessing"] = self.preprocessing.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ArchSpec":
        """The spec of :meth:`to_dict`; ``data`` may come from a stranger's ``config.json``, so every field is
        checked before use."""
        from razorzoo.arch.subnet import load_subnet

        if not isinstance(data, dict):
            raise RazorzooError(f"an architecture spec must be a mapping, not {safe_repr(data)}")
        missing = [key for key in ("task", "subnet") if key not in data]
        if missing:
            raise RazorzooError(f"architecture spec is missing the key {missing[0]!r}")
        if not isinstance(data["subnet"], str) or "\n" not in data["subnet"]:
            raise RazorzooError(f"architecture spec: 'subnet' must be the subnet's YAML text, not "
                                f"{safe_repr(data['subnet'])}")
        recipe, out_indices = data.get("recipe"), data.get("out_indices")
        if recipe is not None and not isinstance(recipe, str):
            raise RazorzooError(f"architecture spec: 'recipe' must be a recipe id, not {safe_repr(recipe)}")
        if out_indices is not None and not (
            isinstance(out_indices, list) and len(out_indices) <= 16 and all(type(i) is int for i in out_indices)
        ):
            raise RazorzooError(f"architecture spec: 'out_indices' must be a list of stage indices, not "
                                f"{safe_repr(out_indices)}")
        preprocessing = data.get("preprocessing")
        if preprocessing is not None and not isinstance(preprocessing, dict):
            raise RazorzooError(f"architecture spec: 'preprocessing' must be a mapping, not {safe_repr(preprocessing)}")
        subnet = load_subnet(data["subnet"], family=data.get("family"))
        return cls(task=data["task"], subnet=subnet, recipe=recipe,
                   out_indices=tuple(out_indices) if out_indices is not None else None,
                   preprocessing=ClassifierPreprocess.from_dict(preprocessing) if preprocessing is not None else None)
