"""Record MMYOLO's own train-mode losses and gradients for extra cases (tests/data/train_extra/).

Run it with the Python of a reference OpenMMLab environment (``../shared/refenv/make_refenv.sh``), never in
razorzoo's own: ``REFENV/bin/python tools/record_train_goldens.py ../shared/fixtures tests/data/train_extra``.
It builds each detector from the fixtures' resolved MMYOLO config (backbone from the shipped subnet YAML, no
pretrained download), fills every state-dict entry by the fixture rule (``FIXTURES/fixture_rule_v2.py``), puts the
model in train mode, sets the MessageHub epoch, calls ``model.loss(batch, dict(bboxes_labels=..., img_metas=...))``
exactly as ``yolov5_collate`` feeds it, backpropagates the summed loss and records, in the format of
``tests/data/train/``: the loss terms, the input gradient (norm and its projections on
``torch.randn(4, *input.shape, generator=torch.Generator().manual_seed(77))``), every trained parameter's gradient
norm, full gradients of a few parameters, and the sums of the BatchNorm running means after the forward.

It also records ``learning.json``: MMYOLO's total loss over 30 SGD steps (lr 0.01, momentum 0.937, Nesterov,
gradient-norm clip 10) on one small batch per detector (:data:`LEARNING_BATCH`), the check that learning happens.

The cases differ from the shipped ones on purpose: other batch sizes and non-square canvases, many boxes (crowded,
nested, touching the border, tiny, sharing a centre), empty images, YOLOv6 on both sides of its assigner switch,
and heads with 3 classes (the configs' ``num_classes`` changed as a user's fine-tuning config does, including
YOLOv5's class-loss weight formula ``0.5 * (num_classes / 80 * 3 / 3)``).
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch

MODELS = ("yolov5s-spos_0.33M", "yolov6s-attentive_a6", "rtmdet_tiny-ofa_lat31")
PICKED = 6  # full gradients stored per case: the first and last three trained parameters


def boxes_for(case: int, width: int, height: int, num_images: int, num_classes: int) -> torch.Tensor:
    """Rows ``[image, label, x1, y1, x2, y2]``: hand-placed hard cases plus seeded random boxes; the last image of
    every case is empty."""
    g = torch.Generator().manual_seed(1000 + case)
    rows = [
        [0, 1, 0, 0, 40, 36],  # at the top-left corner
        [0, 2, width - 50, height - 30, width, height],  # at the bottom-right corner
        [0, 0, 60, 40, 61.5, 42],  # tiny
        [0, 1, 30, 30, 100, 110], [0, 0, 50, 50, 80, 90],  # nested, competing for the same priors
        [0, 2, 10, 60, 70, 120], [0, 1, 16, 66, 64, 114],  # same centre, different sizes
        [0, 0, 0, 0, width, height],  # the whole canvas
    ]
    for image in range(1, num_images - 1):
        for _ in range(12):
            x1, y1 = float(torch.rand(1, generator=g)) * width * 0.8, float(torch.rand(1, generator=g)) * height * 0.8
            w = 2 + float(torch.rand(1, generator=g)) * (width - x1 - 2)
            h = 2 + float(torch.rand(1, generator=g)) * (height - y1 - 2)
            rows.append([image, int(torch.randint(0, 80, (1,), generator=g)), x1, y1, x1 + w, y1 + h])
    table = torch.tensor(rows, dtype=torch.float32)
    table[:, 1] = table[:, 1] % num_classes
    table[:, 2::2] = table[:, 2::2].clamp(0, width)
    table[:, 3::2] = table[:, 3::2].clamp(0, height)
    return table


CASES = [  # (model, epoch, images, height, width, num_classes)
    ("yolov5s-spos_0.33M", 0, 3, 160, 224, 80),
    ("yolov5s-spos_0.33M", 7, 2, 224, 160, 3),
    ("yolov6s-attentive_a6", 3, 3, 160, 224, 80),
    ("yolov6s-attentive_a6", 4, 3, 160, 224, 80),
    ("yolov6s-attentive_a6", 12, 2, 224, 160, 3),
    ("rtmdet_tiny-ofa_lat31", 0, 3, 160, 224, 80),
    ("rtmdet_tiny-ofa_lat31", 30, 2, 224, 160, 3),
]


# the learning check's batch: 2 images of 160 x 160 from torch.randn with this seed, and these rows
LEARNING_SEED = 5
LEARNING_ROWS = [[0, 3, 20, 25, 60, 55], [0, 0, 100, 50, 150, 155], [1, 45, 4, 125, 20, 145], [1, 7, 60, 60, 100, 90]]
LEARNING_STEPS = 30


def learning_batch() -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(LEARNING_SEED)),
            torch.tensor(LEARNING_ROWS, dtype=torch.float32))


def build(fixtures: Path, model: str, num_classes: int):
    from mmengine.config import Config
    from mmyolo.registry import MODELS as REGISTRY
    from mmyolo.utils import register_all_modules

    register_all_modules()
    import mmrazor.models  # noqa: F401  (registers mmrazor.sub_model and the NAS backbones)

    cfg = Config.fromfile(str(fixtures / model / "config.py"))
    cfg.model.backbone.fix_subnet = str(fixtures / model / "subnet.yaml")
    cfg.model.backbone.pop("init_cfg", None)
    cfg.model.backbone.cfg.pop("init_cfg", None)
    head = cfg.model.bbox_head
    head.head_module.num_classes = num_classes
    train_cfg = cfg.model.get("train_cfg") or {}  # YOLOv5 has none
    for key in ("assigner", "initial_assigner"):
        if key in train_cfg:
            train_cfg[key].num_classes = num_classes
    if "loss_obj" in head:  # YOLOv5: the config's class-loss weight formula
        head.loss_cls.loss_weight = 0.5 * (num_classes / 80 * 3 / 3)
    return REGISTRY.build(cfg.model)


def record(fixtures: Path, out: Path) -> None:
    from mmengine.logging import MessageHub
    from safetensors.torch import save_file

    rule = _fixture_rule(fixtures)
    # two intra-op threads, as ../shared/fixtures/train was recorded (it matches bit for bit only so): the YOLOv6 cases
    # amplify summation-order differences (1 vs 2 threads moves upstream's own input gradient by ~1%)
    torch.set_num_threads(2)
    goldens, tensors = {}, {}
    for index, (model, epoch, images, height, width, num_classes) in enumerate(CASES):
        name = f"{model}@epoch{epoch}-{images}x{height}x{width}-{num_classes}cls"
        detector = build(fixtures, model, num_classes)
        state = detector.state_dict()
        detector.load_state_dict({k: rule.fixture_tensor(k, v.shape, str(v.dtype)) for k, v in state.items()})
        detector.train()
        batch = torch.randn(images, 3, height, width, generator=torch.Generator().manual_seed(index)).requires_grad_()
        rows = boxes_for(index, width, height, images, num_classes)
        hub = MessageHub.get_current_instance()
        hub.update_info("epoch", epoch)
        metas = [dict(batch_input_shape=(height, width), img_shape=(height, width))] * images
        losses = detector.loss(batch, dict(bboxes_labels=rows.clone(), img_metas=metas))
        losses = {k: v.mean() if isinstance(v, torch.Tensor) else sum(x.mean() for x in v) for k, v in losses.items()}
        total = sum(v for k, v in losses.items() if "loss" in k)
        total.backward()
        directions = torch.randn(4, *batch.shape, generator=torch.Generator().manual_seed(77))
        trained = [(k, p) for k, p in detector.named_parameters() if p.grad is not None]
        picked = [k for k, _ in trained[:PICKED // 2] + trained[-PICKED // 2:]]
        goldens[name] = {
            "size": [height, width], "epoch": epoch, "num_classes": num_classes,
            "losses": {k: float(v) for k, v in losses.items()}, "total": float(total),
            "input_grad_norm": float(batch.grad.norm()),
            "input_grad_proj": [float((batch.grad * d).sum()) for d in directions],
            "param_grad_norms": {k: float(p.grad.norm()) for k, p in trained},
            "picked": picked,
            "running_means_after": {k: float(v.sum()) for k, v in detector.state_dict().items()
                                    if k.endswith("running_mean")},
        }
        tensors[f"{name}.input"] = batch.detach().contiguous()
        tensors[f"{name}.bboxes_labels"] = rows
        for key in picked:
            tensors[f"{name}.grad.{key}"] = dict(detector.named_parameters())[key].grad.contiguous()
        print(name, goldens[name]["losses"], flush=True)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "goldens.safetensors"))
    (out / "goldens.json").write_text(json.dumps(goldens, indent=1) + "\n")


def record_learning(fixtures: Path, out: Path) -> None:
    from mmengine.logging import MessageHub

    rule = _fixture_rule(fixtures)
    torch.set_num_threads(2)
    histories = {}
    for model in MODELS:
        detector = build(fixtures, model, 80)
        state = detector.state_dict()
        detector.load_state_dict({k: rule.fixture_tensor(k, v.shape, str(v.dtype)) for k, v in state.items()})
        detector.train()
        MessageHub.get_current_instance().update_info("epoch", 0)
        batch, rows = learning_batch()
        metas = [dict(batch_input_shape=tuple(batch.shape[-2:]))] * len(batch)
        optimizer = torch.optim.SGD(detector.parameters(), lr=0.01, momentum=0.937, nesterov=True)
        history = []
        for _ in range(LEARNING_STEPS + 1):
            optimizer.zero_grad()
            losses = detector.loss(batch, dict(bboxes_labels=rows.clone(), img_metas=metas))
            total = sum(v.mean() for k, v in losses.items() if "loss" in k)
            history.append(float(total))
            if len(history) > LEARNING_STEPS:
                break
            total.backward()
            torch.nn.utils.clip_grad_norm_(detector.parameters(), 10)
            optimizer.step()
        histories[model] = history
        print(model, history[0], history[-1], history[-1] / history[0], flush=True)
    (out / "learning.json").write_text(json.dumps({"steps": LEARNING_STEPS, "seed": LEARNING_SEED,
                                                   "rows": LEARNING_ROWS, "total_loss": histories}, indent=1) + "\n")


def _fixture_rule(fixtures: Path):
    spec = importlib.util.spec_from_file_location("fixture_rule_v2", fixtures / "fixture_rule_v2.py")
    rule = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rule)
    return rule


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: REFENV/bin/python tools/record_train_goldens.py FIXTURES_DIR OUT_DIR")
    record(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve())
    record_learning(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve())
