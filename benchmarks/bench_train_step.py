"""What the training losses cost: one train step (forward + ``Detector.loss`` + backward) against forward + backward.

Usage: ``python benchmarks/bench_train_step.py [--batch 8] [--size 640] [--runs 3] [--warmup 1] [--threads N]
[--models NAME ...]``

For each detector, in train mode with the tests' fixture-rule weights, the median over ``--runs`` of
(a) forward + backward of a loss-free scalar (the raw outputs' sum times 0, so the backward pass covers the whole
network), (b) the loss alone (target packing, priors, assignment, loss functions) on the forward's outputs, and
(c) forward + loss + backward; ``overhead`` = (c) / (a) - 1, the issue's goal is <= 25%. Targets: 8 boxes per image
(COCO's mean is 7.3), seeded. The ratios are what to compare across machines; the seconds depend on the CPU and
on what else runs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import razorzoo
from razorzoo.detection.head_losses import head_loss
from razorzoo.detection.targets import pack_targets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fixture_rule import rule_state_dict  # noqa: E402

MODELS = ("yolov5s-spos_0.33M", "yolov6s-attentive_a6", "rtmdet_tiny-ofa_lat31")


def _median(fn, runs: int, warmup: int) -> float:
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        fn()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _targets(batch: int, size: int, generator: torch.Generator) -> list[dict[str, torch.Tensor]]:
    targets = []
    for _ in range(batch):
        xy = torch.rand(8, 2, generator=generator) * size * 0.7
        wh = 8 + torch.rand(8, 2, generator=generator) * size * 0.3
        targets.append({"boxes": torch.cat([xy, (xy + wh).clamp(max=size)], 1),
                        "labels": torch.randint(0, 80, (8,), generator=generator)})
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--models", nargs="+", default=MODELS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"batch {args.batch} x {args.size}^2, {torch.get_num_threads()} threads, median of {args.runs}")
    print(f"{'model':24} {'fwd+bwd':>9} {'loss':>8} {'fwd+loss+bwd':>13} {'overhead':>9}")
    generator = torch.Generator().manual_seed(0)
    for name in args.models:
        detector = razorzoo.build_detector(name)
        detector.load_state_dict(rule_state_dict(name))
        detector.train()
        batch = torch.randn(args.batch, 3, args.size, args.size, generator=generator)
        targets = _targets(args.batch, args.size, generator)

        def plain() -> None:
            detector.zero_grad()
            outputs = detector(batch)
            (sum(t.sum() for level in outputs for t in level) * 0).backward()

        def full() -> None:
            detector.zero_grad()
            sum(detector.loss(batch, targets, epoch=10).values()).backward()  # YOLOv6: the task-aligned assigner

        with torch.no_grad():
            outputs = detector(batch)

        def loss_only() -> None:
            rows = pack_targets(targets, batch, detector.num_classes)
            head_loss(detector.recipe.train_cfg, outputs, rows, coder=detector.coder, strides=detector.recipe.strides,
                      num_classes=detector.num_classes, batch_hw=batch.shape[-2:], epoch=10)

        base = _median(plain, args.runs, args.warmup)
        loss = _median(loss_only, args.runs, args.warmup)
        step = _median(full, args.runs, args.warmup)
        print(f"{name:24} {base:8.2f}s {loss:7.2f}s {step:12.2f}s {step / base - 1:8.1%}", flush=True)


if __name__ == "__main__":
    main()
