"""``razorzoo specialize``: search a subnet of a supernet for a budget on this machine, calibrate it, write OUT/."""
from __future__ import annotations

import argparse
import sys


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "specialize",
        help="search a supernet for your FLOPs / params / latency budget and your images",
        description="Evolution search (as MMRazor's) in the AttentiveNAS or OFA supernet: every candidate meets the "
                    "budget, is BN-calibrated on --calib and scored by top-1 on --val (class folders named by "
                    "ImageNet class index, e.g. 281/cat.jpg). OUT/ gets subnet.yaml, a calibrated model.safetensors, "
                    "a model card, the Pareto front (pareto.json, pareto.png) and a resumable search state. "
                    "No retraining: accuracy is the supernet's, estimated on your images.",
    )
    parser.add_argument("supernet", metavar="SUPERNET", help="attentive_supernet or ofa_supernet")
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--latency", metavar="MS", help="latency budget on this machine, e.g. 12ms")
    budget.add_argument("--flops", metavar="N", help="FLOPs (multiply-accumulates) budget, e.g. 300M")
    budget.add_argument("--params", metavar="N", help="parameter budget, e.g. 5M")
    parser.add_argument("--calib", required=True, metavar="DIR", help="images for BatchNorm calibration")
    parser.add_argument("--val", required=True, metavar="DIR", help="validation ImageFolder: <class index>/<image>")
    parser.add_argument("-o", "--out", required=True, metavar="OUT", help="output directory")
    parser.add_argument("--weights", metavar="PTH", help="a local copy of the supernet checkpoint (default: download)")
    parser.add_argument("--population", type=int, default=50, help="candidates per generation (default 50)")
    parser.add_argument("--generations", type=int, default=20, help="generations (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--resolution", type=int, default=224, help="input size searched at (default 224)")
    parser.add_argument("--calib-images", type=int, default=2000, help="at most this many calibration images")
    parser.add_argument("--backend", default="torch", help="latency backend (default torch: eager PyTorch, CPU)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads to measure and run with")
    parser.add_argument("--profile", metavar="JSON", help="device profile to reuse and extend "
                                                          "(default OUT/device_profile.json)")
    parser.add_argument("--resume", action="store_true", help="continue the search saved in OUT/search_state.json")
    parser.add_argument("--force", action="store_true",
                        help="write into OUT even if it holds files an earlier `razorzoo specialize` did not write "
                             "(files of the same name are replaced)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(handler=_specialize)


def _specialize(args: argparse.Namespace) -> int:
    from razorzoo import constants
    from razorzoo.bounded import check_number
    from razorzoo.search.specialize import Constraint, specialize

    from razorzoo.search.evolution import MAX_GENERATIONS, MAX_POPULATION
    from razorzoo.search.specialize import MAX_CALIB_IMAGES, MAX_RESOLUTION, MIN_RESOLUTION

    for name, low, high in (("population", 1, MAX_POPULATION), ("generations", 1, MAX_GENERATIONS),
                            ("resolution", MIN_RESOLUTION, MAX_RESOLUTION), ("calib_images", 1, MAX_CALIB_IMAGES)):
        check_number(getattr(args, name), f"--{name.replace('_', '-')}", minimum=low, maximum=high, integer=True)
    constants.check_threads(args.threads, "--threads")
    metric = next(m for m in ("latency", "flops", "params") if getattr(args, m) is not None)
    constraint = Constraint.parse(metric, getattr(args, metric))
    progress = (lambda message: None) if args.quiet else (lambda message: print(message, file=sys.stderr))
    result = specialize(args.supernet, constraint, calib=args.calib, val=args.val, out=args.out,
                        weights=args.weights, population=args.population, generations=args.generations,
                        seed=args.seed, resolution=args.resolution, calib_images=args.calib_images,
                        backend=args.backend, threads=args.threads, profile=args.profile, resume=args.resume,
                        force=args.force, progress=progress)
    predicted = f" (predicted {result.predicted_latency_ms:.2f} ms)" if result.predicted_latency_ms is not None else ""
    print(f"{result.out}: top-1 {result.top1:.2f}% on your images, {result.flops / 1e6:.1f} MFLOPs, "
          f"{result.params / 1e6:.2f} M params, {result.latency_ms:.2f} ms end to end{predicted}")
    if not result.budget_met:
        budget = result.summary["budget"]
        print(f"razorzoo: warning: the budget {budget['constraint']} is missed: {budget['measured']:.2f} ms "
              f"{budget['measured_by']} (no finalist met it when timed; its README.md says so); raise the budget or "
              "search again", file=sys.stderr)
    return 0
