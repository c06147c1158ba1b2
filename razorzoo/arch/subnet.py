"""Subnet YAMLs: parse MMRazor fix-subnet files and validate them against the three upstream search spaces.

A subnet is the set of choices a NAS search made inside a supernet (docs/upstream.md §2). MMRazor writes it as a flat
YAML mapping ``<mutable alias or module path>: {chosen: <value>}``; this module turns every form seen upstream into a
small frozen dataclass that the model builders read, and writes it back in one canonical form.

This module must not import torch: the card-browsing CLI parses YAMLs without it.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Union

import yaml

from razorzoo.bounded import load_yaml, read_text, safe_repr
from razorzoo.errors import SubnetError
from razorzoo.wording import first_few

__all__ = [
    "FAMILIES",
    "SEARCH_SPACES",
    "SposSpace",
    "StageSpace",
    "MobileNetSpace",
    "Block",
    "Stage",
    "SposSubnet",
    "MobileNetSubnet",
    "Subnet",
    "load_subnet",
    "se_channels",
]

FAMILIES = ("spos", "attentive", "ofa")
INPUT_SIDES = (32, 4096)  # bounds of each side of a classifier's ``input_shape``; upstream uses 192-288


# ---------------------------------------------------------------------------------------------------------------
# Search spaces (the supernet settings of the three upstream configs, docs/upstream.md §1.1-§1.3 / docs/upstream.md §2)
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SposSpace:
    """SearchableShuffleNetV2 supernet (docs/upstream.md §2.1): four stages of one-shot op choices, then a fixed 1x1 conv."""

    stem_channels: int = 16
    stage_channels: tuple[int, ...] = (64, 160, 320, 640)
    stage_blocks: tuple[int, ...] = (4, 4, 8, 4)
    ops: tuple[str, ...] = ("shuffle_3x3", "shuffle_5x5", "shuffle_7x7", "shuffle_xception")
    last_channels: int = 1024
    family: str = field(default="spos", init=False)


@dataclass(frozen=True)
class StageSpace:
    """Choices and fixed settings of one MobileNetV3 stage (``layer{i}``)."""

    depths: tuple[int, ...]
    out_channels: tuple[int, ...]
    kernel_sizes: tuple[int, ...]
    expand_ratios: tuple[int, ...]
    stride: int  # of the stage's first block
    with_se: bool
    act: str


@dataclass(frozen=True)
class MobileNetSpace:
    """AttentiveMobileNetV3 supernet (docs/upstream.md §2.2), in AttentiveNAS (per-stage choices) or OFA (per-block) mode."""

    family: str
    first_channels: tuple[int, ...]
    last_channels: tuple[int, ...]
    stages: tuple[StageSpace, ...]
    first_act: str
    last_act: str
    fine_grained: bool  # OFA: kernel size / expand ratio chosen per block
    attentive_shortcut: bool  # AttentiveNAS: avg-pool + 1x1 conv shortcut on every block
    last_expand_ratio: int = 6  # ``last_mutable_expand_value`` has a single choice and no YAML key (docs/upstream.md §2.2)


def _values(lo: int, hi: int, step: int = 1) -> tuple[int, ...]:
    """MMRazor ``parse_values([min, max, step])``: an inclusive range."""
    return tuple(range(lo, hi + 1, step))


def _stages(depths, channels, kernels, expands, strides, ses, acts) -> tuple[StageSpace, ...]:
    return tuple(
        StageSpace(_values(*d), _values(*c), _values(*k), _values(*e), s, se, a)
        for d, c, k, e, s, se, a in zip(depths, channels, kernels, expands, strides, ses, acts)
    )


SEARCH_SPACES: dict[str, Union[SposSpace, MobileNetSpace]] = {
    "spos": SposSpace(),
    # mmrazor configs/_base_/nas_backbones/attentive_mobilenetv3_supernet.py (docs/upstream.md §1.2): Swish everywhere
    "attentive": MobileNetSpace(
        family="attentive",
        first_channels=_values(16, 24, 8),
        last_channels=_values(1792, 1984, 192),
        stages=_stages(
            depths=[(1, 2), (3, 5), (3, 6), (3, 6), (3, 8), (3, 8), (1, 2)],
            channels=[(16, 24, 8), (24, 32, 8), (32, 40, 8), (64, 72, 8), (112, 128, 8), (192, 216, 8),
                      (216, 224, 8)],
            kernels=[(3, 5, 2)] * 7,
            expands=[(1, 1), (4, 6), (4, 6), (4, 6), (4, 6), (6, 6), (6, 6)],
            strides=[1, 2, 2, 2, 1, 2, 1],
            ses=[False, False, True, False, True, True, True],
            acts=["swish"] * 7,
        ),
        first_act="swish",
        last_act="swish",
        fine_grained=False,
        attentive_shortcut=True,
    ),
    # mmrazor configs/_base_/nas_backbones/ofa_mobilenetv3_supernet.py (docs/upstream.md §1.3)
    "ofa": MobileNetSpace(
        family="ofa",
        first_channels=_values(16, 16, 8),
        last_channels=_values(1024, 1280, 256),
        stages=_stages(
            depths=[(1, 1)] + [(2, 4)] * 5,
            channels=[(16, 16, 8), (16, 24, 8), (24, 40, 8), (40, 80, 8), (80, 112, 8), (112, 160, 8)],
            kernels=[(3, 3)] + [(3, 7, 2)] * 5,
            expands=[(1, 1)] + [(3, 6)] * 5,
            strides=[1, 2, 2, 2, 1, 2],
            ses=[False, False, True, False, True, True],
            acts=["relu", "relu", "relu", "hswish", "hswish", "hswish"],
        ),
        first_act="hswish",
        last_act="hswish",
        fine_grained=True,
        attentive_shortcut=False,
    ),
}


def _make_divisible(value: float, divisor: int = 8, min_ratio: float = 0.9) -> int:
    # mmcls/mmrazor ``make_divisible``: nearest multiple of ``divisor``, at least 90% of ``value`` (docs/upstream.md §7.7); the models
    # take SE widths from se_channels below, so this is the only copy
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new_value + divisor if new_value < min_ratio * value else new_value


def se_channels(in_channels: int, expand_ratio_se: int) -> int:
    """SE squeeze width of a block: ``make_divisible((Cin * e_se) // 4, 8)`` (docs/upstream.md §2.2; MMRazor's derived mutable)."""
    return _make_divisible((in_channels * expand_ratio_se) // 4, 8)


# ---------------------------------------------------------------------------------------------------------------
# Subnets
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SposSubnet:
    """SPOS ShuffleNetV2 subnet: the chosen op name of every block, per stage."""

    choices: tuple[tuple[str, ...], ...]
    family: str = field(default="spos", init=False)

    def to_dict(self) -> dict[str, Any]:
        return {f"backbone.layers.{s}.{b}": op for s, ops in enumerate(self.choices) for b, op in enumerate(ops)}

    def to_yaml(self) -> str:
        return _dump(self.to_dict())


@dataclass(frozen=True)
class Block:
    """Choices of one supernet block. ``expand_ratio_se`` only sizes the SE squeeze conv (OFA, docs/upstream.md §2.2)."""

    kernel_size: int
    expand_ratio: int
    expand_ratio_se: int


@dataclass(frozen=True)
class Stage:
    """One ``layer{i}``: ``blocks`` holds every supernet block; only the first ``depth`` are built."""

    depth: int
    out_channels: int
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class MobileNetSubnet:
    """AttentiveNAS (``family="attentive"``) or OFA (``family="ofa"``) MobileNetV3 subnet."""

    family: str
    first_channels: int
    last_channels: int
    stages: tuple[Stage, ...]
    input_shape: tuple[int, int] | None = None  # classification resolution (the classifier's input resizer)

    @property
    def space(self) -> MobileNetSpace:
        return SEARCH_SPACES[self.family]  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "backbone.first_channels": self.first_channels,
            "backbone.last_channels": self.last_channels,
        }
        for i, (stage, space) in enumerate(zip(self.stages, self.space.stages), start=1):
            prefix = f"backbone.layers.{i}."
            data[prefix + "depth"] = stage.depth
            data[prefix + "out_channels"] = stage.out_channels
            if not self.space.fine_grained:
                data[prefix + "kernel_size"] = stage.blocks[0].kernel_size
                data[prefix + "expand_ratio"] = stage.blocks[0].expand_ratio
                continue
            for b, block in enumerate(stage.blocks):
                data[f"{prefix}{b}.kernel_size"] = block.kernel_size
                data[f"{prefix}{b}.expand_ratio"] = block.expand_ratio
                if space.with_se:
                    data[f"{prefix}{b}.expand_ratio_se"] = block.expand_ratio_se
        if self.input_shape is not None:
            data["input_shape"] = list(self.input_shape)
        return data

    def to_yaml(self) -> str:
        return _dump(self.to_dict())


Subnet = Union[SposSubnet, MobileNetSubnet]


def _dump(data: Mapping[str, Any]) -> str:
    """Canonical YAML: MMRazor's ``{chosen: x}`` values, keys sorted."""
    return yaml.safe_dump({key: {"chosen": value} for key, value in data.items()}, sort_keys=True)


# ---------------------------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------------------------

_SPOS_KEY = re.compile(r"layers\.(\d+)\.(\d+)")
_OFA_KEY = re.compile(r"layers\.\d+\.\d+\.kernel_size")


def load_subnet(source: str | os.PathLike | Mapping[str, Any], *, family: str | None = None) -> Subnet:
    """Read and validate a subnet.

    Args:
        source: path to a YAML/JSON file, YAML text (a ``str`` containing a newline), or a parsed mapping. Keys may be
            rooted at ``backbone.`` or ``architecture.backbone.``; values may be ``{chosen: x}`` or bare.
        family: ``"spos"``, ``"attentive"`` or ``"ofa"``; inferred from the keys when omitted.

    Raises:
        SubnetError: naming the offending key, its value and the allowed values.
    """
    data, where = _read(source)
    values = _normalize(data, where)
    if family is None:
        family = _infer_family(values, where)
    elif family not in FAMILIES:
        raise SubnetError(f"{where}: unknown subnet family {safe_repr(family)}; "
                          f"expected one of {', '.join(FAMILIES)}")
    if family == "spos":
        return _parse_spos(values, where)
    return _parse_mobilenet(values, family, where)


def _read(source: str | os.PathLike | Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    if isinstance(source, Mapping):
        return source, "subnet mapping"
    if isinstance(source, str) and "\n" in source:
        text, where = source, "subnet YAML text"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        where = f"subnet file {safe_repr(str(path), 300)}"
        if not path.exists():
            raise SubnetError(f"{where} does not exist; pass a path to a subnet YAML, YAML text or a mapping")
        text = read_text(path, what=where, error=SubnetError)
    else:
        raise SubnetError(f"a subnet must be a path, YAML text or a mapping, not {type(source).__name__}")
    data = load_yaml(text, what=where, error=SubnetError)  # JSON is YAML too
    if not isinstance(data, Mapping):
        raise SubnetError(
            f"{where} must be a mapping of '<key>: {{chosen: <value>}}' entries, got {type(data).__name__}"
        )
    return data, where


def _normalize(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Strip the ``architecture.`` / ``backbone.`` roots and unwrap ``{chosen: x}`` (docs/upstream.md §1.4, §3).

    Prefixes are removed only as whole prefixes (upstream's ``str.lstrip(prefix)`` strips a character set, docs/upstream.md §7.21).
    """
    values: dict[str, Any] = {}
    for raw_key, raw_value in data.items():
        if not isinstance(raw_key, str):
            raise SubnetError(f"{where}: key {safe_repr(raw_key)} is not a string")
        key = raw_key.removeprefix("architecture.")
        if key != "input_shape":
            if not key.startswith("backbone."):
                raise SubnetError(f"{where}: unexpected key {safe_repr(raw_key)}; subnet keys start with "
                                  "'backbone.' or 'architecture.backbone.' (or are 'input_shape')")
            key = key.removeprefix("backbone.")
        if isinstance(raw_value, Mapping):
            if set(raw_value) - {"chosen", "meta"} or "chosen" not in raw_value:
                raise SubnetError(f"{where}: {safe_repr(raw_key)} must be a bare value or {{chosen: <value>}}, "
                                  f"got {safe_repr(raw_value)}")
            raw_value = raw_value["chosen"]
        if key in values:
            raise SubnetError(f"{where}: {safe_repr(raw_key)} is given twice (with and without the "
                              "'architecture.' root)")
        values[key] = raw_value
    return values


def _infer_family(values: Mapping[str, Any], where: str) -> str:
    if any(_OFA_KEY.fullmatch(key) for key in values):
        return "ofa"
    if "first_channels" in values or "last_channels" in values:
        return "attentive"
    if any(_SPOS_KEY.fullmatch(key) for key in values):
        return "spos"
    raise SubnetError(
        f"{where}: cannot tell the search space from the keys; expected SPOS 'backbone.layers.<s>.<b>' keys, "
        "AttentiveNAS 'backbone.first_channels' / 'backbone.layers.<i>.kernel_size', or OFA "
        "'backbone.layers.<i>.<b>.kernel_size' keys (or pass family=)"
    )


class _Reader:
    """Takes validated values out of the normalized mapping; whatever is left at the end is an unknown key."""

    def __init__(self, values: Mapping[str, Any], where: str) -> None:
        self.values = dict(values)
        self.where = where

    def take(self, key: str, allowed: tuple) -> Any:
        """The value of ``key``, which must be one of ``allowed`` and of the same type (``16.0``, ``True`` and
        ``"16"`` are not the channel count 16: they would fail later, inside torch)."""
        if key not in self.values:
            raise SubnetError(f"{self.where}: missing key {_display(key)!r} (allowed values: {_fmt(allowed)})")
        value = self.values.pop(key)
        if type(value) is not type(allowed[0]) or value not in allowed:
            kind = "" if type(value) is type(allowed[0]) else f" (a {type(value).__name__})"
            raise SubnetError(f"{self.where}: {_display(key)!r} = {safe_repr(value)}{kind} is outside the search "
                              f"space; allowed: {_fmt(allowed)}")
        return value

    def take_optional(self, key: str, allowed: tuple, default: Any) -> Any:
        return self.take(key, allowed) if key in self.values else default

    def finish(self, family: str) -> None:
        if self.values:
            unknown = sorted(self.values)
            keys = first_few(unknown, lambda key: safe_repr(_display(key)))
            raise SubnetError(f"{self.where}: unknown key(s) for the {family} search space: {keys}")


def _display(key: str) -> str:
    return key if key == "input_shape" else "backbone." + key


def _fmt(allowed: tuple) -> str:
    return ", ".join(str(value) for value in allowed)


def _parse_spos(values: Mapping[str, Any], where: str) -> SposSubnet:
    space: SposSpace = SEARCH_SPACES["spos"]  # type: ignore[assignment]
    reader = _Reader(values, where)
    choices = tuple(
        tuple(reader.take(f"layers.{s}.{b}", space.ops) for b in range(n_blocks))
        for s, n_blocks in enumerate(space.stage_blocks)
    )
    reader.finish("spos")
    return SposSubnet(choices)


def _parse_mobilenet(values: Mapping[str, Any], family: str, where: str) -> MobileNetSubnet:
    space: MobileNetSpace = SEARCH_SPACES[family]  # type: ignore[assignment]
    reader = _Reader(values, where)
    first_channels = reader.take("first_channels", space.first_channels)
    last_channels = reader.take("last_channels", space.last_channels)
    in_channels = first_channels
    stages = []
    for i, stage_space in enumerate(space.stages, start=1):
        prefix = f"layers.{i}."
        depth = reader.take(prefix + "depth", stage_space.depths)
        out_channels = reader.take(prefix + "out_channels", stage_space.out_channels)
        if space.fine_grained:
            blocks = tuple(
                _read_ofa_block(reader, f"{prefix}{b}.", stage_space,
                                in_channels=in_channels if b == 0 else out_channels, built=b < depth)
                for b in range(max(stage_space.depths))
            )
        else:
            kernel_size = reader.take(prefix + "kernel_size", stage_space.kernel_sizes)
            expand_ratio = reader.take(prefix + "expand_ratio", stage_space.expand_ratios)
            # YAMLs of Jan-Feb 2023 carry a per-stage expand_ratio_se (docs/upstream.md §1.4); current MMRazor ignores it, which is
            # only right when it equals expand_ratio.
            expand_ratio_se = reader.take_optional(prefix + "expand_ratio_se", stage_space.expand_ratios, expand_ratio)
            if expand_ratio_se != expand_ratio:
                raise SubnetError(
                    f"{where}: 'backbone.{prefix}expand_ratio_se' must equal 'backbone.{prefix}expand_ratio' "
                    f"({expand_ratio}) in an AttentiveNAS subnet; other values have no upstream meaning"
                )
            blocks = (Block(kernel_size, expand_ratio, expand_ratio),) * max(stage_space.depths)
        stages.append(Stage(depth, out_channels, blocks))
        in_channels = out_channels
    input_shape = reader.values.pop("input_shape", None)
    if input_shape is not None:
        input_shape = _input_shape(input_shape, where)
    reader.finish(family)
    return MobileNetSubnet(family, first_channels, last_channels, tuple(stages), input_shape)


def _read_ofa_block(reader: _Reader, prefix: str, space: StageSpace, *, in_channels: int, built: bool) -> Block:
    kernel_size = reader.take(prefix + "kernel_size", space.kernel_sizes)
    expand_ratio = reader.take(prefix + "expand_ratio", space.expand_ratios)
    # Older OFA YAMLs (before mmrazor e0fabc34, 2023-02-28) have no expand_ratio_se: it then equals expand_ratio.
    expand_ratio_se = reader.take_optional(prefix + "expand_ratio_se", space.expand_ratios, expand_ratio)
    # expand_ratio_se only sizes the SE squeeze conv (docs/upstream.md §2.2). The OFA weights come from the official OFA code, whose
    # SE width follows expand_ratio (docs/upstream.md §7.7), so a built block must get the same width from both; upstream YAMLs
    # differ only where it does not change the width (note8_lat22 layer3.0: 3 vs 4 -> 24 both) or beyond depth.
    if built and space.with_se and se_channels(in_channels, expand_ratio_se) != se_channels(in_channels, expand_ratio):
        raise SubnetError(
            f"{reader.where}: 'backbone.{prefix}expand_ratio_se' = {expand_ratio_se} gives an SE width of "
            f"{se_channels(in_channels, expand_ratio_se)} but 'backbone.{prefix}expand_ratio' = {expand_ratio} "
            f"gives {se_channels(in_channels, expand_ratio)}; OFA subnets need expand_ratio_se = expand_ratio"
        )
    return Block(kernel_size, expand_ratio, expand_ratio_se)


def _input_shape(value: Any, where: str) -> tuple[int, int]:
    """``[height, width]`` (or one side for both), each an integer in :data:`INPUT_SIDES`: the classifier resizes
    every input to it, so an unbounded side is an unbounded allocation."""
    if type(value) is int:
        value = [value, value]
    lo, hi = INPUT_SIDES
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(
        type(v) is int and lo <= v <= hi for v in value
    ):
        raise SubnetError(f"{where}: 'input_shape' = {safe_repr(value)} "
                          f"must be two integers [height, width], each from {lo} to {hi}")
    return (value[0], value[1])
