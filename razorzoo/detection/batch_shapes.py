"""MMYOLO's ``BatchShapePolicy`` at test time: the per-image canvas YOLOv5/YOLOv6 are evaluated on.

MMYOLO's COCO val/test datasets for the YOLOv5 and YOLOv6 configs set ``batch_shapes_cfg=BatchShapePolicy(
batch_size=1, img_size=640, size_divisor=32, extra_pad_ratio=0.5)``: every image gets its own canvas, a multiple of
32 a little larger than its 640-long-side resize, and ``LetterResize(allow_scale_up=False)`` then only centres the
resized image on it (docs/upstream.md §6.1). Single-image inference uses the plain 640 x 640 canvas instead, so the
two give different boxes; published mAP is measured on these canvases. RTMDet has no batch shapes.

Reference: ``BatchShapePolicy.__call__`` in mmyolo/datasets/utils.py (open-mmlab/mmyolo@0587cab).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from razorzoo.detection.transforms import ImageMeta, letterbox

__all__ = ["batch_shape", "letterbox_to_batch_shape"]


def batch_shape(width: int, height: int, *, img_size: int = 640, size_divisor: int = 32,
                extra_pad_ratio: float = 0.5) -> tuple[int, int]:
    """The ``(H, W)`` canvas ``BatchShapePolicy(batch_size=1)`` assigns an image of ``width x height`` pixels.

    Upstream takes ``width``/``height`` from the annotation file, not from the decoded image.
    """
    # float64 and the same operation order as upstream, so the ceil lands on the same side for every aspect ratio
    aspect = np.float64(height) / np.float64(width)
    if aspect < 1:
        shape = [aspect, 1.0]
    elif aspect > 1:
        shape = [1.0, 1.0 / aspect]
    else:
        shape = [1.0, 1.0]
    h, w = np.ceil(np.array(shape) * img_size / size_divisor + extra_pad_ratio).astype(np.int64) * size_divisor
    return int(h), int(w)


def letterbox_to_batch_shape(image: np.ndarray, size: int, pad_value: int, shape: tuple[int, int]
                             ) -> tuple[np.ndarray, ImageMeta]:
    """``YOLOv5KeepRatioResize(size)`` + ``LetterResize(allow_scale_up=False)`` onto a ``shape = (H, W)`` canvas.

    The keep-ratio resize is :func:`razorzoo.detection.transforms.letterbox`'s; the canvas is always at least as large
    as the resized image (``batch_shape`` adds half a stride), so LetterResize never rescales and only pads, centred.
    Returns the canvas and its :class:`~razorzoo.detection.transforms.ImageMeta` (``pad_param`` on this canvas).
    """
    square, meta = letterbox(image, size, pad_value)
    top, bottom, left, right = (int(p) for p in meta.pad_param)
    resized = square[top: size - bottom, left: size - right]
    nh, nw = resized.shape[:2]
    height, width = shape
    if nh > height or nw > width:
        raise ValueError(f"batch shape {shape} is smaller than the {nw}x{nh} resized image")
    pad_h, pad_w = height - nh, width - nw
    top, left = int(round(pad_h // 2 - 0.1)), int(round(pad_w // 2 - 0.1))  # LetterResize's centring rule
    canvas = np.full((height, width, 3), pad_value, dtype=np.uint8)
    canvas[top: top + nh, left: left + nw] = resized
    return canvas, replace(meta, img_shape=(height, width), batch_input_shape=(height, width),
                           pad_param=(float(top), float(pad_h - top), float(left), float(pad_w - left)))
