"""Demo weights: deterministic, untrained tensors for any model, written as the real OpenMMLab checkpoints are.

Every tensor is a function of its key, shape and dtype only ("fixture rule v2", tests/data/README.md: seeded by
``zlib.crc32(key)``), so the same weights can be rebuilt anywhere without shipping any. The test suite reproduces the
goldens recorded with the real MMRazor/MMYOLO code from them, and ``razorzoo mirror``/``razorzoo demo`` serve them
where download.openmmlab.com cannot be reached, so the whole path (download, hash check, verify, convert, load,
predict) can be tried offline. They are not trained: predictions made with them mean nothing.

The checkpoint layouts are the ones a card's ``weights.layout`` names (docs/upstream.md §3, §4): an MMYOLO detector
as ``tools/misc/publish_model.py`` writes it (legacy torch format, ``meta`` + ``state_dict``), an MMRazor subnet or
supernet as MMRazor publishes them (zip format, ``architecture.``-prefixed keys).
"""
from __future__ import annotations

import math
import os
import re
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch

from razorzoo.arch.spec import ArchSpec
from razorzoo.errors import RazorzooError
from razorzoo.version import __version__
from razorzoo.weights.keys import model_keys

__all__ = ["CARD_LAYOUTS", "rule_tensor", "demo_state_dict", "demo_supernet_state_dict", "write_checkpoint"]

CARD_LAYOUTS = ("mmyolo_detector", "mmrazor_subnet", "mmrazor_supernet")
_REG_BIAS = re.compile(r"bbox_head\.head_module\.(rtm_reg|reg_preds)\.\d+\.bias$")


def rule_tensor(name: str, shape: Any, dtype: "str | torch.dtype" = "torch.float32") -> torch.Tensor:
    """The tensor the fixture rule gives the key ``name``: scaled like a trained layer (BN variances around 1,
    convolutions by fan-in, positive box-regression biases) so that outputs stay finite and boxes stay boxes."""
    shape = tuple(int(s) for s in shape)
    torch_dtype = dtype if isinstance(dtype, torch.dtype) else getattr(torch, str(dtype).removeprefix("torch."))
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


def demo_state_dict(spec: ArchSpec) -> "OrderedDict[str, torch.Tensor]":
    """The state dict of ``spec``'s model (upstream keys, in model order) filled by the rule; tied aliases get
    independent values, as a checkpoint written from them holds them."""
    keys = model_keys(spec)
    return OrderedDict((key, rule_tensor(key, shape, keys.dtypes[key])) for key, shape in keys.shapes.items())


def demo_supernet_state_dict(family: str) -> "OrderedDict[str, torch.Tensor]":
    """The family's classification supernet (MMRazor's keys and shapes; every candidate op for SPOS) filled by the
    rule: what ``extract_subnet`` slices the zoo's AttentiveNAS A1-A5 from."""
    from razorzoo.weights.extract import supernet_state_dict_shapes

    return OrderedDict((key, rule_tensor(key, shape, torch.int64 if key.endswith("num_batches_tracked")
                                         else torch.float32))
                       for key, shape in supernet_state_dict_shapes(family).items())


def write_checkpoint(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, layout: str, *,
                     meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``state_dict`` to ``path`` as the card layout ``layout`` (one of :data:`CARD_LAYOUTS`).

    ``mmyolo_detector``: legacy torch format, ``{"meta": meta, "state_dict": state_dict}``; ``mmrazor_subnet`` and
    ``mmrazor_supernet``: zip format, ``{"state_dict": {"architecture." + key: ...}, "meta": meta}``. ``meta``
    defaults to a small plain dict that says the weights are razorzoo demo weights.
    """
    if layout not in CARD_LAYOUTS:
        raise RazorzooError(f"unknown checkpoint layout {layout!r}; expected one of {', '.join(CARD_LAYOUTS)}")
    meta = dict(meta) if meta is not None else {"experiment_name": "razorzoo demo weights (fixture rule, untrained)",
                                                "razorzoo_version": __version__}
    if layout == "mmyolo_detector":
        checkpoint: dict[str, Any] = {"meta": meta, "state_dict": state_dict}
    else:
        checkpoint = {"state_dict": OrderedDict(("architecture." + k, v) for k, v in state_dict.items()),
                      "meta": meta}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path, _use_new_zipfile_serialization=layout != "mmyolo_detector")
    return path
