"""``razorzoo val``: measure a zoo model on COCO val2017 or ImageNet val under the upstream test protocol.

Torch is imported only inside the handler (``razorzoo list`` builds this parser too).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from razorzoo.cli import CLIError

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
                        "docs/deploy.md)")
    data = p.add_argument_group("data (COCO for detectors, ImageNet for classifiers)")
    data.add_argument("--coco-ann", metavar="JSON", help="COCO annotation file, e.g. instances_val2017.json")
    data.add_argument("--images", metavar="DIR", help="folder of the COCO images, e.g. val2017/")
    data.add_argument("--imagenet", metavar="DIR", help="ImageNet val: one folder per class, or the root of --ann-file")
    data.add_argument("--ann-file", metavar="TXT", help="with --imagenet: lines 'relative/path label' (meta/val.txt)")
    p.add_argument("--batch", type=int, default=1, metavar="N", help="images per forward pass (default 1)")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="image-decoding threads (default 2)")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N images")
    p.add_argument("--skip-missing", action="store_true", help="leave out listed images that are not on disk")
    p.add_argument("--save-json", metavar="PATH", help="write the COCO results list (image_id, category_id, bbox "
                                                       "xywh, score); kept, valid, if interrupted")
    p.add_argument("--mmyolo-maxdets", action="store_true",
                   help="AP50/AP75/AP_s/m/l at 10 detections per image, as MMYOLO's logs (proposal_nums=(100,1,10))")
    p.add_argument("--json", action="store_true", help="print one JSON object (metrics as fractions)")
    p.set_defaults(handler=_val)


def _val(args: argparse.Namespace) -> int:
    for flag in ("batch", "workers", "limit"):
        value = getattr(args, flag)
        if value is not None and value < (0 if flag == "workers" else 1):
            raise CLIError(f"--{flag} must be at least {0 if flag == 'workers' else 1}, got {value}")
    if args.imagenet is None and (args.coco_ann is None or args.images is None):
        raise CLIError("pass --coco-ann JSON and --images DIR (a detector) or --imagenet DIR (a classifier)")
    if args.imagenet is not None and args.coco_ann is not None:
        raise CLIError("pass either COCO (--coco-ann, --images) or ImageNet (--imagenet), not both")
    if args.imagenet is not None:
        from razorzoo.evaluation.imagenet import evaluate_imagenet, read_imagenet

        read_imagenet(args.imagenet, args.ann_file, limit=args.limit, skip_missing=args.skip_missing)  # fail early
        model = _load(args, "classification")
        result = evaluate_imagenet(model, args.imagenet, ann_file=args.ann_file,
                                   batch=args.batch, workers=args.workers, limit=args.limit,
                                   skip_missing=args.skip_missing)
        metrics = {"top1": result.top1, "top5": result.top5}
    else:
        from razorzoo.evaluation.coco import evaluate_coco, read_coco

        read_coco(args.coco_ann, args.images, limit=args.limit, skip_missing=args.skip_missing)  # fail early
        model = _load(args, "detection")
        result = evaluate_coco(model, args.coco_ann, args.images, batch=args.batch, workers=args.workers,
                               limit=args.limit, skip_missing=args.skip_missing, save_json=args.save_json,
                               mmyolo_maxdets=args.mmyolo_maxdets)
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
        print(f"{key:<10} {value * 100:9.2f} {'' if card_value is None else f'{card_value:.2f}':>10}")
    skipped = f", {len(result.skipped)} missing skipped" if result.skipped else ""
    print(f"{result.num_images} images{skipped}, {result.seconds_per_image * 1000:.1f} ms per image")
    return 0


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
