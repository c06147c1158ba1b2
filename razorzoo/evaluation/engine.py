"""The inference loop shared by validation and streaming prediction.

Decoding and resizing run in a thread pool ahead of the model (OpenCV releases the GIL), the model sees batches of
equal-size canvases, and nothing depends on the model being an ``nn.Module``: any object with ``recipe``,
``forward(batch)`` and ``postprocess(raw, metas, ...)`` works, so ONNX backends run through the same code.
"""
from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from razorzoo import constants
from razorzoo.bounded import check_number
from razorzoo.detection.transforms import load_image, letterbox, resize_pad

__all__ = ["show_progress", "check_batching", "prefetch", "prepare", "batches", "on_device", "detect"]

T = TypeVar("T")
R = TypeVar("R")


def show_progress(progress: bool | None) -> bool:
    """``progress`` if given, else the ``RAZORZOO_PROGRESS`` default (on unless turned off)."""
    return constants.progress_bars() if progress is None else progress


def check_batching(batch: int, workers: int, limit: int | None = None) -> None:
    """Refuse a batch size below 1, a negative thread count or a limit below 1 (:class:`InputError`)."""
    check_number(batch, "batch", minimum=1, integer=True)
    check_number(workers, "workers", minimum=0, integer=True)
    if limit is not None:
        check_number(limit, "limit", minimum=1, integer=True)


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


def prepare(image: Any, cfg: dict[str, Any], shape: tuple[int, int] | None = None
            ) -> tuple[np.ndarray, dict[str, Any]]:
    """One image (path, PIL image or BGR array) -> its uint8 BGR canvas and metas under the recipe's ``cfg``.

    ``shape`` is a batch-shape canvas ``(H, W)`` (letterbox recipes at validation); ``None`` is the inference canvas.
    """
    from razorzoo.evaluation.batch_shapes import letterbox_to_batch_shape

    array = load_image(image)
    size, pad = int(cfg["size"]), int(cfg["pad_value"])
    if cfg["type"] == "letterbox":
        canvas, meta = (letterbox(array, size, pad) if shape is None
                        else letterbox_to_batch_shape(array, size, pad, shape))
    else:
        canvas, meta = resize_pad(array, size, pad)
    return canvas, {"ori_shape": array.shape[:2], **meta}


def batches(items: Iterable[tuple[T, np.ndarray, dict]], size: int
            ) -> Iterator[list[tuple[T, np.ndarray, dict]]]:
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


def _normalize(canvases: Sequence[np.ndarray], cfg: dict[str, Any]) -> torch.Tensor:
    """Equal-size BGR canvases -> the normalized ``(N, 3, H, W)`` batch (``YOLOv5DetDataPreprocessor`` /
    ``DetDataPreprocessor``: channel flip if ``bgr_to_rgb``, then ``(x - mean) / std``)."""
    batch = torch.from_numpy(np.stack(canvases)).permute(0, 3, 1, 2).float()
    if cfg["bgr_to_rgb"]:
        batch = batch.flip(1)
    mean = torch.tensor(cfg["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(cfg["std"], dtype=torch.float32).view(1, -1, 1, 1)
    return (batch - mean) / std


def on_device(batch: torch.Tensor, model: Any) -> torch.Tensor:
    """``batch`` on the device and in the dtype of ``model``'s weights when it is an ``nn.Module``, else as is."""
    if isinstance(model, torch.nn.Module):
        reference = next(model.parameters())
        return batch.to(device=reference.device, dtype=reference.dtype)
    return batch


def detect(model: Any, canvases: Sequence[np.ndarray], metas: list[dict[str, Any]], **thresholds: Any) -> list:
    """Run ``model`` on equal-size canvases from :func:`prepare`; one ``Detections`` per canvas."""
    batch = on_device(_normalize(canvases, model.recipe.preprocess), model)
    height, width = batch.shape[2:]
    metas = [{**meta, "batch_input_shape": (height, width)} for meta in metas]
    with torch.inference_mode():
        return model.postprocess(model.forward(batch), metas, **thresholds)
