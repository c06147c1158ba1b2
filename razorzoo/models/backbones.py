"""Backbone dispatch: a validated subnet -> the backbone of its search space."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from torch import nn

    from razorzoo.arch.subnet import Subnet

__all__ = ["build_backbone_from_subnet", "default_out_indices"]


def default_out_indices(subnet: "Subnet") -> tuple[int, ...]:
    """The upstream classifier's choice: only the last output (SPOS ``layers.4``, MobileNet ``last_conv``)."""
    if subnet.family == "spos":
        return (4,)
    return (len(subnet.stages),)


def build_backbone_from_subnet(subnet: "Subnet", out_indices: Sequence[int] | None = None) -> "nn.Module":
    """Backbone for ``subnet``; calling it returns the tuple of stage outputs at ``out_indices``.

    ``out_indices`` counts as upstream (SPOS: ``layers.i``; MobileNet: ``layer{i+1}``, the last index is
    ``last_conv``); ``None`` means the classifier's default (:func:`default_out_indices`).
    """
    if out_indices is None:
        out_indices = default_out_indices(subnet)
    if subnet.family == "spos":
        from razorzoo.models.shufflenet import SearchableShuffleNetV2

        return SearchableShuffleNetV2(subnet, out_indices)
    from razorzoo.models.mobilenet import AttentiveMobileNetV3

    return AttentiveMobileNetV3(subnet, out_indices)
