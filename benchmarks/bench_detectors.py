"""CPU forward latency of the three detectors at their test size (and 640), eager and fused, vs upstream MMYOLO.

Usage: ``python benchmarks/bench_detectors.py [--runs 7] [--warmup 2] [--threads 1 2] [--models NAME ...]``

Times ``detector(x)`` (the raw head outputs, no pre/post-processing) on one ``1 x 3 x S x S`` image under
``torch.inference_mode()``; each figure is the median of ``--runs`` timed calls after ``--warmup`` untimed ones.
Weights are random (latency does not depend on them, but all-zero weights could take special fast paths).
The upstream figures are mmyolo 0.6.0 eager forwards measured on this machine with 1 thread at 640.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import razorzoo

# registry name -> upstream eager forward latency (s), 1 thread, UPSTREAM_SIZE x UPSTREAM_SIZE
UPSTREAM_SIZE = 640
UPSTREAM_1_THREAD = {"yolov5s-spos_0.33M": 0.257, "yolov6s-attentive_a6": 0.523, "rtmdet_tiny-ofa_lat31": 0.149}


def _randomize(model: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5, generator=generator)
            else:
                tensor.normal_(0.0, 0.05, generator=generator)


def _median_latency(model: torch.nn.Module, x: torch.Tensor, runs: int, warmup: int) -> float:
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            start = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(UPSTREAM_1_THREAD))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    if args.runs < 5:
        parser.error("--runs must be at least 5 (the figure is a median)")

    rows = []
    for name in args.models:
        eager = razorzoo.build_detector(name)
        _randomize(eager)
        fused = razorzoo.build_detector(name)
        fused.load_state_dict(eager.state_dict())
        fused.fuse()
        # the test size, plus 640 (the size of the upstream figures) where they differ
        for size in sorted({eager.recipe.preprocess.size, UPSTREAM_SIZE}):
            x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
            for threads in args.threads:
                torch.set_num_threads(threads)
                rows.append((name, size, threads, _median_latency(eager, x, args.runs, args.warmup),
                             _median_latency(fused, x, args.runs, args.warmup)))

    header = f"{'model':<24} {'size':>5} {'thr':>3} {'eager s':>8} {'fused s':>8} {'upstream s':>10} " \
             f"{'eager/up':>8} {'fused/up':>8}"
    print(header)
    print("-" * len(header))
    for name, size, threads, eager_s, fused_s in rows:
        upstream = UPSTREAM_1_THREAD.get(name) if (threads, size) == (1, UPSTREAM_SIZE) else None
        ratios = f"{eager_s / upstream:>8.2f} {fused_s / upstream:>8.2f}" if upstream else f"{'-':>8} {'-':>8}"
        up = f"{upstream:>10.3f}" if upstream else f"{'-':>10}"
        print(f"{name:<24} {size:>5} {threads:>3} {eager_s:>8.3f} {fused_s:>8.3f} {up} {ratios}")
    print("targets: eager/up <= 1.0, fused/up <= 0.8 (upstream: mmyolo eager, 1 thread, 640 x 640)")


if __name__ == "__main__":
    main()
