"""Deterministic test weights from a state-dict manifest ("fixture rule v2", tests/data/README.md).

Every entry's value depends only on its name, shape and dtype, so the golden outputs recorded with the real
MMRazor/MMYOLO code can be reproduced with our models without shipping any weights.
"""
from __future__ import annotations

import json
import math
import re
import zlib
from collections import OrderedDict
import torch

from helpers.models import DATA
_REG_BIAS = re.compile(r"bbox_head\.head_module\.(rtm_reg|reg_preds)\.\d+\.bias$")


def rule_tensor(name: str, shape, dtype: str = "torch.float32") -> torch.Tensor:
    shape = tuple(int(s) for s in shape)
    torch_dtype = getattr(torch, str(dtype).removeprefix("torch."))
    if not torch_dtype.is_floating_point:
        return torch.zeros(shape, dtype=torch_dtype)
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    if _REG_BIAS.search(name):
        return 1 + 0.1 * torch.randn(shape, generator=g)
    if name.endswith("running_var"):
        return 0.5 + torch.rand(shape, generator=g)
    if name.endswith("running_mean"):
        return 0.1 * torch.randn(shape, generator=g)
    if len(shape) == 1 and name.endswith(".weight"):
        return 1 + 0.1 * torch.randn(shape, generator=g)
    if len(shape) <= 1:
        return 0.1 * torch.randn(shape, generator=g)
    return torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))


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
