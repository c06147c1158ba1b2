"""Start-up time of ``razorzoo list`` in a fresh process (target 0.3 s on an idle machine).

Usage: python benchmarks/bench_list.py [RUNS]

A timing, not a test: wall-clock bounds fail on a loaded CI machine for reasons unrelated to the code. That browsing
never imports torch, which is what keeps it fast, is asserted in tests/test_cli_browse.py.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 0.3


def main(runs: int = 5) -> int:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "razorzoo", "list"]
    subprocess.run(argv, capture_output=True, cwd=ROOT, env=env, check=True)  # warm the OS file cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, cwd=ROOT, env=env, check=True)
        times.append(time.perf_counter() - start)
    best = min(times)
    print(f"razorzoo list: best {best:.3f} s of {runs} (target {TARGET_S} s)")
    return 0 if best <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main(*(int(a) for a in sys.argv[1:2])))
