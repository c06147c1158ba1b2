"""Necks and head modules alone, fed with the real upstream backbone / neck outputs.

These localize errors: a neck is checked on the golden backbone features, a head on the golden neck features, so a
backbone bug cannot hide (or fake) a neck bug.
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from fixture_rule import DATA, manifest, rule_state_dict
from helpers import max_abs
from razorzoo.models.heads import RTMDetSepBNHeadModule, YOLOv5HeadModule, YOLOv6HeadModule
from razorzoo.models.necks import CSPNeXtPAFPN, YOLOv5PAFPN, YOLOv6CSPRepPAFPN

# detector -> (neck factory, head factory); channels are the upstream backbone's, read from the goldens below
PARTS = {
    "yolov5s-spos_0.33M": (YOLOv5PAFPN, YOLOv5HeadModule),
    "yolov6s-attentive_a6": (YOLOv6CSPRepPAFPN, YOLOv6HeadModule),
    "rtmdet_tiny-ofa_lat31": (CSPNeXtPAFPN, lambda channels: RTMDetSepBNHeadModule(channels[0])),
}
HEAD_OUTPUTS = ("cls_scores", "bbox_preds", "objectnesses")


def _goldens(model: str) -> dict[str, torch.Tensor]:
    return load_file(DATA / model / "goldens.safetensors")


def _sub_state_dict(model: str, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in rule_state_dict(model).items() if k.startswith(prefix)}


def _manifest_entries(model: str, prefix: str) -> list[tuple[str, tuple[int, ...], str]]:
    return [(k[len(prefix):], tuple(s), d) for k, s, d in manifest(model)["state_dict"] if k.startswith(prefix)]


def _entries(module: torch.nn.Module) -> list[tuple[str, tuple[int, ...], str]]:
    return [(k, tuple(v.shape), str(v.dtype)) for k, v in module.state_dict().items()]


@pytest.mark.parametrize("model", PARTS)
def test_neck_matches_upstream_on_golden_backbone_features(model):
    goldens = _goldens(model)
    feats = [goldens[f"backbone.{i}"] for i in range(3)]
    neck = PARTS[model][0]([f.shape[1] for f in feats]).eval()
    assert _entries(neck) == _manifest_entries(model, "neck.")
    neck.load_state_dict(_sub_state_dict(model, "neck."), strict=True)
    with torch.no_grad():
        outs = neck(feats)
    assert len(outs) == 3
    for i, out in enumerate(outs):
        assert max_abs(out, goldens[f"neck.{i}"]) <= 1e-4, f"neck.{i}"
    assert neck.out_channels == tuple(goldens[f"neck.{i}"].shape[1] for i in range(3))


@pytest.mark.parametrize("model", PARTS)
def test_head_module_matches_upstream_on_golden_neck_features(model):
    goldens = _goldens(model)
    feats = [goldens[f"neck.{i}"] for i in range(3)]
    head = PARTS[model][1]([f.shape[1] for f in feats]).eval()
    prefix = "bbox_head.head_module."
    assert _entries(head) == _manifest_entries(model, prefix)
    head.load_state_dict(_sub_state_dict(model, prefix), strict=True)
    with torch.no_grad():
        outs = head(feats)
    names = [n for n in HEAD_OUTPUTS if f"head.{n}.0" in goldens]
    assert len(outs) == len(names)
    for name, per_level in zip(names, outs):
        assert len(per_level) == 3
        for i, out in enumerate(per_level):
            assert max_abs(out, goldens[f"head.{name}.{i}"]) <= 1e-4, f"head.{name}.{i}"


def test_neck_channels_follow_the_backbone():
    """A custom subnet with other widths gets a neck that accepts its features (no hard-coded channels)."""
    feats = [torch.randn(1, c, s, s) for c, s in ((48, 16), (136, 8), (200, 4))]
    for neck_cls in (YOLOv5PAFPN, YOLOv6CSPRepPAFPN, CSPNeXtPAFPN):
        neck = neck_cls([48, 136, 200]).eval()
        with torch.no_grad():
            outs = neck(feats)
        assert tuple(o.shape[1] for o in outs) == neck.out_channels
        assert [o.shape[-1] for o in outs] == [16, 8, 4]
    assert YOLOv5PAFPN([48, 136, 200]).out_channels == (48, 136, 200)
    assert YOLOv6CSPRepPAFPN([48, 136, 200]).out_channels == (48, 136, 200)
    assert CSPNeXtPAFPN([48, 136, 200]).out_channels == (40, 40, 40)


def test_upstream_block_counts():
    """make_round(3, 0.33) = 1 CSP block; BepC3 halves make_round(12, 1.2) = 14 to 7 BottleReps; round(0.501) = 1."""
    yolov5 = YOLOv5PAFPN([160, 320, 640])
    assert len(yolov5.bottom_up_layers[0].blocks) == 1
    yolov6 = YOLOv6CSPRepPAFPN([40, 128, 224])
    stage = yolov6.bottom_up_layers[0].block
    assert 1 + len(stage.block) == 7
    assert stage.conv1.conv1.block.conv.bias is not None  # ConvWrapper keeps its conv bias before BN
    cspnext = CSPNeXtPAFPN([40, 112, 160])
    assert len(cspnext.bottom_up_layers[1].blocks) == 1
    assert cspnext.out_layers[1].conv.kernel_size == (3, 3)


def test_wrong_number_of_levels_is_refused():
    with pytest.raises(ValueError, match="3 backbone levels"):
        YOLOv5PAFPN([160, 320])
    neck = CSPNeXtPAFPN([40, 112, 160])
    with pytest.raises(ValueError, match="expects 3 feature maps"):
        neck([torch.zeros(1, 40, 8, 8)])


class TestRTMDetSharedConvs:
    def test_state_dict_lists_every_alias_but_parameters_count_once(self):
        head = RTMDetSepBNHeadModule(40)
        sd = head.state_dict()
        for tower in ("cls_convs", "reg_convs"):
            for j in range(2):
                names = [f"{tower}.{level}.{j}.conv.weight" for level in range(3)]
                assert all(n in sd for n in names)
                assert len({sd[n].data_ptr() for n in names}) == 1
                assert len({sd[f"{tower}.{level}.{j}.bn.weight"].data_ptr() for level in range(3)}) == 3
        all_keys = sum(v.numel() for k, v in sd.items() if "running" not in k and "num_batches" not in k)
        unique = sum(p.numel() for p in head.parameters())
        assert all_keys - unique == 2 * 2 * 2 * 40 * 40 * 9  # 2 towers x 2 convs x 2 extra aliases

    def test_last_alias_wins_on_load(self):
        head = RTMDetSepBNHeadModule(40)
        sd = {k: torch.zeros_like(v) for k, v in head.state_dict().items()}
        for level in range(3):
            sd[f"cls_convs.{level}.0.conv.weight"] = torch.full((40, 40, 3, 3), float(level))
        head.load_state_dict(sd, strict=True)
        assert torch.all(head.cls_convs[0][0].conv.weight == 2.0)

    def test_tie_weights_after_assign_load(self):
        head = RTMDetSepBNHeadModule(40)
        sd = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in head.state_dict().items()}
        head.load_state_dict(sd, strict=True, assign=True)
        head.tie_weights()
        weights = [head.reg_convs[level][1].conv.weight for level in range(3)]
        assert weights[0] is weights[1] is weights[2]
        assert torch.equal(weights[0], sd["reg_convs.2.1.conv.weight"])
