"""Record MMYOLO's and mmengine's own learning rates, iteration by iteration (tests/data/train_schedule/).

Run with the Python of a reference OpenMMLab environment (``../shared/refenv/make_refenv.sh``):
``REFENV/bin/python tools/record_train_schedules.py tests/data/train_schedule``. For each case it drives the real
schedulers as mmengine's ``EpochBasedTrainLoop`` does, on a real optimizer with the recipe's parameter groups
(YOLOv5: weights, norms, biases; RTMDet: AdamW groups): ``YOLOv5ParamSchedulerHook`` (``before_train``,
``before_train_iter``, ``after_train_epoch``) for the YOLO recipes, ``LinearLR`` + iteration-based
``CosineAnnealingLR`` stepped after every iteration (``ParamSchedulerHook``) for RTMDet, and records each group's
learning rate (and momentum) in effect during every iteration.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

# (name, kind, max_epochs, iters per epoch, scheduler settings)
CASES = [
    ("yolov5-linear-warmup-ends-mid-epoch", "yolov5", 12, 5,
     dict(scheduler_type="linear", lr_factor=0.01, warmup_epochs=1, warmup_mim_iter=8)),
    ("yolov6-cosine-warmup-ends-at-epoch-start", "yolov5", 10, 4,
     dict(scheduler_type="cosine", lr_factor=0.01, warmup_epochs=2, warmup_mim_iter=3)),
    ("yolov5-linear-default-warmup", "yolov5", 300, 3, dict(scheduler_type="linear", lr_factor=0.01)),
    ("rtmdet-flat-cosine", "rtmdet", 10, 7, dict(warmup_iters=20)),
    ("rtmdet-flat-cosine-odd-epochs", "rtmdet", 9, 6, dict(warmup_iters=15)),
]
BASE_LR = {"yolov5": 0.01, "rtmdet": 0.004}
MAX_ITERS = 1100  # the default-warmup case is cut after warm-up has ended


def _optimizer(kind: str) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))]} for _ in range(3 if kind == "yolov5" else 2)]
    if kind == "yolov5":
        return torch.optim.SGD(groups, lr=BASE_LR[kind], momentum=0.937, nesterov=True)
    return torch.optim.AdamW(groups, lr=BASE_LR[kind], weight_decay=0.05)


def _record_yolov5(max_epochs: int, iters: int, settings: dict) -> list:
    from mmyolo.engine.hooks import YOLOv5ParamSchedulerHook

    optimizer = _optimizer("yolov5")
    hook = YOLOv5ParamSchedulerHook(max_epochs=max_epochs, **settings)
    runner = SimpleNamespace(optim_wrapper=SimpleNamespace(optimizer=optimizer), iter=0, epoch=0,
                             train_dataloader=range(iters))
    hook.before_train(runner)
    values = []
    for epoch in range(max_epochs):
        runner.epoch = epoch
        for batch in range(iters):
            if runner.iter >= MAX_ITERS:
                return values
            hook.before_train_iter(runner, batch)
            values.append([[float(g["lr"]), float(g["momentum"])] for g in optimizer.param_groups])
            runner.iter += 1
        hook.after_train_epoch(runner)
    return values


def _record_rtmdet(max_epochs: int, iters: int, settings: dict) -> list:
    from mmengine.optim.scheduler import CosineAnnealingLR, LinearLR

    optimizer = _optimizer("rtmdet")
    half = max_epochs // 2
    schedulers = [
        LinearLR(optimizer, start_factor=1e-5, by_epoch=False, begin=0, end=settings["warmup_iters"]),
        CosineAnnealingLR.build_iter_from_epoch(optimizer, eta_min=BASE_LR["rtmdet"] * 0.05, begin=half,
                                                end=max_epochs, T_max=half, epoch_length=iters),
    ]
    values = []
    for _ in range(max_epochs * iters):
        values.append([[float(g["lr"]), None] for g in optimizer.param_groups])
        optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
    return values


def main(out: Path) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    cases = {}
    for name, kind, max_epochs, iters, settings in CASES:
        record = _record_yolov5 if kind == "yolov5" else _record_rtmdet
        cases[name] = {"kind": kind, "max_epochs": max_epochs, "iters_per_epoch": iters, "settings": settings,
                       "base_lr": BASE_LR[kind], "values": record(max_epochs, iters, settings)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "schedules.json").write_text(json.dumps(cases) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: REFENV/bin/python tools/record_train_schedules.py OUT_DIR")
    main(Path(sys.argv[1]).resolve())
