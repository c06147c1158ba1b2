"""Loading and download speed, as ratios against their floors (issue 4, item 10).

Usage: python benchmarks/bench_loading.py [MODEL]   (default: yolov6s-attentive_a6, the largest detector)

1. fresh-process ``load_detector`` from a warm cache vs the floor ``python -c "import torch"`` + reading the
   converted safetensors file (target <= 1.3x);
2. in-process warm ``load_detector`` (target <= 0.15 s);
3. ``razorzoo.storage.fetch`` download throughput vs a plain HTTP client (urllib, 1 MiB reads written to a file) on the same
   local server (target >= 0.9x).

Everything runs against a local mirror (``tests/http_server.py``) in a temporary cache; 1 torch thread.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def _fresh(code: str, env: dict[str, str], runs: int = 5) -> float:
    """Best wall time of ``python -c code`` in a fresh process (best-of filters out the other users of the CPU)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "yolov6s-attentive_a6"
    import torch

    torch.set_num_threads(1)
    from http_server import FileServer, build_mirror

    with tempfile.TemporaryDirectory(prefix="razorzoo-bench-") as tmp:
        www, cards = build_mirror([model], tmp)
        with FileServer(www) as server:
            env = {**os.environ, "RAZORZOO_MIRROR": server.url, "RAZORZOO_CARDS": str(cards),
                   "RAZORZOO_CACHE": str(Path(tmp) / "cache"), "RAZORZOO_PROGRESS": "0", "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": str(ROOT)}
            os.environ.update(env)
            import razorzoo
            from razorzoo.storage.fetch import fetch
            from razorzoo.loading import download

            path = download(model)

            # 1. fresh process, warm cache
            load = _fresh(f"import torch; torch.set_num_threads(1); import razorzoo; "
                          f"razorzoo.load_detector({model!r}, offline=True)", env)
            floor = _fresh(f"import torch; from safetensors.torch import load_file; load_file({str(path)!r})", env)
            print(f"fresh-process load_detector({model!r}), warm cache: {load:.3f} s; floor (import torch + read "
                  f"{path.stat().st_size / 2**20:.0f} MiB safetensors): {floor:.3f} s; ratio {load / floor:.2f}x "
                  f"(target <= 1.3x)")

            # 2. in-process warm load
            razorzoo.load_detector(model, offline=True)
            times = []
            for _ in range(7):
                start = time.perf_counter()
                razorzoo.load_detector(model, offline=True)
                times.append(time.perf_counter() - start)
            print(f"in-process warm load_detector: median {statistics.median(times):.3f} s, best {min(times):.3f} s "
                  f"(target <= 0.15 s)")

            # 3. download throughput on the same local server
            blob = www / "blob.bin"
            blob.write_bytes(os.urandom(256 << 20))
            url = f"{server.url}/blob.bin"
            ours, plain = [], []
            for i in range(3):
                start = time.perf_counter()
                fetch(url, cache_dir=Path(tmp) / f"dl{i}", progress=False)
                ours.append(time.perf_counter() - start)
                start = time.perf_counter()
                with urllib.request.urlopen(url) as response, open(Path(tmp) / f"plain{i}.bin", "wb") as f:
                    for chunk in iter(lambda: response.read(1 << 20), b""):
                        f.write(chunk)
                plain.append(time.perf_counter() - start)
            mib = blob.stat().st_size / 2**20
            ours_speed, plain_speed = mib / min(ours), mib / min(plain)
            print(f"download {mib:.0f} MiB from 127.0.0.1: razorzoo.storage.fetch (hash + fsync + rename) "
                  f"{ours_speed:.0f} MiB/s, plain urllib {plain_speed:.0f} MiB/s; ratio {ours_speed / plain_speed:.2f}x "
                  f"(target >= 0.9x)")


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")  # the blob has no published hash: the pinning warning is expected
    main()
