"""The README's main job on a fresh machine without internet: one line from a registry name to detections.

This is ``razorzoo demo`` (razorzoo/cli/mirror.py) on the README's detector and the test suite's street image:
download.openmmlab.com is replaced by a local mirror serving demo weights in the real upstream layout (MMYOLO publish
format; the real weights cannot be downloaded here) with card copies whose hashes match them, then::

    detector = razorzoo.load_detector("yolov6s-attentive_a6")   # cold: download, verify, convert, load
    detector = razorzoo.load_detector("yolov6s-attentive_a6")   # warm: from the cache, no network
    detector.predict("image.png")

Run: ``python conversion/demo.py`` (about 10 s). The weights are untrained, so the boxes are meaningless; the point is
the path and the timings. An installed razorzoo runs the same with ``razorzoo demo``.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = "yolov6s-attentive_a6"


def main() -> int:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    import torch

    from razorzoo.cli import main as razorzoo

    torch.set_num_threads(1)
    return razorzoo(["demo", MODEL, "--image", str(ROOT / "tests" / "data" / MODEL / "image.png")])


if __name__ == "__main__":
    sys.exit(main())
