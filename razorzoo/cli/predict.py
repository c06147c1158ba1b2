"""``razorzoo predict``: run a detector or a classifier on images, print what it found, optionally save drawings.

Torch is imported only inside the handler (``razorzoo list`` builds this parser too).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from razorzoo.bounded import InputError, check_number, safe_repr, terminal_safe
from razorzoo.cli import CLIError, stream
from razorzoo.constants import docs_url
from razorzoo.files import atomic_write
from razorzoo.wording import count

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
                        "onnxruntime); anything else is exported once into the cache "
                        f"({docs_url('deploy.md')})")
    stream.add_stream_arguments(p)
    p.set_defaults(handler=_predict)


def _predict(args: argparse.Namespace) -> int:
    out_dir = Path(args.out) if args.out else None
    task = model_task(args.name, args.weights)
    if task == "classification":
        given = [option for option, value in (("--score-thr", args.score_thr), ("--iou-thr", args.iou_thr),
                                              ("--max-det", args.max_det), ("--out", args.out),
                                              ("--save-dir", args.save_dir)) if value is not None]
        if given:
            raise CLIError(f"detector options ({', '.join(given)}) do not apply: {args.name} is a classifier, which "
                           "takes --topk (and --save-json/--save-csv for its top-k)")
    elif task != "detection":
        raise CLIError(f"{args.name} is a {MODEL_KINDS.get(task, task)}, which predicts nothing; give a detector or a "
                       "classifier")
    _check_inputs_and_outputs(args, out_dir)
    return _classify(args) if task == "classification" else _detect(args, out_dir)


def _check_inputs_and_outputs(args: argparse.Namespace, out_dir: Path | None) -> None:
    """--weights, images, sources, counts and every output, before the model loads: a missing image, or an output
    that is an input, a directory or a fifo must not cost the run it follows (or a download, or an export)."""
    if args.weights is not None and not Path(args.weights).is_file():
        raise CLIError(f"--weights {safe_repr(args.weights, 300)}: no such file")
    if stream.wanted(args):
        stream.check(args)
        return
    for image in args.images:
        if not Path(image).is_file():
            raise CLIError(f"image file not found: {safe_repr(image, 300)}")
    if out_dir is not None:
        from razorzoo.files import check_output_dir, check_planned_outputs

        check_output_dir(out_dir, what="--out")
        check_planned_outputs(_output_paths(args.images, out_dir), what="--out", inputs=args.images)


MODEL_KINDS = {"detection": "detector", "classification": "classifier", "backbone": "backbone", "supernet": "supernet"}


def model_task(name: str, weights: str | None = None) -> str:
    """What NAME (or --weights) holds, before any weights are loaded: a converted or exported file says so in its
    metadata, a registry card in its task, a Hub repo in its ``model.safetensors`` (downloaded here, once)."""
    source = weights if weights is not None else name
    if source.endswith(".onnx"):
        from razorzoo.deploy.metadata import read_metadata

        return read_metadata(source)["razorzoo_task"]
    if source.endswith(".safetensors") and Path(source).is_file():
        from razorzoo.weights.convert import read_spec

        return read_spec(source).task
    if name.startswith("hf-hub:"):  # the repo's model.safetensors is needed anyway: its metadata says
        from razorzoo.storage.hub import download_hub_model
        from razorzoo.weights.convert import read_spec

        return read_spec(download_hub_model(name)).task
    if name.endswith(".safetensors"):
        return "detection"  # a file that is not there: the loader says so
    from razorzoo.zoo.registry import get_card

    return get_card(name).task


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
    if stream.wanted(args):
        return stream.run(args, classifier, "classification")
    results = [(image, classifier.predict(image, topk=args.topk)) for image in args.images]
    if args.json:
        json.dump([{"image": image, "indices": list(top.indices), "names": list(top.names), "probs": list(top.probs)}
                   for image, top in results], sys.stdout)
        print()
    else:
        for image, top in results:
            print(_top_k(image, top))
    return 0


def _detect(args: argparse.Namespace, out_dir: Path | None) -> int:
    import razorzoo

    detector = _load(args, razorzoo.load_detector, detector=args.name)
    if stream.wanted(args):
        return stream.run(args, detector, "detection")
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


def _top_k(image: str, top) -> str:
    lines = [f"{terminal_safe(image)}: top {len(top.indices)}"]
    lines += [f"  {terminal_safe(name):<28} {prob:6.3f}  (class {index})"  # an exported file's names are its own
              for index, name, prob in zip(top.indices, top.names, top.probs)]
    return "\n".join(lines)


def _table(image: str, detections) -> str:
    lines = [f"{terminal_safe(image)}: {count(len(detections), 'detection')}"]  # file names are anyone's text
    if len(detections):
        lines.append(f"  {'class':<16} {'score':>6}  {'x1':>7} {'y1':>7} {'x2':>7} {'y2':>7}")
    for name, score, box in zip(detections.names[:_TABLE_ROWS], detections.scores.tolist(),
                                detections.boxes.tolist()):
        lines.append(f"  {terminal_safe(name):<16} {score:6.3f}  " + " ".join(f"{v:7.1f}" for v in box))
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
