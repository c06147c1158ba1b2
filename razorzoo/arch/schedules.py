"""Typed optimisation settings of the three detector recipes, as frozen data (torch-free): optimizer, learning-rate
schedule, EMA and validation cadence, each from the resolved MMYOLO config (docs/upstream.md §11). Epochs and batch
size are the data side's (``razorzoo.arch.train_pipelines``), once.

``razorzoo.training.optim`` turns them into a torch optimizer and per-iteration learning rates; the trainer reads the
rest. A user's ``--lr``/``--epochs``/``--batch`` become a :func:`dataclasses.replace` of these.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

__all__ = ["SGDSettings", "AdamWSettings", "YOLOv5Schedule", "FlatCosineSchedule", "TrainSchedule", "SCHEDULES"]


@dataclass(frozen=True)
class SGDSettings:
    """``YOLOv5OptimizerConstructor`` + SGD: three parameter groups (conv/linear weights with weight decay; norm
    weights and all biases without), weight decay scaled by ``total batch * accumulate / base_total_batch_size``
    where ``accumulate = max(round(base_total_batch_size / total batch), 1)``; ``batch_size_per_gpu`` is the
    optimizer config's own (YOLOv6-L's says 32 while its loader takes 16)."""

    lr: float = 0.01
    momentum: float = 0.937
    nesterov: bool = True
    weight_decay: float = 0.0005
    batch_size_per_gpu: int = 16
    base_total_batch_size: int = 64


@dataclass(frozen=True)
class AdamWSettings:
    """mmengine ``DefaultOptimWrapperConstructor`` + AdamW with ``paramwise_cfg(norm_decay_mult=0,
    bias_decay_mult=0, bypass_duplicate=True)``: no weight decay on norm layers and biases."""

    lr: float = 0.004
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


@dataclass(frozen=True)
class YOLOv5Schedule:
    """``YOLOv5ParamSchedulerHook``: linear warm-up over ``max(round(warmup_epochs * iters per epoch),
    warmup_min_iters)`` iterations (biases from ``warmup_bias_lr``, others from 0; momentum from
    ``warmup_momentum``), then ``lr * f(epoch)`` set at each epoch's end, ``f`` linear or cosine down to
    ``lr_factor``."""

    kind: str = "linear"  # or "cosine"
    lr_factor: float = 0.01
    warmup_epochs: float = 3.0
    warmup_bias_lr: float = 0.1
    warmup_momentum: float = 0.8
    warmup_min_iters: int = 1000


@dataclass(frozen=True)
class FlatCosineSchedule:
    """RTMDet's ``param_scheduler``: ``LinearLR(start_factor, by_epoch=False, end=warmup_iters)``, flat, then
    ``CosineAnnealingLR(eta_min=lr * eta_min_ratio)`` over the second half of training (iteration-based)."""

    warmup_iters: int = 1000
    start_factor: float = 1e-5
    eta_min_ratio: float = 0.05


@dataclass(frozen=True)
class TrainSchedule:
    """Everything about a recipe's training run that is not data or loss."""

    optimizer: Union[SGDSettings, AdamWSettings]
    schedule: Union[YOLOv5Schedule, FlatCosineSchedule]
    ema_momentum: float = 0.0001  # ExpMomentumEMA(gamma=2000, update_buffers=True)
    ema_gamma: int = 2000
    val_interval: int = 10
    stage2_val_interval: int = 1  # dynamic_intervals: validate every epoch once the stage-2 pipeline runs
    clip_grad_norm: float | None = None  # none of the three configs clips


SCHEDULES: dict[str, TrainSchedule] = {
    "yolov5_s": TrainSchedule(optimizer=SGDSettings(batch_size_per_gpu=16), schedule=YOLOv5Schedule(kind="linear")),
    "yolov6_l_d12": TrainSchedule(optimizer=SGDSettings(batch_size_per_gpu=32), schedule=YOLOv5Schedule(kind="cosine")),
    "rtmdet_tiny": TrainSchedule(optimizer=AdamWSettings(), schedule=FlatCosineSchedule(), ema_momentum=0.0002),
}
