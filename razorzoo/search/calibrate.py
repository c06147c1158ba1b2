"""BatchNorm recalibration of a subnet sliced from a supernet (MMRazor ``CalibrateBNMixin``, OFA
``set_running_statistics``).

A supernet's BN statistics were accumulated over *all* subnets it trained, so a sliced subnet normalises with
statistics of other architectures. Recalibration resets them and recomputes them on a few images while the BN layers
normalise with the statistics of the batch they see (train mode), as both upstream implementations do. Upstream
averages per-batch means and variances; we combine batches exactly (Chan et al.'s pairwise update in float64), so
the result is the mean and unbiased variance of *all* the inputs each BN saw, whatever the batch size.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from razorzoo.errors import ImageError

__all__ = ["calibrate_bn", "DEFAULT_BATCH_SIZE"]

DEFAULT_BATCH_SIZE = 32


class _Moments:
    """Running count, mean and sum of squared deviations per channel, merged batch by batch in float64."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        channels = x.shape[1]
        flat = x.detach().double().transpose(0, 1).reshape(channels, -1)
        n = flat.shape[1]
        mean = flat.mean(dim=1)
        m2 = ((flat - mean[:, None]) ** 2).sum(dim=1)
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total


@torch.no_grad()
def calibrate_bn(model: nn.Module, data: "Iterable[torch.Tensor] | str | os.PathLike | Sequence[str | os.PathLike]",
                 n: int | None = None, *, image_size: int = 224, batch_size: int = DEFAULT_BATCH_SIZE) -> nn.Module:
    """Reset every BatchNorm's running statistics and recompute them on ``data``; return ``model`` in eval mode.

    Args:
        model: a classifier, backbone or detector (only its ``_BatchNorm`` layers change).
        data: ready input batches (``N x 3 x H x W`` tensors, already normalised), or an image folder / a list of
            image files, which are prepared like MMCls' ImageNet test pipeline at ``image_size``.
        n: use at most this many images (default: all).
        image_size: crop size for images read from files. batch_size: images per forward pass for files.

    The result does not depend on how the images are split into batches except through the batch statistics the
    BN layers normalise with while calibrating (upstream's behaviour); it is deterministic for given batches.
    """
    batches = _batches(data, n, image_size, batch_size)
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    moments = {m: _Moments() for m in norms}
    hooks = [m.register_forward_pre_hook(lambda module, inputs: moments[module].update(inputs[0])) for m in norms]
    model.eval()
    for m in norms:
        m.train()  # normalise with batch statistics, as the supernet was trained
    seen = 0
    try:
        for batch in batches:
            model(batch)
            seen += batch.shape[0]
    finally:
        for hook in hooks:
            hook.remove()
        model.eval()
    if seen == 0:
        raise ImageError("calibrate_bn got no images; pass a non-empty folder, list of images or batches")
    for m, stats in moments.items():
        if stats.mean is None:
            continue  # a BN the forward pass never reached (e.g. a skipped shortcut): nothing to calibrate
        m.running_mean.copy_(stats.mean.to(m.running_mean.dtype))
        m.running_var.copy_((stats.m2 / max(stats.count - 1, 1)).to(m.running_var.dtype))
        m.num_batches_tracked.zero_()
    return model


def _batches(data, n: int | None, image_size: int, batch_size: int) -> Iterable[torch.Tensor]:
    """Tensors as given (cut to ``n`` images in all), or images read from files in batches."""
    if isinstance(data, torch.Tensor):
        data = [data]
    if isinstance(data, (str, os.PathLike)) or (isinstance(data, Sequence) and data
                                                and not isinstance(data[0], torch.Tensor)):
        from razorzoo.search.images import list_images, load_batch

        paths = list_images(data)[:n]
        return (load_batch(paths[i:i + batch_size], image_size) for i in range(0, len(paths), batch_size))
    return _first_images(data, n)


def _first_images(batches: Iterable[torch.Tensor], n: int | None) -> Iterable[torch.Tensor]:
    left = n
    for batch in batches:
        if not isinstance(batch, torch.Tensor) or batch.dim() != 4:
            raise ImageError("calibrate_bn batches must be N x 3 x H x W tensors, got "
                             f"{type(batch).__name__}{tuple(batch.shape) if isinstance(batch, torch.Tensor) else ''}")
        if left is not None:
            batch = batch[:left]
            left -= batch.shape[0]
        if batch.shape[0]:
            yield batch
        if left == 0:
            return
