"""Supernets filled by the fixture rule, and MMRazor's own slicing of them (tests/data/slicing/README.md)."""
from __future__ import annotations

import functools
import json
from collections import OrderedDict

import torch

from helpers.models import DATA

SLICING = DATA / "slicing"
SLICED = ("attentive_a1", "attentive_a3", "ofa_lat22")  # the subnets MMRazor sliced
# relative tolerance on sums: float32 slices summed in another order; OFA kernels go through one or two matmuls
_REL_TOL = 1e-5


def supernet_manifest(family: str) -> list[tuple[str, tuple[int, ...], str]]:
    """``[key, shape, dtype]`` of the family's classifier supernet: MMRazor's for AttentiveNAS and OFA; for SPOS,
    every candidate op of every block, in upstream order. There is no MMRazor dump of the SPOS supernet: its list is
    razorzoo's, made of our model's keys for each op, which test_classifiers checks against the upstream
    ``spos_0.33M`` manifest for the ops it uses."""
    if family == "spos":
        from razorzoo.weights.extract import supernet_state_dict_shapes

        return [(key, shape, "torch.int64" if key.endswith("num_batches_tracked") else "torch.float32")
                for key, shape in supernet_state_dict_shapes("spos").items()]
    entries = json.loads((SLICING / f"{family}_supernet.manifest.json").read_text())["state_dict"]
    return [(key, tuple(shape), dtype) for key, shape, dtype in entries]


def supernet_state_dict(family: str, prefix: str = "") -> "OrderedDict[str, torch.Tensor]":
    """The supernet filled by the fixture rule (values depend on the key without ``prefix``)."""
    from fixture_rule import rule_tensor

    return OrderedDict((prefix + key, rule_tensor(key, shape, dtype)) for key, shape, dtype in supernet_manifest(family))


@functools.lru_cache(maxsize=None)
def _sliced() -> dict:
    return json.loads((SLICING / "sliced_subnets.json").read_text())


def mmrazor_slice(name: str) -> dict:
    """MMRazor's result for ``name`` (one of :data:`SLICED`): ``family``, ``subnet_yaml``, ``keys``, ``digests``,
    ``logits``; and ``input``, the tensor the logits were computed on."""
    data = _sliced()
    spec = data["input"]
    x = torch.randn(*spec["shape"], generator=torch.Generator().manual_seed(spec["seed"]))
    return dict(data["subnets"][name], input=x)


def slice_mismatches(state_dict: "dict[str, torch.Tensor]", name: str) -> list[str]:
    """How ``state_dict`` differs from MMRazor's slice ``name``: keys, order, shapes, and every floating tensor's sum,
    absolute sum and 7 sampled values (a slice from the wrong end or a wrong kernel transform changes them)."""
    expected = mmrazor_slice(name)
    got_keys = [[k, list(v.shape)] for k, v in state_dict.items()]
    if got_keys != expected["keys"]:
        missing = [k for k, _ in expected["keys"] if k not in state_dict]
        return [f"keys/shapes differ from MMRazor's ({len(got_keys)} vs {len(expected['keys'])}; missing {missing[:3]})"]
    problems = []
    for key, digest in expected["digests"].items():
        value = state_dict[key].double().flatten()
        samples = value[torch.linspace(0, len(value) - 1, 7).long()]
        scale = value.abs().sum().item() + 1e-12
        if abs(value.sum().item() - digest["sum"]) > _REL_TOL * scale \
                or abs(value.abs().sum().item() - digest["abs_sum"]) > _REL_TOL * scale \
                or (samples - torch.tensor(digest["samples"], dtype=torch.float64)).abs().max().item() \
                > _REL_TOL * (1 + samples.abs().max().item()):
            problems.append(f"{key}: values differ from MMRazor's slice")
    return problems
