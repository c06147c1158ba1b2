"""``count_flops``: mmengine/fvcore multiply-accumulate convention, checked against the upstream measurements."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import razorzoo
from helpers import DETECTORS
from fixture_rule import manifest
from razorzoo.models.flops import count_flops

# published GFLOPs (mmyolo configs/razor/subnets/README.md, mmrazor README): at 640 / 640 / 960 and A6 at 224
PUBLISHED_GFLOPS = {"yolov5s-spos_0.33M": 7.03, "yolov6s-attentive_a6": 8.49, "rtmdet_tiny-ofa_lat31": 6.09}


@pytest.mark.parametrize("model", DETECTORS)
def test_detector_flops_match_upstream_measurement(model):
    upstream = manifest(model)["flops_test_size"]  # mmengine FlopAnalyzer on the real MMYOLO model
    report = count_flops(razorzoo.build_detector(model), upstream["input_shape"])
    assert abs(report.flops / upstream["flops"] - 1) <= 0.005
    for part, flops in upstream["flops_by_module"].items():
        assert abs(report.by_module[part] / flops - 1) <= 0.005, part
    assert round(report.gflops, 2) == PUBLISHED_GFLOPS[model]
    assert report.params == upstream["params"]
    assert report.input_shape == tuple(upstream["input_shape"])


def test_classifier_flops_match_upstream_measurement():
    upstream = manifest("attentive_a6")["flops_224"]
    report = count_flops(razorzoo.build_classifier("attentive_a6"), (3, 224, 224))
    assert abs(report.flops / upstream["flops"] - 1) <= 0.005
    assert round(report.gflops, 3) == 0.927
    assert report.params == upstream["params"]


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)
        self.up_conv = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 10)
        self.unused = nn.Conv2d(8, 64, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        self.unused(x)  # computed but dead: not counted, like mmengine's traced graph
        x = self.up_conv(self.grouped(x))
        return self.fc(self.pool(self.upsample(x)).flatten(1))


def test_counting_rules_by_hand():
    model = _Toy().train()
    report = count_flops(model, (2, 3, 16, 16))
    conv = 2 * 8 * 8 * 8 * (3 * 3 * 3)  # output elements x C_in x k x k, bias free
    bn = 2 * 8 * 8 * 8 * 2  # eval-mode affine BN: 2 per element
    grouped = 2 * 8 * 8 * 8 * (2 * 3 * 3)  # C_in / groups = 2
    up_conv = 2 * 8 * 8 * 8 * 4 * 2 * 2  # N x H_in x W_in x C_in x C_out x k x k
    upsample = 2 * 4 * 32 * 32  # nearest: one per output element
    pool = 2 * 4 * 32 * 32  # adaptive avg pool: one per input element
    fc = 2 * 4 * 10
    assert report.flops == conv + bn + grouped + up_conv + upsample + pool + fc
    assert report.by_module == {"conv": conv, "bn": bn, "grouped": grouped, "up_conv": up_conv,
                                "upsample": upsample, "pool": pool, "fc": fc}
    assert report.params == sum(p.numel() for p in model.parameters())
    # the model itself is untouched: still training, still real weights on the CPU
    assert model.training and model.bn.training and model.conv.weight.device.type == "cpu"
    assert int(model.bn.num_batches_tracked) == 0


def test_shared_modules_count_every_call_but_params_once():
    conv = nn.Conv2d(4, 4, 1, bias=False)
    model = nn.Sequential(conv, conv)
    report = count_flops(model, (4, 8, 8))
    assert report.flops == 2 * (4 * 8 * 8 * 4)
    assert report.params == 16


def test_report_text_and_bad_shape():
    report = count_flops(nn.Conv2d(3, 1, 1), (3, 10, 10))
    assert report.flops == 300 and str(report).startswith("0.00 GFLOPs")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        count_flops(nn.Conv2d(3, 1, 1), (10, 10))
