"""NAS backbones: detector goldens, hand-derived shapes of other subnets, residual rules, random subnets."""
import random

import pytest
import torch
from safetensors.torch import load_file

from fixture_rule import DATA, rule_state_dict
from razorzoo.errors import RazorzooError
from helpers.slicing import supernet_manifest
from razorzoo.models.backbones import build_backbone_from_subnet
from razorzoo.arch.subnet import SEARCH_SPACES, Block, MobileNetSubnet, SposSubnet, Stage, load_subnet

SUBNETS = DATA.parent.parent / "cards" / "subnets"
DETECTORS = {
    # detector -> (out_indices, channels, strides) of its backbone (docs/upstream.md §1.1-§1.3)
    "yolov5s-spos_0.33M": ((1, 2, 3), (160, 320, 640), (8, 16, 32)),
    "yolov6s-attentive_a6": ((2, 4, 6), (40, 128, 224), (8, 16, 32)),
    "rtmdet_tiny-ofa_lat31": ((2, 4, 5), (40, 112, 160), (8, 16, 32)),
}


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_backbone_goldens(name):
    out_indices, channels, strides = DETECTORS[name]
    backbone = build_backbone_from_subnet(load_subnet(DATA / name / "subnet.yaml"), out_indices).eval()
    assert (backbone.out_indices, backbone.out_channels, backbone.strides) == (out_indices, channels, strides)
    weights = {k.removeprefix("backbone."): v for k, v in rule_state_dict(name).items() if k.startswith("backbone.")}
    backbone.load_state_dict(weights, strict=True)
    goldens = load_file(DATA / name / "goldens.safetensors")
    with torch.no_grad():
        outs = backbone(goldens["input"])
    assert len(outs) == 3
    for i, out in enumerate(outs):
        torch.testing.assert_close(out, goldens[f"backbone.{i}"], rtol=0, atol=1e-4)


def _shapes(module: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_attentive_a0_shapes_follow_the_search_space_rules():
    backbone = build_backbone_from_subnet(load_subnet(SUBNETS / "ATTENTIVE_SUBNET_A0.yaml"))
    shapes = _shapes(backbone)
    # stage 1 (expand list {1}) has no expand conv; its shortcut conv exists although 16 == 16 skips it
    assert "layer1.0.expand_conv.conv.weight" not in shapes
    assert shapes["layer1.0.shortcut.conv.weight"] == (16, 16, 1, 1)
    assert shapes["layer2.0.expand_conv.conv.weight"] == (64, 16, 1, 1)  # 16 * 4
    assert shapes["layer2.0.shortcut.conv.weight"] == (24, 16, 1, 1)
    assert shapes["layer3.0.se.conv1.conv.weight"] == (24, 96, 1, 1)  # make_divisible(24*4 // 4) = 24
    assert shapes["layer3.1.se.conv1.conv.weight"] == (32, 128, 1, 1)
    assert shapes["layer5.0.se.conv2.conv.bias"] == (256,)
    assert shapes["layer6.0.se.conv1.conv.weight"] == (168, 672, 1, 1)  # 112 * 6 = 672, 672 // 4 = 168
    assert shapes["layer6.2.depthwise_conv.conv.weight"] == (1152, 1, 3, 3)
    assert "layer6.3.depthwise_conv.conv.weight" not in shapes  # depth 3
    assert shapes["layer7.0.se.conv1.conv.weight"] == (288, 1152, 1, 1)
    assert shapes["layer7.0.linear_conv.conv.weight"] == (216, 1152, 1, 1)
    assert shapes["last_conv.final_expand_layer.conv.weight"] == (1296, 216, 1, 1)
    assert shapes["last_conv.feature_mix_layer.conv.weight"] == (1792, 1296, 1, 1)
    assert backbone.first_mutable_channels.mask.tolist() == [1.0] * 16 + [0.0] * 8
    assert backbone.last_mutable_channels.mask.sum().item() == 1792
    assert backbone.last_mutable_channels.mask.shape == (1984,)
    assert sum(1 for k in shapes if k.endswith("linear_conv.conv.weight")) == 1 + 3 + 3 + 3 + 3 + 3 + 1


def test_ofa_lat22_shapes_follow_the_search_space_rules():
    backbone = build_backbone_from_subnet(load_subnet(SUBNETS / "OFA_SUBNET_NOTE8_LAT22.yaml"), (0, 1, 2, 3, 4, 5, 6))
    shapes = _shapes(backbone)
    assert "layer1.0.expand_conv.conv.weight" not in shapes
    assert not any("shortcut" in k for k in shapes)
    assert shapes["layer2.0.expand_conv.conv.weight"] == (48, 16, 1, 1)
    assert shapes["layer2.1.expand_conv.conv.weight"] == (72, 24, 1, 1)
    assert shapes["layer3.0.depthwise_conv.conv.weight"] == (72, 1, 5, 5)
    assert shapes["layer3.0.se.conv1.conv.weight"] == (24, 72, 1, 1)  # from expand_ratio_se 4: 24*4 // 4 = 24
    assert shapes["layer3.1.se.conv1.conv.weight"] == (32, 120, 1, 1)  # 40*3 // 4 = 30 -> 32
    assert shapes["layer4.0.depthwise_conv.conv.weight"] == (160, 1, 7, 7)
    assert shapes["layer5.0.se.conv1.conv.weight"] == (64, 240, 1, 1)  # 80*3 // 4 = 60 -> 64
    assert shapes["layer5.1.se.conv1.conv.weight"] == (112, 448, 1, 1)
    assert shapes["layer6.1.depthwise_conv.conv.weight"] == (960, 1, 7, 7)
    assert shapes["layer6.1.se.conv1.conv.weight"] == (240, 960, 1, 1)
    assert "layer6.2.depthwise_conv.conv.weight" not in shapes
    assert shapes["last_conv.feature_mix_layer.conv.weight"] == (1280, 960, 1, 1)
    assert backbone.out_channels == (16, 24, 40, 80, 112, 160, 1280)
    assert backbone.strides == (2, 4, 8, 16, 16, 32, 32)
    with torch.no_grad():
        outs = backbone.eval()(torch.randn(1, 3, 140, 140))
    # 3x3/s2 convs with padding 1: 140 -> 70 -> 70 -> 35 -> 18 -> 9 -> 9 -> 5 -> pooled
    assert [o.shape[-1] for o in outs] == [70, 35, 18, 9, 9, 5, 1]
    assert [o.shape[1] for o in outs] == list(backbone.out_channels)


def _silence_linear_conv(block: torch.nn.Module) -> None:
    """Zero the last BN so the block's main path outputs 0: what is left is its residual path."""
    torch.nn.init.zeros_(block.linear_conv.bn.weight)
    torch.nn.init.zeros_(block.linear_conv.bn.bias)


def test_ofa_residual_rule_uses_supernet_widths():
    backbone = build_backbone_from_subnet(load_subnet(SUBNETS / "OFA_SUBNET_NOTE8_LAT31.yaml")).eval()
    x = torch.randn(2, 80, 9, 9)
    first, second = backbone.layer5[0], backbone.layer5[1]
    for block in (first, second):
        _silence_linear_conv(block)
    with torch.no_grad():
        # layer5.0: stride 1 but 80 -> 112 in the supernet: no residual (docs/upstream.md §7.9)
        assert torch.equal(first(x), torch.zeros(2, 112, 9, 9))
        y = torch.randn(2, 112, 9, 9)
        assert torch.equal(second(y), y)  # identity residual
    # OFA layer1.0 (16 -> 16, stride 1) keeps its residual
    block = backbone.layer1[0]
    _silence_linear_conv(block)
    z = torch.randn(1, 16, 5, 5)
    with torch.no_grad():
        assert torch.equal(block.eval()(z), z)


def test_attentive_shortcuts():
    backbone = build_backbone_from_subnet(load_subnet(SUBNETS / "ATTENTIVE_SUBNET_A6.yaml")).eval()
    same = backbone.layer2[1]  # 32 -> 32, stride 1: identity although the shortcut conv exists
    torch.nn.init.normal_(same.shortcut.conv.weight)
    _silence_linear_conv(same)
    x = torch.randn(1, 32, 6, 6)
    with torch.no_grad():
        assert torch.equal(same(x), x)
    strided = backbone.layer6[0]  # 128 -> 216, stride 2: avg-pool padded by the width parity, then 1x1 conv
    _silence_linear_conv(strided)
    torch.nn.init.normal_(strided.shortcut.conv.weight)
    x = torch.randn(1, 128, 9, 9)
    w = strided.shortcut.conv.weight[:, :, 0, 0]
    with torch.no_grad():
        out = strided(x)
        assert out.shape == (1, 216, 5, 5)
        # padding 1 on both axes, zeros counted: the corner window holds only x[0, 0]
        torch.testing.assert_close(out[0, :, 0, 0], w @ (x[0, :, 0, 0] / 4))
        torch.testing.assert_close(out[0, :, 1, 1], w @ x[0, :, 1:3, 1:3].mean((1, 2)))
        even = strided(torch.randn(1, 128, 8, 8))
    assert even.shape == (1, 216, 4, 4)


def _random_subnet(family: str, rng: random.Random):
    space = SEARCH_SPACES[family]
    if family == "spos":
        return SposSubnet(tuple(tuple(rng.choice(space.ops) for _ in range(n)) for n in space.stage_blocks))
    stages = []
    for s in space.stages:
        blocks = []
        for _ in range(max(s.depths)):
            e = rng.choice(s.expand_ratios)
            blocks.append(Block(rng.choice(s.kernel_sizes), e, e))
        if not space.fine_grained:
            blocks = [blocks[0]] * len(blocks)
        stages.append(Stage(rng.choice(s.depths), rng.choice(s.out_channels), tuple(blocks)))
    return MobileNetSubnet(family, rng.choice(space.first_channels), rng.choice(space.last_channels), tuple(stages))


@pytest.mark.parametrize("family", ["spos", "attentive", "ofa"])
def test_random_subnets_build_fit_the_supernet_and_round_trip(family):
    rng = random.Random(2024)
    supernet = {key: shape for key, shape, _ in supernet_manifest(family)}
    for _ in range(3):
        subnet = _random_subnet(family, rng)
        assert load_subnet(subnet.to_yaml()) == subnet
        n_outputs = 5 if family == "spos" else len(subnet.stages) + 1
        backbone = build_backbone_from_subnet(subnet, tuple(range(n_outputs))).eval()
        for key, shape in _shapes(backbone).items():
            full = supernet["backbone." + key]
            assert len(full) == len(shape) and all(s <= f for s, f in zip(shape, full)), key
        with torch.no_grad():
            outs = backbone(torch.randn(1, 3, 64, 64))
        assert [o.shape[1] for o in outs] == list(backbone.out_channels)


def test_out_indices_are_validated():
    subnet = load_subnet(SUBNETS / "OFA_SUBNET_NOTE8_LAT31.yaml")
    assert build_backbone_from_subnet(subnet).out_indices == (6,)
    assert build_backbone_from_subnet(load_subnet(SUBNETS / "SPOS_SUBNET.yaml")).out_indices == (4,)
    for bad in [(7,), (3, 2), (), (-1,)]:
        with pytest.raises(RazorzooError, match=r"out_indices .* in 0\.\.6"):
            build_backbone_from_subnet(subnet, bad)


def test_backbone_keys_are_the_classifier_keys_without_prefix():
    from razorzoo.models.classifier import build_classifier_from_subnet

    subnet = load_subnet(SUBNETS / "ATTENTIVE_SUBNET_A6.yaml")
    classifier_keys = [k.removeprefix("backbone.") for k in build_classifier_from_subnet(subnet).state_dict()
                       if k.startswith("backbone.")]
    assert list(build_backbone_from_subnet(subnet, (2, 4, 6)).state_dict()) == classifier_keys
