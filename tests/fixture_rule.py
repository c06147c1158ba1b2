"""Deterministic test weights from a state-dict manifest ("fixture rule v2", tests/data/README.md).

Every entry's value depends only on its name, shape and dtype (:func:`razorzoo.weights.demo.rule_tensor`, the rule
razorzoo ships for its demo weights), so the golden outputs recorded with the real MMRazor/MMYOLO code can be
reproduced with our models without shipping any weights.
"""
from __future__ import annotations

import json
from collections import OrderedDict

import torch

from helpers.models import DATA
from razorzoo.weights.demo import rule_tensor

__all__ = ["DATA", "rule_tensor", "manifest", "rule_state_dict", "effective_state_dict"]


def manifest(model: str) -> dict:
    return json.loads((DATA / model / "manifest.json").read_text())


def rule_state_dict(model: str) -> "OrderedDict[str, torch.Tensor]":
    """The upstream state_dict of ``model`` (tests/data/<model>/manifest.json) filled by the rule.

    Tied aliases get independent values, exactly as a checkpoint written from them would hold them.
    """
    return OrderedDict((k, rule_tensor(k, s, d)) for k, s, d in manifest(model)["state_dict"])


def effective_state_dict(model: str) -> "OrderedDict[str, torch.Tensor]":
    """What a model holds after loading :func:`rule_state_dict`: tied aliases take the last alias' value."""
    sd = rule_state_dict(model)
    for group in manifest(model).get("tied_groups", []):
        names = group["names"]
        for name in names:
            sd[name] = sd[names[-1]]
    return sd
