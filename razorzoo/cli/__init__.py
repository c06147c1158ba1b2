"""``razorzoo`` command line.

Each command group lives in its own module and registers its subcommands through ``add_parsers(subparsers)``;
a handler receives the parsed ``argparse.Namespace`` and returns an exit code. Handlers let ``RazorzooError``s (and
their own ``CLIError``s) propagate: ``main`` prints them as one line, exit code 2. Modules are imported only to build
the parser, so they must not import torch at module level (``razorzoo list`` must stay fast).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from razorzoo.version import __version__
from razorzoo.bounded import terminal_safe
from razorzoo.errors import RazorzooError

# modules that contribute subcommands, in help order
COMMAND_MODULES = (
    "razorzoo.cli.browse",  # list, show, search, cards build
    "razorzoo.cli.pipeline",  # download, cache
    "razorzoo.cli.convert",  # verify, convert
    "razorzoo.cli.predict",  # predict
    "razorzoo.cli.export",  # export
    "razorzoo.cli.val",  # val
    "razorzoo.cli.hub",  # push
    "razorzoo.cli.specialize",  # specialize
    "razorzoo.cli.train",  # train
    "razorzoo.cli.mirror",  # mirror, demo
)


class CLIError(Exception):
    """A user-facing error: printed as ``razorzoo: error: <message>`` with exit code 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="razorzoo", description="MMRazor NAS models as pure-PyTorch, in one line.")
    parser.add_argument("--version", action="version", version=f"razorzoo {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parsers(subparsers)
    return parser


def print_error(exc: BaseException) -> None:
    """``razorzoo: error: <exc>`` on stderr: one line, and nothing a card, a server, a path or a file name put in the
    message may drive the terminal."""
    print(f"razorzoo: error: {' '.join(terminal_safe(str(exc)).split())}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except (CLIError, RazorzooError) as exc:
        # one line, and nothing a card, a server or a file name put in the message may drive the terminal
        print_error(exc)
        return 2
    except KeyboardInterrupt:
        print("razorzoo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `razorzoo show NAME | head`: the reader left; not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # keep the interpreter's final flush from raising again
        return 0
