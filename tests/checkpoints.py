"""Write test checkpoints in every real OpenMMLab layout (tests/data/layouts/<model>/layouts.md).

Weights come from the fixture rule (``tests/fixture_rule.py``); the non-weight parts are the real mmengine pickles in
``runner_extras.pth`` (``HistoryBuffer``s, numpy arrays, optimizer groups), read back with razorzoo's own allow-list
unpickler — which therefore has to carry mmengine objects it cannot import. Other test modules (the HTTP fault tests)
only need :func:`write_checkpoint`.
"""
from __future__ import annotations

import contextlib
import json
import sys
import types
from collections import OrderedDict
from pathlib import Path

import torch

from fixture_rule import DATA, rule_state_dict
from razorzoo.weights.demo import write_checkpoint as write_card_checkpoint

LAYOUTS = ("runner", "mmdet-publish", "mmrazor-publish", "mmyolo-publish", "mmrazor-subnet", "state-dict")
SUPERNET = "supernet"  # an MMRazor classification supernet of the model's search space


def raw_state_dict(model: str) -> "OrderedDict[str, torch.Tensor]":
    """Stand-in for the live (non-EMA) training weights: the rule values plus one, so they differ from the EMA ones."""
    return OrderedDict((k, v + 1) for k, v in rule_state_dict(model).items())


class HistoryBuffer:
    """Just enough of ``mmengine.logging.history_buffer.HistoryBuffer`` to unpickle and re-pickle the real objects
    (their ``_statistics_methods`` reference these four methods through ``getattr``)."""

    __module__ = "mmengine.logging.history_buffer"

    def min(self): ...

    def max(self): ...

    def current(self): ...

    def mean(self): ...


@contextlib.contextmanager
def _mmengine_stub():
    """Make ``mmengine.logging.history_buffer.HistoryBuffer`` importable while the test helper (un)pickles the
    trusted ``runner_extras.pth``, so written files reference exactly the globals real Runner files reference."""
    names = ("mmengine", "mmengine.logging", "mmengine.logging.history_buffer")
    saved = {name: sys.modules.get(name) for name in names}
    module = types.ModuleType(names[-1])
    module.HistoryBuffer = HistoryBuffer
    sys.modules.update({names[0]: types.ModuleType(names[0]), names[1]: types.ModuleType(names[1]), names[2]: module})
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


def _extras(model: str) -> dict:
    # trusted test data, and written by mmengine: weights_only=False is what the real publish tools do
    return torch.load(DATA / "layouts" / model / "runner_extras.pth", weights_only=False)


def _with_metadata(state_dict: "OrderedDict[str, torch.Tensor]", model: str, part: str) -> OrderedDict:
    entries = json.loads((DATA / "layouts" / model / "state_dict_metadata.json").read_text()).get(part)
    if entries is not None:
        state_dict._metadata = OrderedDict((k, v) for k, v in entries)
    return state_dict


def _ema_state_dict(model: str) -> "OrderedDict[str, torch.Tensor]":
    ema = OrderedDict([("steps", torch.tensor(2, dtype=torch.int64))])
    ema.update(("module." + k, v) for k, v in raw_state_dict(model).items())
    return _with_metadata(ema, model, "ema_state_dict")


def has_ema(model: str) -> bool:
    info = json.loads((DATA / "layouts" / model / "layout_info.json").read_text())
    return "ema_state_dict" in info["top_level_keys"]


def write_checkpoint(model: str, layout: str, path: str | Path,
                     state_dict: "OrderedDict[str, torch.Tensor] | None" = None) -> Path:
    """Write ``model``'s fixture weights (or ``state_dict``) to ``path`` in ``layout`` (one of :data:`LAYOUTS`).

    ``runner`` (zip; with ``ema_state_dict`` for the detectors trained with EMAHook), ``mmdet-publish`` and
    ``mmrazor-publish`` (legacy format), ``mmrazor-subnet`` (zip, ``architecture.``-prefixed keys), ``state-dict``
    (a bare zip-format state dict), ``supernet`` (the search space's supernet, ``architecture.``-prefixed; the
    model's own weights are not used). ``state_dict`` always holds the EMA weights; ``ema_state_dict`` the raw ones.
    """
    path = Path(path)
    sd = _with_metadata(OrderedDict(state_dict if state_dict is not None else rule_state_dict(model)), model,
                        "state_dict")
    with _mmengine_stub():
        return _write(model, layout, path, sd)


def _write(model: str, layout: str, path: Path, sd: OrderedDict) -> Path:
    legacy = False
    if layout == "runner":
        extras = _extras(model)
        ck = {}
        for key in extras:
            if key == "message_hub":
                ck["state_dict"] = sd
            ck[key] = extras[key]
        if has_ema(model):
            ck["ema_state_dict"] = _ema_state_dict(model)
    elif layout == "mmdet-publish":  # the card layout "mmyolo_detector": razorzoo's own demo writer
        return write_card_checkpoint(sd, path, "mmyolo_detector", meta=_extras(model)["meta"])
    elif layout == "mmrazor-publish":
        ck = {"meta": _extras(model)["meta"], "state_dict": sd}
        if has_ema(model):
            ck["ema_state_dict"] = _ema_state_dict(model)
        legacy = True
    elif layout == "mmyolo-publish":  # mmyolo tools/misc/publish_model.py keeps meta and param_schedulers
        extras = _extras(model)
        ck = {"meta": extras["meta"], "state_dict": sd, "param_schedulers": extras["param_schedulers"]}
        legacy = True
    elif layout == "mmrazor-subnet":
        return write_card_checkpoint(sd, path, "mmrazor_subnet", meta={})
    elif layout == "state-dict":
        ck = sd
    elif layout == SUPERNET:
        return write_card_checkpoint(supernet_state_dict(model), path, "mmrazor_supernet", meta={})
    else:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ck, path, _use_new_zipfile_serialization=not legacy)
    return path


def supernet_state_dict(model: str) -> "OrderedDict[str, torch.Tensor]":
    """The classification supernet of ``model``'s search space (MMRazor's keys and shapes for AttentiveNAS/OFA,
    every candidate for SPOS), filled by the fixture rule: the supernet MMRazor sliced in tests/data/slicing."""
    from helpers.slicing import supernet_state_dict as family_supernet
    from razorzoo.arch.subnet import load_subnet

    return family_supernet(load_subnet(DATA / model / "subnet.yaml").family)


class _Payload:
    """Pickles as ``callable(*args)``: the shape of every code-execution pickle (``os.system``, ``eval`` …)."""

    def __init__(self, callable_, *args):
        self.callable, self.args = callable_, args

    def __reduce__(self):
        return self.callable, self.args


def malicious_payload(marker: Path) -> _Payload:
    """An object whose unpickling would run a shell command creating ``marker``."""
    import os

    return _Payload(os.system, f"touch {marker}")


def write_pickle(obj, path: str | Path, *, legacy: bool = False) -> Path:
    """``torch.save`` any object (e.g. a checkpoint with a payload planted somewhere)."""
    torch.save(obj, path, pickle_protocol=2, _use_new_zipfile_serialization=not legacy)
    return Path(path)

