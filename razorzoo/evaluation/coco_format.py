"""COCO detection annotation files (``instances_*.json``) as typed, bounded documents.

The one reader of COCO annotations: evaluation reads them here, and a training reader should too. Every field razorzoo
or pycocotools uses is checked for type and range (ids are non-negative integers that fit int64, sizes positive and at
most :data:`MAX_SIDE`, boxes four finite numbers with non-negative width and height, ``iscrowd`` 0 or 1, names
printable), image ids are unique, annotations refer to listed images and categories, and the file and its lists are
capped (the file itself is read by :mod:`razorzoo.detection.coco_file`, shared with the training set). What
pycocotools gets (:meth:`CocoDocument.to_pycocotools`) is rebuilt from the checked values only:
nothing unchecked from the file (segmentations, extra keys) reaches it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from razorzoo.detection.coco_file import describe_path, read_coco_file
from razorzoo.documents import Fields
from razorzoo.errors import DatasetError

__all__ = ["MAX_ENTRIES", "MAX_SIDE", "CocoImageEntry", "CocoCategory", "CocoAnnotation",
           "CocoDocument", "read_coco_document", "parse_coco_document"]

MAX_ENTRIES = 10_000_000  # train2017: 118k images, 860k annotations
MAX_SIDE = 1 << 16  # pixels per side; load_image's 2^27-pixel cap refuses the decoded image anyway
MAX_ID = (1 << 63) - 1  # pycocotools keeps ids in int64 arrays
MAX_NAME = 4096


@dataclass(frozen=True)
class CocoImageEntry:
    id: int
    file_name: str
    width: int
    height: int


@dataclass(frozen=True)
class CocoCategory:
    id: int
    name: str


@dataclass(frozen=True)
class CocoAnnotation:
    id: int
    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]  # x, y, w, h in pixels
    area: float
    iscrowd: int
    ignore: int = 0


@dataclass(frozen=True)
class CocoDocument:
    """A checked annotation file: its images (file order), categories and annotations."""

    source: str
    images: tuple[CocoImageEntry, ...]
    categories: tuple[CocoCategory, ...]
    annotations: tuple[CocoAnnotation, ...]

    def to_pycocotools(self) -> dict[str, Any]:
        """The ``dataset`` dict pycocotools' ``COCO`` indexes, built from the checked values only."""
        return {
            "images": [{"id": i.id, "file_name": i.file_name, "width": i.width, "height": i.height}
                       for i in self.images],
            "categories": [{"id": c.id, "name": c.name} for c in self.categories],
            "annotations": [{"id": a.id, "image_id": a.image_id, "category_id": a.category_id, "bbox": list(a.bbox),
                             "area": a.area, "iscrowd": a.iscrowd, **({"ignore": a.ignore} if a.ignore else {})}
                            for a in self.annotations],
        }


def read_coco_document(path: str | os.PathLike) -> CocoDocument:
    """Read (:func:`razorzoo.detection.coco_file.read_coco_file`: bounded, structure checked) and type-check a COCO
    detection annotation file.

    Raises:
        DatasetError: one line naming the file, the field (``annotations[12].bbox[2]``) and the expected form.
    """
    return parse_coco_document(read_coco_file(path), f"COCO annotation file {describe_path(path)}")


def parse_coco_document(data: Any, where: str) -> CocoDocument:
    """Check an already parsed annotation document (see :func:`read_coco_document`); ``where`` names it."""
    return _parse(Fields(data, where, error=DatasetError), where)


def _parse(top: Fields, where: str) -> CocoDocument:
    images = tuple(CocoImageEntry(f.int("id", minimum=0, maximum=MAX_ID),
                                  f.text("file_name", max_chars=MAX_NAME),
                                  f.int("width", minimum=1, maximum=MAX_SIDE),
                                  f.int("height", minimum=1, maximum=MAX_SIDE))
                   for f in top.objects("images", max_items=MAX_ENTRIES))
    categories = tuple(CocoCategory(f.int("id", minimum=0, maximum=MAX_ID), f.text("name", max_chars=256))
                       for f in top.objects("categories", max_items=100_000))
    image_ids = {image.id for image in images}
    if len(image_ids) != len(images):
        raise DatasetError(f"{where}: images lists an id twice; every image needs its own id")
    if not images or not categories:
        raise DatasetError(f"{where}: lists no {'images' if not images else 'categories'}; expected "
                           "instances_*.json with 'images', 'annotations' and 'categories'")
    category_ids = {category.id for category in categories}
    annotations = []
    for f in top.objects("annotations", max_items=MAX_ENTRIES):
        annotation = CocoAnnotation(
            f.int("id", minimum=0, maximum=MAX_ID), f.int("image_id", minimum=0, maximum=MAX_ID),
            f.int("category_id", minimum=0, maximum=MAX_ID), tuple(f.numbers("bbox", length=4)),  # type: ignore[arg-type]
            f.number("area", minimum=0), f.int("iscrowd", minimum=0, maximum=1), f.int("ignore", minimum=0, maximum=1,
                                                                                         default=0))
        if annotation.bbox[2] < 0 or annotation.bbox[3] < 0:
            raise f.fail("bbox", "[x, y, width, height] with a width and height of at least 0", list(annotation.bbox))
        if annotation.image_id not in image_ids:
            raise f.fail("image_id", "the id of an image the file lists", annotation.image_id)
        if annotation.category_id not in category_ids:
            raise f.fail("category_id", "the id of a category the file lists", annotation.category_id)
        annotations.append(annotation)
    return CocoDocument(where, images, categories, tuple(annotations))
