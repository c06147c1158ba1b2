"""``razorzoo mirror`` and ``razorzoo demo``: the whole path without download.openmmlab.com.

``mirror DIR NAME...`` writes demo weights in the real OpenMMLab layouts plus card copies that trust them
(:func:`razorzoo.storage.mirror.build_mirror`); ``mirror DIR --serve`` serves a mirror (the demo's, or real files laid
out by their URL paths) on this machine. ``demo [NAME]`` does both in a temporary directory and runs a cold load, a
warm (offline) load and ``predict``. Torch is imported only inside the handlers.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from razorzoo import constants
from razorzoo.bounded import safe_repr, terminal_safe
from razorzoo.cli import CLIError
from razorzoo.wording import count

DEMO_MODEL = "yolov6s-attentive_a6"  # the README's first example


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "mirror", help="write or serve a local copy of download.openmmlab.com (demo weights, or your own files)",
        description="Write demo weights (deterministic and untrained: for trying the path, not for predictions) for "
                    "registry models in their real OpenMMLab checkpoint layouts under DIR/www, at the paths of their "
                    "card URLs, and copies of their cards whose sha256 values match under DIR/cards. With --serve, "
                    "serve DIR/www (or DIR, e.g. real .pth files laid out by their URL paths) on this machine; then "
                    "RAZORZOO_MIRROR=URL (and RAZORZOO_CARDS=DIR/cards for demo weights) makes every download "
                    "come from it.",
    )
    p.add_argument("dir", metavar="DIR", help="the mirror directory (created if missing)")
    p.add_argument("names", metavar="NAME", nargs="*", help="registry names or aliases to write demo weights for")
    p.add_argument("--all", action="store_true", help="every model of the zoo (about 430 MB)")
    p.add_argument("--serve", action="store_true", help="serve the mirror over HTTP until Ctrl-C")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=0, help="port to serve on (default: a free one)")
    p.set_defaults(handler=_mirror)

    p = subparsers.add_parser(
        "demo", help="try the whole path offline: local mirror, download, verify, convert, load, predict",
        description="Write demo weights for NAME in its real OpenMMLab layout, serve them from a local mirror, load "
                    "the model by name twice (cold: download, hash check, verify, convert; warm: offline, from the "
                    "cache) and run predict, all in a temporary directory. The weights are untrained: the "
                    "predictions mean nothing; the point is the path and its timings.",
    )
    p.add_argument("name", metavar="NAME", nargs="?", default=DEMO_MODEL,
                   help=f"a detector or classifier of the zoo (default {DEMO_MODEL})")
    p.add_argument("--image", metavar="IMAGE", help="image to predict on (default: a generated test pattern)")
    p.set_defaults(handler=_demo)


def _mirror(args: argparse.Namespace) -> int:
    from razorzoo.storage.mirror import CARDS_DIR, WWW_DIR, MirrorServer, build_mirror
    from razorzoo.zoo.registry import list_models

    if not (args.names or args.all or args.serve):
        raise CLIError("give the models to write demo weights for (NAME ... or --all), or --serve to serve DIR")
    if args.names and args.all:
        raise CLIError("give either NAME ... or --all, not both")
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port must be 0..65535, got {args.port}")
    root = Path(args.dir)
    if args.names or args.all:
        names = list_models() if args.all else args.names
        mirror = build_mirror(root, names, progress=lambda message: print(terminal_safe(message), file=sys.stderr))
        print(terminal_safe(f"wrote {count(len(mirror.files), 'file')} ({mirror.size / 1e6:.1f} MB) for "
                            f"{count(len(mirror.names), 'model')} to {mirror.www}, and matching cards to "
                            f"{mirror.cards}"))
        print("demo weights: deterministic and untrained; use them to try the path, not for predictions")
    www = root / WWW_DIR if (root / WWW_DIR).is_dir() else root
    cards = root / CARDS_DIR
    if not args.serve:
        print(terminal_safe(f"serve it with: razorzoo mirror {root} --serve"))
        return 0
    server = MirrorServer(www, host=args.host, port=args.port)
    print(terminal_safe(f"serving {www} at {server.url} (Ctrl-C stops); in another shell:"))
    if cards.is_dir():
        print(terminal_safe(f"  export RAZORZOO_CARDS={cards.resolve()}"))
    print(terminal_safe(f"  export RAZORZOO_MIRROR={server.url}"))
    sys.stdout.flush()
    server.serve_forever()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from razorzoo.storage.mirror import MirrorServer, build_mirror
    from razorzoo.zoo.registry import get_card

    card = get_card(args.name)
    if card.task == "supernet":
        raise CLIError(f"{card.name} is a supernet, which is sliced, not loaded; try a model sliced from it, e.g. "
                       "razorzoo demo attentive_a3")
    image, label = _test_pattern(), "a test pattern"
    if args.image is not None:  # decoded now: a path that is not an image must not cost the mirror and the loads
        from razorzoo.detection.transforms import load_image

        if not Path(args.image).is_file():
            problem = "not a regular file" if Path(args.image).exists() else "no such file"
            raise CLIError(f"--image {safe_repr(args.image)}: {problem}")
        image, label = load_image(args.image), Path(args.image).name
    import razorzoo

    print(f"razorzoo demo: {card.name} ({card.task}) with demo weights, through a local mirror, in a temporary "
          "directory")
    print("  the weights are untrained: the predictions mean nothing; the point is the path and its timings")
    load = razorzoo.load_detector if card.task == "detection" else razorzoo.load_classifier
    with tempfile.TemporaryDirectory(prefix="razorzoo-demo-") as tmp:
        cache = Path(tmp) / "cache"
        start = time.perf_counter()
        mirror = build_mirror(Path(tmp) / "mirror", [card.name])
        print(f"  mirror: {count(len(mirror.files), 'file')}, {mirror.size / 1e6:.1f} MB, in the "
              f"{card.weights.layout} layout: {time.perf_counter() - start:.2f} s")
        with constants.environment(RAZORZOO_CARDS=str(mirror.cards)):  # the demo weights' hashes
            with MirrorServer(mirror.www) as server, constants.environment(RAZORZOO_MIRROR=server.url):
                start = time.perf_counter()
                load(card.name, cache_dir=cache, offline=False)  # the loopback mirror, whatever RAZORZOO_OFFLINE says
                cold = time.perf_counter() - start
                print(f"  cold load (download, hash check, verify, convert, build): {cold:.2f} s")
            start = time.perf_counter()
            model = load(card.name, cache_dir=cache, offline=True)  # the server is gone: only the cache serves this
            warm = time.perf_counter() - start
            print(f"  warm load (offline, from the cache): {warm:.3f} s ({cold / warm:.0f}x faster)")
            start = time.perf_counter()
            result = model.predict(image)
            took = time.perf_counter() - start
    _print_prediction(label, result, took)
    print(f"next: razorzoo download {card.name} fetches the real weights (README: \"Weights without "
          "download.openmmlab.com\" if that host is out of reach)")
    return 0


def _print_prediction(label: str, result: Any, seconds: float) -> None:
    if hasattr(result, "boxes"):
        print(terminal_safe(f"  predict({label}): {count(len(result), 'detection')} in {seconds:.2f} s"))
        for name, score in list(zip(result.names, result.scores.tolist()))[:3]:
            print(f"    {name:<16} {score:.3f}")
    else:
        print(terminal_safe(f"  predict({label}): top {len(result.indices)} in {seconds:.2f} s"))
        for name, prob in list(zip(result.names, result.probs))[:3]:
            print(f"    {name:<28} {prob:.3f}")


def _test_pattern() -> Any:
    """A 640 x 480 BGR image with a few filled shapes: something for the model to look at, the same every run."""
    import cv2
    import numpy as np

    y, x = np.mgrid[0:480, 0:640]
    image = np.stack([(x * 255 // 639), (y * 255 // 479), np.full_like(x, 96)], axis=-1).astype(np.uint8)
    cv2.rectangle(image, (60, 80), (260, 400), (40, 40, 220), -1)
    cv2.circle(image, (450, 240), 110, (220, 180, 30), -1)
    return image
