"""Throughput of ``razorzoo val`` (COCO protocol) with 0, 1 and 2 loader threads vs a plain per-image loop.

Usage: ``python benchmarks/bench_val.py [--model yolov5s-spos_0.33M] [--images 24] [--batch 1] [--threads 1]``

The dataset is generated in a temporary folder: JPEG photos of varied sizes (scikit-image's samples, resized) so
decoding and resizing cost what they cost on COCO. The plain loop is what a user writes without razorzoo val:
``for path in paths: detector.predict(path)`` (decode, pre-process, forward, post-process one after another, on the
640 inference canvas). Each figure is images per second over the whole set after one warm-up image; ratios are
against the plain loop. Weights are the fixture rule's (speed does not depend on them).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fixture_rule import rule_state_dict  # noqa: E402
from val_data import PHOTOS, SKIMAGE_DATA, coco_file  # noqa: E402

import razorzoo  # noqa: E402
from razorzoo.evaluation.coco import evaluate_coco  # noqa: E402


def make_dataset(folder: Path, count: int) -> tuple[Path, Path]:
    """``count`` JPEGs cycling through the sample photos at 1x / 1.25x (COCO images are ~640 x 480)."""
    images = folder / "images"
    images.mkdir()
    entries = []
    sources = [cv2.imread(str(SKIMAGE_DATA / name)) for name in PHOTOS]
    for i in range(count):
        image = sources[i % len(sources)]
        if i // len(sources) % 2:
            image = cv2.resize(image, None, fx=1.25, fy=1.25)
        name = f"{i:06d}.jpg"
        cv2.imwrite(str(images / name), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        entries.append((name, image.shape[1], image.shape[0]))
    ann = folder / "instances.json"
    coco_file(ann, {}, images=entries)
    return ann, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov5s-spos_0.33M")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    detector = razorzoo.build_detector(args.model)
    detector.load_state_dict(rule_state_dict(args.model), strict=True)
    with tempfile.TemporaryDirectory() as tmp:
        ann, images = make_dataset(Path(tmp), args.images)
        paths = sorted(images.iterdir())
        detector.predict(paths[0])  # warm-up
        start = time.perf_counter()
        for path in paths:
            detector.predict(path)
        plain = len(paths) / (time.perf_counter() - start)
        print(f"{args.model}, {len(paths)} images, batch {args.batch}, {args.threads} torch thread(s)")
        print(f"{'loop':<22} {'img/s':>7} {'ratio':>6}")
        print(f"{'plain predict loop':<22} {plain:7.2f} {1.0:6.2f}")
        for workers in (0, 1, 2):
            result = evaluate_coco(detector, ann, images, batch=args.batch, workers=workers, progress=False)
            rate = 1 / result.seconds_per_image
            print(f"{f'val, {workers} workers':<22} {rate:7.2f} {rate / plain:6.2f}")


if __name__ == "__main__":
    main()
