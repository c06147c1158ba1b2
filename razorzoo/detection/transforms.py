"""Images -> normalized batches, exactly like the OpenMMLab test pipelines and data preprocessors (docs/upstream.md
docs/upstream.md §6.1).

:class:`DetectionTransform` runs a detector recipe's pipeline, one of the two that exist upstream:

* :class:`~razorzoo.arch.recipes.Letterbox` (YOLOv5 / YOLOv6): ``YOLOv5KeepRatioResize`` then
  ``LetterResize(allow_scale_up=False)``, which centres the image on a 114-grey canvas and records
  ``pad_param = (top, bottom, left, right)``;
* :class:`~razorzoo.arch.recipes.ResizePad` (RTMDet): ``mmdet.Resize(keep_ratio=True)`` (``mmcv.imrescale``) then
  ``mmdet.Pad``, which pads bottom/right only.

Both then follow ``YOLOv5DetDataPreprocessor``: optional BGR -> RGB, ``(x - mean) / std``, and zero padding of the
batch to its largest image (after normalization, as mmengine's ``stack_batch`` does). :class:`ClassifierTransform`
runs the mmcls ImageNet test pipeline (``ResizeEdge`` short side, ``CenterCrop``, the same normalization).

Arrays are **BGR** (the OpenCV convention every OpenMMLab model was trained with): pass ``cv2.imread`` output as is,
and flip RGB arrays with ``rgb[..., ::-1]``. PIL images are RGB and are converted automatically. Files are decoded
like mmcv's ``LoadImageFromFile`` (``cv2.imdecode(IMREAD_COLOR)``: grey becomes 3 equal channels, 16-bit becomes
8-bit by dropping the low byte, alpha is dropped), after their header passed the checks of :func:`load_image`.
"""
from __future__ import annotations

import os
import stat
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, Union

import cv2
import numpy as np

from razorzoo.arch.recipes import (INTERPOLATIONS, RESIZE_BACKENDS, ClassifierPreprocess, Letterbox, Normalize,
                                   ResizePad)
from razorzoo.bounded import safe_repr
from razorzoo.errors import ImageError

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = ["ImageInput", "ImageMeta", "MAX_IMAGE_PIXELS", "IMAGE_SUFFIXES", "load_image", "letterbox", "resize_pad", "resize_edge",
           "center_crop", "normalize", "DetectionTransform", "ClassifierTransform"]

ImageInput = Union[str, os.PathLike, "Image.Image", np.ndarray]

# Largest image decoded from a file: 2^27 pixels (~1.5x Pillow's default warning limit, 11585 x 11585). A PNG of a
# few MB can declare 30000 x 30000 pixels (2.7 GB as BGR); the header is checked before anything is decoded.
MAX_IMAGE_PIXELS = 2**27
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")  # what a folder of images holds
_TOO_LARGE = f"more than {MAX_IMAGE_PIXELS} pixels, the most razorzoo decodes (a decompression bomb? else downscale it)"
_PATH_CHARS = 300  # paths in messages: long enough to keep the file name


@dataclass(frozen=True)
class ImageMeta:
    """Where an image went through the pipeline; post-processing maps boxes back with it.

    ``ori_shape``, ``img_shape`` (after resize and padding) and ``batch_input_shape`` are ``(h, w)``;
    ``scale_factor`` is ``(w, h)``; ``pad_param`` is ``(top, bottom, left, right)`` for a letterbox, else ``None``.
    """

    ori_shape: tuple[int, int]
    img_shape: tuple[int, int]
    scale_factor: tuple[float, float]
    batch_input_shape: tuple[int, int]
    pad_param: tuple[float, float, float, float] | None = None


def load_image(image: ImageInput) -> np.ndarray:
    """One image as an ``H x W x 3`` uint8 **BGR** array, decoded like mmcv's ``LoadImageFromFile``.

    Accepts a file path, a PIL image (any mode; converted to RGB, then flipped to BGR), or a numpy array:
    ``H x W x 3`` uint8 BGR is used as is, ``H x W`` and ``H x W x 1`` uint8 grey are replicated to 3 channels.
    Files are refused before decoding when they are empty, not an image, truncated, or larger than
    :data:`MAX_IMAGE_PIXELS`. Anything ambiguous (4 channels: BGRA or RGBA?; float: 0-1 or 0-255?; channels-first)
    is refused with an :class:`ImageError` saying what to pass.
    """
    if isinstance(image, (str, os.PathLike)):
        if not os.fspath(image):  # Path("") is ".", the current directory
            raise ImageError("the image path is empty; pass an image file")
        return _read_file(Path(image))
    if isinstance(image, np.ndarray):
        return _check_array(image)
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL.Image.Image, without importing PIL eagerly
        _check_pixels(*image.size, "the PIL image")  # Image.open is lazy: converting decodes, bombs too
        return np.ascontiguousarray(np.asarray(image.convert("RGB"))[..., ::-1])
    raise ImageError(
        f"cannot use an object of type {safe_repr(type(image).__name__)} as an image; pass a file path, a PIL image "
        "or an H x W x 3 uint8 BGR numpy array (e.g. cv2.imread(path))"
    )


def _read_file(path: Path) -> np.ndarray:
    where = safe_repr(str(path), _PATH_CHARS)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ImageError(f"image file not found: {where}") from None
    except OSError as exc:  # a name too long, a loop of links, a directory it may not enter
        raise ImageError(f"cannot read {where}: {exc.strerror or type(exc).__name__}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(f"{where} is a directory, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise ImageError(f"{where} is not a regular file (a device or a pipe?); pass an image file")
    if info.st_size == 0:
        raise ImageError(f"{where} is empty (0 bytes), not an image")
    _check_header(path, where)
    # np.fromfile + imdecode is what mmcv.imfrombytes does, and unlike cv2.imread it handles non-ASCII paths;
    # OpenCV's own log line for a corrupt file is silenced: the ImageError below is the one line the user sees
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
    finally:
        cv2.utils.logging.setLogLevel(level)
    if image is None:
        raise ImageError(f"cannot decode {where} as an image (OpenCV supports PNG, JPEG, BMP, TIFF, WebP, ...)")
    return image


def _check_header(path: Path, where: str) -> None:
    """Read the size from the header (Pillow, without decoding) and refuse bombs and truncated files.

    PNG chunks are CRC-checked (``verify``); a JPEG is decoded at 1/8 scale, which reads all its entropy-coded data
    cheaply, because OpenCV silently fills a truncated JPEG with grey.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as pil:
                width, height = pil.size
                _check_pixels(width, height, where)
                if pil.format == "JPEG":
                    pil.draft(pil.mode, (max(1, width // 8), max(1, height // 8)))
                    pil.load()
                else:
                    pil.verify()
    except ImageError:  # ours, from _check_pixels (an ImageError is also a ValueError)
        raise
    except Image.DecompressionBombError:  # Pillow's own limit (2x its warning size) fired before ours
        raise ImageError(f"{where} declares {_TOO_LARGE}") from None
    except UnidentifiedImageError:
        raise ImageError(f"{where} is not an image file of a known format (PNG, JPEG, BMP, TIFF, WebP, ...)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{where} is truncated or corrupt ({safe_repr(str(exc), 80)})") from None


def _check_pixels(width: int, height: int, where: str) -> None:
    if width < 1 or height < 1:
        raise ImageError(f"{where} is empty ({width}x{height} pixels)")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(f"{where} is {width}x{height}: {_TOO_LARGE}")


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


def _check_aspect(image: np.ndarray, size: int) -> tuple[int, int]:
    """``(h, w)`` of an image whose short side stays at least 1 pixel when its long side is resized to ``size``."""
    h, w = image.shape[:2]
    if min(h, w) * size < max(h, w):
        raise ImageError(f"a {w}x{h} image is too elongated: its short side would shrink below 1 pixel when the "
                         f"long side is resized to {size}")
    return h, w


def letterbox(image: np.ndarray, size: int, pad_value: int) -> tuple[np.ndarray, ImageMeta]:
    """``YOLOv5KeepRatioResize(size)`` + ``LetterResize(size, allow_scale_up=False)`` on a BGR array.

    Returns the ``size x size`` image and its :class:`ImageMeta` (with ``pad_param``).
    """
    h, w = _check_aspect(image, size)
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
    return image, ImageMeta(ori_shape=(h, w), img_shape=image.shape[:2], scale_factor=(nw / w, nh / h),
                            batch_input_shape=image.shape[:2],
                            pad_param=(float(top), float(bottom), float(left), float(right)))


def resize_pad(image: np.ndarray, size: int, pad_value: int) -> tuple[np.ndarray, ImageMeta]:
    """``mmdet.Resize(size, keep_ratio=True)`` + ``mmdet.Pad(size)`` on a BGR array (bottom/right padding).

    Returns the ``size x size`` image and its :class:`ImageMeta` (no ``pad_param``).
    """
    h, w = _check_aspect(image, size)
    # mmcv.imrescale: sizes are *rounded* (+0.5) and always resized bilinearly, unlike the letterbox pipeline
    ratio = size / max(h, w)
    nw, nh = int(w * ratio + 0.5), int(h * ratio + 0.5)
    image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    image = cv2.copyMakeBorder(image, 0, size - nh, 0, size - nw, cv2.BORDER_CONSTANT, value=(pad_value,) * 3)
    return image, ImageMeta(ori_shape=(h, w), img_shape=image.shape[:2], scale_factor=(nw / w, nh / h),
                            batch_input_shape=image.shape[:2])


def resize_edge(image: np.ndarray, size: int, interpolation: str = "bilinear", backend: str = "cv2") -> np.ndarray:
    """mmcls ``ResizeEdge(scale=size, edge='short')``: the short side becomes ``size``, the other is truncated.

    ``backend="pillow"`` resizes like ``mmcv.imresize(..., backend='pillow')`` (Pillow's filter, which antialiases
    when shrinking); ``"cv2"`` like ``cv2.resize`` (no antialiasing).
    """
    if size < 1:  # the long side only grows with the short one: the size is all there is to check
        raise ImageError(f"the short side must be resized to at least 1 pixel, not {safe_repr(size)}")
    if interpolation not in INTERPOLATIONS or backend not in RESIZE_BACKENDS:
        raise ImageError(f"resize_edge takes interpolation {'/'.join(INTERPOLATIONS)} and backend "
                         f"{'/'.join(RESIZE_BACKENDS)}, not {safe_repr(interpolation)} and {safe_repr(backend)}")
    h, w = image.shape[:2]
    if w < h:
        width, height = size, int(size * h / w)
    else:
        height, width = size, int(size * w / h)
    if backend == "pillow":
        from PIL import Image

        filters = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
        return np.asarray(Image.fromarray(image).resize((width, height), filters[interpolation]))
    flags = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}
    return cv2.resize(image, (width, height), interpolation=flags[interpolation])


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """mmcls ``CenterCrop(crop_size=size)``: offsets rounded with Python's ``round`` (half to even), as upstream."""
    h, w = image.shape[:2]
    top, left = max(0, int(round((h - size) / 2.0))), max(0, int(round((w - size) / 2.0)))
    return image[top:top + size, left:left + size]


def normalize(pixels: "torch.Tensor", config: Normalize) -> "torch.Tensor":
    """A uint8 ``(3, H, W)`` or ``(N, 3, H, W)`` BGR tensor -> float32 on its device, like the OpenMMLab data
    preprocessors (flip the channels, then normalize)."""
    import torch

    mean = torch.tensor(config.mean, dtype=torch.float32, device=pixels.device).view(-1, 1, 1)
    std = torch.tensor(config.std, dtype=torch.float32, device=pixels.device).view(-1, 1, 1)
    if config.bgr_to_rgb:
        pixels = pixels.flip(-3)
    return (pixels.float() - mean) / std


def _as_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    if isinstance(images, (list, tuple)):
        if not images:
            raise ImageError("no images given")
        return list(images)
    return [images]


def _to_tensor(array: np.ndarray) -> "torch.Tensor":
    import torch

    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)


class DetectionTransform:
    """A detector's test pipeline: ``transform(images) -> (batch, metas)``.

    ``batch`` is float32 ``(N, 3, H, W)``, normalized and zero-padded to the largest image; ``metas`` holds one
    :class:`ImageMeta` per image. The two halves are public so that loaders can run :meth:`resize_image` on threads
    ahead of the model and :meth:`collate` what they made (``razorzoo.evaluation``).
    """

    def __init__(self, resize: Letterbox | ResizePad, norm: Normalize) -> None:
        self.resize = resize
        self.norm = norm
        self._pipeline = letterbox if isinstance(resize, Letterbox) else resize_pad

    def __repr__(self) -> str:
        return f"DetectionTransform({self.resize}, {self.norm})"

    def __call__(self, images: ImageInput | Sequence[ImageInput]) -> tuple["torch.Tensor", list[ImageMeta]]:
        resized = [self.resize_image(image) for image in _as_list(images)]
        return self.collate([canvas for canvas, _ in resized], [meta for _, meta in resized])

    def resize_image(self, image: ImageInput) -> tuple[np.ndarray, ImageMeta]:
        """One image -> its resized and padded uint8 BGR canvas and :class:`ImageMeta` (no normalization yet)."""
        return self._pipeline(load_image(image), self.resize.size, self.resize.pad_value)

    def collate(self, canvases: Sequence[np.ndarray], metas: Sequence[ImageMeta]
                ) -> tuple["torch.Tensor", list[ImageMeta]]:
        """Canvases -> the normalized batch, zero-padded to the largest after normalization (mmengine's
        ``stack_batch``), and their metas with its ``batch_input_shape``."""
        import torch

        height = max(canvas.shape[0] for canvas in canvases)
        width = max(canvas.shape[1] for canvas in canvases)
        batch = torch.zeros(len(canvases), 3, height, width, dtype=torch.float32)
        for i, canvas in enumerate(canvases):
            batch[i, :, : canvas.shape[0], : canvas.shape[1]] = normalize(_to_tensor(canvas), self.norm)
        return batch, [replace(meta, batch_input_shape=(height, width)) for meta in metas]


class ClassifierTransform:
    """A classifier's test pipeline: ``transform(images) -> (N, 3, crop, crop)`` float32, normalized."""

    def __init__(self, config: ClassifierPreprocess) -> None:
        self.config = config
        self.norm = Normalize(config.mean, config.std, config.bgr_to_rgb)

    def __repr__(self) -> str:
        return f"ClassifierTransform({self.config})"

    def __call__(self, images: ImageInput | Sequence[ImageInput]) -> "torch.Tensor":
        import torch

        cfg = self.config
        crops = []
        for image in _as_list(images):
            resized = resize_edge(load_image(image), cfg.resize, cfg.interpolation, cfg.backend)
            crops.append(normalize(_to_tensor(center_crop(resized, cfg.crop)), self.norm))
        return torch.stack(crops)
