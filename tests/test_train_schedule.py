"""Learning rates (and SGD momentum) iteration by iteration against MMYOLO's YOLOv5ParamSchedulerHook and mmengine's
LinearLR + CosineAnnealingLR themselves (tests/data/train_schedule/, recorded by tools/record_train_schedules.py).

The cases cover warm-up ending inside an epoch and at an epoch's first iteration, the default 1000-iteration warm-up
that outlasts a short run, RTMDet's flat phase and cosine, and an odd number of epochs (cosine past T_max)."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from helpers import DATA
from razorzoo.arch.schedules import SCHEDULES, FlatCosineSchedule, YOLOv5Schedule
from razorzoo.training.optim import LearningRates

CASES = json.loads((DATA / "train_schedule" / "schedules.json").read_text())


def rates_for(case: dict) -> LearningRates:
    settings = case["settings"]
    if case["kind"] == "yolov5":
        base = SCHEDULES["yolov5_s"]
        schedule = YOLOv5Schedule(kind=settings["scheduler_type"], lr_factor=settings["lr_factor"],
                                  warmup_epochs=settings.get("warmup_epochs", 3),
                                  warmup_min_iters=settings.get("warmup_mim_iter", 1000))
    else:
        base = SCHEDULES["rtmdet_tiny"]
        schedule = FlatCosineSchedule(warmup_iters=settings["warmup_iters"])
    assert base.optimizer.lr == case["base_lr"]
    return LearningRates(replace(base, schedule=schedule), case["iters_per_epoch"], case["max_epochs"])


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_iterations_rates_equal_upstreams(name):
    case = CASES[name]
    rates = rates_for(case)
    for iteration, expected in enumerate(case["values"]):
        epoch = iteration // case["iters_per_epoch"]
        got = rates.values(iteration, epoch)
        assert len(got) == len(expected)
        for (lr, momentum), (want_lr, want_momentum) in zip(got, expected):
            assert lr == pytest.approx(want_lr, rel=1e-9, abs=1e-15), (name, iteration)
            assert (momentum is None) == (want_momentum is None)
            if momentum is not None:
                assert momentum == pytest.approx(want_momentum, rel=1e-12), (name, iteration)


def test_the_recorded_cases_cover_the_boundaries():
    """The data exercises what the schedules' edge rules are about (a guard on the test data itself)."""
    yolo = CASES["yolov5-linear-warmup-ends-mid-epoch"]
    assert yolo["iters_per_epoch"] * 1 < 8 < yolo["iters_per_epoch"] * 2  # warm-up (8) ends inside epoch 1
    assert CASES["yolov6-cosine-warmup-ends-at-epoch-start"]["iters_per_epoch"] * 2 == 8
    assert CASES["rtmdet-flat-cosine-odd-epochs"]["max_epochs"] % 2 == 1
