"""``razorzoo verify | convert``: check a subnet YAML against a checkpoint, turn the pair into ``model.safetensors``.

Torch is imported only inside the handlers (``razorzoo list`` builds this parser too).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from razorzoo.cli import CLIError
from razorzoo.arch.spec import TASKS


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "verify", help="check that a subnet YAML and a checkpoint belong together",
        description="Compare the tensors a subnet YAML needs with those a checkpoint holds, and report differences "
                    "in YAML terms (op choices, kernel sizes, depths, widths). Exit code 0: they match (a supernet "
                    "checkpoint matches when the subnet extracted from it does); 1: they do not.",
    )
    p.add_argument("name", nargs="?", help="registry name: download its YAML and weights and check them")
    p.add_argument("--subnet", metavar="YAML", help="subnet YAML file (or a registry name whose YAML to use)")
    p.add_argument("--weights", metavar="CHECKPOINT", help="checkpoint file (.pth of any OpenMMLab layout)")
    _add_arch_arguments(p)
    p.set_defaults(handler=_verify)

    p = subparsers.add_parser(
        "convert", help="convert a checkpoint + subnet YAML into a standalone model.safetensors",
        description="Verify the pair, extract the subnet from a supernet checkpoint if needed, and write the "
                    "inference weights with the metadata that rebuilds the model "
                    "(razorzoo.load_detector('OUT') etc.).",
    )
    p.add_argument("weights", metavar="CHECKPOINT", help="checkpoint file (.pth of any OpenMMLab layout)")
    p.add_argument("--subnet", metavar="YAML", required=True, help="subnet YAML file, or a registry name")
    p.add_argument("-o", "--output", metavar="OUT", required=True, help="output .safetensors file")
    p.add_argument("--name", default="", help="registry name to record in the file's metadata")
    p.add_argument("--source-url", default="", help="where the checkpoint came from (recorded in the metadata)")
    p.add_argument("--keep-ema", action="store_true",
                   help="also store ema_state_dict (raw training weights) under 'ema_state_dict.*'")
    _add_arch_arguments(p)
    p.set_defaults(handler=_convert)


def _add_arch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=TASKS,
                   help="what the weights are for (default: detection with --detector, else classification)")
    p.add_argument("--detector", metavar="RECIPE_OR_NAME",
                   help="neck/head recipe (e.g. rtmdet_tiny) or a detection model name whose recipe to use")


def _spec(subnet: str, args: argparse.Namespace, default_task: str | None = None):
    from razorzoo.builder import resolve_spec

    task = args.task or ("detection" if args.detector else default_task or "classification")
    return resolve_spec(subnet, task, detector=args.detector)


def _file_pair(args: argparse.Namespace, weights: Path, *, ema: bool = False):
    """``--subnet`` + a checkpoint file -> (spec, checkpoint). Without ``--task``/``--detector``, a checkpoint that
    holds a detector head is checked as that detector, and the choice is printed (stderr: stdout stays the result)."""
    from razorzoo.weights.checkpoint import read_checkpoint
    from razorzoo.weights.verify import detect_recipe

    if not weights.is_file():
        raise CLIError(f"checkpoint {weights} does not exist")
    _spec(args.subnet, args)  # a mistyped --subnet or --detector fails before a large checkpoint is read
    checkpoint = read_checkpoint(weights, ema=ema)
    if args.task is None and args.detector is None:
        recipe = detect_recipe(checkpoint)
        if recipe is not None:
            print(f"the checkpoint holds a {recipe} detector head: checking it as that detector "
                  "(--detector or --task to choose otherwise)", file=sys.stderr)
            args = argparse.Namespace(**{**vars(args), "detector": recipe})
    return _spec(args.subnet, args), checkpoint


def _verify(args: argparse.Namespace) -> int:
    from razorzoo.weights.verify import verify_pair

    if args.name and (args.subnet or args.weights):
        raise CLIError("give either a registry NAME or --subnet and --weights, not both")
    if args.name:
        spec, weights = _registry_pair(args)
    elif args.subnet and args.weights:
        spec, weights = _file_pair(args, Path(args.weights))
    else:
        raise CLIError("verify needs a registry NAME, or both --subnet YAML and --weights CHECKPOINT")
    report = verify_pair(spec, weights)
    print(report, file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


def _registry_pair(args: argparse.Namespace):
    """The card's shipped YAML and its downloaded (cached, hash-checked) weights."""
    from razorzoo.storage.fetch import fetch
    from razorzoo.zoo.registry import get_card

    card = get_card(args.name)
    if card.weights is None:
        raise CLIError(f"{card.name!r} has no published weights to verify")
    task = args.task or ("detection" if card.task == "detection" else "classification")
    spec = _spec(card.name, argparse.Namespace(task=task, detector=args.detector))
    return spec, fetch(card.weights.url, sha256=card.weights.sha256, size=card.weights.size)


def _convert(args: argparse.Namespace) -> int:
    from razorzoo.storage.fetch import sha256_of_file
    from razorzoo.weights.convert import check_output, convert_checkpoint

    weights = Path(args.weights)
    check_output(args.output, weights)
    spec, checkpoint = _file_pair(args, weights, ema=args.keep_ema)
    subnet_path = Path(args.subnet)
    output = convert_checkpoint(
        checkpoint, spec, args.output, name=args.name, source_url=args.source_url,
        source_sha256=sha256_of_file(weights), keep_ema=args.keep_ema,
        subnet_yaml=subnet_path.read_text() if subnet_path.is_file() else None,
    )
    print(f"wrote {output} ({spec.task}, {spec.subnet.family} subnet"
          f"{', recipe ' + spec.recipe if spec.recipe else ''})")
    return 0
