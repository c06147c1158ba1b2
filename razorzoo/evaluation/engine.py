"""The inference loop shared by validation and streaming prediction.

Decoding and resizing run in a thread pool ahead of the model (OpenCV releases the GIL), the model sees batches of
equal-size canvases, and nothing depends on the model being an ``nn.Module``: any object with ``recipe`` and
``detect(batch, metas, ...)`` (or a call on a batch and ``postprocess(raw, metas, ...)``) works, so ONNX backends
run through the same code. The pipeline is the
recipe's :class:`~razorzoo.detection.transforms.DetectionTransform`, the one ``Detector.preprocess`` runs, split in
two: ``resize_image`` on the loader threads, ``collate`` (normalization) on each batch.
"""
from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from razorzoo import constants
from razorzoo.bounded import check_number
from razorzoo.detection.transforms import DetectionTransform, ImageMeta, load_image
from razorzoo.detection.batch_shapes import letterbox_to_batch_shape

if TYPE_CHECKING:
    from razorzoo.detection.results import Detections

__all__ = ["show_progress", "check_batching", "prefetch", "detection_transform", "prepare", "batches", "on_device",
           "detect"]

T = TypeVar("T")
R = TypeVar("R")


def show_progress(progress: bool | None) -> bool:
    """``progress`` if given, else the ``RAZORZOO_PROGRESS`` default (on unless turned off)."""
    return constants.progress_bars() if progress is None else progress


def check_batching(batch: int, workers: int, limit: int | None = None, *, prefix: str = "") -> None:
    """Refuse a batch size outside 1..:data:`~razorzoo.constants.MAX_BATCH`, a thread count outside
    0..:func:`~razorzoo.constants.max_threads` or a limit below 1 (:class:`InputError`; ``prefix="--"`` names the
    command-line options)."""
    check_number(batch, f"{prefix}batch", minimum=1, maximum=constants.MAX_BATCH, integer=True)
    constants.check_threads(workers, f"{prefix}workers", minimum=0)
    if limit is not None:
        check_number(limit, f"{prefix}limit", minimum=1, integer=True)


def prefetch(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map(fn, items)`` in order, with ``fn`` running on ``workers`` threads ahead of the consumer.

    At most ``2 * workers`` results wait at a time; ``workers=0`` runs ``fn`` inline.
    """
    if workers <= 0:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="razorzoo-load")
    pending: collections.deque = collections.deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def detection_transform(model: Any) -> DetectionTransform:
    """The test pipeline of ``model``'s recipe, built from ``model.recipe`` alone so that any backend has one."""
    return DetectionTransform(model.recipe.preprocess, model.recipe.normalize)


def prepare(image: Any, transform: DetectionTransform, shape: tuple[int, int] | None = None
            ) -> tuple[np.ndarray, ImageMeta]:
    """One image (path, PIL image or BGR array) -> its uint8 BGR canvas and :class:`ImageMeta`.

    ``shape`` is a batch-shape canvas ``(H, W)`` (letterbox recipes at validation); ``None`` is the inference canvas.
    """
    if shape is None:
        return transform.resize_image(image)
    return letterbox_to_batch_shape(load_image(image), transform.resize.size, transform.resize.pad_value, shape)


def batches(items: Iterable[tuple[T, Any, Any]], size: int) -> Iterator[list[tuple[T, Any, Any]]]:
    """Group consecutive ``(key, canvas, meta)`` items into lists of at most ``size`` equal-shape canvases.

    Canvases are never padded to a common size: zero padding would change the model's output near the border.
    """
    group: list = []
    for item in items:
        if group and (len(group) == size or group[0][1].shape != item[1].shape):
            yield group
            group = []
        group.append(item)
    if group:
        yield group


def on_device(batch: torch.Tensor, model: Any) -> torch.Tensor:
    """``batch`` on the device and in the dtype of ``model``'s weights when it is an ``nn.Module``, else as is."""
    if isinstance(model, torch.nn.Module):
        reference = next(model.parameters())
        return batch.to(device=reference.device, dtype=reference.dtype)
    return batch


def detect(model: Any, transform: DetectionTransform, canvases: Sequence[np.ndarray], metas: Sequence[ImageMeta],
           **thresholds: Any) -> list["Detections"]:
    """Run ``model`` on equal-size canvases from :func:`prepare`; one ``Detections`` per canvas. Its ``detect``
    (network and post-processing: an exported end-to-end graph runs with the thresholds) when it has one, else a
    call on the batch and ``postprocess``."""
    batch, metas = transform.collate(canvases, metas)
    if hasattr(model, "detect"):
        return model.detect(batch, metas, **thresholds)
    with torch.inference_mode():
        return model.postprocess(model(on_device(batch, model)), metas, **thresholds)
