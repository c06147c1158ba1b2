"""The trainer's parts on their own: optimizer groups, EMA, the resumable state file, synchronised BatchNorm.

(The learning-rate schedules against mmengine/MMYOLO's own: tests/test_train_schedule.py; whole runs:
tests/test_train_run.py.)
"""
from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import razorzoo
from helpers import loaded_detector
from razorzoo.arch.schedules import SCHEDULES, SGDSettings
from razorzoo.training.ema import ExpMomentumEMA
from razorzoo.training.optim import build_optimizer, scaled_weight_decay
from razorzoo.training.state import Progress, StateError, load_state, save_state

ROOT = Path(__file__).resolve().parents[1]


def test_sgd_groups_are_upstreams_three_and_bottlerep_alpha_is_in_none():
    """YOLOv5OptimizerConstructor: conv/linear weights (decayed), norm weights, biases; a parameter named neither
    weight nor bias (YOLOv6's BottleRep.alpha) is in no group, so upstream never updates it."""
    detector = razorzoo.build_detector("yolov6s-attentive_a6")
    optimizer = build_optimizer(detector, SCHEDULES["yolov6_l_d12"])
    weights, norms, biases = (group["params"] for group in optimizer.param_groups)
    by_id = {id(p): name for name, p in detector.named_parameters()}
    norm_weights = {id(m.weight) for m in detector.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert {id(p) for p in norms} == norm_weights
    assert all(by_id[id(p)].endswith(".weight") and id(p) not in norm_weights for p in weights)
    assert all(by_id[id(p)].endswith(".bias") for p in biases)
    grouped = {id(p) for group in optimizer.param_groups for p in group["params"]}
    left_out = sorted(name for name, p in detector.named_parameters() if id(p) not in grouped)
    assert left_out and all(name.endswith(".alpha") for name in left_out)
    # the config's batch_size_per_gpu 32 on one process: accumulate round(64 / 32) = 2, decay x 32 * 2 / 64 = x1
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.0005, 0.0, 0.0]


@pytest.mark.parametrize("per_gpu,world,expected", [(16, 1, 0.0005), (16, 8, 0.001), (32, 8, 0.002), (8, 1, 0.0005),
                                                    (100, 1, 0.0005 * 100 / 64)])
def test_weight_decay_scales_with_the_total_batch_like_upstream(per_gpu, world, expected):
    # accumulate = max(round(64 / total), 1); decay *= total * accumulate / 64
    # (8 x 1 = 8: accumulate 8 -> x1; 16 x 8 = 128: accumulate max(round(0.5), 1) = 1 -> x2; 32 x 8 = 256: x4)
    assert scaled_weight_decay(SGDSettings(batch_size_per_gpu=per_gpu), world) == pytest.approx(expected)


def test_adamw_leaves_norms_and_biases_undecayed_and_shared_convs_once():
    detector = razorzoo.build_detector("rtmdet_tiny-ofa_lat31")
    optimizer = build_optimizer(detector, SCHEDULES["rtmdet_tiny"])
    decay, no_decay = optimizer.param_groups
    by_id = {id(p): name for name, p in detector.named_parameters()}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(not by_id[id(p)].endswith(".bias") and ".bn." not in by_id[id(p)] for p in decay["params"])
    assert all(by_id[id(p)].endswith(".bias") or ".bn." in by_id[id(p)] for p in no_decay["params"])
    everything = decay["params"] + no_decay["params"]
    assert len(everything) == len({id(p) for p in everything}) == len(list(detector.parameters()))


def test_ema_follows_exp_momentum_formula_and_copies_on_first_step():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    ema = ExpMomentumEMA(model, momentum=0.0002, gamma=2000)
    with torch.no_grad():
        model[0].weight.fill_(2.0)
        model[1].running_mean.fill_(3.0)
    ema.update(model)  # step 0: a copy
    assert torch.equal(ema.module[0].weight, model[0].weight)
    with torch.no_grad():
        model[0].weight.fill_(4.0)
        model[1].running_mean.fill_(5.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update(model)  # step 1: lerp with (1 - m) * exp(-2 / gamma) + m
    m = (1 - 0.0002) * math.exp(-2 / 2000) + 0.0002
    assert float(ema.module[0].weight[0, 0]) == pytest.approx(2 + 2 * m, rel=1e-6)
    assert float(ema.module[1].running_mean[0]) == pytest.approx(3 + 2 * m, rel=1e-6)  # buffers too
    assert int(ema.module[1].num_batches_tracked) == 0  # integers: only the first copy, as upstream
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_averages_rtmdets_shared_convs_once_per_name_like_upstream():
    """Upstream iterates state_dict(), where a shared conv appears under three names: three lerps per step."""
    detector = loaded_detector("rtmdet_tiny-ofa_lat31")
    ema = ExpMomentumEMA(detector, momentum=0.0002)
    ema.update(detector)
    shared = detector.bbox_head.head_module.cls_convs[0][0].conv.weight
    before = ema.module.bbox_head.head_module.cls_convs[0][0].conv.weight.clone()
    with torch.no_grad():
        shared.add_(1.0)
    ema.update(detector)
    m = (1 - 0.0002) * math.exp(-2 / 2000) + 0.0002
    after = ema.module.bbox_head.head_module.cls_convs[0][0].conv.weight
    expected = shared - (shared - before) * (1 - m) ** 3
    assert torch.allclose(after, expected, atol=1e-6)


def test_state_round_trips_everything_and_refuses_a_foreign_file(tmp_path):
    detector = loaded_detector("rtmdet_tiny-ofa_lat31").train()
    optimizer = build_optimizer(detector, SCHEDULES["rtmdet_tiny"])
    loss = sum(t.sum() for level in detector(torch.randn(1, 3, 64, 64)) for t in level)
    loss.backward()
    optimizer.step()
    ema = ExpMomentumEMA(detector, 0.0002)
    ema.update(detector)
    torch.manual_seed(123)
    progress = Progress(epoch=3, batch=5, iteration=77, ema_steps=1, best_ap=0.25, best_epoch=2)
    path = save_state(tmp_path / "state.safetensors", identity={"recipe": "rtmdet_tiny"}, progress=progress,
                      model=detector, ema=ema.module, optimizer=optimizer)
    expected_rng = torch.get_rng_state()
    state = load_state(path)
    assert state.progress == progress and state.identity == {"recipe": "rtmdet_tiny"}
    assert torch.equal(state.rng, expected_rng)
    for key, value in detector.state_dict().items():
        assert torch.equal(state.model[key], value), key
    fresh = build_optimizer(loaded_detector("rtmdet_tiny-ofa_lat31"), SCHEDULES["rtmdet_tiny"])
    fresh.load_state_dict(state.optimizer)
    saved, restored = optimizer.state_dict()["state"], fresh.state_dict()["state"]
    assert list(saved) == list(restored)
    for index, entries in saved.items():
        assert all(torch.equal(value, restored[index][name]) for name, value in entries.items()), index
    (tmp_path / "other.safetensors").write_bytes(b"not a state")
    with pytest.raises(StateError, match="is not a readable training state"):
        load_state(tmp_path / "other.safetensors")


SYNC_BN_WORKER = r"""
import os, sys, torch, torch.distributed as dist
from torch import nn
from razorzoo.training.distributed import World, sync_batchnorm
dist.init_process_group("gloo")
rank, size = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
x = torch.randn(4, 3, 5, 6) * 3 + 7  # the whole batch; each rank takes its half
bn = sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3)), World(rank=rank, size=size))
with torch.no_grad():
    bn[0].weight.copy_(torch.tensor([1.5, 0.5, 2.0])); bn[0].bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
part = x[rank * 2:(rank + 1) * 2].clone().requires_grad_()
out = bn(part)
(out * torch.arange(out.numel()).view_as(out).float() / out.numel()).sum().backward()
grads = torch.stack([bn[0].weight.grad, bn[0].bias.grad])
dist.all_reduce(grads)
torch.save({"out": out.detach(), "grad": part.grad, "param_grad": grads, "mean": bn[0].running_mean,
            "var": bn[0].running_var}, sys.argv[1] + f".{rank}")
dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cpu_sync_batchnorm_over_two_processes_equals_one_batchnorm_over_the_whole_batch(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(SYNC_BN_WORKER)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "out")], env={**env, "RANK": str(r)})
             for r in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    results = [torch.load(tmp_path / f"out.{r}") for r in range(2)]

    torch.manual_seed(0)
    x = (torch.randn(4, 3, 5, 6) * 3 + 7).requires_grad_()
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, 0.5, 2.0]))
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    out = bn(x)
    weights = torch.cat([torch.arange(out[:2].numel()).view_as(out[:2]).float() / out[:2].numel()] * 2)
    (out * weights).sum().backward()
    assert torch.allclose(torch.cat([r["out"] for r in results]), out, atol=1e-5)
    assert torch.allclose(torch.cat([r["grad"] for r in results]), x.grad, atol=1e-5)
    assert torch.allclose(results[0]["param_grad"], torch.stack([bn.weight.grad, bn.bias.grad]), atol=1e-4)
    for r in results:
        assert torch.allclose(r["mean"], bn.running_mean, atol=1e-5)
        assert torch.allclose(r["var"], bn.running_var, atol=1e-5)
