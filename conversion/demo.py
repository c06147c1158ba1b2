"""The README's main job on a fresh machine without internet: one line from a registry name to detections.

download.openmmlab.com is replaced by a local mirror: checkpoints in the real upstream layout (MMYOLO publish format,
fixture-rule weights from ``tests/checkpoints.py``, since the real weights cannot be downloaded here), served by a real
HTTP server on 127.0.0.1, with card copies whose hashes match them (``RAZORZOO_CARDS``). Then::

    detector = razorzoo.load_detector("yolov6s-attentive_a6")   # cold: download, verify, convert, load
    detector = razorzoo.load_detector("yolov6s-attentive_a6")   # warm: from the cache, no network
    detector.predict("image.png")

Run: ``python conversion/demo.py`` (about 10 s). The weights are synthetic, so the boxes are meaningless; the point is
the path and the timings.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = "yolov6s-attentive_a6"


def main() -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import torch

    torch.set_num_threads(1)
    from http_server import FileServer, build_mirror

    with tempfile.TemporaryDirectory(prefix="razorzoo-demo-") as tmp:
        start = time.perf_counter()
        www, cards = build_mirror([MODEL], tmp)
        print(f"mirror with {MODEL} in the MMYOLO publish layout: {time.perf_counter() - start:.2f} s")
        with FileServer(www) as server:
            os.environ.update(RAZORZOO_MIRROR=server.url, RAZORZOO_CARDS=str(cards),
                              RAZORZOO_CACHE=str(Path(tmp) / "cache"))
            import razorzoo

            start = time.perf_counter()
            razorzoo.load_detector(MODEL)
            cold = time.perf_counter() - start
            print(f"cold load (download + verify + convert + build): {cold:.2f} s, {len(server.requests)} requests")
            start = time.perf_counter()
            detector = razorzoo.load_detector(MODEL, offline=True)
            warm = time.perf_counter() - start
            print(f"warm load (offline, from the cache): {warm:.3f} s ({cold / warm:.0f}x faster), "
                  f"{len(server.requests)} requests in total")
            image = ROOT / "tests" / "data" / MODEL / "image.png"
            start = time.perf_counter()
            detections = detector.predict(str(image))
            print(f"predict({image.name}): {len(detections.scores)} boxes in {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
