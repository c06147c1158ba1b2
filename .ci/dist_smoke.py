"""Smoke test of an INSTALLED razorzoo (wheel or sdist in a fresh venv), run from outside the checkout.

Checks what a user who installs from an index gets: the whole zoo, card rendering, an architecture build, and a
full load through a local mirror made and served by the package itself (``razorzoo mirror``: demo weights in the
real OpenMMLab layout on 127.0.0.1), then ``razorzoo demo``; nothing of the checkout's tests/ is importable.
Usage: ``VENV/bin/python .ci/dist_smoke.py`` (any working directory).
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
    from importlib.metadata import metadata

    urls = dict(entry.split(", ", 1) for entry in metadata("razorzoo").get_all("Project-URL") or [])
    assert {"Documentation", "Source", "Issues"} <= set(urls), f"project URLs missing: {urls}"
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

    # weights without download.openmmlab.com, with what the package ships alone (tests/ is not on the path):
    # `razorzoo mirror` writes demo weights in the real layout, `--serve` serves them, `download` converts them
    assert not any(Path(p).resolve() == REPO / "tests" for p in sys.path if p)
    model = "yolov5s-spos_0.33M"
    with tempfile.TemporaryDirectory() as tmp:
        mirror, cache = Path(tmp) / "mirror", Path(tmp) / "cache"
        subprocess.run([str(exe), "mirror", str(mirror), model], capture_output=True, text=True, check=True)
        server = subprocess.Popen([str(exe), "mirror", str(mirror), "--serve"], stdout=subprocess.PIPE, text=True)
        try:
            url = next(line.split("=", 1)[1].strip() for line in server.stdout if "RAZORZOO_MIRROR=" in line)
            env = {**os.environ, "RAZORZOO_MIRROR": url, "RAZORZOO_CARDS": str(mirror / "cards"),
                   "RAZORZOO_CACHE": str(cache), "RAZORZOO_PROGRESS": "0"}
            converted = subprocess.run([str(exe), "download", model], capture_output=True, text=True, check=True,
                                       env=env).stdout.strip()
        finally:
            server.terminate()
            server.wait()
        assert Path(converted).is_file() and cache in Path(converted).parents, converted
        saved = dict(os.environ)
        os.environ.update(RAZORZOO_CARDS=str(mirror / "cards"), RAZORZOO_CACHE=str(cache))
        detections = razorzoo.load_detector(model, offline=True).predict(_test_pattern())
        os.environ.clear()
        os.environ.update(saved)
    demo = subprocess.run([str(exe), "demo", "ofa_lat31"], capture_output=True, text=True)
    assert demo.returncode == 0, demo.stderr
    demo = demo.stdout
    assert "warm load (offline, from the cache)" in demo and "predict(a test pattern): top 5" in demo, demo
    print(f"installed razorzoo {razorzoo.__version__} at {where.parent}: {len(names)} models, "
          f"load through `razorzoo mirror --serve` -> {len(detections.scores)} detections; `razorzoo demo` ran")


def _test_pattern():
    import numpy as np

    return np.full((480, 640, 3), 128, dtype=np.uint8)


if __name__ == "__main__":
    main()
