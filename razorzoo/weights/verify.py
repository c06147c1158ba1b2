"""Check that a subnet YAML and a checkpoint describe the same architecture, and say how they differ in YAML terms.

Upstream loads pretrained weights with ``strict=False``: a wrong YAML/weights pair silently leaves tensors at their
init values (docs/upstream.md §7.13). :func:`verify_pair` compares the checkpoint with the keys, shapes and dtypes of the model the spec
builds (on the meta device: no memory, no init), then reads the architecture back from the weights' shapes (op
names, kernel sizes, expand ratios, depths, widths; docs/upstream.md §2) to explain the differences as YAML choices. It also
recognises supernet checkpoints and slices them with :func:`razorzoo.weights.extract.extract_subnet` (docs/upstream.md §2.3). A report
that is ``ok`` carries the aligned state dict (model keys, model order, sliced if it was a supernet): what conversion
writes, so nothing is sliced or re-keyed twice.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from razorzoo.arch.spec import ArchSpec
from razorzoo.errors import PairMismatchError
from razorzoo.weights.keys import model_keys, model_view
from razorzoo.wording import count

if TYPE_CHECKING:
    import torch

    from razorzoo.weights.checkpoint import Checkpoint

__all__ = ["PairReport", "verify_pair", "detect_recipe"]

# a head module name seen only in one upstream detector head (docs/upstream.md §6.3) -> the recipe whose head it is
_HEAD_SIGNATURES = {"rtm_cls": "rtmdet_tiny", "convs_pred": "yolov5_s", "stems": "yolov6_l_d12"}
_MAX_LISTED = 5
_FAMILY_NAMES = {"spos": "SPOS ShuffleNetV2", "attentive": "AttentiveNAS MobileNetV3", "ofa": "OFA MobileNetV3"}


@dataclass
class PairReport:
    """Result of :func:`verify_pair`. ``problems`` are sentences in YAML terms first, then raw key differences.

    ``state_dict`` (only when ``ok``): the checkpoint's tensors under the model's keys, in model order, sliced out of
    the supernet when ``is_supernet``; tied aliases each keep their own entry.
    """

    problems: list[str] = field(default_factory=list)
    is_supernet: bool = False
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # key, YAML, weights
    notes: list[str] = field(default_factory=list)
    state_dict: "OrderedDict[str, torch.Tensor] | None" = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        if self.ok:
            kind = "a supernet checkpoint; the subnet will be extracted" if self.is_supernet else "matching weights"
            return "\n".join([f"OK: {kind}", *self.notes])
        return "\n".join(["the subnet YAML and the checkpoint do not match:", *(f"  - {p}" for p in self.problems),
                          *self.notes])

    def raise_for_problems(self) -> None:
        """Raise :class:`~razorzoo.errors.PairMismatchError` listing every problem, if there is any."""
        if not self.ok:
            raise PairMismatchError(str(self))


def verify_pair(spec: ArchSpec, checkpoint: "str | Path | Checkpoint | Mapping[str, torch.Tensor]") -> PairReport:
    """Compare ``checkpoint`` (a path, a :class:`~razorzoo.weights.checkpoint.Checkpoint` or a state dict) with ``spec``.

    Returns a :class:`PairReport`; a supernet checkpoint of the spec's search space is ``ok`` with
    ``is_supernet=True`` when the subnet extracted from it matches. An ``ok`` report holds the aligned
    ``state_dict``.
    """
    state_dict = _state_dict(checkpoint)
    report = PairReport()
    task_problem = _task_problem(spec, state_dict)
    if task_problem:
        report.problems.append(task_problem)
        return report
    if _is_supernet(spec, state_dict):
        from razorzoo.weights.extract import extract_subnet

        report.is_supernet = True
        state_dict = extract_subnet(state_dict, spec.subnet)
        report.notes.append("the checkpoint is a supernet: compared the subnet extracted from it")
    view = model_view(spec, state_dict)
    expected = model_keys(spec)
    report.missing = [k for k in expected.shapes if k not in view]
    report.unexpected = [k for k in view if k not in expected.shapes]
    report.mismatched = [(k, shape, tuple(view[k].shape)) for k, shape in expected.shapes.items()
                         if k in view and tuple(view[k].shape) != shape]
    if report.missing or report.unexpected or report.mismatched:
        explained = _yaml_differences(spec, view)
        report.problems.extend(explained or _key_differences(report))
        if explained:  # the key lists only restate the YAML differences; keep them on the report
            report.notes.append(f"key level: {len(report.missing)} missing, {len(report.unexpected)} unexpected, "
                                f"{len(report.mismatched)} differently shaped tensors")
    dropped = len(state_dict) - len(view)
    if dropped:
        report.notes.append(f"the backbone uses {len(view)} of the checkpoint's {count(len(state_dict), 'entry')}")
    if report.ok:
        report.state_dict = OrderedDict((k, view[k]) for k in expected.shapes)
    return report


def detect_recipe(checkpoint: "str | Path | Checkpoint | Mapping[str, torch.Tensor]") -> str | None:
    """The detector recipe whose head the checkpoint holds (from head module names), or ``None`` for no detector."""
    state_dict = _state_dict(checkpoint)
    found = _head_recipes(state_dict)
    return found.pop() if len(found) == 1 else None


def _head_recipes(state_dict: Mapping[str, Any]) -> set[str]:
    return {recipe for name, recipe in _HEAD_SIGNATURES.items()
            if any(k.startswith(f"bbox_head.head_module.{name}.") for k in state_dict)}


def _state_dict(checkpoint: Any) -> Mapping[str, Any]:
    if isinstance(checkpoint, (str, Path)):
        from razorzoo.weights.checkpoint import read_checkpoint

        return read_checkpoint(checkpoint).state_dict
    return getattr(checkpoint, "state_dict", checkpoint)


def _task_problem(spec: ArchSpec, state_dict: Mapping[str, Any]) -> str | None:
    """A classifier checkpoint for a detector spec, or the reverse, or another detector's head."""
    is_detector = any(k.startswith(("neck.", "bbox_head.")) for k in state_dict)
    is_classifier = any(k.startswith("head.fc.") for k in state_dict)
    if spec.task == "detection" and is_classifier and not is_detector:
        return ("the checkpoint holds an ImageNet classifier (head.fc.*), not a detector: load it as a classifier "
                "(--task classification), or take its backbone (--task backbone)")
    if spec.task == "classification" and is_detector:
        return ("the checkpoint holds a detector (neck.*, bbox_head.*), not a classifier: load it as a detector "
                "(--task detection --detector RECIPE), or take its backbone (--task backbone)")
    family = _family(state_dict)
    if family is not None and family != spec.subnet.family:
        return (f"the checkpoint's backbone is {_FAMILY_NAMES[family]}, but the YAML is a subnet of "
                f"{_FAMILY_NAMES[spec.subnet.family]}: pair the weights with a YAML of their search space")
    if spec.task == "detection":
        found = _head_recipes(state_dict)
        if found and spec.recipe not in found:
            return (f"the checkpoint holds a {', '.join(sorted(found))} detector head, but the spec uses the "
                    f"{spec.recipe} recipe: pass the detector the weights were trained with (--detector)")
    return None


def _family(state_dict: Mapping[str, Any]) -> str | None:
    """Search space of a checkpoint's backbone from its module names (docs/upstream.md §2.1, §2.2): SPOS keeps ``_candidates``;
    only AttentiveNAS blocks have ``shortcut`` convs."""
    if any("._candidates." in k for k in state_dict):
        return "spos"
    if any(_MB_BLOCK.search(k) for k in state_dict):
        return "attentive" if any(k.endswith(".shortcut.conv.weight") for k in state_dict) else "ofa"
    return None


# --- supernets (docs/upstream.md §2.3, §3) ------------------------------------------------------------------------------------------

def _is_supernet(spec: ArchSpec, state_dict: Mapping[str, Any]) -> bool:
    """SPOS: several candidate ops in one block. OFA: kernel transformation matrices. AttentiveNAS: every searched
    dimension at its search-space maximum while the YAML chose less."""
    subnet = spec.subnet
    if subnet.family == "spos":
        return any(len(ops) > 1 for ops in _spos_ops(state_dict).values())
    if any(".trans_matrix_" in k for k in state_dict):
        return True
    found = _mobilenet_arch(state_dict)
    space = subnet.space
    if found.get("first") != max(space.first_channels) or found.get("last") != max(space.last_channels):
        return False
    chosen_max = subnet.first_channels == max(space.first_channels) and subnet.last_channels == max(
        space.last_channels)
    for i, stage_space in enumerate(space.stages, start=1):
        stage = found["stages"].get(i)
        if stage is None or stage["depth"] != max(stage_space.depths) or stage["out"] != max(stage_space.out_channels):
            return False
        if any(k != max(stage_space.kernel_sizes) or e != max(stage_space.expand_ratios) for k, e in stage["blocks"]):
            return False
        mine = subnet.stages[i - 1]
        chosen_max &= mine.depth == stage["depth"] and mine.out_channels == stage["out"] and all(
            (b.kernel_size, b.expand_ratio) == found_block for b, found_block in zip(mine.blocks, stage["blocks"]))
    return not chosen_max


# --- reading the architecture back from the weights (docs/upstream.md §2.1, §2.2) ---------------------------------------------------

_SPOS_BLOCK = re.compile(r"(?:^|\.)layers\.(\d+)\.(\d+)\._candidates\.(\w+?)\.")
_MB_BLOCK = re.compile(r"(?:^|\.)layer(\d+)\.(\d+)\.")


def _backbone_prefix(state_dict: Mapping[str, Any]) -> str:
    return "backbone." if any(k.startswith("backbone.") for k in state_dict) else ""


def _spos_ops(state_dict: Mapping[str, Any]) -> dict[tuple[int, int], set[str]]:
    ops: dict[tuple[int, int], set[str]] = {}
    for key in state_dict:
        match = _SPOS_BLOCK.search(key)
        if match:
            ops.setdefault((int(match[1]), int(match[2])), set()).add(match[3])
    return ops


def _mobilenet_arch(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """``{"first", "last", "stages": {i: {"depth", "out", "blocks": [(kernel, expand), ...]}}}`` from shapes.

    A block counts towards its stage's depth as soon as any of its tensors is there; a block missing its depthwise
    or linear conv reads as ``(None, None)`` (unknown), so a missing tensor is reported as missing, never as a
    YAML choice. The expand ratio is the depthwise width over the block's input width: the expand conv's input, or
    (no expand conv, docs/upstream.md §2.2) the previous block's output.
    """
    p = _backbone_prefix(state_dict)
    arch: dict[str, Any] = {"stages": {}}
    if f"{p}first_conv.conv.weight" in state_dict:
        arch["first"] = state_dict[f"{p}first_conv.conv.weight"].shape[0]
    if f"{p}last_conv.feature_mix_layer.conv.weight" in state_dict:
        arch["last"] = state_dict[f"{p}last_conv.feature_mix_layer.conv.weight"].shape[0]
    blocks = sorted({(int(m[1]), int(m[2]))
                     for m in map(_MB_BLOCK.match, (k[len(p):] for k in state_dict if k.startswith(p))) if m})
    in_channels = arch.get("first")
    for i, b in blocks:
        stage = arch["stages"].setdefault(i, {"depth": 0, "out": None, "blocks": []})
        stage["depth"] += 1
        name = f"{p}layer{i}.{b}."
        dw, linear = state_dict.get(name + "depthwise_conv.conv.weight"), state_dict.get(name + "linear_conv.conv.weight")
        expand = state_dict.get(name + "expand_conv.conv.weight")
        cin = expand.shape[1] if expand is not None else in_channels
        in_channels = linear.shape[0] if linear is not None else None
        if dw is None or linear is None:
            stage["blocks"].append((None, None))
            continue
        mid = dw.shape[0]
        stage["blocks"].append((dw.shape[-1], mid // cin if cin and mid % cin == 0 else None))
        stage["out"] = linear.shape[0]
    return arch


def _yaml_differences(spec: ArchSpec, view: Mapping[str, Any]) -> list[str]:
    """The YAML choices the weights disagree with (both readers take backbone keys with or without ``backbone.``)."""
    if spec.subnet.family == "spos":
        return _spos_differences(spec.subnet, view)
    return _mobilenet_differences(spec.subnet, view)


def _spos_differences(subnet: Any, backbone: Mapping[str, Any]) -> list[str]:
    found = _spos_ops(backbone)
    problems = []
    for s, ops in enumerate(subnet.choices):
        for b, chosen in enumerate(ops):
            held = found.get((s, b))
            if held and chosen not in held:
                problems.append(f"backbone.layers.{s}.{b} chose {chosen} but the checkpoint holds "
                                f"{' and '.join(sorted(held))} weights")
    return problems


def _mobilenet_differences(subnet: Any, backbone: Mapping[str, Any]) -> list[str]:
    found = _mobilenet_arch(backbone)
    problems = []
    for name, mine in (("first_channels", subnet.first_channels), ("last_channels", subnet.last_channels)):
        theirs = found.get(name.split("_")[0])
        if theirs is not None and theirs != mine:
            problems.append(f"backbone.{name} {mine} in YAML, {theirs} in weights")
    fine_grained = subnet.space.fine_grained
    for i, stage in enumerate(subnet.stages, start=1):
        theirs = found["stages"].get(i)
        if theirs is None:
            continue
        if theirs["depth"] != stage.depth:
            problems.append(f"backbone.layers.{i}.depth {stage.depth} in YAML, {theirs['depth']} in weights")
        if theirs["out"] is not None and theirs["out"] != stage.out_channels:
            problems.append(f"backbone.layers.{i}.out_channels {stage.out_channels} in YAML, {theirs['out']} in "
                            "weights")
        pairs = list(zip(stage.blocks, theirs["blocks"]))
        for attr, index in (("kernel_size", 0), ("expand_ratio", 1)):
            differing = [(b, getattr(block, attr), found_block[index]) for b, (block, found_block) in enumerate(pairs)
                         if found_block[index] is not None and getattr(block, attr) != found_block[index]]
            if not differing:
                continue
            if fine_grained:
                problems.extend(f"backbone.layers.{i}.{b}.{attr} {mine} in YAML, {w} in weights"
                                for b, mine, w in differing)
            else:
                weights = sorted({w for _, _, w in differing})
                problems.append(f"backbone.layers.{i}.{attr} {differing[0][1]} in YAML, "
                                f"{'/'.join(map(str, weights))} in weights")
    return problems


def _listing(keys: list[str]) -> str:
    more = f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def _are(items: list) -> str:
    return "is" if len(items) == 1 else "are"


def _key_differences(report: PairReport) -> list[str]:
    problems = []
    if report.missing:
        problems.append(f"{count(len(report.missing), 'tensor')} the YAML needs {_are(report.missing)} missing: "
                        f"{_listing(report.missing)}")
    if report.unexpected:
        problems.append(f"{count(len(report.unexpected), 'tensor')} in the checkpoint {_are(report.unexpected)} not in "
                        "the model: "
                        f"{_listing(report.unexpected)}")
    if report.mismatched:
        shapes = [f"{k} {list(yaml)} in YAML, {list(weights)} in weights" for k, yaml, weights in report.mismatched]
        problems.append(f"{count(len(shapes), 'tensor')} {'has another shape' if len(shapes) == 1 else 'have other shapes'}: "
                        f"{_listing(shapes)}")
    return problems
