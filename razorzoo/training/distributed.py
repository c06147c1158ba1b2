"""Several processes, one training run: ``torchrun`` launches them, this module joins them (docs/train.md).

``torchrun --nproc-per-node N -m razorzoo train ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; :func:`join`
starts the process group (NCCL on CUDA, gloo on CPU) and says which device this process uses. The recipes are
upstream's ``syncbn`` configs: with more than one process every BatchNorm normalises with the statistics of the
whole global batch (:func:`sync_batchnorm`): torch's ``SyncBatchNorm`` on CUDA, and :class:`SyncBatchNorm2d` (the
same arithmetic over gloo's ``all_reduce``) on CPU, where torch's has no kernels.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from razorzoo.errors import RazorzooError

__all__ = ["World", "join", "leave", "sync_batchnorm", "SyncBatchNorm2d"]


@dataclass(frozen=True)
class World:
    """This process's place: ``rank`` of ``size`` processes, on ``device``."""

    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str) -> int:
    value = os.environ.get(name, "")
    if not value.isdigit():
        raise RazorzooError(f"{name}={value[:20]!r} is not a process index; launch with torchrun, which sets it")
    return int(value)


def join(device: str) -> World:
    """The run's :class:`World`: a single process, or (under torchrun) this rank, with the process group
    started. ``device`` is ``"cpu"``, ``"cuda"`` (each rank takes ``cuda:LOCAL_RANK``) or ``"cuda:K"``."""
    if device != "cpu" and not device.startswith("cuda"):
        raise RazorzooError(f"device must be 'cpu' or 'cuda[:K]', not {device[:30]!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RazorzooError(f"device {device!r} was asked for, but torch sees no CUDA GPU; use --device cpu")
    if os.environ.get("WORLD_SIZE", "1") in ("", "1"):
        return World(device=torch.device(device))
    size, rank, local_rank = _env_int("WORLD_SIZE"), _env_int("RANK"), _env_int("LOCAL_RANK")
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
    return World(rank=rank, size=size, device=target)


def leave(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


class _SyncBatchNormFunction(torch.autograd.Function):
    """Batch statistics over every process: the sums of ``x``, then of ``(x - mean)²``, all-reduced in forward; the
    sums of ``dy`` and ``dy·x̂`` all-reduced in backward (what torch's CUDA ``SyncBatchNorm`` computes)."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum, training):  # type: ignore[override]
        channels = x.shape[1]
        sums = torch.cat([x.sum((0, 2, 3)), torch.tensor([x.numel() // channels], dtype=x.dtype)])
        dist.all_reduce(sums)
        total = sums[-1]
        mean = sums[:channels] / total
        centred = x - mean[None, :, None, None]
        var = (centred * centred).sum((0, 2, 3))  # two passes: no cancellation when the mean is large
        dist.all_reduce(var)
        var = var / total
        if training and running_mean is not None:
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(momentum * mean)
                running_var.mul_(1 - momentum).add_(momentum * var * total / (total - 1))
        invstd = torch.rsqrt(var + eps)
        xhat = centred * invstd[None, :, None, None]
        ctx.save_for_backward(xhat, weight, invstd, total)
        return xhat * weight[None, :, None, None] + bias[None, :, None, None]

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        xhat, weight, invstd, total = ctx.saved_tensors
        channels = xhat.shape[1]
        local_dy = grad.sum((0, 2, 3))
        local_dy_xhat = (grad * xhat).sum((0, 2, 3))
        sums = torch.cat([local_dy, local_dy_xhat])
        dist.all_reduce(sums)
        sum_dy, sum_dy_xhat = sums[:channels], sums[channels:]
        grad_x = (grad - (sum_dy / total)[None, :, None, None] - xhat * (sum_dy_xhat / total)[None, :, None, None]) \
            * (weight * invstd)[None, :, None, None]
        # like torch's SyncBatchNorm: parameter gradients from this process's data (DDP averages them)
        return grad_x, local_dy_xhat, local_dy, None, None, None, None, None


class SyncBatchNorm2d(nn.BatchNorm2d):
    """A ``BatchNorm2d`` whose training statistics span every process of the group (CPU/gloo)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized():
            return super().forward(x)
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        return _SyncBatchNormFunction.apply(x, self.weight, self.bias, self.running_mean, self.running_var,
                                            self.eps, self.momentum, True)


def sync_batchnorm(model: nn.Module, world: World) -> nn.Module:
    """``model`` with every ``BatchNorm2d`` synchronised across processes (a no-op for one process)."""
    if world.size == 1:
        return model
    if world.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            synced = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats)
            # the same Parameter and buffer objects, as torch's convert_sync_batchnorm does: an optimizer or EMA
            # built before the conversion keeps working on them
            synced.weight, synced.bias = child.weight, child.bias
            synced.running_mean, synced.running_var = child.running_mean, child.running_var
            synced.num_batches_tracked = child.num_batches_tracked
            synced.train(child.training)
            setattr(model, name, synced)
        else:
            sync_batchnorm(child, world)
    return model
