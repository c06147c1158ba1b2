"""``razorzoo predict`` on folders, globs, list files and videos: streamed in batches, saved as JSON/CSV/images.

Used by :mod:`razorzoo.cli.predict` when an input is not a plain image file or a streaming option is given. Output
files are written atomically when the run ends, also when it is interrupted (Ctrl-C keeps what was done).
"""
from __future__ import annotations

import argparse
import collections
import csv
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

from razorzoo.cli import CLIError

_SUMMARY_CLASSES = 10


def add_stream_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("many images (IMAGE may also be a folder, a glob, a .txt list of paths or a video)")
    group.add_argument("--batch", type=int, metavar="N", help="images per forward pass (default 8)")
    group.add_argument("--workers", type=int, metavar="N", help="image-decoding threads (default 2)")
    group.add_argument("--save-json", metavar="PATH", help="write all detections as COCO-style JSON "
                                                           "(image, frame, category_id, category, bbox xywh, score)")
    group.add_argument("--save-csv", metavar="PATH", help="write all detections as CSV, one row per box")
    group.add_argument("--save-dir", metavar="DIR", help="write each image (or video frame) with its boxes drawn")
    group.add_argument("--skip-missing", action="store_true", help="skip paths of a list file that do not exist")


def wanted(args: argparse.Namespace) -> bool:
    """Whether to stream: a streaming option is set, or an input is a folder, list file, video or glob."""
    import glob

    from razorzoo.evaluation.sources import VIDEO_SUFFIXES

    options = (args.batch, args.workers, args.save_json, args.save_csv, args.save_dir)
    return any(o is not None for o in options) or args.skip_missing or any(
        Path(image).is_dir() or Path(image).suffix.lower() in (".txt", *VIDEO_SUFFIXES)
        or (glob.has_magic(image) and not Path(image).exists()) for image in args.images)


def runtime_fields(model: Any) -> dict[str, Any]:
    """``{"runtime": {backend, precision, variant}}`` for an exported model (``--json`` shows what ran it), else
    nothing."""
    runtime = getattr(model, "runtime", None)
    return {"runtime": runtime} if runtime is not None else {}


def run(args: argparse.Namespace, detector: Any) -> int:
    from razorzoo.evaluation.sources import Frame, iter_source, predict_stream
    from razorzoo.files import write_bytes_atomic

    batch, workers = 8 if args.batch is None else args.batch, 2 if args.workers is None else args.workers
    if batch < 1 or workers < 0:
        raise CLIError(f"--batch must be at least 1 and --workers at least 0, got {batch} and {workers}")
    for source in args.images:  # every source is checked before the first image runs
        iter_source(source, skip_missing=args.skip_missing)
    folder = args.save_dir or args.out  # predict's --out means the same
    save_dir = Path(folder) if folder else None
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    names: set[str] = set()
    images, start = 0, time.perf_counter()
    try:
        for source in args.images:
            for item, detections in predict_stream(detector, source, batch=batch, workers=workers,
                                                   score_thr=args.score_thr, iou_thr=args.iou_thr,
                                                   max_det=args.max_det, skip_missing=args.skip_missing):
                image, frame = (item.video, item.index) if isinstance(item, Frame) else (str(item), None)
                found = [{"image": image, "frame": frame, "category": name, **entry}
                         for name, entry in zip(detections.names, detections.to_coco(image))]
                for entry in found:
                    del entry["image_id"]
                rows.extend(found)
                images += 1
                if args.json:
                    print(json.dumps({"image": image, "frame": frame, **runtime_fields(detector),
                                      **detections.to_dict()}), flush=True)
                if save_dir is not None:
                    picture = detections.draw(item.image if isinstance(item, Frame) else item)
                    with io.BytesIO() as buffer:
                        picture.save(buffer, format="PNG")
                        write_bytes_atomic(save_dir / _unique_name(image, frame, names), buffer.getvalue())
    finally:  # also on Ctrl-C: the files hold exactly the images done so far
        if args.save_json:
            write_bytes_atomic(args.save_json, json.dumps(rows).encode())
        if args.save_csv:
            write_bytes_atomic(args.save_csv, _csv(rows).encode())
    if not args.json:
        _summary(rows, images, time.perf_counter() - start)
    return 0


def _unique_name(image: str, frame: int | None, used: set[str]) -> str:
    """``<stem>.png`` (``<stem>_<frame>.png`` for video frames), with ``_1``, ``_2``... if the name was taken."""
    stem = Path(image).stem if frame is None else f"{Path(image).stem}_{frame:06d}"
    name, n = f"{stem}.png", 0
    while name in used:
        n += 1
        name = f"{stem}_{n}.png"
    used.add(name)
    return name


def _csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["image", "frame", "category", "category_id", "score", "x", "y", "w", "h"])
    for r in rows:
        writer.writerow([r["image"], "" if r["frame"] is None else r["frame"], r["category"], r["category_id"],
                         f"{r['score']:.6f}", *(f"{v:.2f}" for v in r["bbox"])])
    return out.getvalue()


def _summary(rows: list[dict[str, Any]], images: int, seconds: float) -> None:
    counts = collections.Counter(r["category"] for r in rows)
    print(f"{images} images, {len(rows)} detections, {seconds / max(images, 1) * 1000:.1f} ms per image")
    if counts:
        print(f"  {'class':<16} {'boxes':>7}")
        for name, count in counts.most_common(_SUMMARY_CLASSES):
            print(f"  {name:<16} {count:>7}")
    sys.stdout.flush()
