"""Conversion time and peak memory vs checkpoint size (target: peak RSS growth <= 1.5x the checkpoint).

Usage: python benchmarks/bench_convert.py [MODEL] [LAYOUT]   (defaults: yolov6s-attentive_a6, the largest; runner)

Each conversion runs in a fresh subprocess so ``ru_maxrss`` (peak resident memory) belongs to it alone; the
baseline is the resident memory after importing torch and razorzoo and building the spec; the peak (VmHWM, which
``ru_maxrss`` reports) is reset to it through ``/proc/self/clear_refs`` just before reading the checkpoint, because
importing torch peaks higher than conversion's own growth.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import torch
    torch.set_num_threads(1)
    from razorzoo.builder import resolve_spec
    from razorzoo.weights.convert import convert_checkpoint
    from razorzoo.weights.verify import model_keys
    spec = resolve_spec(sys.argv[2], sys.argv[3], detector=sys.argv[4] or None)
    model_keys(spec)

    def status_kib(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])

    base = status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS: importing torch peaks above it
    start = time.perf_counter()
    convert_checkpoint(sys.argv[1], spec, sys.argv[5])
    seconds = time.perf_counter() - start
    peak = status_kib("VmHWM")
    print(json.dumps({"seconds": seconds, "rss_growth_bytes": (peak - base) * 1024,
                      "ru_maxrss_growth_bytes": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024}))
""")

DETECTORS = {"yolov5s-spos_0.33M": "yolov5_s", "yolov6s-attentive_a6": "yolov6_l_d12",
             "rtmdet_tiny-ofa_lat31": "rtmdet_tiny"}


def main() -> None:
    from checkpoints import write_checkpoint

    model = sys.argv[1] if len(sys.argv) > 1 else "yolov6s-attentive_a6"
    layout = sys.argv[2] if len(sys.argv) > 2 else "runner"
    detector = DETECTORS.get(model, "")
    task = "detection" if detector else "classification"
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = write_checkpoint(model, layout, Path(tmp) / "epoch_1.pth")
        size = ckpt.stat().st_size
        out = Path(tmp) / "model.safetensors"
        result = subprocess.run(
            [sys.executable, "-c", CHILD, str(ckpt), str(ROOT / "tests" / "data" / model / "subnet.yaml"), task,
             detector, str(out)], capture_output=True, text=True, check=True, cwd=ROOT)
        stats = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"{model} ({layout}): checkpoint {size / 2**20:.1f} MiB -> safetensors {out.stat().st_size / 2**20:.1f} MiB")
        print(f"  conversion: {stats['seconds']:.2f} s ({size / 2**20 / stats['seconds']:.0f} MiB/s)")
        print(f"  peak RSS growth: {stats['rss_growth_bytes'] / 2**20:.1f} MiB = "
              f"{stats['rss_growth_bytes'] / size:.2f}x the checkpoint (target <= 1.5x)")


if __name__ == "__main__":
    main()
