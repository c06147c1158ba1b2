"""Spec -> ``nn.Module``: the one place an :class:`~razorzoo.arch.spec.ArchSpec` becomes a model (no weights).

It sits in the models layer so that weight handling (``razorzoo.weights``) can build the model it checks keys
against without reaching up to the registry-aware ``razorzoo.builder``.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from torch import nn

    from razorzoo.arch.spec import ArchSpec

__all__ = ["build_model"]

_RANDOM_INITS = ("kaiming_uniform_", "kaiming_normal_", "uniform_", "normal_", "trunc_normal_", "xavier_uniform_",
                 "xavier_normal_")


@contextlib.contextmanager
def _skip_random_init() -> Iterator[None]:
    """Replace torch's random initializers by ``zero_`` while building: weights are about to be overwritten, and
    random init of a detector costs more than the whole load. Norm layers still get their ones/zeros."""
    import torch

    saved = {name: getattr(torch.nn.init, name) for name in _RANDOM_INITS}
    zero = lambda tensor, *args, **kwargs: tensor.data.zero_()  # noqa: E731
    try:
        for name in _RANDOM_INITS:
            setattr(torch.nn.init, name, zero)
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


def build_model(spec: "ArchSpec") -> "nn.Module":
    """Build the ``nn.Module`` an :class:`ArchSpec` describes (weights zero-filled, norm layers at identity)."""
    with _skip_random_init():
        if spec.task == "classification":
            from razorzoo.models.classifier import build_classifier_from_subnet

            return build_classifier_from_subnet(spec.subnet, preprocessing=spec.preprocessing)
        if spec.task == "backbone":
            from razorzoo.models.backbones import build_backbone_from_subnet

            return build_backbone_from_subnet(spec.subnet, out_indices=spec.out_indices)
        from razorzoo.models.detector import build_detector_from_subnet

        return build_detector_from_subnet(spec.subnet, spec.recipe, spec.class_names, spec.input_size)
