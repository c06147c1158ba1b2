"""razorzoo.weights.verify: a mismatched YAML/weights pair is explained as YAML choices; supernets are recognised."""
from __future__ import annotations

import pytest
import torch
import yaml

from checkpoints import SUPERNET, supernet_state_dict, write_checkpoint
from helpers import CLASSIFIERS, DATA
from fixture_rule import rule_state_dict
from razorzoo.builder import build_model, resolve_spec
from razorzoo.errors import PairMismatchError
from razorzoo.weights.extract import extract_subnet
from razorzoo.weights.verify import detect_recipe, verify_pair


def spec_with(model: str, task: str = "classification", detector: str | None = None, **changes):
    """The model's spec with some YAML choices changed (``changes``: YAML key with dots as '__')."""
    data = yaml.safe_load((DATA / model / "subnet.yaml").read_text())
    data.update({key.replace("__", "."): {"chosen": value} for key, value in changes.items()})
    return resolve_spec(data, task, detector=detector)


@pytest.mark.parametrize("model", CLASSIFIERS)
@pytest.mark.parametrize("task", ["classification", "backbone"])
def test_matching_pair_is_ok(model, task):
    report = verify_pair(spec_with(model, task), rule_state_dict(model))
    assert report.ok and not report.is_supernet and report.problems == []
    report.raise_for_problems()


def test_matching_pair_from_a_checkpoint_file(tmp_path):
    path = write_checkpoint("ofa_lat31", "mmrazor-subnet", tmp_path / "subnet.pth")
    assert verify_pair(spec_with("ofa_lat31"), path).ok


def test_spos_op_swap_names_the_block_and_both_ops():
    spec = spec_with("spos_0.33M", backbone__layers__2__5="shuffle_5x5", backbone__layers__0__1="shuffle_7x7")
    report = verify_pair(spec, rule_state_dict("spos_0.33M"))
    assert report.problems == [
        "backbone.layers.0.1 chose shuffle_7x7 but the checkpoint holds shuffle_3x3 weights",
        "backbone.layers.2.5 chose shuffle_5x5 but the checkpoint holds shuffle_xception weights",
    ]
    assert report.missing and report.unexpected  # the key-level view stays available
    with pytest.raises(PairMismatchError, match="backbone.layers.2.5 chose shuffle_5x5"):
        report.raise_for_problems()


def test_attentive_kernel_depth_width_expand():
    spec = spec_with("attentive_a6", backbone__layers__6__kernel_size=3, backbone__layers__4__depth=3,
                     backbone__layers__5__out_channels=120, backbone__layers__3__expand_ratio=4,
                     backbone__first_channels=24)
    report = verify_pair(spec, rule_state_dict("attentive_a6"))
    assert report.problems == [
        "backbone.first_channels 24 in YAML, 16 in weights",
        "backbone.layers.3.expand_ratio 4 in YAML, 6 in weights",
        "backbone.layers.4.depth 3 in YAML, 4 in weights",
        "backbone.layers.5.out_channels 120 in YAML, 128 in weights",
        "backbone.layers.6.kernel_size 3 in YAML, 5 in weights",
    ]


def test_ofa_per_block_kernel_and_last_channels():
    spec = spec_with("ofa_lat31", backbone__layers__3__1__kernel_size=3, backbone__layers__5__2__kernel_size=5,
                     backbone__last_channels=1024)
    report = verify_pair(spec, rule_state_dict("ofa_lat31"))
    assert report.problems == [
        "backbone.last_channels 1024 in YAML, 1280 in weights",
        "backbone.layers.3.1.kernel_size 3 in YAML, 5 in weights",
        "backbone.layers.5.2.kernel_size 5 in YAML, 7 in weights",
    ]


def test_weights_of_another_search_space():
    report = verify_pair(spec_with("ofa_lat31"), rule_state_dict("attentive_a6"))
    assert report.problems == ["the checkpoint's backbone is AttentiveNAS MobileNetV3, but the YAML is a subnet of "
                               "OFA MobileNetV3: pair the weights with a YAML of their search space"]


def test_missing_and_reshaped_tensors_without_a_yaml_explanation():
    state_dict = rule_state_dict("spos_0.33M")
    del state_dict["head.fc.bias"]
    state_dict["head.fc.weight"] = state_dict["head.fc.weight"][:10]
    report = verify_pair(spec_with("spos_0.33M"), state_dict)
    assert report.problems == ["1 tensors the YAML needs are missing: head.fc.bias",
                               "1 tensors have other shapes: head.fc.weight [1000, 1024] in YAML, [10, 1024] in weights"]


def test_classifier_weights_for_a_detector_and_the_reverse():
    detector = spec_with("ofa_lat31", "detection", detector="rtmdet_tiny")
    report = verify_pair(detector, rule_state_dict("ofa_lat31"))
    assert report.problems == ["the checkpoint holds an ImageNet classifier (head.fc.*), not a detector: load it as a "
                               "classifier (--task classification), or take its backbone (--task backbone)"]
    classifier = spec_with("rtmdet_tiny-ofa_lat31")
    weights = rule_state_dict("rtmdet_tiny-ofa_lat31")
    expected = ("the checkpoint holds a detector (neck.*, bbox_head.*), not a classifier: load it as a detector "
                "(--task detection --detector RECIPE), or take its backbone (--task backbone)")
    # either part alone (a neck-only or head-only export) already marks a detector
    for part in ("neck.", "bbox_head."):
        report = verify_pair(classifier, {k: v for k, v in weights.items() if not k.startswith(part)})
        assert expected in report.problems, part


def test_another_detectors_head():
    spec = spec_with("rtmdet_tiny-ofa_lat31", "detection", detector="yolov5_s")
    report = verify_pair(spec, rule_state_dict("rtmdet_tiny-ofa_lat31"))
    assert report.problems == ["the checkpoint holds a rtmdet_tiny detector head, but the spec uses the yolov5_s "
                               "recipe: pass the detector the weights were trained with (--detector)"]


def test_detector_weights_for_a_backbone_use_the_backbone_part():
    report = verify_pair(spec_with("rtmdet_tiny-ofa_lat31", "backbone"), rule_state_dict("rtmdet_tiny-ofa_lat31"))
    assert report.ok
    assert report.notes == ["the backbone uses 315 of the checkpoint's 585 entries"]


@pytest.mark.parametrize("model", CLASSIFIERS)
def test_supernet_is_recognised_and_its_subnet_checked(tmp_path, model):
    path = write_checkpoint(model, SUPERNET, tmp_path / "supernet.pth")
    report = verify_pair(spec_with(model), path)
    assert report.ok and report.is_supernet, str(report)


def test_subnet_checkpoint_of_another_subnet_is_not_a_supernet():
    # the A6 weights are not the maximum of every choice, so they are a subnet and a wrong pair
    report = verify_pair(spec_with("attentive_a6", backbone__layers__6__depth=5), rule_state_dict("attentive_a6"))
    assert not report.is_supernet and not report.ok


def test_supernet_of_another_search_space_is_a_mismatch():
    report = verify_pair(spec_with("ofa_lat31"), supernet_state_dict("attentive_a6"))
    assert not report.ok and "AttentiveNAS" in report.problems[0]


def test_ok_report_carries_the_aligned_state_dict_in_model_order():
    state_dict = dict(reversed(rule_state_dict("attentive_a6").items()))  # file order need not be model order
    spec = spec_with("attentive_a6")
    report = verify_pair(spec, state_dict)
    expected = rule_state_dict("attentive_a6")
    model_order = list(build_model(spec).state_dict())
    assert report.ok and list(report.state_dict) == model_order == list(expected)
    assert all(torch.equal(report.state_dict[k], v) for k, v in expected.items())
    backbone = verify_pair(spec_with("rtmdet_tiny-ofa_lat31", "backbone"), rule_state_dict("rtmdet_tiny-ofa_lat31"))
    assert list(backbone.state_dict) == list(build_model(spec_with("rtmdet_tiny-ofa_lat31", "backbone")).state_dict())
    assert not verify_pair(spec_with("attentive_a6", backbone__layers__6__depth=5), expected).state_dict


@pytest.mark.parametrize("model", CLASSIFIERS)
def test_supernet_report_holds_the_extracted_subnet(model):
    supernet = supernet_state_dict(model)
    report = verify_pair(spec_with(model), supernet)
    extracted = extract_subnet(supernet, DATA / model / "subnet.yaml")
    assert report.is_supernet and list(report.state_dict) == list(extracted)
    assert all(torch.equal(report.state_dict[k], v) for k, v in extracted.items())


@pytest.mark.parametrize("model,recipe", [("rtmdet_tiny-ofa_lat31", "rtmdet_tiny"), ("yolov5s-spos_0.33M", "yolov5_s"),
                                          ("yolov6s-attentive_a6", "yolov6_l_d12"), ("ofa_lat31", None)])
def test_detect_recipe_reads_the_head_signature(model, recipe):
    assert detect_recipe(rule_state_dict(model)) == recipe
