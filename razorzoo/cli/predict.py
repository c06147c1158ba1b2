"""``razorzoo predict``: run a detector on images, print what it found, optionally save annotated copies.

Torch is imported only inside the handler (``razorzoo list`` builds this parser too).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from razorzoo.cli import CLIError, stream

_TABLE_ROWS = 10  # detections listed per image in the table; --json prints all


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict", help="detect objects in images with a zoo detector",
        description="Run a detector on each IMAGE (files are decoded as BGR like OpenMMLab's LoadImageFromFile) and "
                    "print its best detections, or all of them as JSON. Boxes are x1 y1 x2 y2 in image pixels.",
    )
    p.add_argument("name", metavar="NAME",
                   help="detector: registry name or alias, hf-hub:org/name[@rev], or a converted .safetensors file; "
                        "with a --weights .pth, the registry name whose subnet and recipe the weights belong to")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files, folders, globs, .txt lists or videos")
    p.add_argument("--weights", metavar="PATH",
                   help="use these weights instead of the published ones: a converted .safetensors (which records "
                        "its own architecture) or an upstream .pth checkpoint (verified against NAME's subnet first)")
    p.add_argument("--out", metavar="DIR", help="write each image with its boxes drawn to DIR/<name>.png")
    p.add_argument("--json", action="store_true", help="print all detections as JSON instead of a table")
    p.add_argument("--score-thr", type=float, metavar="T", help="minimum score (default: the model's test_cfg)")
    p.add_argument("--iou-thr", type=float, metavar="T", help="NMS IoU threshold (default: the model's test_cfg)")
    p.add_argument("--max-det", type=int, metavar="N", help="detections kept per image (default: the model's)")
    stream.add_stream_arguments(p)
    p.set_defaults(handler=_predict)


def _predict(args: argparse.Namespace) -> int:
    import razorzoo

    if args.max_det is not None and args.max_det < 1:
        raise CLIError(f"--max-det must be at least 1, got {args.max_det}")
    if args.weights is None:
        detector = razorzoo.load_detector(args.name)
    elif args.weights.endswith(".safetensors"):
        detector = razorzoo.load_detector(Path(args.weights))
    else:
        detector = razorzoo.load_detector(Path(args.weights), subnet=args.name, detector=args.name)
    if stream.wanted(args):
        return stream.run(args, detector)
    results = []
    for image in args.images:
        detections = detector.predict(image, score_thr=args.score_thr, iou_thr=args.iou_thr,
                                      max_det=args.max_det)
        results.append((image, detections))

    if args.out:
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        for path, (image, detections) in zip(_output_paths(args.images, out_dir), results):
            _save_atomic(detections.draw(image), path)
    if args.json:
        json.dump([{"image": image, **detections.to_dict()} for image, detections in results], sys.stdout)
        print()
    else:
        for image, detections in results:
            print(_table(image, detections))
    return 0


def _table(image: str, detections) -> str:
    lines = [f"{image}: {len(detections)} detections"]
    if len(detections):
        lines.append(f"  {'class':<16} {'score':>6}  {'x1':>7} {'y1':>7} {'x2':>7} {'y2':>7}")
    for name, score, box in zip(detections.names[:_TABLE_ROWS], detections.scores.tolist(),
                                detections.boxes.tolist()):
        lines.append(f"  {name:<16} {score:6.3f}  " + " ".join(f"{v:7.1f}" for v in box))
    if len(detections) > _TABLE_ROWS:
        lines.append(f"  ... {len(detections) - _TABLE_ROWS} more (--json lists all)")
    return "\n".join(lines)


def _output_paths(images: list[str], out_dir: Path) -> list[Path]:
    """``DIR/<stem>.png`` per image; a repeated stem gets ``_1``, ``_2``... so no result overwrites another."""
    paths, used = [], set()
    for image in images:
        stem, n = Path(image).stem, 0
        name = f"{stem}.png"
        while name in used:
            n += 1
            name = f"{stem}_{n}.png"
        used.add(name)
        paths.append(out_dir / name)
    return paths


def _save_atomic(picture, path: Path) -> None:
    """Write to a temporary file next to ``path`` and rename it, so a crash never leaves half an image."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            picture.save(f, format="PNG")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
