"""Optimizers and learning-rate schedules of the three recipes, as MMYOLO/mmengine build and step them
(docs/upstream.md §11).

:func:`build_optimizer` makes the parameter groups (``YOLOv5OptimizerConstructor`` for SGD, mmengine's
``paramwise_cfg`` for AdamW); :class:`LearningRates` gives each group's learning rate (and SGD momentum) for any
iteration as a pure function of the iteration, the epoch and the epoch length, so a resumed run needs no scheduler
state and lands on the same values.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch
from torch import nn

from razorzoo.arch.schedules import AdamWSettings, FlatCosineSchedule, SGDSettings, TrainSchedule, YOLOv5Schedule

__all__ = ["build_optimizer", "LearningRates", "scaled_weight_decay"]

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def scaled_weight_decay(settings: SGDSettings, world_size: int) -> float:
    """``YOLOv5OptimizerConstructor``: decay times ``total batch * accumulate / base_total_batch_size`` (gradients
    are not accumulated upstream; only the decay is scaled)."""
    total = world_size * settings.batch_size_per_gpu
    accumulate = max(round(settings.base_total_batch_size / total), 1)
    return settings.weight_decay * (total * accumulate / settings.base_total_batch_size)


def _sgd_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """``(weights with decay, norm weights, biases)`` in module order, exactly the three upstream groups.

    Like upstream, a parameter named neither ``weight`` nor ``bias`` (YOLOv6's ``BottleRep.alpha``) is in no group
    and stays as loaded."""
    weights, norm_weights, biases = [], [], []
    for module in model.modules():
        if isinstance(getattr(module, "bias", None), nn.Parameter):
            biases.append(module.bias)
        if isinstance(module, nn.modules.batchnorm._NormBase):
            norm_weights.append(module.weight)
        elif isinstance(getattr(module, "weight", None), nn.Parameter):
            weights.append(module.weight)
    return weights, norm_weights, biases


def _adamw_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(with decay, without)``: mmengine's ``norm_decay_mult=0`` (every parameter of a norm layer) and
    ``bias_decay_mult=0``; shared parameters once (``bypass_duplicate``)."""
    seen: set[int] = set()
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            (no_decay if isinstance(module, _NORMS) or name == "bias" else decay).append(param)
    return decay, no_decay


def build_optimizer(model: nn.Module, schedule: TrainSchedule, *, world_size: int = 1) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``model``'s parameters (unwrap DDP first). SGD groups are ``[weights, norm
    weights, biases]`` (the schedule treats the bias group specially during warm-up)."""
    settings = schedule.optimizer
    if isinstance(settings, SGDSettings):
        weights, norm_weights, biases = _sgd_groups(model)
        groups = [{"params": weights, "weight_decay": scaled_weight_decay(settings, world_size)},
                  {"params": norm_weights, "weight_decay": 0.0}, {"params": biases, "weight_decay": 0.0}]
        return torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum, nesterov=settings.nesterov)
    assert isinstance(settings, AdamWSettings)
    decay, no_decay = _adamw_groups(model)
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=settings.lr, betas=settings.betas, eps=settings.eps)


class LearningRates:
    """Per-iteration learning rates (and SGD momentum) of a recipe's schedule.

    ``values(iteration, epoch)`` are what upstream has set when iteration ``iteration`` (0-based, global) of epoch
    ``epoch`` runs; :meth:`apply` writes them into the optimizer's groups.
    """

    def __init__(self, schedule: TrainSchedule, iters_per_epoch: int, max_epochs: int) -> None:
        if iters_per_epoch < 1 or max_epochs < 1:
            raise ValueError("a run needs at least one epoch of at least one iteration")
        self.schedule = schedule
        self.iters_per_epoch = iters_per_epoch
        self.max_epochs = max_epochs
        self.base_lr = schedule.optimizer.lr

    def values(self, iteration: int, epoch: int) -> list[tuple[float, float | None]]:
        """``(lr, momentum)`` per optimizer group (momentum None where the optimizer has none)."""
        if isinstance(self.schedule.schedule, YOLOv5Schedule):
            return self._yolov5(self.schedule.schedule, iteration, epoch)
        lr = self._flat_cosine(self.schedule.schedule, iteration)
        return [(lr, None), (lr, None)]

    def apply(self, optimizer: torch.optim.Optimizer, iteration: int, epoch: int) -> None:
        for group, (lr, momentum) in zip(optimizer.param_groups, self.values(iteration, epoch), strict=True):
            group["lr"] = lr
            if momentum is not None:
                group["momentum"] = momentum

    def _factor(self, schedule: YOLOv5Schedule, epoch: int) -> float:
        max_epochs, lf = self.max_epochs, schedule.lr_factor
        if schedule.kind == "linear":
            return (1 - epoch / max_epochs) * (1.0 - lf) + lf
        return ((1 - math.cos(epoch * math.pi / max_epochs)) / 2) * (lf - 1) + 1

    def _yolov5(self, schedule: YOLOv5Schedule, iteration: int, epoch: int) -> list[tuple[float, float | None]]:
        """``YOLOv5ParamSchedulerHook``: ``np.interp`` warm-up before each iteration up to ``warmup`` inclusive; after
        that, the rate set at the end of the previous epoch (``base * f(previous epoch)``), except in the epoch where
        warm-up ended, which keeps warm-up's last value."""
        warmup = max(round(schedule.warmup_epochs * self.iters_per_epoch), schedule.warmup_min_iters)
        momentum = self.schedule.optimizer.momentum
        if iteration <= warmup:
            target = self.base_lr * self._factor(schedule, epoch)
            lrs = [float(np.interp(iteration, [0, warmup], [start, target]))
                   for start in (0.0, 0.0, schedule.warmup_bias_lr)]
            warm_momentum = float(np.interp(iteration, [0, warmup], [schedule.warmup_momentum, momentum]))
            return [(lr, warm_momentum) for lr in lrs]
        ended_in = (warmup + 1) // self.iters_per_epoch
        previous = warmup // self.iters_per_epoch if epoch == ended_in else epoch - 1
        lr = self.base_lr * self._factor(schedule, previous)
        return [(lr, momentum)] * 3

    def _flat_cosine(self, schedule: FlatCosineSchedule, iteration: int) -> float:
        """mmengine ``LinearLR`` (``total_iters = end - begin - 1``: the factor reaches 1 at iteration ``n - 1``),
        flat, then ``CosineAnnealingLR`` from ``max_epochs // 2`` to ``max_epochs`` (iteration-based), decaying from
        the rate it finds down to ``eta_min``."""
        n, start = schedule.warmup_iters, schedule.start_factor
        ramp = min(iteration, n - 1) / (n - 1) if n > 1 else 0.0  # one warm-up step stays at the start factor
        lr = self.base_lr * (start + (1.0 - start) * ramp)
        half = self.max_epochs // 2
        begin, end = half * self.iters_per_epoch, self.max_epochs * self.iters_per_epoch
        t_max = half * self.iters_per_epoch  # the config's T_max = max_epochs // 2, converted to iterations
        if iteration < begin or t_max == 0:
            return lr
        eta_min = self.base_lr * schedule.eta_min_ratio
        step = min(iteration, end - 1) - begin
        # mmengine's chained form decays from the rate it finds; past T_max (odd max_epochs) it restarts its cosine
        # from the base rate
        top = lr if step <= t_max else self.base_lr
        return eta_min + (top - eta_min) * (1 + math.cos(math.pi * step / t_max)) / 2


def parameters_with_grad(optimizer: torch.optim.Optimizer) -> Iterator[nn.Parameter]:
    """Every parameter the optimizer steps that has a gradient (for gradient clipping and NaN checks)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            if param.grad is not None:
                yield param
