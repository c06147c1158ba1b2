"""Error of the latency predictor (sum of per-block device-profile entries) against whole-network timing.

Usage: python benchmarks/bench_latency_predictor.py [FAMILY] [RESOLUTION] [THREADS] [N]
       (defaults: ofa 224 1 8)

Builds a device profile from N random subnets of the search space, then predicts N *held-out* random subnets
(entries they lack are measured first, as a search would) and times each of them end to end. Prints, per held-out
subnet, predicted and measured milliseconds and the relative error, then the mean absolute relative error and the
rank correlation, which is what a search needs from the predictor. Numbers are printed, not asserted: they depend on
the machine and its load.
"""
from __future__ import annotations

import random
import statistics
import sys

import torch

from razorzoo.arch.spec import ArchSpec
from razorzoo.builder import build_model
from razorzoo.search.evolution import ChoiceSpace
from razorzoo.search.latency import DeviceProfile, time_model


def _build(subnet) -> torch.nn.Module:
    return build_model(ArchSpec("classification", subnet))


def _ranks(values: list[float]) -> list[int]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0] * len(values)
    for rank, i in enumerate(order):
        ranks[i] = rank
    return ranks


def main(family: str = "ofa", resolution: int = 224, threads: int = 1, n: int = 8) -> None:
    torch.set_num_threads(threads)
    space = ChoiceSpace.for_family(family)
    rng = random.Random(0)
    shape = (1, 3, resolution, resolution)
    profile = DeviceProfile(threads=threads)
    for _ in range(n):
        profile.predict(_build(space.subnet(space.sample(rng))), shape)
    print(f"{family} at {resolution}px, {threads} thread(s): profile of {len(profile.entries)} block entries "
          f"from {n} subnets")
    predicted, measured = [], []
    print(f"{'held-out':>8} {'predicted ms':>13} {'measured ms':>12} {'error':>8}")
    for i in range(n):
        model = _build(space.subnet(space.sample(rng)))
        predicted.append(profile.predict(model, shape))
        measured.append(time_model(model, shape, threads=threads))
        print(f"{i:>8} {predicted[-1]:>13.2f} {measured[-1]:>12.2f} {predicted[-1] / measured[-1] - 1:>+8.1%}")
    errors = [abs(p / m - 1) for p, m in zip(predicted, measured)]
    rp, rm = _ranks(predicted), _ranks(measured)
    spearman = 1 - 6 * sum((a - b) ** 2 for a, b in zip(rp, rm)) / (n * (n * n - 1))
    print(f"mean |relative error| {statistics.mean(errors):.1%}, max {max(errors):.1%}, "
          f"Spearman rank correlation {spearman:.2f}")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(*(f(a) for f, a in zip((str, int, int, int), args)))
