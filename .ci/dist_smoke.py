"""Smoke test of an INSTALLED razorzoo (wheel or sdist in a fresh venv), run from outside the checkout.

Checks what a user who installs from an index gets: the whole zoo, card rendering, an architecture build, and a
full load through a local mirror (fixture weights in the real OpenMMLab layout, served on 127.0.0.1 by the test
suite's own HTTP server). Usage: ``VENV/bin/python .ci/dist_smoke.py`` (any working directory).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    os.chdir(tempfile.mkdtemp(prefix="razorzoo-dist-"))  # never import the checkout's razorzoo
    sys.path[:] = [p for p in sys.path if p not in ("", str(REPO))]
    import razorzoo
    from razorzoo.zoo.registry import list_models

    where = Path(razorzoo.__file__).resolve()
    assert REPO not in where.parents, f"imported the checkout, not the installed package: {where}"
    assert (where.parent / "py.typed").is_file(), "py.typed is missing"
    names = list_models()
    shipped = sorted(p.stem for p in (REPO / "cards").glob("*.md"))
    assert sorted(names) == shipped, f"installed zoo {sorted(names)} != cards/ {shipped}"

    exe = Path(sys.executable).parent / "razorzoo"
    listing = subprocess.run([str(exe), "list"], capture_output=True, text=True, check=True).stdout
    assert all(name in listing for name in shipped), listing
    shown = subprocess.run([str(exe), "show", "yolov6s-attentive_a6"], capture_output=True, text=True, check=True)
    assert "yolov6s-attentive_a6" in shown.stdout

    detector = razorzoo.build_detector("rtmdet_tiny-ofa_lat31")
    assert sum(p.numel() for p in detector.parameters()) > 0

    sys.path.insert(0, str(REPO / "tests"))  # the test suite's mirror builder and HTTP server
    from http_server import FileServer, build_mirror

    model = "yolov5s-spos_0.33M"
    with tempfile.TemporaryDirectory() as tmp:
        www, cards = build_mirror([model], tmp)
        with FileServer(www) as server:
            os.environ.update(RAZORZOO_MIRROR=server.url, RAZORZOO_CARDS=str(cards), HF_HUB_DISABLE_PROGRESS_BARS="1",
                              RAZORZOO_CACHE=str(Path(tmp) / "cache"))
            detections = razorzoo.load_detector(model).predict(str(REPO / "tests" / "data" / model / "image.png"))
    print(f"installed razorzoo {razorzoo.__version__} at {where.parent}: {len(names)} models, "
          f"load through a local mirror -> {len(detections.scores)} detections")


if __name__ == "__main__":
    main()
