"""A COCO-format training set, parsed as mmdet's ``CocoDataset`` (the recipes' ``YOLOv5CocoDataset``) parses it.

``CocoTrainingSet(ann_file, images_dir)`` reads ``instances_*.json`` through :mod:`razorzoo.detection.coco_file`
(bounded work) and checks every field it uses: integer ids without duplicates, annotations that point at existing
images and categories, 4-number boxes, finite numbers, image files named by plain relative paths that stay inside
``images_dir`` once symlinks are resolved (no ``../``, no absolute paths) and that exist. Any problem is one
:class:`~razorzoo.errors.DatasetError` line naming the file, the entry and the field, before anything is trained.
Images are decoded lazily, one :meth:`CocoTrainingSet.load` at a time, by
:func:`razorzoo.detection.transforms.load_image` (its header checks and pixel cap); a file that cannot be decoded, or
whose size is not the one the annotation file gives, fails with the image's id and path.

Upstream's rules, reproduced (docs/upstream.md §10.1):

* **Classes and labels.** The classes are the names of ``categories`` (all of them, or those named in ``classes``),
  and label ``i`` is the ``i``-th of them **in the order of the file's ``categories`` list** (what
  ``COCO.get_cat_ids(cat_names=classes)`` returns), whatever the order of ``classes``. On COCO itself that is the
  80 classes in id order, the heads' label order.
* **Instances** (``CocoDataset.parse_data_info``): an annotation with a truthy ``ignore`` is skipped, as are boxes
  that do not overlap the image, boxes with ``w < 1`` or ``h < 1`` or ``area <= 0``, and boxes of categories not
  selected by ``classes``; ``[x, y, w, h]`` becomes ``[x, y, x + w, y + h]`` (not clipped). ``iscrowd`` boxes are
  ignored instances: MMYOLO's ``LoadAnnotations`` drops them, so they are kept apart (``ImageRecord.crowd_boxes``)
  and never become targets.
* **Filtering** (``CocoDataset.filter_data``): ``filter_empty_gt`` drops images that have no annotation of a
  selected category in the file (even one skipped above, e.g. a crowd, ignored or sub-pixel box, keeps its image); then
  images with ``min(width, height) < min_size`` are dropped. Images keep the file's order.

Unlike upstream, which ignores them silently, annotations of unknown images or categories, duplicate ids, duplicate
category names and images whose size differs from the annotation file are errors.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from razorzoo.bounded import safe_repr
from razorzoo.detection.coco_file import describe_path, read_coco_file
from razorzoo.detection.transforms import MAX_IMAGE_PIXELS, load_image
from razorzoo.errors import DatasetError, ImageError
from razorzoo.files import UnsafePathError, is_file, safe_join
from razorzoo.wording import first_few

__all__ = ["Sample", "ImageRecord", "CocoTrainingSet", "MAX_COORDINATE"]

# the keys CocoDataset reads from each entry; iscrowd and ignore are optional there (ann.get(...))
_TRAINING_KEYS = {
    "images": ("id", "file_name", "width", "height"),
    "categories": ("id", "name"),
    "annotations": ("id", "image_id", "category_id", "bbox", "area"),
}
MAX_COORDINATE = 1e7  # box numbers beyond this many pixels are refused (float32 keeps them; nothing real is larger)
_MAX_ID = 2**63 - 1
_MAX_NAME_CHARS = 200


@dataclass(frozen=True)
class Sample:
    """One training image with its targets, as the pipelines pass it on.

    ``img`` is ``H x W x 3`` uint8 BGR; ``boxes`` ``N x 4`` float32 ``(x1, y1, x2, y2)`` in ``img`` pixels;
    ``labels`` ``N`` int64. ``img_id``/``path``/``ori_shape`` (``(h, w)`` as decoded) describe the image the sample
    started from; ``source_ids`` are the ids of every image whose pixels it holds (mosaic and mix-up add theirs).
    The arrays are made read-only: transforms build new ones, so a cached sample can be shared safely.
    """

    img: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    img_id: int
    path: Path
    ori_shape: tuple[int, int]
    source_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for array in (self.img, self.boxes, self.labels):
            array.flags.writeable = False


@dataclass(frozen=True)
class ImageRecord:
    """One image of the annotation file and its parsed instances (``boxes``/``labels``: the targets; ``crowd_boxes``:
    the ``iscrowd`` instances, ignored)."""

    img_id: int
    file_name: str
    path: Path
    width: int
    height: int
    boxes: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    crowd_boxes: np.ndarray = field(repr=False)


class CocoTrainingSet:
    """The images of a COCO-format annotation file and their targets (see the module docstring for the rules).

    Args:
        ann_file: the annotation file. images_dir: the folder its ``file_name`` entries are relative to.
        classes: category names to train on (default: every category of the file); others are left out.
        filter_empty_gt, min_size: upstream's ``filter_cfg`` (each recipe's in ``razorzoo.arch.train_pipelines``).
    """

    def __init__(self, ann_file: str | os.PathLike, images_dir: str | os.PathLike, *,
                 classes: Sequence[str] | None = None, filter_empty_gt: bool = False, min_size: int = 0) -> None:
        self.ann_file = Path(ann_file)
        self.images_dir = Path(images_dir)
        self._where = describe_path(self.ann_file)
        data = read_coco_file(self.ann_file, _TRAINING_KEYS)
        if not self.images_dir.is_dir():
            raise DatasetError(f"image folder not found: {describe_path(self.images_dir)} (pass the folder the "
                               f"file names of {self._where} are relative to)")
        names = self._categories(data["categories"])
        self.classes, self.category_ids = self._select(names, classes)
        images = self._images(data["images"])
        instances, annotated = self._annotations(data["annotations"], images, names)
        self.records = self._filter(images, instances, annotated, filter_empty_gt, min_size)
        self._check_files()

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return (f"CocoTrainingSet({describe_path(self.ann_file)}, {len(self)} images, {self.num_boxes} boxes, "
                f"{len(self.classes)} classes)")

    @property
    def num_boxes(self) -> int:
        """Instances that become targets, over all images."""
        return sum(len(record.labels) for record in self.records)

    def load(self, index: int) -> Sample:
        """Image ``index`` decoded (``LoadImageFromFile``) with its targets (MMYOLO ``LoadAnnotations``)."""
        record = self.records[index]
        try:
            img = load_image(record.path)
        except ImageError as exc:
            raise DatasetError(f"image id {record.img_id} of {self._where}: {exc}") from None
        if img.shape[:2] != (record.height, record.width):
            raise DatasetError(f"image id {record.img_id} of {self._where}: {describe_path(record.path)} is "
                               f"{img.shape[1]}x{img.shape[0]} pixels but the annotation file says "
                               f"{record.width}x{record.height}; fix the file's width/height (or the image)")
        return Sample(img=img, boxes=record.boxes, labels=record.labels, img_id=record.img_id, path=record.path,
                      ori_shape=(record.height, record.width), source_ids=(record.img_id,))

    # ---- parsing -------------------------------------------------------------------------------------------------

    def _fail(self, problem: str) -> DatasetError:
        return DatasetError(f"{self._where}: {problem}")

    def _integer(self, value: Any, what: str, minimum: int = -_MAX_ID, maximum: int = _MAX_ID) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(f"{what} is {safe_repr(value)}, not an integer")
        if not minimum <= value <= maximum:
            raise self._fail(f"{what} is {safe_repr(value)}, outside {minimum}..{maximum}")
        return value

    def _number(self, value: Any, what: str, limit: float = MAX_COORDINATE) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._fail(f"{what} is {safe_repr(value)}, not a number")
        if not math.isfinite(value) or abs(value) > limit:
            raise self._fail(f"{what} is {safe_repr(value)}, not a finite number within +-{limit:g}")
        return value

    def _flag(self, entry: dict, key: str, what: str) -> bool:
        value = entry.get(key, False)
        if value not in (0, 1) or not isinstance(value, (bool, int)):
            raise self._fail(f"{what}.{key} is {safe_repr(value)}; use 0 or 1 (or true/false)")
        return bool(value)

    def _categories(self, entries: list) -> dict[int, str]:
        """Category id -> name, in file order."""
        if not entries:
            raise self._fail("'categories' is empty; list the classes as {\"id\": 1, \"name\": \"...\"} entries")
        names: dict[int, str] = {}
        seen: dict[str, int] = {}
        for i, entry in enumerate(entries):
            cat_id = self._integer(entry["id"], f"categories[{i}].id")
            name = entry["name"]
            if not isinstance(name, str) or not name.strip() or len(name) > _MAX_NAME_CHARS \
                    or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in name):
                raise self._fail(f"categories[{i}].name {safe_repr(name)} is not a usable class name (a non-empty "
                                 f"string of printable characters, at most {_MAX_NAME_CHARS})")
            if cat_id in names:
                raise self._fail(f"categories[{i}] repeats the id {cat_id}; give every category its own id")
            if name in seen:
                raise self._fail(f"categories[{i}] repeats the name {safe_repr(name)} of categories[{seen[name]}]; "
                                 "give every category its own name")
            names[cat_id] = name
            seen[name] = i
        return names

    def _select(self, names: dict[int, str], classes: Sequence[str] | None
                ) -> tuple[tuple[str, ...], tuple[int, ...]]:
        if classes is None:
            return tuple(names.values()), tuple(names)
        if isinstance(classes, str) or not classes or not all(isinstance(name, str) for name in classes):
            raise DatasetError("classes must be a non-empty list of category names")
        unknown = [name for name in classes if name not in names.values()]
        if unknown:
            raise self._fail(f"has no category named {', '.join(safe_repr(name) for name in unknown[:5])}"
                             f"{' ...' if len(unknown) > 5 else ''} (its categories: "
                             f"{', '.join(safe_repr(name, 30) for name in list(names.values())[:10])}"
                             f"{' ...' if len(names) > 10 else ''})")
        chosen = set(classes)
        selected = [(cat_id, name) for cat_id, name in names.items() if name in chosen]  # the file's order
        return tuple(name for _, name in selected), tuple(cat_id for cat_id, _ in selected)

    def _images(self, entries: list) -> dict[int, ImageRecord]:
        """Image id -> record without instances yet, in file order."""
        if not entries:
            raise self._fail("'images' is empty: there is nothing to train on")
        images: dict[int, ImageRecord] = {}
        empty = np.zeros((0, 4), np.float32)
        for i, entry in enumerate(entries):
            img_id = self._integer(entry["id"], f"images[{i}].id")
            if img_id in images:
                raise self._fail(f"images[{i}] repeats the image id {img_id}; give every image its own id")
            width = self._integer(entry["width"], f"images[{i}].width", 1, MAX_IMAGE_PIXELS)
            height = self._integer(entry["height"], f"images[{i}].height", 1, MAX_IMAGE_PIXELS)
            if width * height > MAX_IMAGE_PIXELS:
                raise self._fail(f"images[{i}] is {width}x{height} pixels, more than the {MAX_IMAGE_PIXELS} "
                                 "razorzoo decodes; downscale it")
            file_name = entry["file_name"]
            try:
                path = safe_join(self.images_dir, file_name, what=f"images[{i}].file_name")
            except UnsafePathError as exc:
                raise self._fail(f"{exc}; file names must be paths relative to the image folder, inside it") \
                    from None
            except OSError as exc:
                raise self._fail(f"images[{i}].file_name {safe_repr(file_name)} cannot be used as a path "
                                 f"({exc.strerror or type(exc).__name__})") from None
            images[img_id] = ImageRecord(img_id, file_name, path, width, height, empty, np.zeros(0, np.int64), empty)
        return images

    def _annotations(self, entries: list, images: dict[int, ImageRecord], names: dict[int, str]
                     ) -> tuple[dict[int, tuple[list, list, list]], set[int]]:
        """Per image id, the ``(boxes, labels, crowd boxes)`` of ``parse_data_info``; and the ids of images with an
        annotation of a selected category (``filter_data``'s ``ids_in_cat``)."""
        label_of = {cat_id: label for label, cat_id in enumerate(self.category_ids)}
        instances: dict[int, tuple[list, list, list]] = {}
        annotated: set[int] = set()
        seen: set[int] = set()
        for i, ann in enumerate(entries):
            what = f"annotations[{i}]"
            ann_id = self._integer(ann["id"], f"{what}.id")
            if ann_id in seen:
                raise self._fail(f"{what} repeats the annotation id {ann_id}; give every annotation its own id")
            seen.add(ann_id)
            img_id = self._integer(ann["image_id"], f"{what}.image_id")
            if img_id not in images:
                raise self._fail(f"{what}.image_id {img_id} is not the id of any image in 'images'")
            cat_id = self._integer(ann["category_id"], f"{what}.category_id")
            if cat_id not in names:
                raise self._fail(f"{what}.category_id {cat_id} is not the id of any category in 'categories'")
            bbox = ann["bbox"]
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise self._fail(f"{what}.bbox is {safe_repr(bbox)}, not a list of 4 numbers [x, y, width, height]")
            x1, y1, w, h = (self._number(v, f"{what}.bbox[{k}]") for k, v in enumerate(bbox))
            area = self._number(ann["area"], f"{what}.area", MAX_COORDINATE**2)
            crowd = self._flag(ann, "iscrowd", what)
            if cat_id in label_of:  # pycocotools' cat_img_map: every annotation, skipped ones too
                annotated.add(img_id)
            if self._flag(ann, "ignore", what):
                continue
            image = images[img_id]
            inter_w = max(0, min(x1 + w, image.width) - max(x1, 0))
            inter_h = max(0, min(y1 + h, image.height) - max(y1, 0))
            if inter_w * inter_h == 0 or area <= 0 or w < 1 or h < 1 or cat_id not in label_of:
                continue
            boxes, labels, crowds = instances.setdefault(img_id, ([], [], []))
            if crowd:
                crowds.append([x1, y1, x1 + w, y1 + h])
            else:
                boxes.append([x1, y1, x1 + w, y1 + h])
                labels.append(label_of[cat_id])
        return instances, annotated

    def _filter(self, images: dict[int, ImageRecord], instances: dict[int, tuple[list, list, list]],
                annotated: set[int], filter_empty_gt: bool, min_size: int) -> tuple[ImageRecord, ...]:
        no_boxes = [img_id for img_id in images if filter_empty_gt and img_id not in annotated]
        too_small = [img_id for img_id, image in images.items() if min(image.width, image.height) < min_size]
        dropped = set(no_boxes) | set(too_small)
        records = []
        for img_id, image in images.items():
            if img_id in dropped:
                continue
            boxes, labels, crowds = instances.get(img_id, ([], [], []))
            records.append(ImageRecord(
                img_id, image.file_name, image.path, image.width, image.height,
                np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64),
                np.asarray(crowds, np.float32).reshape(-1, 4)))
            for array in (records[-1].boxes, records[-1].labels, records[-1].crowd_boxes):
                array.flags.writeable = False
        if not records:
            raise self._fail(f"no image is left to train on: {len(no_boxes)} of {len(images)} have no annotation "
                             f"(filter_empty_gt) and {len(too_small)} are smaller than min_size={min_size} pixels")
        if not any(len(record.labels) for record in records):
            raise self._fail(f"its {len(records)} training images hold no box to train on (every annotation is a "
                             "crowd box, smaller than 1 pixel, outside its image or of a category left out); check "
                             "'bbox' ([x, y, width, height] in pixels) and the categories")
        return tuple(records)

    def _check_files(self) -> None:
        missing = [record for record in self.records if not is_file(record.path)]
        if missing:
            names = first_few(missing, lambda record: f"{safe_repr(record.file_name)} (id {record.img_id})")
            raise DatasetError(f"{len(missing)} of the {len(self.records)} training images of {self._where} are "
                               f"missing from {describe_path(self.images_dir)}: {names}")
