"""MMYOLO's ``ExpMomentumEMA`` with ``update_buffers=True``, as the recipes' ``EMAHook`` runs it (docs/upstream.md
§11.4): a copy of the model whose every floating-point state entry (parameters and BatchNorm statistics) follows the
trained one with momentum ``(1 - m) * exp(-(1 + steps) / gamma) + m``; the first update copies.

Upstream walks ``state_dict()``, so a tensor stored under several names (RTMDet's shared head convs) is averaged once
per name each step; that is kept. Checkpoints and validation use the EMA weights, as the EMA hook's swap does.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

__all__ = ["ExpMomentumEMA"]


class ExpMomentumEMA:
    """``ema = ExpMomentumEMA(model, momentum=0.0001)``; ``ema.update(model)`` after each optimizer step;
    ``ema.module`` is the averaged model (never trained directly)."""

    def __init__(self, model: nn.Module, momentum: float, gamma: int = 2000) -> None:
        if not 0 < momentum < 1 or gamma <= 0:
            raise ValueError("EMA momentum must be in (0, 1) and gamma positive")
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.momentum = momentum
        self.gamma = gamma
        self.steps = 0

    def update(self, model: nn.Module) -> None:
        source = model.state_dict()
        averaged = self.module.state_dict()
        with torch.no_grad():
            if self.steps == 0:
                for key, value in averaged.items():
                    value.copy_(source[key])
            else:
                weight = (1 - self.momentum) * math.exp(-float(1 + self.steps) / self.gamma) + self.momentum
                for key, value in averaged.items():
                    if value.dtype.is_floating_point:
                        value.lerp_(source[key], weight)
        self.steps += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], steps: int) -> None:
        self.module.load_state_dict(state_dict, strict=True)
        tie = getattr(self.module, "tie_weights", None)
        if tie is not None:
            tie()
        self.steps = steps
