"""``razorzoo push``: publish a searched subnet and its weights as a Hugging Face Hub repo."""
from __future__ import annotations

import argparse


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    push = subparsers.add_parser(
        "push",
        help="publish a subnet YAML + checkpoint to the Hugging Face Hub",
        description="Verify, convert and publish a searched subnet as a Hub repo (model.safetensors, config.json, "
                    "subnet.yaml, README.md card) in one commit; a trained run's best.safetensors publishes with its "
                    "classes and a card recording its training. Load it back with "
                    "razorzoo.load_detector('hf-hub:REPO').",
    )
    push.add_argument("repo", metavar="REPO", help="Hub repo id, org/name")
    push.add_argument("--weights", required=True, help="checkpoint trained for the subnet (.pth), or a razorzoo "
                                                       ".safetensors such as RUN/best.safetensors of razorzoo train")
    push.add_argument("--subnet", help="subnet YAML from the search (best_fix_subnet.yaml); not needed for a "
                                       "razorzoo .safetensors, which carries its own")
    push.add_argument("--base", help="registry entry the model follows (task, family, detector recipe), e.g. "
                                     "attentive_a6; default for a razorzoo .safetensors: its recipe's detector")
    push.add_argument("--metric", action="append", default=[], metavar="NAME=VALUE",
                      help="evaluation result for the card, repeatable (e.g. --metric box_ap=45.1)")
    push.add_argument("--constraint", help="the search constraint, recorded in the card (e.g. 'flops<=300M')")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", help="branch to commit to (default: the default branch)")
    push.add_argument("--onnx", action="store_true",
                      help="also export model.onnx (parity gate on) into the commit, for backend= loads")
    push.add_argument("--token", help="Hub token with write access (default: HF_TOKEN or the saved login)")
    push.set_defaults(handler=_push)


def _push(args: argparse.Namespace) -> int:
    from razorzoo.publish import push_to_hub

    url = push_to_hub(args.repo, subnet=args.subnet, weights=args.weights, base=args.base, token=args.token,
                      private=args.private, revision=args.revision, metrics=args.metric,
                      constraint=args.constraint, onnx=args.onnx)
    print(url)
    return 0
