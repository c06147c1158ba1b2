"""Build architectures (no weights, no network) from a registry name, a subnet YAML, or an :class:`ArchSpec`.

This is where a name becomes a model: registry card -> subnet YAML shipped with the card -> ``ArchSpec`` ->
``nn.Module``. Weights are the loader's business (``razorzoo.loading``).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from razorzoo.arch.recipes import RECIPES
from razorzoo.arch.spec import ArchSpec, requested_class_names
from razorzoo.errors import RazorzooError
from razorzoo.models.factory import build_model

if TYPE_CHECKING:
    from typing import Sequence

    from torch import nn

    from razorzoo.models.detector import Detector

__all__ = ["build_classifier", "build_backbone", "build_detector", "build_model", "resolve_spec"]

def _looks_like_subnet(source: object) -> bool:
    if isinstance(source, (dict, os.PathLike)):
        return True
    # explicit, never guessed from what happens to exist in the working directory
    text = str(source)
    return "\n" in text or text.lower().endswith((".yaml", ".yml", ".json"))


def resolve_spec(
    name_or_subnet_yaml: object,
    task: str,
    *,
    detector: str | None = None,
    out_indices: tuple[int, ...] | None = None,
    class_names: tuple[str, ...] | None = None,
) -> ArchSpec:
    """Turn what a user passed (registry name or alias, YAML path/text/dict) into an :class:`ArchSpec`.

    ``detector`` names the neck/head recipe: a recipe id (``"yolov6_l_d12"``) or a detection entry of the registry
    (``"yolov6s-attentive_a6"``), whose recipe is used. It is required when building a detector from a bare YAML.
    ``class_names`` (detectors only) replaces the recipe's COCO-80.
    """
    from razorzoo.arch.subnet import load_subnet

    from razorzoo.zoo.registry import get_card, subnet_source

    recipe = preprocessing = None
    if _looks_like_subnet(name_or_subnet_yaml):
        subnet = load_subnet(subnet_source(name_or_subnet_yaml))
    else:

        card = get_card(str(name_or_subnet_yaml))
        if card.task == "supernet":
            raise RazorzooError(
                f"{card.name!r} is a supernet; pick one of its subnets (e.g. razorzoo.list_models('"
                f"{card.family}*')) or pass a subnet YAML"
            )
        subnet = load_subnet(card.subnet_path)
        recipe, preprocessing = card.recipe, card.preprocessing
    if task == "detection":
        if detector is not None:
            recipe = _resolve_recipe(detector)
        if recipe is None:
            raise RazorzooError(
                "building a detector needs a neck/head recipe: pass detector= a detection model name "
                "(e.g. 'yolov6s-attentive_a6') or a recipe id "
                f"({', '.join(RECIPES)})"
            )
        return ArchSpec("detection", subnet, recipe=recipe, class_names=class_names)
    if task == "backbone" and out_indices is None and recipe is not None:
        out_indices = RECIPES[recipe].out_indices
    return ArchSpec(task, subnet, out_indices=tuple(out_indices) if out_indices is not None else None,
                    preprocessing=preprocessing if task == "classification" else None)


def _resolve_recipe(detector: str) -> str:
    if detector in RECIPES:
        return detector
    from razorzoo.errors import UnknownModelError
    from razorzoo.wording import did_you_mean
    from razorzoo.zoo.registry import get_card, list_models

    try:
        card = get_card(detector)
    except UnknownModelError:
        known = [*RECIPES, *list_models(task="detection")]
        detection = ", ".join(list_models(task="detection"))
        raise UnknownModelError(f"unknown detector {detector!r}: detector= (and --detector) takes a recipe id "
                                f"({', '.join(RECIPES)}) or a detection entry ({detection})"
                                f"{did_you_mean(detector, known)}") from None
    if card.recipe is None:
        raise RazorzooError(f"{card.name!r} is not a detector; detector= takes a detection entry or one of "
                            f"{sorted(RECIPES)}")
    return card.recipe


def build_classifier(name_or_subnet_yaml: object) -> "nn.Module":
    """ImageNet classifier (backbone + global pool + ``head.fc``) for a registry name or a subnet YAML.

    Architecture only: no network access, no weights (parameters are zero-filled, not randomly initialized).
    """
    return build_model(resolve_spec(name_or_subnet_yaml, "classification"))


def build_backbone(name_or_subnet_yaml: object, out_indices: tuple[int, ...] | None = None) -> "nn.Module":
    """Backbone alone; calling it returns the tuple of stage outputs at ``out_indices`` (upstream stage numbering)."""
    return build_model(resolve_spec(name_or_subnet_yaml, "backbone", out_indices=out_indices))


def build_detector(name_or_subnet_yaml: object, *, detector: str | None = None, num_classes: int | None = None,
                   class_names: Sequence[str] | None = None) -> "Detector":
    """Detector for a registry name, or for a subnet YAML plus ``detector=`` (recipe id or detection entry name).

    ``num_classes`` / ``class_names`` give it other classes than the recipe's COCO-80 (names default to
    ``class_0 ..``); architecture only, like the rest of the model (zero-filled, no weights).
    """
    names = requested_class_names(num_classes, class_names)
    return build_model(resolve_spec(name_or_subnet_yaml, "detection", detector=detector, class_names=names))
