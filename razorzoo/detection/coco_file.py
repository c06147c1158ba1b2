"""COCO-format annotation files (``instances_*.json``): read in bounded work, their structure checked.

The evaluator (``razorzoo.evaluation.coco``) and the training set (``razorzoo.training.dataset``) both start here:
the file is read through :mod:`razorzoo.bounded` (a size cap, JSON nesting that cannot exhaust the stack, one-line
errors), and the three lists every detection file has are checked entry by entry for the keys the caller needs.
What the values mean is the caller's business.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from razorzoo.bounded import load_json, read_text, safe_repr
from razorzoo.errors import DatasetError

__all__ = ["MAX_ANNOTATION_BYTES", "EVALUATION_KEYS", "read_coco_file", "describe_path"]

# COCO train2017's instances file is 448 MB; 4 GiB leaves room for larger sets and still refuses a runaway file
MAX_ANNOTATION_BYTES = 4 << 30
_PATH_CHARS = 300  # long enough to keep the file name

# the keys pycocotools' evaluation reads from each entry
EVALUATION_KEYS: Mapping[str, Sequence[str]] = {
    "images": ("id", "file_name", "width", "height"),
    "categories": ("id", "name"),
    "annotations": ("id", "image_id", "category_id", "bbox", "area", "iscrowd"),
}


def describe_path(path: str | os.PathLike) -> str:
    """A path quoted for an error message, cut to a few hundred characters."""
    return safe_repr(str(path), _PATH_CHARS)


def read_coco_file(ann_file: str | os.PathLike, required: Mapping[str, Sequence[str]] = EVALUATION_KEYS
                   ) -> dict[str, Any]:
    """The parsed annotation file, with ``images``, ``categories`` and ``annotations`` lists whose entries are objects
    holding at least the keys ``required`` names; anything else is one :class:`DatasetError` line."""
    ann_file = Path(ann_file)
    where = describe_path(ann_file)
    if not ann_file.is_file():
        raise DatasetError(f"annotation file not found: {where} (pass the path of a COCO-format instances_*.json)")
    text = read_text(ann_file, what=f"annotation file {where}", error=DatasetError, limit=MAX_ANNOTATION_BYTES)
    data = load_json(text, what=f"annotation file {where}", error=DatasetError)
    if not isinstance(data, dict):
        raise _not_coco(where, f"the top level is {safe_repr(data)}, not an object")
    for key, keys in required.items():
        entries = data.get(key)
        if not isinstance(entries, list):
            raise _not_coco(where, f"{key!r} is {'missing' if entries is None else safe_repr(entries)}, not a list")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or any(k not in entry for k in keys):
                raise _not_coco(where, f"{key}[{i}] lacks one of {list(keys)}")
    return data


def _not_coco(where: str, problem: str) -> DatasetError:
    return DatasetError(f"{where} is not a COCO detection annotation file: {problem} "
                        "(expected instances_*.json with 'images', 'annotations' and 'categories')")
