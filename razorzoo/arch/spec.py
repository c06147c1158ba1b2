"""``ArchSpec``: everything needed to build a model's architecture, and nothing else.

A spec is a subnet (the choices made in a search space) plus what the card adds: the task and, for detectors, the
neck/head recipe; for classifiers, the test pipeline when the card gives one.
It round-trips through a plain dict (``config.json`` on the Hub, safetensors metadata), so a
converted file alone rebuilds its model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from razorzoo.arch.recipes import ClassifierPreprocess
from razorzoo.errors import RazorzooError

TASKS = ("classification", "backbone", "detection")


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
            raise RazorzooError(f"unknown task {self.task!r}; expected one of {TASKS}")
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
        from razorzoo.arch.subnet import load_subnet

        try:
            subnet = load_subnet(data["subnet"], family=data.get("family"))
            out_indices = data.get("out_indices")
            preprocessing = data.get("preprocessing")
            return cls(
                task=data["task"],
                subnet=subnet,
                recipe=data.get("recipe"),
                out_indices=tuple(out_indices) if out_indices is not None else None,
                preprocessing=ClassifierPreprocess.from_dict(preprocessing) if preprocessing is not None else None,
            )
        except KeyError as exc:
            raise RazorzooError(f"architecture spec is missing the key {exc.args[0]!r}") from None
