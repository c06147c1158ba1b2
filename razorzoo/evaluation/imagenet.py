"""ImageNet top-1/top-5 of a classifier with the upstream test pipeline as code.

MMRazor's classifier configs test with mmcls ``ResizeEdge(scale=256, edge='short', interpolation='bilinear')``,
``CenterCrop(224)``, then the data preprocessor (BGR -> RGB, ImageNet mean/std) and mmcls ``Accuracy(topk=(1, 5))``.
That pipeline is the classifier's own (``model.preprocess``, from its card's ``preprocessing:`` block, see
:class:`razorzoo.arch.recipes.ClassifierPreprocess`), so evaluation and ``predict`` can never disagree about it.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from razorzoo.bounded import safe_repr
from razorzoo.errors import DatasetError
from razorzoo.files import confined

if TYPE_CHECKING:
    from razorzoo.arch.recipes import ClassifierPreprocess

__all__ = ["ImageNetResult", "read_imagenet", "evaluate_imagenet"]

NUM_CLASSES = 1000
_CLASS_INDEX = re.compile(r"(\d{1,3})(?:[_\-. ].*)?", re.DOTALL)  # '281', '281_tabby', '281-tabby', '281 tabby'


@dataclass(frozen=True)
class ImageNetResult:
    """Top-1/top-5 accuracy as fractions, and the per-image time (decoding included)."""

    top1: float
    top5: float
    num_images: int
    seconds_per_image: float
    skipped: tuple[str, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"top1": self.top1, "top5": self.top5, "images": self.num_images,
                "seconds_per_image": self.seconds_per_image, "skipped_images": len(self.skipped)}


def read_imagenet(root: str | os.PathLike, ann_file: str | os.PathLike | None = None, *, limit: int | None = None,
                  skip_missing: bool = False, allow_outside: bool = False
                  ) -> tuple[list[tuple[Path, int]], tuple[str, ...]]:
    """``(path, label)`` samples and the missing files skipped.

    Without ``ann_file``, ``root`` holds one folder per class (images searched recursively in each). Folders named by
    the ImageNet class index they hold (``281``, ``281_tabby``) are labelled by it, so a few classes are enough;
    otherwise there must be all 1000 and labels are the sorted folder index (mmcls ``CustomDataset``; ImageNet's
    ``n01440764``... folders sort into the standard order). With ``ann_file``, each of its lines is
    ``relative/path label`` (mmcls ``meta/val.txt``), relative to ``root``, which it may not leave (``../``, absolute
    paths, symlinks out) unless ``allow_outside``. Class folders are searched without following symlinked folders.

    Raises:
        DatasetError: no images, class folders that follow neither rule, a bad list line, missing listed files.
    """
    from razorzoo.evaluation.sources import check_missing, list_images

    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"ImageNet folder not found: {str(root)!r}")
    if ann_file is None:
        labels = _folder_labels(root, sorted(entry.name for entry in os.scandir(root) if entry.is_dir()))
        relative = [(path, path.relative_to(root).parts) for path in list_images(root, recursive=True)]
        samples = [(path, labels[parts[0]]) for path, parts in relative if len(parts) > 1]  # root's own: no class
        where = f"the class folders of {str(root)!r}"
    else:
        samples = _read_list(Path(ann_file), root, allow_outside)
        where = str(ann_file)
    samples = samples[:limit] if limit is not None else samples
    if not samples:
        raise DatasetError(f"no images found in {where} (expected class folders of .jpg/.png/... files, or a list)")
    present = check_missing([path for path, _ in samples], root, skip_missing=skip_missing)
    return [s for s in samples if s[0] in present], tuple(str(p) for p, _ in samples if p not in present)


def _folder_labels(root: Path, folders: list[str]) -> dict[str, int]:
    """Class folder name -> label: the class index it is named by, else (all 1000 folders) its sorted index."""
    indices = {name: _class_index(name) for name in folders}
    unnamed = [name for name, index in indices.items() if index is None]
    if not unnamed:
        return indices  # every value is an int here
    if len(folders) != NUM_CLASSES:
        raise DatasetError(f"ImageNet folder {safe_repr(str(root))}: class folder {safe_repr(unnamed[0])} is not "
                           f"named by a class index, and there are {len(folders)} class folders, not {NUM_CLASSES}; "
                           "each class folder must be named by its ImageNet class index 0-999 (e.g. '281' or "
                           f"'281_tabby'), or there must be all {NUM_CLASSES} (n01440764...), labelled in name order")
    return {name: label for label, name in enumerate(folders)}


def _class_index(name: str) -> int | None:
    match = _CLASS_INDEX.fullmatch(name)
    return int(match.group(1)) if match and int(match.group(1)) < NUM_CLASSES else None


def _read_list(ann_file: Path, root: Path, allow_outside: bool) -> list[tuple[Path, int]]:
    """``relative/path label`` lines: labels 0-999, paths inside ``root`` unless ``allow_outside``."""
    from razorzoo.evaluation.sources import read_list_file

    what = f"the image list {safe_repr(str(ann_file))}"
    samples = []
    for number, line in read_list_file(ann_file, what=what):
        name, _, label = line.rpartition(" ")
        if not name.strip() or not label.isdigit() or len(label) > 3 or int(label) >= NUM_CLASSES:
            raise DatasetError(f"{what} line {number} is {safe_repr(line)}, not 'relative/path label' with a label "
                               f"0-{NUM_CLASSES - 1}")
        samples.append((confined(root, name.strip(), allow_outside=allow_outside, what=f"{what} line {number}:",
                                 error=DatasetError), int(label)))
    return samples


def evaluate_imagenet(model: Any, root: str | os.PathLike, *, preprocessing: "ClassifierPreprocess | None" = None,
                      ann_file: str | os.PathLike | None = None, batch: int = 32, workers: int = 0,
                      limit: int | None = None, skip_missing: bool = False, progress: bool | None = None,
                      allow_outside: bool = False) -> ImageNetResult:
    """Top-1/top-5 accuracy of ``model`` (callable on a batch, returning logits) on an ImageNet-style dataset.

    Images go through ``model.preprocess`` (the upstream test pipeline the classifier carries), or through
    ``preprocessing`` when given (to evaluate another pipeline); other arguments as :func:`read_imagenet` and
    :func:`razorzoo.evaluation.coco.evaluate_coco`.
    """
    import torch
    from tqdm.auto import tqdm

    from razorzoo.detection.transforms import ClassifierTransform, load_image
    from razorzoo.evaluation.engine import batches, check_batching, on_device, prefetch, show_progress

    check_batching(batch, workers, limit)
    if preprocessing is not None:
        preprocess = ClassifierTransform(preprocessing)
    elif callable(getattr(model, "preprocess", None)):
        preprocess = model.preprocess
    else:
        raise DatasetError(f"{type(model).__name__} has no preprocess(); pass preprocessing= (the test pipeline)")
    samples, skipped = read_imagenet(root, ann_file, limit=limit, skip_missing=skip_missing,
                                     allow_outside=allow_outside)
    hits = np.zeros(2, dtype=np.int64)
    start = time.perf_counter()
    with tqdm(total=len(samples), unit="img", desc="val", disable=not show_progress(progress)) as bar:
        loaded = prefetch(lambda s: (s[1], preprocess(load_image(s[0])), {}), samples, workers)
        for group in batches(loaded, batch):
            labels = torch.tensor([label for label, _, _ in group])
            with torch.inference_mode():
                logits = model(on_device(torch.cat([pixels for _, pixels, _ in group]), model)).cpu()
            top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]
            hits += [int(top5[:, :1].any(1).sum()), int(top5.any(1).sum())]
            bar.update(len(group))
    elapsed = time.perf_counter() - start
    top1, top5 = (float(h) / len(samples) for h in hits)
    return ImageNetResult(top1, top5, len(samples), elapsed / len(samples), skipped)
