"""``razorzoo train``: train or fine-tune a detector on COCO-format data with its MMYOLO recipe, into RUN/."""
from __future__ import annotations

import argparse
import sys


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune or train a NAS-backbone detector on your COCO-format data (MMYOLO's recipes)",
        description="Train with the detector recipe's data pipeline, optimizer, schedule and EMA (docs/train.md). "
                    "Start from a registry detector, a converted file or hf-hub:ID (fine-tuning; the head takes the "
                    "dataset's classes), or from a custom subnet: --subnet YAML --detector RECIPE "
                    "--backbone-weights SUPERNET_OR_SUBNET.pth. RUN/ gets last.safetensors and best.safetensors "
                    "(EMA weights, loadable with load_detector), settings.json, log.jsonl and a resumable "
                    "state.safetensors. Several processes: torchrun --nproc-per-node N -m razorzoo train ...",
    )
    parser.add_argument("model", nargs="?", metavar="MODEL", help="registry detector, .safetensors/.pth file or "
                                                                  "hf-hub:org/name (omit with --subnet or --resume)")
    parser.add_argument("--coco-ann", metavar="JSON", help="training annotations (COCO format)")
    parser.add_argument("--images", metavar="DIR", help="folder the training annotations' file names are in")
    parser.add_argument("--val-ann", metavar="JSON", help="validation annotations: COCO AP on the EMA weights")
    parser.add_argument("--val-images", metavar="DIR", help="folder of the validation images")
    parser.add_argument("-o", "--out", required=True, metavar="RUN", help="the run's folder (new, or --resume)")
    parser.add_argument("--subnet", metavar="YAML", help="a searched subnet (e.g. best_fix_subnet.yaml), or the "
                                                         "subnet of an OpenMMLab .pth MODEL")
    parser.add_argument("--detector", metavar="RECIPE", help="recipe for --subnet: yolov5_s, yolov6_l_d12, "
                                                             "rtmdet_tiny, or a registry detector's name")
    parser.add_argument("--backbone-weights", metavar="PTH", help="the subnet's weights: a supernet checkpoint "
                                                                  "(sliced) or a subnet checkpoint")
    parser.add_argument("--epochs", type=int, help="epochs (default: the recipe's, 300)")
    parser.add_argument("--batch", type=int, help="images per batch per process (default: the recipe's)")
    parser.add_argument("--workers", type=int, help="data loading processes (default: the recipe's, at most the "
                                                    "CPU count)")
    parser.add_argument("--lr", type=float, help="base learning rate (default: the recipe's)")
    parser.add_argument("--img-size", type=int, metavar="PIXELS", help="training canvas, a multiple of 32 (default: "
                                                                       "the recipe's, 640 or 960); the model then "
                                                                       "predicts at this size")
    parser.add_argument("--warmup-iters", type=int, metavar="ITERS", help="learning-rate warm-up (default: the "
                                                                          "recipe's, at least 1000 iterations)")
    parser.add_argument("--num-classes", type=int, help="expected number of categories in --coco-ann (checked)")
    parser.add_argument("--seed", type=int, default=0, help="data order and augmentation seed (default 0)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:K (default cpu)")
    parser.add_argument("--amp", action="store_true", help="mixed precision (CUDA)")
    parser.add_argument("--clip-grad", type=float, metavar="NORM", help="clip the gradients' total norm")
    parser.add_argument("--val-interval", type=int, metavar="EPOCHS", help="validate every this many epochs "
                                                                           "(default: the recipe's, 10)")
    parser.add_argument("--log-interval", type=int, default=50, metavar="ITERS",
                        help="iterations between log.jsonl records (default 50)")
    parser.add_argument("--tensorboard", action="store_true", help="also log to RUN/tensorboard (needs "
                                                                   "razorzoo[tensorboard])")
    parser.add_argument("--resume", action="store_true", help="continue the run in RUN/ where it stopped")
    parser.add_argument("--force", action="store_true", help="write a new run into a folder holding other files")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    from razorzoo.training.trainer import TrainingInterrupted, train

    try:  # MODEL is read as the loaders read strings: a path by its spelling, else a registry name or hf-hub: id
        result = train(args.model, coco_ann=args.coco_ann, images=args.images, output=args.out, val_ann=args.val_ann,
                       val_images=args.val_images, subnet=args.subnet, detector=args.detector,
                       backbone_weights=args.backbone_weights, epochs=args.epochs, batch=args.batch,
                       workers=args.workers, lr=args.lr, img_size=args.img_size, warmup_iters=args.warmup_iters,
                       num_classes=args.num_classes,
                       seed=args.seed,
                       device=args.device, resume=args.resume, amp=args.amp, clip_grad=args.clip_grad,
                       val_interval=args.val_interval, log_interval=args.log_interval, tensorboard=args.tensorboard,
                       force=args.force,
                       progress=False if args.quiet else None)
    except TrainingInterrupted as exc:
        print(f"razorzoo: {exc}", file=sys.stderr)
        return 130
    best = f", best AP {result.best_ap:.3f} -> {result.best}" if result.best is not None else ""
    print(f"{result.run_dir}: {result.epochs} epochs, last weights {result.last}{best}")
    return 0
