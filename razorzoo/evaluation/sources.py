"""Where images come from: folders, globs, list files and videos, streamed through a detector in batches.

:func:`predict_stream` is the streaming form of ``Detector.predict``: it decodes and resizes ahead of the model on a
thread pool, batches equal-size canvases, and yields ``(item, detections)`` as each batch finishes, so memory stays
flat on a folder of 100,000 images or an hour of video and an interruption keeps everything already yielded.
"""
from __future__ import annotations

import contextlib
import glob
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from razorzoo.bounded import read_text, safe_repr
from razorzoo.detection.transforms import IMAGE_SUFFIXES
from razorzoo.errors import DatasetError
from razorzoo.files import confined, is_file
from razorzoo.wording import count, first_few

if TYPE_CHECKING:
    from razorzoo.detection.transforms import ImageMeta

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "Frame", "list_images", "check_missing", "read_video", "read_list_file",
           "iter_source", "predict_stream", "classify_stream"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
MAX_LIST_BYTES = 256 << 20  # ImageNet's train list (1.28 M lines) is 40 MB
MAX_LIST_LINE = 4096


class Frame(NamedTuple):
    """One decoded video frame (``image`` is ``H x W x 3`` uint8 BGR, as ``predict`` takes it)."""

    video: str
    index: int
    image: np.ndarray


def list_images(folder: str | os.PathLike, *, recursive: bool = False) -> list[Path]:
    """The image files (by suffix) of ``folder``, and of its subfolders with ``recursive``, sorted by path; may be
    empty (callers say what they expected there)."""
    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(path for path in found if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())


def check_missing(paths: Sequence[Path], where: Any, *, skip_missing: bool) -> set[Path]:
    """The ``paths`` that are files; a missing one is an error naming the first few, unless ``skip_missing``."""
    present = {path for path in paths if is_file(path)}
    missing = [path for path in paths if path not in present]
    if missing and not skip_missing:
        verb = "is" if len(missing) == 1 else "are"
        names = first_few(missing, lambda path: safe_repr(str(path)))
        raise DatasetError(f"{len(missing)} of {count(len(paths), 'image')} listed in {str(where)!r} {verb} missing: "
                           f"{names}; pass --skip-missing (skip_missing=True) to use the others")
    return present


def read_video(path: str | os.PathLike) -> Iterator[Frame]:
    """The frames of a video file, decoded by OpenCV; an unreadable file fails before the first frame.

    Frames larger than :data:`~razorzoo.detection.transforms.MAX_IMAGE_PIXELS` are refused, by the size the
    container declares before anything is decoded and again on every decoded frame. FFmpeg's own log lines are kept
    off stderr (the error is the one line the user sees).
    """
    import cv2

    path = str(path)
    if not os.path.isfile(path):
        raise DatasetError(f"video file not found: {path!r}")
    with _quiet_ffmpeg():
        capture = cv2.VideoCapture(path)
    if capture.isOpened():
        declared = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)) * int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        _check_frame_pixels(declared, path, capture)
    ok, frame = capture.read() if capture.isOpened() else (False, None)
    if not ok:
        capture.release()
        raise DatasetError(f"cannot read video {path!r}: OpenCV decodes no frame from it (corrupt file, or a codec "
                           "this OpenCV build lacks; convert it with ffmpeg -i IN -c:v libx264 OUT.mp4)")
    return _frames(capture, path, frame)


@contextlib.contextmanager
def _quiet_ffmpeg() -> Iterator[None]:
    """FFmpeg's log level for the captures opened in the block: quiet (OpenCV reads the variable when it opens one),
    unless the user set ``OPENCV_FFMPEG_LOGLEVEL`` themselves."""
    if "OPENCV_FFMPEG_LOGLEVEL" in os.environ:
        yield
        return
    os.environ["OPENCV_FFMPEG_LOGLEVEL"] = "-8"  # AV_LOG_QUIET
    try:
        yield
    finally:
        os.environ.pop("OPENCV_FFMPEG_LOGLEVEL", None)


def _check_frame_pixels(pixels: int, path: str, capture: Any) -> None:
    from razorzoo.detection.transforms import MAX_IMAGE_PIXELS

    if pixels > MAX_IMAGE_PIXELS:
        capture.release()
        raise DatasetError(f"video {path!r} has frames of {pixels} pixels, more than the {MAX_IMAGE_PIXELS} razorzoo "
                           "decodes (a decompression bomb? else downscale it)")


def _frames(capture: Any, path: str, first: np.ndarray) -> Iterator[Frame]:
    try:
        index, frame, ok = 0, first, True
        while ok:
            _check_frame_pixels(frame.shape[0] * frame.shape[1], path, capture)
            yield Frame(path, index, frame)
            index += 1
            ok, frame = capture.read()
    finally:
        capture.release()


def _folder(path: Path) -> list[str]:
    files = [str(p) for p in list_images(path)]
    if not files:
        raise DatasetError(f"no images in folder {str(path)!r} (looked for {', '.join(IMAGE_SUFFIXES)} files)")
    return files


def read_list_file(path: Path, *, what: str) -> list[tuple[int, str]]:
    """``(line number, line)`` for each non-blank, non-``#`` line of a list file, stripped: UTF-8, at most
    :data:`MAX_LIST_BYTES`, lines of at most :data:`MAX_LIST_LINE` characters (callers confine the paths)."""
    text = read_text(path, what=what, error=DatasetError, limit=MAX_LIST_BYTES)
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if len(line) > MAX_LIST_LINE:
            raise DatasetError(f"{what} line {number} has {len(line)} characters, more than the {MAX_LIST_LINE} "
                               "a path may have")
        lines.append((number, line))
    return lines


def _list_file(path: Path, skip_missing: bool, allow_outside: bool) -> list[str]:
    """Paths listed one per line; relative ones are relative to the list file's folder, which they may not leave."""
    what = f"the list file {safe_repr(str(path))}"
    paths = [Path(os.path.normpath(confined(path.parent, line, allow_outside=allow_outside,
                                            what=f"{what} line {number}:", error=DatasetError)))
             for number, line in read_list_file(path, what=what)]
    if not paths:
        raise DatasetError(f"{what} names no images")
    present = check_missing(paths, path, skip_missing=skip_missing)
    return [str(p) for p in paths if p in present]


def _glob(pattern: str) -> list[str]:
    """The image files ``pattern`` matches, sorted; ``**`` does not descend into symlinked folders (a link to a
    parent would make ``glob.glob`` walk an ever deeper tree)."""
    parts = Path(pattern).parts
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    base = Path(*parts[:first]) if first else Path()
    try:
        found = [str(p) for p in base.glob("/".join(parts[first:]))]
    except (OSError, ValueError):
        found = []
    return sorted(p for p in found if Path(p).suffix.lower() in IMAGE_SUFFIXES)


def iter_source(source: Any, *, skip_missing: bool = False, allow_outside: bool = False
                ) -> tuple[Iterable[Any], int | None]:
    """The items of ``source`` and how many there are (``None`` for a video).

    ``source`` is a folder (its image files, sorted, not recursive), a glob pattern (``"data/**/*.jpg"``), a ``.txt``
    file of paths, a video file (:class:`Frame` items), a single image, or a list/tuple of images (paths, PIL images
    or BGR arrays) used as is. The paths of a list file stay inside its folder unless ``allow_outside``. Problems (an empty folder, a glob matching nothing, an unreadable video, listed files
    that are missing) are :class:`~razorzoo.errors.DatasetError`\\ s raised here, before any model runs.
    """
    if isinstance(source, (list, tuple)):
        if not source:
            raise DatasetError("no images given")
        return source, len(source)
    if not isinstance(source, (str, os.PathLike)):
        return [source], 1
    path = Path(source)
    if path.is_dir():
        items = _folder(path)
    elif path.suffix.lower() in VIDEO_SUFFIXES:
        return read_video(path), None
    elif path.suffix.lower() == ".txt" and path.is_file():
        items = _list_file(path, skip_missing, allow_outside)
    elif glob.has_magic(str(source)) and not path.exists():
        items = _glob(str(source))
        if not items:
            raise DatasetError(f"the pattern {safe_repr(str(source))} matches no image files")
    else:
        items = [str(source)]
    return items, len(items)


def predict_stream(model: Any, source: Any, *, batch: int = 8, workers: int = 2, score_thr: float | None = None,
                   iou_thr: float | None = None, max_det: int | None = None, skip_missing: bool = False,
                   progress: bool | None = None, allow_outside: bool = False) -> Iterator[tuple[Any, Any]]:
    """``(item, detections)`` for every image of ``source`` (see :func:`iter_source`), in order, batch by batch.

    ``item`` is the image path for files, a :class:`Frame` for video frames, the object itself for in-memory
    images. Each detection set equals ``model.predict(image, ...)`` of that image (up to float summation order):
    the inference canvas and the recipe's ``test_cfg`` (``score_thr``... override it). ``workers`` threads decode
    and resize ahead of the model; ``model`` is any detector with ``recipe`` and ``detect`` (or a call and ``postprocess``).
    """
    from tqdm.auto import tqdm

    from razorzoo.evaluation.engine import (batches, check_batching, detect, detection_transform, prefetch, prepare,
                                            show_progress)

    check_batching(batch, workers)
    items, total = iter_source(source, skip_missing=skip_missing, allow_outside=allow_outside)
    transform = detection_transform(model)

    def load(item: Any) -> tuple[Any, np.ndarray, "ImageMeta"]:
        return (item, *prepare(item.image if isinstance(item, Frame) else item, transform))

    with tqdm(total=total, unit="img", desc="predict", disable=not show_progress(progress)) as bar:
        for group in batches(prefetch(load, items, workers), batch):
            found = detect(model, transform, [canvas for _, canvas, _ in group], [meta for _, _, meta in group],
                           score_thr=score_thr, iou_thr=iou_thr, max_det=max_det)
            bar.update(len(group))
            yield from zip((item for item, _, _ in group), found)


def classify_stream(model: Any, source: Any, *, topk: int = 5, batch: int = 8, workers: int = 2,
                    skip_missing: bool = False, progress: bool | None = None, allow_outside: bool = False
                    ) -> Iterator[tuple[Any, Any]]:
    """``(item, classification)`` for every image of ``source`` (see :func:`iter_source`), in order, batch by batch:
    the streaming form of a classifier's ``predict(image, topk)``, whose result each one equals. ``workers`` threads
    decode and run the classifier's test pipeline ahead of the model; ``model`` is any classifier with
    ``preprocess`` and ``classify`` (eager or exported)."""
    import torch
    from tqdm.auto import tqdm

    from razorzoo.evaluation.engine import batches, check_batching, prefetch, show_progress

    check_batching(batch, workers)
    items, total = iter_source(source, skip_missing=skip_missing, allow_outside=allow_outside)

    def load(item: Any) -> tuple[Any, Any, None]:
        return item, model.preprocess([item.image if isinstance(item, Frame) else item]), None

    with tqdm(total=total, unit="img", desc="predict", disable=not show_progress(progress)) as bar:
        for group in batches(prefetch(load, items, workers), batch):
            found = model.classify(torch.cat([pixels for _, pixels, _ in group]), topk)
            bar.update(len(group))
            yield from zip((item for item, _, _ in group), found)
