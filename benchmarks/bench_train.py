"""Training throughput: ``razorzoo train`` (the recipe's pipeline in worker processes, loss, optimizer, EMA) against a
plain forward + backward + SGD loop on ready tensors, images per second, per detector.

Usage: ``python benchmarks/bench_train.py [--size 320] [--batch 8] [--iters 6] [--workers 2] [--device cpu]
[--models NAME ...]``

Both sides train the same detector (the tests' fixture weights) at the same canvas and batch; the dataset is a
synthetic COCO set of 640 x 480 images with 6 boxes each, written once to a temporary folder. ``razorzoo train``'s
figure is the epoch record of its log (the first iteration excluded: worker start-up); the plain loop's is the
median over iterations after one warm-up. The ratio is what to compare across machines.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

import razorzoo
from razorzoo.builder import resolve_spec
from razorzoo.training.trainer import train

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from checkpoints import write_checkpoint  # noqa: E402

MODELS = ("yolov5s-spos_0.33M", "yolov6s-attentive_a6", "rtmdet_tiny-ofa_lat31")


def _dataset(root: Path, count: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(count):
        canvas = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3)).astype(np.uint8), (9, 9), 0)
        for _ in range(6):
            w, h = int(rng.integers(40, 200)), int(rng.integers(40, 200))
            x, y = int(rng.integers(0, 640 - w)), int(rng.integers(0, 480 - h))
            canvas[y:y + h, x:x + w] //= 2
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1 + i % 3,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        cv2.imwrite(str(root / "images" / f"{i}.jpg"), canvas)
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": 640, "height": 480})
    ann = root / "train.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": [{"id": k, "name": f"c{k}"} for k in (1, 2, 3)]}))
    return ann, root / "images"


def _plain(model: str, weights: Path, size: int, batch: int, iters: int, device: str) -> float:
    detector = razorzoo.load_detector(weights, device=device).train()
    optimizer = torch.optim.SGD(detector.parameters(), lr=1e-4, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=device)
    times = []
    for i in range(iters):
        start = time.perf_counter()
        optimizer.zero_grad()
        (sum(t.sum() for level in detector(x) for t in level) * 1e-6).backward()
        optimizer.step()
        if device != "cpu":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=MODELS)
    args = parser.parse_args()
    print(f"{args.size}^2 canvas, batch {args.batch}, {args.iters} iterations, {args.workers} workers, "
          f"{torch.get_num_threads()} threads, {args.device}")
    print(f"{'model':24} {'plain img/s':>12} {'train img/s':>12} {'ratio':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ann, images = _dataset(root / "data", args.batch * (args.iters + 1))
        for model in args.models:
            checkpoint = write_checkpoint(model, "mmdet-publish", root / f"{model}.pth")
            weights = razorzoo.convert_checkpoint(checkpoint, resolve_spec(model, "detection"),
                                                  root / f"{model}.safetensors")
            plain = _plain(model, weights, args.size, args.batch, args.iters, args.device)
            run = root / f"run-{model}"
            train(weights, coco_ann=ann, images=images, output=run, epochs=1, batch=args.batch,
                  workers=args.workers, img_size=args.size, device=args.device, log_interval=1, progress=False)
            records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
            stamps = [r["time"] for r in records if r["type"] == "train"]
            trained = args.batch * (len(stamps) - 1) / (stamps[-1] - stamps[0])
            print(f"{model:24} {plain:12.2f} {trained:12.2f} {trained / plain:7.2f}", flush=True)


if __name__ == "__main__":
    main()
