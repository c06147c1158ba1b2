"""``razorzoo predict`` on folders, globs, list files and videos: streamed in batches, saved as JSON/CSV/images.

Detectors save every box (COCO-style JSON, one CSV row per box, drawings); classifiers their top-k per image (one
JSON/CSV row per class and image, ``rank`` 1 first).

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

from razorzoo.bounded import terminal_safe
from razorzoo.wording import count

_SUMMARY_CLASSES = 10


def add_stream_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("many images (IMAGE may also be a folder, a glob, a .txt list of paths or a video)")
    group.add_argument("--batch", type=int, metavar="N", help="images per forward pass (default 8)")
    group.add_argument("--workers", type=int, metavar="N", help="image-decoding threads (default 2)")
    group.add_argument("--save-json", metavar="PATH",
                       help="detectors: every box as COCO-style JSON (image, frame, category_id, category, bbox xywh, "
                            "score); classifiers: each image's top-k (image, frame, rank, class_index, class, prob)")
    group.add_argument("--save-csv", metavar="PATH", help="the same as CSV: one row per box, or per class and image")
    group.add_argument("--save-dir", metavar="DIR",
                       help="detectors: write each image (or video frame) with its boxes drawn")
    group.add_argument("--skip-missing", action="store_true", help="skip paths of a list file that do not exist")
    group.add_argument("--allow-outside", action="store_true",
                       help="let a .txt list name images outside its own folder (refused by default)")


def wanted(args: argparse.Namespace) -> bool:
    """Whether to stream: a streaming option is set, or an input is a folder, list file, video or glob."""
    import glob

    from razorzoo.evaluation.sources import VIDEO_SUFFIXES

    options = (args.batch, args.workers, args.save_json, args.save_csv, args.save_dir)
    return any(o is not None for o in options) or args.skip_missing or args.allow_outside or any(
        Path(image).is_dir() or Path(image).suffix.lower() in (".txt", *VIDEO_SUFFIXES)
        or (glob.has_magic(image) and not Path(image).exists()) for image in args.images)


def check(args: argparse.Namespace) -> None:
    """Everything a streamed run needs, before any model loads: counts in range, every source readable, and every
    output writable and none of the inputs (a bad ``--save-json`` must not cost the hours it follows)."""
    from razorzoo.evaluation.engine import check_batching
    from razorzoo.evaluation.sources import VIDEO_SUFFIXES, iter_source
    from razorzoo.files import check_output_dir, check_output_file, check_planned_outputs

    check_batching(_batch(args), _workers(args), prefix="--")
    listed: list[str] = []
    for source in args.images:
        items, total = iter_source(source, skip_missing=args.skip_missing, allow_outside=args.allow_outside)
        listed += [source] if total is None else [str(item) for item in items]
    inputs = (*args.images, *listed)
    for option in ("save_json", "save_csv"):
        if getattr(args, option) is not None:
            check_output_file(getattr(args, option), what=f"--{option.replace('_', '-')}", inputs=inputs)
    folder = args.save_dir or args.out
    if folder is not None:
        what = "--save-dir" if args.save_dir else "--out"
        check_output_dir(folder, what=what, inputs=[source for source in args.images if Path(source).is_dir()])
        used: set[str] = set()
        check_planned_outputs([Path(folder) / _unique_name(item, None, used) for item in listed
                               if Path(item).suffix.lower() not in VIDEO_SUFFIXES], what=what, inputs=inputs)


def _batch(args: argparse.Namespace) -> int:
    return 8 if args.batch is None else args.batch


def _workers(args: argparse.Namespace) -> int:
    return 2 if args.workers is None else args.workers


def runtime_fields(model: Any) -> dict[str, Any]:
    """``{"runtime": {backend, precision, variant}}`` for an exported model (``--json`` shows what ran it), else
    nothing."""
    runtime = getattr(model, "runtime", None)
    return {"runtime": runtime} if runtime is not None else {}


def run(args: argparse.Namespace, model: Any, task: str) -> int:
    """Stream every source (checked by :func:`check`) through ``model`` (a detector, or a classifier when ``task``
    is ``"classification"``), printing and saving as it goes."""
    from razorzoo.evaluation.sources import Frame, classify_stream, predict_stream
    from razorzoo.files import write_bytes_atomic

    batch, workers = _batch(args), _workers(args)
    classifying = task == "classification"
    folder = None if classifying else args.save_dir or args.out  # predict's --out means the same
    save_dir = Path(folder) if folder else None
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    names: set[str] = set()
    images, start = 0, time.perf_counter()
    try:
        for source in args.images:
            stream = (classify_stream(model, source, topk=args.topk, batch=batch, workers=workers,
                                      skip_missing=args.skip_missing, allow_outside=args.allow_outside)
                      if classifying else
                      predict_stream(model, source, batch=batch, workers=workers, score_thr=args.score_thr,
                                     iou_thr=args.iou_thr, max_det=args.max_det, skip_missing=args.skip_missing,
                                     allow_outside=args.allow_outside))
            for item, result in stream:
                image, frame = (item.video, item.index) if isinstance(item, Frame) else (str(item), None)
                rows.extend(_class_rows(image, frame, result) if classifying else _box_rows(image, frame, result))
                images += 1
                if args.json:
                    found = _classification_dict(result) if classifying else result.to_dict()
                    print(json.dumps({"image": image, "frame": frame, **runtime_fields(model), **found}), flush=True)
                if save_dir is not None:
                    picture = result.draw(item.image if isinstance(item, Frame) else item)
                    with io.BytesIO() as buffer:
                        picture.save(buffer, format="PNG")
                        write_bytes_atomic(save_dir / _unique_name(image, frame, names), buffer.getvalue())
    finally:  # also on Ctrl-C: the files hold exactly the images done so far
        if args.save_json:
            write_bytes_atomic(args.save_json, json.dumps(rows).encode())
        if args.save_csv:
            write_bytes_atomic(args.save_csv, _csv(rows, CLASS_COLUMNS if classifying else BOX_COLUMNS).encode())
    if not args.json:
        _summary(rows, images, time.perf_counter() - start, classifying)
    return 0


BOX_COLUMNS = ("image", "frame", "category", "category_id", "score", "x", "y", "w", "h")
CLASS_COLUMNS = ("image", "frame", "rank", "class_index", "class", "prob")


def _box_rows(image: str, frame: int | None, detections: Any) -> list[dict[str, Any]]:
    """One COCO-style row per detection (``bbox`` is x, y, w, h)."""
    rows = [{"image": image, "frame": frame, "category": name, **entry}
            for name, entry in zip(detections.names, detections.to_coco(image))]
    for row in rows:
        del row["image_id"]
    return rows


def _class_rows(image: str, frame: int | None, top: Any) -> list[dict[str, Any]]:
    """One row per class of an image's top-k, best first (``rank`` 1)."""
    return [{"image": image, "frame": frame, "rank": rank, "class_index": index, "class": name, "prob": prob}
            for rank, (index, name, prob) in enumerate(zip(top.indices, top.names, top.probs), start=1)]


def _classification_dict(top: Any) -> dict[str, Any]:
    return {"indices": list(top.indices), "names": list(top.names), "probs": list(top.probs)}


def _unique_name(image: str, frame: int | None, used: set[str]) -> str:
    """``<stem>.png`` (``<stem>_<frame>.png`` for video frames), with ``_1``, ``_2``... if the name was taken."""
    stem = Path(image).stem if frame is None else f"{Path(image).stem}_{frame:06d}"
    name, n = f"{stem}.png", 0
    while name in used:
        n += 1
        name = f"{stem}_{n}.png"
    used.add(name)
    return name


def _csv(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        values = {**r, "frame": "" if r["frame"] is None else r["frame"]}
        if "bbox" in r:
            values.update(score=f"{r['score']:.6f}", **dict(zip("xywh", (f"{v:.2f}" for v in r["bbox"]))))
        else:
            values["prob"] = f"{r['prob']:.6f}"
        writer.writerow([values[column] for column in columns])
    return out.getvalue()


def _summary(rows: list[dict[str, Any]], images: int, seconds: float, classifying: bool) -> None:
    per_image = f"{seconds / max(images, 1) * 1000:.1f} ms per image"
    if classifying:
        counts = collections.Counter(r["class"] for r in rows if r["rank"] == 1)
        print(f"{count(images, 'image')}, {per_image}")
        heading = "top-1 class"
    else:
        counts = collections.Counter(r["category"] for r in rows)
        print(f"{count(images, 'image')}, {count(len(rows), 'detection')}, {per_image}")
        heading = "class"
    if counts:
        print(f"  {heading:<28} {'images' if classifying else 'boxes':>7}")
        for name, n in counts.most_common(_SUMMARY_CLASSES):
            print(f"  {terminal_safe(name):<28} {n:>7}")
    sys.stdout.flush()
