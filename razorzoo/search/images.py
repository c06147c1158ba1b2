"""Image folders for calibration and validation, prepared as MMCls' ImageNet test pipeline does.

``ResizeEdge(short side = size / 0.875, bicubic) -> CenterCrop(size)`` on RGB, then the ImageNet mean/std of the
upstream ``data_preprocessor`` (``to_rgb=True``). A validation folder is an ImageFolder whose class folders are
named by the ImageNet class index they hold (``281`` or ``281_tabby``): the models keep their 1000-class heads, so
the folder has to say which logit is right.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import torch

from razorzoo.bounded import safe_repr
from razorzoo.errors import ImageError

__all__ = ["IMAGE_SUFFIXES", "list_images", "image_folder", "load_batch", "preprocess_image"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MEAN = (123.675, 116.28, 103.53)  # mmcls ImageNet data_preprocessor, RGB
STD = (58.395, 57.12, 57.375)
CROP_RATIO = 0.875  # 224 / 256
_CLASS_DIR = re.compile(r"^(\d{1,3})(?:[_\-. ].*)?$")


def list_images(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The image files of a folder (searched recursively, sorted) or of a list of paths.

    Raises:
        ImageError: the folder does not exist or holds no image.
    """
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        if not root.is_dir():
            raise ImageError(f"image folder {safe_repr(str(root))} does not exist")
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        where = f"image folder {safe_repr(str(root))}"
    else:
        files = [Path(p) for p in source]
        where = "the image list"
    if not files:
        raise ImageError(f"{where} holds no images ({', '.join(IMAGE_SUFFIXES)}); put a few hundred of your own "
                         "photos there")
    return files


def image_folder(root: str | os.PathLike) -> tuple[list[Path], list[int]]:
    """An ImageFolder for validation: (image paths, ImageNet class index of each), class folders in name order.

    Raises:
        ImageError: no class folders, a folder name without a class index, or no images at all.
    """
    root = Path(root)
    if not root.is_dir():
        raise ImageError(f"validation folder {safe_repr(str(root))} does not exist")
    paths: list[Path] = []
    labels: list[int] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        match = _CLASS_DIR.match(folder.name)
        if match is None or int(match.group(1)) > 999:
            raise ImageError(f"validation folder {safe_repr(str(root))}: class folder {safe_repr(folder.name)} must "
                             "be named by its ImageNet class index 0-999 (e.g. '281' or '281_tabby')")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        paths += files
        labels += [int(match.group(1))] * len(files)
    if not paths:
        raise ImageError(f"validation folder {safe_repr(str(root))} holds no images in class folders; expected "
                         "<index>/<image> files, e.g. 281/cat.jpg")
    return paths, labels


def preprocess_image(path: Path, size: int) -> torch.Tensor:
    """One image as a normalised ``3 x size x size`` float tensor (short side to ``size / 0.875``, centre crop)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise ImageError(f"cannot decode {safe_repr(str(path))} as an image ({type(exc).__name__})") from None
    short = round(size / CROP_RATIO)
    width, height = rgb.size
    scale = short / min(width, height)
    rgb = rgb.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BICUBIC)
    left, top = (rgb.size[0] - size) // 2, (rgb.size[1] - size) // 2
    rgb = rgb.crop((left, top, left + size, top + size))
    pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).reshape(size, size, 3)
    mean, std = torch.tensor(MEAN), torch.tensor(STD)
    return ((pixels.float() - mean) / std).permute(2, 0, 1).contiguous()


def load_batch(paths: Sequence[Path], size: int) -> torch.Tensor:
    """``N x 3 x size x size`` tensor of the preprocessed images."""
    return torch.stack([preprocess_image(path, size) for path in paths])
