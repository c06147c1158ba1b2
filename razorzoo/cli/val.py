"""``razorzoo val``: measure a zoo model on COCO val2017 or ImageNet val under the upstream test protocol.

Torch is imported only inside the handler (``razorzoo list`` builds this parser too).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from razorzoo.bounded import terminal_safe
from razorzoo.cli import CLIError
from razorzoo.constants import docs_url
from razorzoo.wording import count

# what razorzoo measures -> the card metric it is compared with (cards store percent)
_PUBLISHED = {"AP": "box_ap", "top1": "top1", "top5": "top5"}


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "val", help="measure a model on COCO or ImageNet and compare with its published numbers",
        description="Evaluate a detector on a COCO-format dataset (box AP by pycocotools, MMYOLO's test protocol) "
                    "or a classifier on an ImageNet-style folder (top-1/top-5, the upstream test pipeline).",
    )
    p.add_argument("name", metavar="NAME",
                   help="registry name or alias, hf-hub:org/name[@rev], or a converted .safetensors file")
    p.add_argument("--weights", metavar="PATH",
                   help="evaluate these weights (a .safetensors, or an upstream .pth verified against NAME)")
    p.add_argument("--backend", choices=("onnxruntime", "openvino"),
                   help="run the network on this runtime, exported once into the cache (default: eager PyTorch; "
                        f"{docs_url('deploy.md')})")
    data = p.add_argument_group("data (COCO for detectors, ImageNet for classifiers)")
    data.add_argument("--coco-ann", metavar="JSON", help="COCO annotation file, e.g. instances_val2017.json")
    data.add_argument("--images", metavar="DIR", help="folder of the COCO images, e.g. val2017/")
    data.add_argument("--imagenet", metavar="DIR", help="ImageNet val: one folder per class, or the root of --ann-file")
    data.add_argument("--ann-file", metavar="TXT", help="with --imagenet: lines 'relative/path label' (meta/val.txt)")
    p.add_argument("--batch", type=int, default=1, metavar="N", help="images per forward pass (default 1)")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="image-decoding threads (default 2)")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N images")
    p.add_argument("--skip-missing", action="store_true", help="leave out listed images that are not on disk")
    p.add_argument("--allow-outside", action="store_true",
                   help="read images whose file_name (COCO) or list line (--ann-file) leads outside --images / "
                        "--imagenet (refused by default)")
    p.add_argument("--save-json", metavar="PATH", help="write the COCO results list (image_id, category_id, bbox "
                                                       "xywh, score); kept, valid, if interrupted")
    p.add_argument("--mmyolo-maxdets", action="store_true",
                   help="pass MMYOLO's maxDets=[100, 1, 10] to pycocotools, which sorts it: the same numbers as the "
                        "default, which are MMYOLO's logged ones (docs/evaluate.md)")
    p.add_argument("--json", action="store_true", help="print one JSON object (metrics as fractions)")
    p.set_defaults(handler=_val)


def _val(args: argparse.Namespace) -> int:
    from razorzoo.evaluation.engine import check_batching
    from razorzoo.files import check_output_file

    check_batching(args.batch, args.workers, args.limit, prefix="--")
    if args.imagenet is None and (args.coco_ann is None or args.images is None):
        raise CLIError("pass --coco-ann JSON and --images DIR (a detector) or --imagenet DIR (a classifier)")
    if args.imagenet is not None and args.coco_ann is not None:
        raise CLIError("pass either COCO (--coco-ann, --images) or ImageNet (--imagenet), not both")
    _check_task(args)
    if args.imagenet is not None:
        from razorzoo.evaluation.imagenet import evaluate_imagenet, read_imagenet

        if args.save_json is not None:
            raise CLIError("--save-json keeps COCO detection results; a classifier's evaluation has none to keep")
        read_imagenet(args.imagenet, args.ann_file, limit=args.limit, skip_missing=args.skip_missing,
                      allow_outside=args.allow_outside)  # fail early
        model = _load(args, "classification")
        result = evaluate_imagenet(model, args.imagenet, ann_file=args.ann_file,
                                   batch=args.batch, workers=args.workers, limit=args.limit,
                                   skip_missing=args.skip_missing, allow_outside=args.allow_outside)
        metrics = {"top1": result.top1, "top5": result.top5}
    else:
        from razorzoo.evaluation.coco import evaluate_coco, read_coco, require_pycocotools

        require_pycocotools()  # the [coco] extra, before the model is downloaded
        _, images, _ = read_coco(args.coco_ann, args.images, limit=args.limit, skip_missing=args.skip_missing,
                                 allow_outside=args.allow_outside)  # fail early
        if args.save_json is not None:  # before the model loads and hours of inference run
            check_output_file(args.save_json, what="--save-json",
                              inputs=(args.coco_ann, args.name, args.weights, *(image.path for image in images)))
        model = _load(args, "detection")
        result = evaluate_coco(model, args.coco_ann, args.images, batch=args.batch, workers=args.workers,
                               limit=args.limit, skip_missing=args.skip_missing, save_json=args.save_json,
                               mmyolo_maxdets=args.mmyolo_maxdets, allow_outside=args.allow_outside)
        metrics = dict(result.stats)
    published = _published(args.name)
    if args.json:
        json.dump({"model": args.name, "runtime": getattr(model, "runtime", {"backend": "eager"}), **result.to_dict(),
                   "published": {k: published[v] / 100 for k, v in _PUBLISHED.items() if v in published}},
                  sys.stdout)
        print()
        return 0
    print(f"{'metric':<10} {'razorzoo':>9} {'published':>10}")
    for key, value in metrics.items():
        card_value = published.get(_PUBLISHED.get(key, ""))
        print(f"{key:<10} {percent(value):>9} {percent(card_value, scale=1):>10}")
    if any(value is None for value in metrics.values()):
        print("n/a: no ground truth of that kind among the evaluated images (e.g. no medium-sized object)")
    skipped = f", {len(result.skipped)} missing skipped" if result.skipped else ""
    print(f"{count(result.num_images, 'image')}{skipped}, {result.seconds_per_image * 1000:.1f} ms per image")
    other = getattr(result, "other_classes", {})  # COCO only
    if other:
        names = ", ".join(terminal_safe(name) for name in list(other)[:5]) + (", ..." if len(other) > 5 else "")
        print(f"{count(sum(other.values()), 'detection')} of classes the annotation file has no category for "
              f"({names}) were not scored; {count(result.num_detections, 'detection')} of its own classes were")
    return 0


def percent(value: float | None, *, scale: float = 100) -> str:
    """A metric in percent, or n/a where there is none (never pycocotools' -1 placeholder as a score)."""
    return "n/a" if value is None else f"{value * scale:.2f}"


def _check_task(args: argparse.Namespace) -> None:
    """The data options must fit what NAME is, said in the command's own terms before anything is downloaded."""
    from razorzoo.cli.predict import MODEL_KINDS, model_task

    task = model_task(args.name, args.weights if args.weights and args.weights.endswith(
        (".safetensors", ".onnx")) else None)
    if task == "detection" and args.imagenet is not None:
        raise CLIError(f"{args.name} is a detector: evaluate it on COCO with --coco-ann JSON --images DIR "
                       "(--imagenet is for classifiers)")
    if task == "classification" and args.imagenet is None:
        raise CLIError(f"{args.name} is a classifier: evaluate it on ImageNet with --imagenet DIR (--coco-ann and "
                       "--images are for detectors)")
    if task not in ("detection", "classification"):
        raise CLIError(f"{args.name} is a {MODEL_KINDS.get(task, task)}: val measures detectors (--coco-ann, --images)"
                       " and classifiers (--imagenet)")


def _load(args: argparse.Namespace, task: str):
    """The model to evaluate (it carries its own test pipeline)."""
    import razorzoo

    loader = razorzoo.load_detector if task == "detection" else razorzoo.load_classifier
    if args.weights is None:
        model = loader(args.name, backend=args.backend)
    elif args.weights.endswith(".safetensors"):
        model = loader(Path(args.weights), backend=args.backend)
    else:
        extra = {"detector": args.name} if task == "detection" else {}
        model = loader(Path(args.weights), subnet=args.name, backend=args.backend, **extra)
    return model


def _published(name: str) -> dict[str, float]:
    """The card's published metrics (percent), or nothing when ``name`` is not a registry name."""
    from razorzoo.errors import RazorzooError
    from razorzoo.zoo.registry import get_card

    if name.endswith(".safetensors") or name.startswith("hf-hub:"):
        return {}
    try:
        return get_card(name).metrics
    except RazorzooError:
        return {}
