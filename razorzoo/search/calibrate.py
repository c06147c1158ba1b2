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
from typing import TYPE_CHECKING, Iterable, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from razorzoo.bounded import safe_repr
from razorzoo.errors import ImageError
from razorzoo.evaluation.engine import on_device

if TYPE_CHECKING:
    from razorzoo.detection.transforms import ImageInput

__all__ = ["calibrate_bn", "calibration_images", "DEFAULT_BATCH_SIZE"]

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
def calibrate_bn(model: nn.Module, data: "Iterable[torch.Tensor] | str | os.PathLike | Sequence[ImageInput]",
                 n: int | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE,
                 progress: bool | None = None) -> nn.Module:
    """Reset every BatchNorm's running statistics and recompute them on ``data``; return ``model`` in eval mode.

    Args:
        model: a classifier, backbone or detector (only its ``_BatchNorm`` layers change).
        data: ready input batches (``N x 3 x H x W`` tensors, already normalised), or an image folder (searched
            recursively, sorted by path) or a list of images (paths, PIL images, BGR arrays), which go through the
            model's own test pipeline (``model.preprocess``), as ``predict`` and ``val`` prepare them.
        n: use at most this many images (default: all).
        batch_size: images per forward pass when ``data`` is images.
        progress: a progress bar of the images seen (default: on unless ``RAZORZOO_PROGRESS=0``).

    The result does not depend on how the images are split into batches except through the batch statistics the
    BN layers normalise with while calibrating (upstream's behaviour); it is deterministic for given batches.
    """
    from tqdm.auto import tqdm

    from razorzoo.evaluation.engine import show_progress

    batches, total = _batches(model, data, n, batch_size)
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    moments = {m: _Moments() for m in norms}
    hooks = [m.register_forward_pre_hook(lambda module, inputs: moments[module].update(inputs[0])) for m in norms]
    model.eval()
    for m in norms:
        m.train()  # normalise with batch statistics, as the supernet was trained
    seen = 0
    try:
        with tqdm(total=total, unit="img", desc="calibrate_bn", disable=not show_progress(progress)) as bar:
            for batch in batches:
                model(on_device(batch, model))
                seen += batch.shape[0]
                bar.update(batch.shape[0])
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


def _batches(model: nn.Module, data, n: int | None, batch_size: int) -> tuple[Iterable[torch.Tensor], int | None]:
    """Tensors as given (cut to ``n`` images in all), or images through ``model.preprocess`` in batches; and how
    many images there are, when that is known before the first batch."""
    if isinstance(data, torch.Tensor):
        data = [data]
    if isinstance(data, (str, os.PathLike)) or (isinstance(data, Sequence) and data
                                                and not isinstance(data[0], torch.Tensor)):
        images = calibration_images(data)[:n]
        preprocess = getattr(model, "preprocess", None)
        if not callable(preprocess):
            raise ImageError(f"calibrate_bn got images, but {type(model).__name__} has no preprocess() to prepare "
                             "them; pass ready N x 3 x H x W batches")
        return (_pixels(preprocess(images[i:i + batch_size])) for i in range(0, len(images), batch_size)), len(images)
    if isinstance(data, Sequence) and all(isinstance(b, torch.Tensor) and b.dim() == 4 for b in data):
        total = sum(b.shape[0] for b in data)
        return _first_images(data, n), total if n is None else min(total, n)
    return _first_images(data, n), n


def calibration_images(source: "str | os.PathLike | Sequence[ImageInput]") -> "list[ImageInput]":
    """The image files of a folder (searched recursively, sorted by path), or a list of images as given.

    Raises:
        ImageError: the folder does not exist or holds no images.
    """
    from razorzoo.evaluation.sources import IMAGE_SUFFIXES, list_images

    if not isinstance(source, (str, os.PathLike)):
        return list(source)
    if not os.path.isdir(source):
        raise ImageError(f"image folder {safe_repr(str(source))} does not exist")
    images: list[ImageInput] = list(list_images(source, recursive=True))
    if not images:
        raise ImageError(f"image folder {safe_repr(str(source))} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                         "put a few hundred of your own photos there")
    return images


def _pixels(prepared: "torch.Tensor | tuple") -> torch.Tensor:
    """The batch of what ``preprocess`` returned: a detector's comes with its image metas."""
    return prepared[0] if isinstance(prepared, tuple) else prepared


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
