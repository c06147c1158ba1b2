"""FLOPs and parameters of AttentiveNAS/OFA classifiers from a table of their units, without a forward pass.

A search samples many candidates and rejects most of them on the budget. Counting each candidate with
:func:`razorzoo.models.flops.count_flops` builds and runs the whole network (a fraction of a second each); but a
MobileNet classifier is a chain of units (the stem, each inverted-residual block, the tail, the head) whose counts
depend only on how each unit is built and on the size of its input. So each distinct unit is built and counted
once (:func:`count_flops` on the unit alone, on the meta device) and remembered; a candidate's cost is then the sum
of table entries, found from the subnet's description alone (:func:`razorzoo.models.mobilenet.block_plans`, the
plan the backbone itself is built from). ``tests/test_specialize.py`` checks the sums against whole-network counts
on many subnets.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from razorzoo.arch.subnet import MobileNetSubnet
from razorzoo.errors import RazorzooError

__all__ = ["Costs", "CostTable"]


@dataclass(frozen=True)
class Costs:
    """Multiply-accumulates and parameters of one network at one input size (the conventions of ``count_flops``)."""

    flops: int
    params: int


@dataclass
class CostTable:
    """``table.costs(subnet, resolution)``: the FLOPs and params of ``subnet``'s ImageNet classifier at
    ``resolution`` (or at the subnet's own ``input_shape``, which the classifier resizes every input to).

    ``entries`` maps a unit's construction and input shape to ``(flops, params, output shape)``;
    ``counted`` is how many units had to be built and counted (the rest came from the table).
    """

    num_classes: int = 1000
    entries: dict[tuple, tuple[int, int, tuple[int, ...]]] = field(default_factory=dict)
    counted: int = 0

    def costs(self, subnet: MobileNetSubnet, resolution: int) -> Costs:
        from razorzoo.models.classifier import ClsHead, build_neck
        from razorzoo.models.mobilenet import MBBlock, block_plans, build_stem, build_tail

        if not isinstance(subnet, MobileNetSubnet):
            raise RazorzooError("cost tables cover AttentiveNAS and OFA subnets (MobileNet blocks), not "
                                f"{type(subnet).__name__}")
        height, width = subnet.input_shape or (resolution, resolution)
        shape: tuple[int, ...] = (1, 3, height, width)
        units: list[tuple[tuple, Callable[[], nn.Module]]] = [
            (("stem", subnet.family, subnet.first_channels), lambda: build_stem(subnet))]
        units += [(("block", tuple(sorted(kwargs.items()))), lambda kwargs=kwargs: MBBlock(**kwargs))
                  for _, kwargs in block_plans(subnet)]
        units += [(("tail", subnet.family, subnet.stages[-1].out_channels, subnet.last_channels),
                   lambda: build_tail(subnet)),
                  (("head", subnet.family, subnet.last_channels, self.num_classes),
                   lambda: nn.Sequential(build_neck(subnet.family), ClsHead(subnet.last_channels, self.num_classes)))]
        flops = params = 0
        for unit, build in units:
            key = (unit, shape)
            if key not in self.entries:
                self.entries[key] = self._count(build, shape)
            unit_flops, unit_params, shape = self.entries[key]
            flops += unit_flops
            params += unit_params
        return Costs(flops, params)

    def _count(self, build: Callable[[], nn.Module], shape: tuple[int, ...]) -> tuple[int, int, tuple[int, ...]]:
        """Build one unit on the meta device and count it: (flops, params, output shape)."""
        from razorzoo.models.flops import count_flops

        with torch.device("meta"):
            unit = build().eval()
        report = count_flops(unit, shape)
        with torch.no_grad():
            out = unit(torch.zeros(shape, device="meta"))
        self.counted += 1
        return report.flops, report.params, tuple(out.shape)
