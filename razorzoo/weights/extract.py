"""Supernet -> subnet weights, exactly as MMRazor's ``load_fix_subnet`` + ``to_static_op`` export (docs/upstream.md §2.3).

Every subnet tensor is the supernet tensor cut to the subnet's shape: channels are always the *first* N
(``mask[:N] = 1``), blocks the first ``depth``. Only depthwise kernels need more than slicing: AttentiveNAS (BigNAS)
crops the kernel's centre, OFA maps it through the learned ``trans_matrix_{src}to{tar}`` of each kernel step.
The target shapes come from :func:`razorzoo.weights.keys.model_keys`, so extraction, verification and the model can
never disagree.
"""
from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Mapping

import torch
import torch.nn.functional as F

from razorzoo.arch.spec import ArchSpec
from razorzoo.arch.subnet import SEARCH_SPACES, Block, MobileNetSubnet, SposSpace, SposSubnet, Stage, load_subnet
from razorzoo.errors import CheckpointError
from razorzoo.weights.keys import model_keys

if TYPE_CHECKING:
    from collections import OrderedDict

    from razorzoo.arch.subnet import Subnet

__all__ = ["extract_subnet", "supernet_state_dict_shapes", "max_subnet", "ofa_transform_kernel", "crop_kernel"]

_BLOCK_KEY = re.compile(r"backbone\.layer(\d+)\.\d+\.depthwise_conv\.conv\.weight")
_SPOS_BLOCK = re.compile(r"(backbone\.layers\.\d+\.\d+)\._candidates\.")
_MASKS = {
    "backbone.first_mutable_channels.mask": "first_channels",
    "backbone.last_mutable_channels.mask": "last_channels",
}


def extract_subnet(supernet_state_dict: Mapping[str, torch.Tensor], subnet: "Subnet | str | os.PathLike | Mapping"
                   ) -> dict[str, torch.Tensor]:
    """The state dict of ``subnet``'s classifier (or backbone) sliced out of a supernet state dict.

    ``subnet`` is a parsed subnet or anything :func:`razorzoo.load_subnet` reads (YAML path, text, mapping), or
    the file name of a subnet the zoo ships (``"ATTENTIVE_SUBNET_A3.yaml"``).
    Keys may carry MMRazor's ``architecture.`` prefix. ``head.fc.*`` is extracted when the supernet has a head
    (``fc.weight[:, :last_channels]``). Output keys are in our model's order (``backbone.*``, ``head.fc.*``), each
    tensor a fresh contiguous copy. Raises :class:`CheckpointError` when a needed tensor is missing or too small.
    """
    if not isinstance(subnet, (SposSubnet, MobileNetSubnet)):
        from razorzoo.zoo.registry import subnet_source

        subnet = load_subnet(subnet_source(subnet))
    supernet = {key.removeprefix("architecture."): value for key, value in supernet_state_dict.items()}
    if not any(key.startswith("backbone.") for key in supernet):
        raise CheckpointError("the supernet state dict has no 'backbone.*' (or 'architecture.backbone.*') keys")
    with_head = any(key.startswith("head.") for key in supernet)
    out: dict[str, torch.Tensor] = {}
    for key, shape in _model_shapes(subnet).items():
        if key.startswith("head.") and not with_head:
            continue
        out[key] = _extract_tensor(supernet, key, shape, subnet)
    return out


def _extract_tensor(supernet: Mapping[str, torch.Tensor], key: str, shape: tuple[int, ...],
                    subnet: "Subnet") -> torch.Tensor:
    if key in _MASKS:  # recomputed: converted supernet checkpoints usually lack these buffers (docs/upstream.md §3)
        mask = torch.zeros(shape)
        mask[: getattr(subnet, _MASKS[key])] = 1.0
        return mask
    if key.endswith("num_batches_tracked") and subnet.family != "spos":
        return torch.zeros((), dtype=torch.int64)  # the static BN made by to_static_op starts at 0 (docs/upstream.md §2.3)
    if key not in supernet:
        raise CheckpointError(f"the supernet state dict has no {key!r}, which the {subnet.family} subnet needs")
    weight = supernet[key]
    if weight.dim() == 4 and weight.shape[-1] > shape[-1]:
        weight = _shrink_kernel(supernet, key, weight, shape[-1], subnet)
    if weight.dim() != len(shape) or any(have < need for have, need in zip(weight.shape, shape)):
        raise CheckpointError(
            f"supernet tensor {key!r} has shape {tuple(weight.shape)}, too small for the subnet's {tuple(shape)}"
        )
    return weight[tuple(slice(0, n) for n in shape)].contiguous().clone()


def _shrink_kernel(supernet: Mapping[str, torch.Tensor], key: str, weight: torch.Tensor, kernel_size: int,
                   subnet: "Subnet") -> torch.Tensor:
    match = _BLOCK_KEY.fullmatch(key)
    if match is None or subnet.family == "spos":
        raise CheckpointError(f"supernet tensor {key!r} has kernel {weight.shape[-1]}, the subnet {kernel_size}; "
                              "only depthwise kernels of MobileNet blocks are searched")
    if subnet.family == "attentive":
        return crop_kernel(weight, kernel_size)
    kernel_sizes = sorted(SEARCH_SPACES["ofa"].stages[int(match.group(1)) - 1].kernel_sizes)
    prefix = key.removesuffix("weight")
    matrices = {}
    for src, tar in zip(kernel_sizes[:0:-1], kernel_sizes[-2::-1]):
        name = f"{prefix}trans_matrix_{src}to{tar}"
        if name not in supernet:
            raise CheckpointError(f"the OFA supernet state dict has no {name!r}, needed for a {kernel_size}x"
                                  f"{kernel_size} kernel")
        matrices[(src, tar)] = supernet[name]
    return ofa_transform_kernel(weight, kernel_size, matrices)


def crop_kernel(weight: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """BigNAS kernel: the centre ``kernel_size x kernel_size`` window (``start = K//2 - k//2``)."""
    start = weight.shape[-1] // 2 - kernel_size // 2
    return weight[:, :, start:start + kernel_size, start:start + kernel_size]


def ofa_transform_kernel(weight: torch.Tensor, kernel_size: int,
                         matrices: Mapping[tuple[int, int], torch.Tensor]) -> torch.Tensor:
    """OFA progressive kernel shrinking (official ``get_active_filter``, mmrazor ``OFAConvMixin``).

    From the largest kernel, one step per ``(src, tar)`` pair while ``src > kernel_size``: take the centre
    ``tar x tar`` window, flatten it and multiply by ``trans_matrix_{src}to{tar}`` (``w @ M.T``).
    """
    out_channels, in_channels = weight.shape[:2]
    for (src, tar), matrix in sorted(matrices.items(), reverse=True):
        if src <= kernel_size:
            break
        centre = crop_kernel(weight, tar).reshape(-1, tar * tar)
        weight = F.linear(centre, matrix).reshape(out_channels, in_channels, tar, tar)
    return weight


def max_subnet(family: str) -> "Subnet":
    """The largest subnet of a search space (every choice at its maximum): the supernet's own architecture."""
    space = SEARCH_SPACES[family]
    if isinstance(space, SposSpace):
        raise ValueError("SPOS has no single largest subnet; its supernet holds every candidate op")
    stages = tuple(
        Stage(max(s.depths), max(s.out_channels),
              (Block(max(s.kernel_sizes), max(s.expand_ratios), max(s.expand_ratios)),) * max(s.depths))
        for s in space.stages
    )
    return MobileNetSubnet(family, max(space.first_channels), max(space.last_channels), stages)


def supernet_state_dict_shapes(family: str) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the family's classification supernet checkpoint (without ``architecture.``).

    AttentiveNAS/OFA: the max subnet plus, for OFA, the ``trans_matrix_*`` of every searched depthwise conv.
    SPOS: every candidate op of every block. Used to recognise supernet checkpoints.
    """
    if family == "spos":
        return _spos_supernet_shapes()
    space = SEARCH_SPACES[family]
    shapes: dict[str, tuple[int, ...]] = {}
    for key, shape in _model_shapes(max_subnet(family)).items():
        shapes[key] = tuple(shape)
        match = _BLOCK_KEY.fullmatch(key)
        if family == "ofa" and match:
            kernel_sizes = sorted(space.stages[int(match.group(1)) - 1].kernel_sizes)
            for src, tar in zip(kernel_sizes[:0:-1], kernel_sizes[-2::-1]):
                shapes[f"{key.removesuffix('weight')}trans_matrix_{src}to{tar}"] = (tar * tar, tar * tar)
    return shapes


def _spos_supernet_shapes() -> dict[str, tuple[int, ...]]:
    space = SEARCH_SPACES["spos"]
    per_op = [_model_shapes(SposSubnet(tuple((op,) * n for n in space.stage_blocks))) for op in space.ops]
    shapes: dict[str, tuple[int, ...]] = {}
    done = set()
    for key, shape in per_op[0].items():
        match = _SPOS_BLOCK.match(key)
        if match is None:
            shapes[key] = tuple(shape)
        elif match.group(1) not in done:
            done.add(match.group(1))
            prefix = match.group(1) + "."
            for op_shapes in per_op:  # candidates in upstream order, block by block
                shapes.update((k, tuple(s)) for k, s in op_shapes.items() if k.startswith(prefix))
    return shapes


def _model_shapes(subnet: "Subnet") -> "OrderedDict[str, tuple[int, ...]]":
    """State-dict shapes of the subnet's classifier, in model order (the same keys verification expects)."""
    return model_keys(ArchSpec("classification", subnet)).shapes
