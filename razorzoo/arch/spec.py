"""``ArchSpec``: everything needed to build a model's architecture, and nothing else.

A spec is a subnet (the choices made in a search space) plus what the card adds: the task and, for detectors, the
neck/head recipe (and the class names and canvas size when they are not the recipe's, e.g. a detector fine-tuned on
three classes at 320 pixels); for classifiers, the test pipeline when the card gives one.
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

__all__ = ["TASKS", "CARD_TASKS", "MAX_CLASSES", "ArchSpec", "check_class_names", "check_input_size",
           "requested_class_names"]

TASKS = ("classification", "backbone", "detection")
CARD_TASKS = ("classification", "detection", "supernet")
MAX_CLASSES = 10000  # bounds what a stranger's config.json or metadata can make a detector head allocate
_MAX_CLASS_NAME = 200


def check_class_names(names: Any) -> tuple[str, ...]:
    """``names`` as a tuple after checking it: 1 to :data:`MAX_CLASSES` distinct, non-empty strings of at most 200
    characters (they label detections and are matched against COCO category names)."""
    if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)):
        raise RazorzooError(f"class names must be a list of strings, not {safe_repr(names, 60)}")
    if not 1 <= len(names) <= MAX_CLASSES:
        raise RazorzooError(f"a detector needs 1 to {MAX_CLASSES} classes, got {len(names)}")
    for name in names:
        if not isinstance(name, str) or not 0 < len(name) <= _MAX_CLASS_NAME:
            raise RazorzooError(f"class name {safe_repr(name, 60)} must be a non-empty string of at most "
                                f"{_MAX_CLASS_NAME} characters")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise RazorzooError(f"class name {safe_repr(name, 60)} appears more than once")
        seen.add(name)
    return tuple(names)


def check_input_size(size: Any) -> int:
    """A detector's square canvas side: an integer multiple of 32 (the largest stride) from 64 to 4096."""
    if not isinstance(size, int) or isinstance(size, bool) or not 64 <= size <= 4096 or size % 32:
        raise RazorzooError(f"an input size must be a multiple of 32 from 64 to 4096, not {safe_repr(size, 20)}")
    return size


def requested_class_names(num_classes: Any = None, class_names: Any = None) -> tuple[str, ...] | None:
    """What a user's ``num_classes=`` / ``class_names=`` ask for: the names (``class_0 ..`` when only a count is
    given), or None for the model's own classes. Both given must agree."""
    if class_names is not None:
        names = check_class_names(class_names)
        if num_classes is not None and num_classes != len(names):
            raise RazorzooError(f"num_classes={safe_repr(num_classes, 20)} but {len(names)} class names were given")
        return names
    if num_classes is None:
        return None
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or not 1 <= num_classes <= MAX_CLASSES:
        raise RazorzooError(f"num_classes must be an integer from 1 to {MAX_CLASSES}, not {safe_repr(num_classes, 20)}")
    return tuple(f"class_{i}" for i in range(num_classes))


@dataclass(frozen=True)
class ArchSpec:
    """Architecture of a razorzoo model: ``task`` + ``subnet`` (+ detector ``recipe`` / backbone ``out_indices``)."""

    task: str
    subnet: Any  # razorzoo.arch.subnet.Subnet
    recipe: str | None = None  # detector recipe id, e.g. "yolov6_l_d12" (razorzoo.models.detector.RECIPES)
    out_indices: tuple[int, ...] | None = None  # backbone task only; None = upstream default
    preprocessing: ClassifierPreprocess | None = None  # classification only; None = the search space's default
    class_names: tuple[str, ...] | None = None  # detection only; None = the recipe's (COCO-80)
    input_size: int | None = None  # detection only; None = the recipe's test canvas (640, or 960 for RTMDet)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise RazorzooError(f"unknown task {safe_repr(self.task)}; expected one of {', '.join(TASKS)}")
        if (self.task == "detection") != (self.recipe is not None):
            raise RazorzooError("a detection spec needs a detector recipe, and only detection specs take one")
        if self.preprocessing is not None and self.task != "classification":
            raise RazorzooError("only classification specs take a preprocessing pipeline")
        if self.class_names is not None:
            if self.task != "detection":
                raise RazorzooError("only detection specs take class names")
            object.__setattr__(self, "class_names", check_class_names(self.class_names))
        if self.input_size is not None:
            if self.task != "detection":
                raise RazorzooError("only detection specs take an input size")
            check_input_size(self.input_size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form; the subnet is stored as its canonical YAML text."""
        data: dict[str, Any] = {"task": self.task, "family": self.subnet.family, "subnet": self.subnet.to_yaml()}
        if self.recipe is not None:
            data["recipe"] = self.recipe
        if self.out_indices is not None:
            data["out_indices"] = list(self.out_indices)
        if self.preprocessing is not None:
            data["preprocessing"] = self.preprocessing.to_dict()
        if self.class_names is not None:
            data["class_names"] = list(self.class_names)
        if self.input_size is not None:
            data["input_size"] = self.input_size
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
        class_names = data.get("class_names")
        if class_names is not None:
            try:
                class_names = check_class_names(class_names)
            except RazorzooError as exc:
                raise RazorzooError(f"architecture spec: 'class_names': {exc}") from None
        input_size = data.get("input_size")
        if input_size is not None:
            try:
                check_input_size(input_size)
            except RazorzooError as exc:
                raise RazorzooError(f"architecture spec: 'input_size': {exc}") from None
        subnet = load_subnet(data["subnet"], family=data.get("family"))
        return cls(task=data["task"], subnet=subnet, recipe=recipe, input_size=input_size,
                   out_indices=tuple(out_indices) if out_indices is not None else None,
                   preprocessing=ClassifierPreprocess.from_dict(preprocessing) if preprocessing is not None else None,
                   class_names=class_names)
