"""Images -> normalized batch + metas, exactly like the MMYOLO test pipelines and data preprocessor (§6.1).

Two pipelines exist upstream, selected by the recipe's ``preprocess["type"]``:

* ``"letterbox"`` (YOLOv5 / YOLOv6): ``YOLOv5KeepRatioResize`` then ``LetterResize(allow_scale_up=False)``, which
  centres the image on a 114-grey canvas and records ``pad_param = (top, bottom, left, right)``;
* ``"resize_pad"`` (RTMDet): ``mmdet.Resize(keep_ratio=True)`` (``mmcv.imrescale``) then ``mmdet.Pad``, which pads
  bottom/right only.

Both then follow ``YOLOv5DetDataPreprocessor``: optional BGR -> RGB, ``(x - mean) / std``, and zero padding of the
batch to its largest image (after normalization, as mmengine's ``stack_batch`` does).

Arrays are **BGR** (the OpenCV convention every OpenMMLab model was trained with): pass ``cv2.imread`` output as is,
and flip RGB arrays with ``rgb[..., ::-1]``. PIL images are RGB and are converted automatically.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, Union

import cv2
import numpy as np

from razorzoo.errors import ImageError

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = ["ImageInput", "load_image", "letterbox", "resize_pad", "preprocess"]

ImageInput = Union[str, os.PathLike, "Image.Image", np.ndarray]


def load_image(image: ImageInput) -> np.ndarray:
    """One image as an ``H x W x 3`` uint8 **BGR** array, decoded like mmcv's ``LoadImageFromFile``.

    Accepts a file path (decoded by ``cv2.imdecode(..., IMREAD_COLOR)``: grey/alpha/16-bit files become 8-bit BGR),
    a PIL image (any mode; converted to RGB, then flipped to BGR), or a numpy array: ``H x W x 3`` uint8 BGR is used
    as is, ``H x W`` and ``H x W x 1`` uint8 grey are replicated to 3 channels. Anything ambiguous (4 channels:
    BGRA or RGBA?; float: 0-1 or 0-255?; channels-first) is refused with an :class:`ImageError` saying what to pass.
    """
    if isinstance(image, (str, os.PathLike)):
        return _read_file(Path(image))
    if isinstance(image, np.ndarray):
        return _check_array(image)
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL.Image.Image, without importing PIL eagerly
        return np.ascontiguousarray(np.asarray(image.convert("RGB"))[..., ::-1])
    raise ImageError(
        f"cannot use an object of type {type(image).__name__} as an image; pass a file path, a PIL image or an "
        "H x W x 3 uint8 BGR numpy array (e.g. cv2.imread(path))"
    )


def _read_file(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ImageError(f"image file not found: {str(path)!r}")
    # np.fromfile + imdecode is what mmcv.imfrombytes does, and unlike cv2.imread it handles non-ASCII paths
    image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"cannot decode {str(path)!r} as an image (OpenCV supports PNG, JPEG, BMP, TIFF, WebP, ...)")
    return image


def _check_array(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        raise ImageError(
            f"image array has dtype {image.dtype}; pass uint8 pixels in 0..255 "
            "(e.g. (x * 255).round().astype(np.uint8) for floats in 0..1)"
        )
    if image.size == 0:
        raise ImageError(f"image array is empty (shape {image.shape})")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return np.ascontiguousarray(np.repeat(image.reshape(image.shape[:2] + (1,)), 3, axis=2))
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image)
    if image.ndim == 3 and image.shape[2] == 4:
        raise ImageError(
            "image array has 4 channels; drop the alpha channel and pass H x W x 3 BGR "
            "(cv2.cvtColor(x, cv2.COLOR_BGRA2BGR) or cv2.COLOR_RGBA2BGR, depending on its channel order)"
        )
    hint = "; it looks channels-first: use x.transpose(1, 2, 0)" if image.ndim == 3 and image.shape[0] == 3 else ""
    raise ImageError(f"image array has shape {image.shape}; pass H x W x 3 uint8 BGR{hint}")


def letterbox(image: np.ndarray, size: int, pad_value: int) -> tuple[np.ndarray, dict[str, Any]]:
    """``YOLOv5KeepRatioResize(size)`` + ``LetterResize(size, allow_scale_up=False)`` on a BGR array.

    Returns the ``size x size`` image and its metas (``img_shape``, ``scale_factor`` as (w, h), ``pad_param``).
    """
    h, w = image.shape[:2]
    # YOLOv5KeepRatioResize: the long side becomes `size`; new sizes are *truncated* and shrinking uses INTER_AREA
    ratio = size / max(h, w)  # == min(size / long side, size / short side) for a square target
    if ratio != 1:
        interpolation = cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (int(w * ratio), int(h * ratio)), interpolation=interpolation)
    nh, nw = image.shape[:2]
    # LetterResize(allow_scale_up=False) would only shrink, and the image already fits the canvas: it just pads
    pad_h, pad_w = size - nh, size - nw
    top, left = int(round(pad_h // 2 - 0.1)), int(round(pad_w // 2 - 0.1))  # upstream's centring rule, verbatim
    bottom, right = pad_h - top, pad_w - left
    if pad_h or pad_w:
        image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(pad_value,) * 3)
    meta = {"img_shape": image.shape[:2], "scale_factor": (nw / w, nh / h),
            "pad_param": (float(top), float(bottom), float(left), float(right))}
    return image, meta


def resize_pad(image: np.ndarray, size: int, pad_value: int) -> tuple[np.ndarray, dict[str, Any]]:
    """``mmdet.Resize(size, keep_ratio=True)`` + ``mmdet.Pad(size)`` on a BGR array (bottom/right padding).

    Returns the ``size x size`` image and its metas (``img_shape``, ``scale_factor`` as (w, h)).
    """
    h, w = image.shape[:2]
    # mmcv.imrescale: sizes are *rounded* (+0.5) and always resized bilinearly, unlike the letterbox pipeline
    ratio = size / max(h, w)
    nw, nh = int(w * ratio + 0.5), int(h * ratio + 0.5)
    image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    image = cv2.copyMakeBorder(image, 0, size - nh, 0, size - nw, cv2.BORDER_CONSTANT, value=(pad_value,) * 3)
    return image, {"img_shape": image.shape[:2], "scale_factor": (nw / w, nh / h)}


_PIPELINES = {"letterbox": letterbox, "resize_pad": resize_pad}


def preprocess(
    images: ImageInput | Sequence[ImageInput], cfg: dict[str, Any]
) -> tuple["torch.Tensor", list[dict[str, Any]]]:
    """Images -> ``(batch, metas)`` for a detector whose recipe has the preprocessing dict ``cfg``.

    Args:
        images: one image or a list of them: file paths, PIL images, or ``H x W x 3`` uint8 **BGR** arrays
            (see :func:`load_image`).
        cfg: ``{"type": "letterbox" | "resize_pad", "size", "pad_value", "bgr_to_rgb", "mean", "std"}``.

    Returns:
        ``batch``: float32 ``(N, 3, H, W)``, normalized and zero-padded to the largest image; ``metas``: one dict
        per image with ``ori_shape`` (h, w), ``img_shape`` (h, w), ``scale_factor`` (w, h), ``pad_param``
        (top, bottom, left, right; letterbox only) and ``batch_input_shape`` (H, W).
    """
    import torch

    try:
        pipeline = _PIPELINES[cfg["type"]]
    except KeyError:
        raise ImageError(f"unknown preprocessing type {cfg.get('type')!r}; expected one of {sorted(_PIPELINES)}")
    if isinstance(images, (list, tuple)):
        if not images:
            raise ImageError("no images given")
    else:
        images = [images]

    tensors, metas = [], []
    for image in images:
        array = load_image(image)
        if min(array.shape[:2]) * int(cfg["size"]) < max(array.shape[:2]):
            raise ImageError(f"a {array.shape[1]}x{array.shape[0]} image is too elongated: its short side would "
                             f"shrink below 1 pixel when the long side is resized to {cfg['size']}")
        resized, meta = pipeline(array, int(cfg["size"]), int(cfg["pad_value"]))
        tensors.append(torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1))
        metas.append({"ori_shape": array.shape[:2], **meta})

    mean = torch.tensor(cfg["mean"], dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(cfg["std"], dtype=torch.float32).view(-1, 1, 1)
    height = max(t.shape[1] for t in tensors)
    width = max(t.shape[2] for t in tensors)
    batch = torch.zeros(len(tensors), 3, height, width, dtype=torch.float32)
    for i, tensor in enumerate(tensors):
        if cfg["bgr_to_rgb"]:
            tensor = tensor.flip(0)
        batch[i, :, : tensor.shape[1], : tensor.shape[2]] = (tensor.float() - mean) / std
    for meta in metas:
        meta["batch_input_shape"] = (height, width)
    return batch, metas
