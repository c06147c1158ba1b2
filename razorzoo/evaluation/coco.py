"""COCO box AP of a detector under MMYOLO's test protocol, scored by pycocotools.

The protocol (docs/upstream.md §6.1, §7.23): the recipe's test pipeline on each image, with ``BatchShapePolicy``
canvases for the letterbox (YOLOv5/YOLOv6) recipes and none for RTMDet; the recipe's ``test_cfg`` (score threshold
0.001, ...); boxes rescaled to the original image, written as ``[x, y, w, h]`` with the annotation file's category
ids; scored by ``pycocotools.COCOeval`` restricted to the evaluated images and the model's categories.

``pycocotools`` is the evaluator mmdet's ``CocoMetric`` itself runs, so the numbers are comparable with upstream logs
without a second implementation to trust. Its ``summarize()`` computes AP50/AP75/AP_small/medium/large at
``maxDets[2]``; the standard ``maxDets = [1, 10, 100]`` gives all six at 100 detections per image. MMYOLO's configs
set ``proposal_nums=(100, 1, 10)``, which ``COCOeval.evaluate()`` sorts into ``[1, 10, 100]``: their logs hold the
standard numbers too (``mmyolo_maxdets=True`` makes MMYOLO's exact call, with the same result).
"""
from __future__ import annotations

import collections
import contextlib
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from razorzoo.bounded import safe_repr
from razorzoo.errors import DatasetError, RazorzooError
from razorzoo.evaluation.coco_format import CocoDocument, read_coco_document
from razorzoo.files import check_output_file, confined, is_file, write_json_atomic
from razorzoo.wording import count, first_few

__all__ = ["STAT_NAMES", "STANDARD_MAXDETS", "MMYOLO_MAXDETS", "CocoImage", "CocoResult", "read_coco",
           "category_ids", "coco_stats", "evaluate_coco", "require_pycocotools"]

STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")  # COCOeval.stats[0:6]
STANDARD_MAXDETS = (1, 10, 100)
MMYOLO_MAXDETS = (100, 1, 10)  # CocoMetric(proposal_nums=(100, 1, 10)) of the detector configs; COCOeval sorts it


@dataclass(frozen=True)
class CocoImage:
    """One ``images`` entry of the annotation file and where its file is."""

    id: int
    file_name: str
    width: int
    height: int
    path: Path


@dataclass(frozen=True)
class CocoResult:
    """What :func:`evaluate_coco` measured. ``stats`` holds :data:`STAT_NAMES` as fractions (0.38, not 38.0)."""

    stats: dict[str, float | None]  # None: no ground truth to score that metric against (pycocotools' -1)
    num_images: int
    num_detections: int
    seconds_per_image: float
    maxdets: tuple[int, int, int]
    skipped: tuple[str, ...] = field(default=(), repr=False)  # file names of missing images left out
    # detections of classes the annotation file has no category for: not scored, counted by class name
    other_classes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self.stats, "images": self.num_images, "detections": self.num_detections,
                "detections_of_other_classes": sum(self.other_classes.values()),
                "seconds_per_image": self.seconds_per_image, "maxdets": list(self.maxdets),
                "skipped_images": len(self.skipped)}


def read_coco(ann_file: str | os.PathLike, images_dir: str | os.PathLike, *, limit: int | None = None,
              skip_missing: bool = False, allow_outside: bool = False
              ) -> tuple[CocoDocument, list[CocoImage], tuple[str, ...]]:
    """The checked annotation file, the images to evaluate (file order, first ``limit``) and the missing ones skipped.

    Images missing from ``images_dir`` are an error that lists them, unless ``skip_missing``. A ``file_name`` that
    leads outside ``images_dir`` (``../``, absolute, a symlink out) is refused unless ``allow_outside``.
    """
    images_dir = Path(images_dir)
    document = read_coco_document(ann_file)
    if not images_dir.is_dir():
        raise DatasetError(f"image folder not found: {str(images_dir)!r} (pass the folder holding val2017/*.jpg)")
    entries = document.images[:limit] if limit is not None else document.images
    images, missing = [], []
    for entry in entries:
        path = confined(images_dir, entry.file_name, allow_outside=allow_outside,
                        what=f"{document.source}: the file_name of image {entry.id}", error=DatasetError)
        image = CocoImage(entry.id, entry.file_name, entry.width, entry.height, path)
        (images if is_file(image.path) else missing).append(image)
    if missing and not skip_missing:
        names = first_few(missing, lambda image: safe_repr(image.file_name))
        raise DatasetError(f"{len(missing)} of {count(len(entries), 'image')} {'is' if len(missing) == 1 else 'are'} "
                           f"missing from {str(images_dir)!r}: {names}; pass --skip-missing (skip_missing=True) to "
                           "evaluate the others")
    if not images:
        raise DatasetError(f"none of the {count(len(entries), 'image')} is in {str(images_dir)!r}")
    return document, images, tuple(m.file_name for m in missing)


def category_ids(class_names: Sequence[str], document: CocoDocument) -> list[int]:
    """The annotation file's category id of each class name (``-1`` where the file has no such category)."""
    by_name = {c.name: c.id for c in document.categories}
    ids = [by_name.get(name, -1) for name in class_names]
    if all(i < 0 for i in ids):
        raise DatasetError("no category of the annotation file has the name of a class of this model "
                           f"(file: {safe_repr([c.name for c in document.categories])})")
    return ids


def require_pycocotools() -> tuple[type, type]:
    """pycocotools' ``COCO`` and ``COCOeval``, or a one-line error naming the ``[coco]`` extra."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise RazorzooError("COCO evaluation needs pycocotools: pip install 'razorzoo[coco]'") from None
    return COCO, COCOeval


def coco_stats(data: dict[str, Any], results: list[dict[str, Any]], *, image_ids: Sequence[int] | None = None,
               category_ids: Sequence[int] | None = None, maxdets: Sequence[int] = STANDARD_MAXDETS
               ) -> dict[str, float | None]:
    """``COCOeval(..., "bbox")`` of ``results`` (COCO results-file entries) against ``data``: :data:`STAT_NAMES`.

    ``image_ids``/``category_ids`` restrict the evaluation (default: all in ``data``); ``maxdets`` is
    ``COCOeval.params.maxDets`` (:data:`MMYOLO_MAXDETS` for MMYOLO's call; ``evaluate()`` sorts it). A metric
    without ground truth to score against (no medium-sized object among the images, say) is ``None``, not
    pycocotools' ``-1`` placeholder, which reads as a score.
    """
    COCO, COCOeval = require_pycocotools()
    if not results:  # loadRes refuses an empty list: one false positive of no area stands for "nothing found" (no
        # true positive, so every AP with ground truth is 0, and one without stays unscored)
        ids = list(image_ids) if image_ids is not None else [entry["id"] for entry in data["images"]]
        evaluated = [i for i in category_ids or [c["id"] for c in data["categories"]] if i >= 0]
        if not ids or not evaluated:
            return dict.fromkeys(STAT_NAMES)
        results = [{"image_id": ids[0], "category_id": evaluated[0], "bbox": [0.0, 0.0, 0.0, 0.0], "score": 0.0}]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = COCO()
        gt.dataset = data
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = list(image_ids)
        if category_ids is not None:
            evaluator.params.catIds = [i for i in category_ids if i >= 0]
        evaluator.params.maxDets = list(maxdets)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) if value >= 0 else None for name, value in zip(STAT_NAMES, evaluator.stats[:6])}


def evaluate_coco(model: Any, ann_file: str | os.PathLike, images_dir: str | os.PathLike, *, batch: int = 1,
                  workers: int = 0, limit: int | None = None, skip_missing: bool = False,
                  save_json: str | os.PathLike | None = None, mmyolo_maxdets: bool = False,
                  progress: bool | None = None, allow_outside: bool = False) -> CocoResult:
    """Box AP of ``model`` (a detector from ``load_detector``, any backend) on a COCO-format dataset.

    Args:
        ann_file: ``instances_val2017.json`` or any COCO detection annotation file.
        images_dir: folder holding the ``file_name`` of each image.
        batch: images per forward pass; only canvases of the same size are batched, so results do not depend on it.
        workers: threads decoding and resizing images ahead of the model.
        limit: evaluate the first ``limit`` images of the file. skip_missing: leave out images not on disk.
        save_json: write the COCO results list there (also, valid, with what was done if interrupted); checked
            before the first image runs, and never one of the inputs.
        mmyolo_maxdets: pass ``maxDets = (100, 1, 10)`` as MMYOLO does; pycocotools sorts it, so the numbers are
            the standard ``(1, 10, 100)`` ones (docs/evaluate.md).
        allow_outside: read images whose ``file_name`` leads outside ``images_dir`` (refused by default).
    """
    from tqdm.auto import tqdm

    from razorzoo.arch.recipes import Letterbox
    from razorzoo.detection.transforms import load_image
    from razorzoo.detection.batch_shapes import batch_shape
    from razorzoo.evaluation.engine import (batches, check_batching, detect, detection_transform, prefetch, prepare,
                                            show_progress)

    check_batching(batch, workers, limit)
    require_pycocotools()  # before hours of inference, not after
    document, images, skipped = read_coco(ann_file, images_dir, limit=limit, skip_missing=skip_missing,
                                          allow_outside=allow_outside)
    if save_json is not None:
        check_output_file(save_json, what="save_json", inputs=(ann_file, *(image.path for image in images)))
    ids = category_ids(model.recipe.class_names, document)
    transform = detection_transform(model)
    resize = transform.resize
    # MMYOLO's batch shapes (letterbox recipes): each image on its own canvas, which an exported graph takes when its
    # height and width are free (razorzoo.deploy exports letterbox detectors so; a fixed-size graph cannot)
    if isinstance(resize, Letterbox) and getattr(model, "input_size", None) is not None \
            and getattr(model, "size_divisor", None) is None:
        raise RazorzooError("this export takes one input size only, so it cannot run MMYOLO's per-image batch shapes "
                            "(its AP would differ from eager val); export the model again with this razorzoo")
    shapes = {image.id: batch_shape(image.width, image.height, img_size=resize.size)
              for image in images} if isinstance(resize, Letterbox) else {}
    # images of one canvas size next to each other (first-seen order), so batches never mix sizes
    first_seen: dict[Any, int] = {}
    for i, image in enumerate(images):
        first_seen.setdefault(shapes.get(image.id), i)
    order = sorted(images, key=lambda image: first_seen[shapes.get(image.id)])

    def load(image: CocoImage):
        array = load_image(image.path)
        if array.shape[:2] != (image.height, image.width):
            raise DatasetError(f"{str(image.path)!r} is {array.shape[1]}x{array.shape[0]} pixels but the "
                               f"annotation file says {image.width}x{image.height}")
        return (image, *prepare(array, transform, shapes.get(image.id)))

    results: list[dict[str, Any]] = []
    other_classes: collections.Counter[str] = collections.Counter()
    start = time.perf_counter()
    try:
        with tqdm(total=len(order), unit="img", desc="val", disable=not show_progress(progress)) as bar:
            for group in batches(prefetch(load, order, workers), batch):
                found = detect(model, transform, [c for _, c, _ in group], [m for _, _, m in group])
                for (image, _, _), detections in zip(group, found):
                    for name, entry in zip(detections.names, detections.to_coco(image.id, ids)):
                        if entry["category_id"] >= 0:
                            results.append(entry)
                        else:
                            other_classes[name] += 1
                bar.update(len(group))
    finally:
        if save_json is not None:  # what was done so far, even on Ctrl-C
            write_json_atomic(save_json, results)
    elapsed = time.perf_counter() - start
    maxdets = MMYOLO_MAXDETS if mmyolo_maxdets else STANDARD_MAXDETS
    stats = coco_stats(document.to_pycocotools(), results, image_ids=[image.id for image in images], category_ids=ids,
                       maxdets=maxdets)
    return CocoResult(stats, len(images), len(results), elapsed / len(images), maxdets, skipped,
                      dict(other_classes.most_common()))
