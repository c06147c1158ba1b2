"""``razorzoo predict``: run a detector or a classifier on images, print what it found, optionally save drawings.

Torch is imported only inside the handler (``razorzoo list`` builds this parser too).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from razorzoo.bounded import InputError, check_number, terminal_safe
from razorzoo.cli import CLIError, stream
from razorzoo.files import atomic_write

_TABLE_ROWS = 10  # detections listed per image in the table; --json prints all


def _number(option: str, **bounds: Any) -> Callable[[str], float | int]:
    """An argparse ``type=`` that checks a value with :func:`razorzoo.bounded.check_number` (finite, in range)."""

    def parse(text: str) -> float | int:
        try:
            return check_number(text, option, **bounds)
        except InputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = option  # argparse names the type in some messages
    return parse


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict", help="detect objects in (or classify) images with a zoo model",
        description="Run a detector or an ImageNet classifier on each IMAGE (files are decoded as BGR like "
                    "OpenMMLab's LoadImageFromFile) and print its best detections (boxes are x1 y1 x2 y2 in image "
                    "pixels) or its top-k classes, or all of it as JSON.",
    )
    p.add_argument("name", metavar="NAME",
                   help="model: registry name or alias, hf-hub:org/name[@rev] (detectors), or a converted "
                        ".safetensors file; with a --weights .pth, the registry name whose subnet (and recipe) the "
                        "weights belong to")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files, folders, globs, .txt lists or videos")
    p.add_argument("--weights", metavar="PATH",
                   help="use these weights instead of the published ones: a converted .safetensors (which records "
                        "its own architecture) or an upstream .pth checkpoint (verified against NAME's subnet first)")
    p.add_argument("--out", metavar="DIR", help="detectors: write each image with its boxes drawn to DIR/<name>.png")
    p.add_argument("--json", action="store_true", help="print all results as JSON instead of a table")
    p.add_argument("--score-thr", type=_number("--score-thr", minimum=0, maximum=1), metavar="T",
                   help="detectors: minimum score, 0..1 (default: the model's test_cfg)")
    p.add_argument("--iou-thr", type=_number("--iou-thr", minimum=0, maximum=1), metavar="T",
                   help="detectors: NMS IoU threshold, 0..1 (default: the model's test_cfg)")
    p.add_argument("--max-det", type=_number("--max-det", minimum=1, integer=True), metavar="N",
                   help="detectors: detections kept per image, at least 1 (default: the model's)")
    p.add_argument("--topk", type=_number("--topk", minimum=1, maximum=1000, integer=True), default=5, metavar="K",
                   help="classifiers: classes listed per image (default: 5)")
    p.add_argument("--backend", choices=("onnxruntime", "openvino"),
                   help="run the network on this runtime (default for an exported .onnx NAME or --weights: "
                        "onnxruntime); anything else is exported once into the cache (docs/deploy.md)")
    stream.add_stream_arguments(p)
    p.set_defaults(handler=_predict)


def _predict(args: argparse.Namespace) -> int:
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--out {out_dir} is an existing file; give a directory (it is created if missing)")
    for path in _output_paths(args.images, out_dir) if out_dir is not None else ():
        if path.exists() and not path.is_file():  # renaming the drawing over it would fail late, or replace a pipe
            raise CLIError(f"--out: {path} exists and is not a regular file; move it, or give another directory")
    task = _task(args)
    if task == "classification":
        given = [option for option, value in (("--score-thr", args.score_thr), ("--iou-thr", args.iou_thr),
                                              ("--max-det", args.max_det), ("--out", args.out)) if value is not None]
        if given:
            raise CLIError(f"detector options ({', '.join(given)}) do not apply: {args.name} is a classifier, which "
                           "takes --topk")
        if stream.wanted(args):  # else --save-json and friends would be silently ignored
            raise CLIError(f"{args.name} is a classifier: folders, globs, .txt lists, videos and the streaming options "
                           "(--batch, --workers, --save-*, --skip-missing) are for detectors; pass image files, or "
                           "measure accuracy with razorzoo val --imagenet")
        return _classify(args)
    return _detect(args, out_dir)


def _task(args: argparse.Namespace) -> str:
    """What NAME (or --weights) holds: a converted file says so in its metadata, a registry card in its task."""
    source = args.weights if args.weights is not None else args.name
    if source.endswith(".onnx"):
        from razorzoo.deploy.metadata import read_metadata

        return read_metadata(source)["razorzoo_task"]
    if source.endswith(".safetensors") and Path(source).is_file():
        from razorzoo.weights.convert import read_spec

        return read_spec(source).task
    if args.name.startswith("hf-hub:") or args.name.endswith(".safetensors"):
        return "detection"
    from razorzoo.zoo.registry import get_card

    return get_card(args.name).task


def _load(args: argparse.Namespace, loader: Callable[..., Any], **options: Any) -> Any:
    source = args.weights or args.name
    backend = args.backend or ("onnxruntime" if source.endswith(".onnx") else None)
    if backend is not None:  # an exported file, or anything exported once into the cache
        return loader(source, backend=backend)
    if args.weights is None:
        return loader(args.name)
    if args.weights.endswith(".safetensors"):
        return loader(Path(args.weights))
    return loader(Path(args.weights), subnet=args.name, **options)


def _classify(args: argparse.Namespace) -> int:
    import razorzoo

    classifier = _load(args, razorzoo.load_classifier)
    results = [(image, classifier.predict(image, topk=args.topk)) for image in args.images]
    if args.json:
        json.dump([{"image": image, "indices": list(top.indices), "names": list(top.names), "probs": list(top.probs)}
                   for image, top in results], sys.stdout)
        print()
    else:
        for image, top in results:
            print(f"{terminal_safe(image)}: top {len(top.indices)}")
            for index, name, prob in zip(top.indices, top.names, top.probs):
                print(f"  {name:<28} {prob:6.3f}  (class {index})")
    return 0


def _detect(args: argparse.Namespace, out_dir: Path | None) -> int:
    import razorzoo

    detector = _load(args, razorzoo.load_detector, detector=args.name)
    if stream.wanted(args):
        return stream.run(args, detector)
    results = []
    for image in args.images:
        detections = detector.predict(image, score_thr=args.score_thr, iou_thr=args.iou_thr, max_det=args.max_det)
        results.append((image, detections))

    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CLIError(f"cannot create --out {out_dir}: {exc.strerror}") from None
        for path, (image, detections) in zip(_output_paths(args.images, out_dir), results):
            try:
                with atomic_write(path) as f:  # a crash never leaves half an image
                    detections.draw(image).save(f, format="PNG")
            except OSError as exc:  # a full disk, a directory made read-only meanwhile
                raise CLIError(f"cannot write --out {path}: {exc.strerror or type(exc).__name__}") from None
    if args.json:
        runtime = stream.runtime_fields(detector)
        json.dump([{"image": image, **runtime, **detections.to_dict()} for image, detections in results], sys.stdout)
        print()
    else:
        for image, detections in results:
            print(_table(image, detections))
    return 0


def _table(image: str, detections) -> str:
    lines = [f"{terminal_safe(image)}: {len(detections)} detections"]  # file names are anyone's text
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
