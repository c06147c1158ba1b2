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
    assert report.problems == ["1 tensor the YAML needs is missing: head.fc.bias",
                               "1 tensor has another shape: head.fc.weight [1000, 1024] in YAML, [10, 1024] in weights"]


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


# --- what the report says, word for word (a user reads it; conversion refuses with it) -------------------------------

def test_report_text_for_a_match_a_supernet_and_a_mismatch():
    assert str(verify_pair(spec_with("attentive_a6"), rule_state_dict("attentive_a6"))) == "OK: matching weights"
    assert str(verify_pair(spec_with("ofa_lat31"), supernet_state_dict("ofa_lat31"))) == (
        "OK: a supernet checkpoint; the subnet will be extracted\n"
        "the checkpoint is a supernet: compared the subnet extracted from it")
    weights = rule_state_dict("spos_0.33M")
    report = verify_pair(spec_with("spos_0.33M", backbone__layers__0__1="shuffle_7x7"), weights)
    held = [k for k in weights if k.startswith("backbone.layers.0.1._candidates.shuffle_3x3.")]
    assert report.unexpected == held and all(
        k.startswith("backbone.layers.0.1._candidates.shuffle_7x7.") for k in report.missing)
    assert str(report) == (
        "the subnet YAML and the checkpoint do not match:\n"
        "  - backbone.layers.0.1 chose shuffle_7x7 but the checkpoint holds shuffle_3x3 weights\n"
        f"key level: {len(report.missing)} missing, {len(held)} unexpected, 0 differently shaped tensors")


@pytest.mark.parametrize("model", CLASSIFIERS)
def test_notes_count_the_entries_a_backbone_leaves_out(model):
    weights = rule_state_dict(model)
    assert verify_pair(spec_with(model), weights).notes == []
    used = sum(k.startswith("backbone.") for k in weights)
    assert used < len(weights)
    assert verify_pair(spec_with(model, "backbone"), weights).notes == [
        f"the backbone uses {used} of the checkpoint's {len(weights)} entries"]


def test_a_read_checkpoint_object_is_accepted(tmp_path):
    from razorzoo.weights.checkpoint import read_checkpoint

    checkpoint = read_checkpoint(write_checkpoint("ofa_lat31", "mmrazor-subnet", tmp_path / "subnet.pth"))
    assert not isinstance(checkpoint, dict)
    report = verify_pair(spec_with("ofa_lat31"), checkpoint)
    assert report.ok and list(report.state_dict) == list(rule_state_dict("ofa_lat31"))


_SPACE_NAMES = {"spos_0.33M": "SPOS ShuffleNetV2", "attentive_a6": "AttentiveNAS MobileNetV3",
                "ofa_lat31": "OFA MobileNetV3"}


@pytest.mark.parametrize("yaml_model", CLASSIFIERS)
@pytest.mark.parametrize("weights_model", CLASSIFIERS)
def test_every_pair_of_search_spaces_is_named(yaml_model, weights_model):
    report = verify_pair(spec_with(yaml_model), rule_state_dict(weights_model))
    if yaml_model == weights_model:
        assert report.ok
        return
    assert report.problems == [
        f"the checkpoint's backbone is {_SPACE_NAMES[weights_model]}, but the YAML is a subnet of "
        f"{_SPACE_NAMES[yaml_model]}: pair the weights with a YAML of their search space"]


@pytest.mark.parametrize("task", ["classification", "backbone"])
def test_yaml_differences_are_named_for_a_backbone_too(task):
    spos = verify_pair(spec_with("spos_0.33M", task, backbone__layers__2__5="shuffle_5x5"),
                       rule_state_dict("spos_0.33M"))
    assert spos.problems == ["backbone.layers.2.5 chose shuffle_5x5 but the checkpoint holds shuffle_xception weights"]
    attentive = verify_pair(spec_with("attentive_a6", task, backbone__layers__6__kernel_size=3),
                            rule_state_dict("attentive_a6"))
    assert attentive.problems == ["backbone.layers.6.kernel_size 3 in YAML, 5 in weights"]


# --- key-level listings ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dropped", [1, 5, 6])
def test_missing_tensors_are_listed_up_to_five(dropped):
    weights = rule_state_dict("spos_0.33M")  # the stem conv's six entries come first: no YAML choice explains them
    gone = list(weights)[:dropped]
    assert all(k.startswith("backbone.conv1.") for k in gone)
    report = verify_pair(spec_with("spos_0.33M"), {k: v for k, v in weights.items() if k not in gone})
    more = f" (+{dropped - 5} more)" if dropped > 5 else ""
    needs = "1 tensor the YAML needs is" if dropped == 1 else f"{dropped} tensors the YAML needs are"
    assert report.problems == [f"{needs} missing: {', '.join(gone[:5])}{more}"]


def test_unexpected_tensors_are_listed():
    weights = {**rule_state_dict("ofa_lat31"), "extra.weight": torch.zeros(1), "extra.bias": torch.zeros(1)}
    assert verify_pair(spec_with("ofa_lat31"), weights).problems == [
        "2 tensors in the checkpoint are not in the model: extra.weight, extra.bias"]


def test_a_detector_checkpoint_without_its_head_lists_the_head_tensors():
    weights = rule_state_dict("rtmdet_tiny-ofa_lat31")
    head = [k for k in weights if k.startswith("bbox_head.")]
    spec = spec_with("rtmdet_tiny-ofa_lat31", "detection", detector="rtmdet_tiny")
    report = verify_pair(spec, {k: v for k, v in weights.items() if k not in head})
    assert report.problems == [f"{len(head)} tensors the YAML needs are missing: {', '.join(head[:5])} "
                               f"(+{len(head) - 5} more)"]


def test_two_detector_heads_are_both_named():
    yolov5_head = {k: v for k, v in rule_state_dict("yolov5s-spos_0.33M").items() if k.startswith("bbox_head.")}
    weights = {**rule_state_dict("rtmdet_tiny-ofa_lat31"), **yolov5_head}
    assert detect_recipe(weights) is None  # ambiguous: no recipe is guessed
    spec = spec_with("rtmdet_tiny-ofa_lat31", "detection", detector="yolov6_l_d12")
    assert verify_pair(spec, weights).problems[0].startswith(
        "the checkpoint holds a rtmdet_tiny, yolov5_s detector head, but the spec uses the yolov6_l_d12 recipe")


# --- a MobileNet checkpoint missing part of a block or a stage --------------------------------------------------------

@pytest.mark.parametrize("model", ["attentive_a6", "ofa_lat31"])
@pytest.mark.parametrize("conv", ["depthwise_conv", "linear_conv", "expand_conv"])
def test_a_block_missing_a_conv_is_reported_as_missing_not_as_a_yaml_choice(model, conv):
    weights = rule_state_dict(model)
    key = f"backbone.layer3.1.{conv}.conv.weight"
    del weights[key]
    assert verify_pair(spec_with(model), weights).problems == [f"1 tensor the YAML needs is missing: {key}"]


def test_yaml_differences_after_a_missing_stage_are_still_named():
    weights = {k: v for k, v in rule_state_dict("attentive_a6").items() if not k.startswith("backbone.layer2.")}
    report = verify_pair(spec_with("attentive_a6", backbone__layers__6__kernel_size=3), weights)
    assert report.problems == ["backbone.layers.6.kernel_size 3 in YAML, 5 in weights"]


@pytest.mark.parametrize("kernels,yaml_kernel,said", [((5, 7), 5, "7"), ((5, 7), 3, "5/7"), ((7, 3), 5, "3/7")])
def test_a_stage_whose_blocks_disagree_lists_every_kernel_found(kernels, yaml_kernel, said):
    # AttentiveNAS chooses one kernel per stage; hand-edited weights may hold several
    weights = rule_state_dict("attentive_a6")
    for b, kernel in enumerate(kernels):
        key = f"backbone.layer6.{b}.depthwise_conv.conv.weight"
        weights[key] = torch.zeros(*weights[key].shape[:2], kernel, kernel)
    report = verify_pair(spec_with("attentive_a6", backbone__layers__6__kernel_size=yaml_kernel), weights)
    assert report.problems == [f"backbone.layers.6.kernel_size {yaml_kernel} in YAML, {said} in weights"]


# --- telling a supernet from a subnet that is nearly the largest -------------------------------------------------------

def _second_largest(choices) -> int:
    return sorted(set(choices))[-2]


def _near_max_subnets(family: str) -> dict:
    """The largest subnet of ``family`` with one choice lowered, for every kind of choice, in the first stage that
    offers it (an early stage: a check that only looks at the last stage must fail)."""
    import dataclasses

    from razorzoo.weights.extract import max_subnet

    top = max_subnet(family)
    space = top.space
    variants = {name: dataclasses.replace(top, **{name: _second_largest(getattr(space, name))})
                for name in ("first_channels", "last_channels") if len(set(getattr(space, name))) > 1}
    for what, choices in (("depth", "depths"), ("out_channels", "out_channels"), ("kernel_size", "kernel_sizes"),
                          ("expand_ratio", "expand_ratios")):
        i = next(i for i, s in enumerate(space.stages) if len(set(getattr(s, choices))) > 1)
        value = _second_largest(getattr(space.stages[i], choices))
        stage = top.stages[i]
        if what in ("depth", "out_channels"):
            stage = dataclasses.replace(stage, **{what: value})
        else:
            changed = {what: value, **({"expand_ratio_se": value} if what == "expand_ratio" else {})}
            first = dataclasses.replace(stage.blocks[0], **changed)
            blocks = (first, *stage.blocks[1:]) if space.fine_grained else (first,) * len(stage.blocks)
            stage = dataclasses.replace(stage, blocks=blocks)
        variants[f"layers.{i + 1}.{what}"] = dataclasses.replace(top, stages=(*top.stages[:i], stage, *top.stages[i + 1:]))
    return variants


def _spec_of(subnet):
    return resolve_spec(yaml.safe_load(subnet.to_yaml()), "classification")


@pytest.mark.parametrize("model", ["attentive_a6", "ofa_lat31"])
def test_a_supernet_paired_with_a_nearly_largest_yaml_is_a_supernet(model):
    supernet = supernet_state_dict(model)
    for what, subnet in _near_max_subnets(spec_with(model).subnet.family).items():
        report = verify_pair(_spec_of(subnet), supernet)
        assert report.ok and report.is_supernet, (what, str(report))


@pytest.mark.parametrize("model", ["attentive_a6", "ofa_lat31"])
def test_a_nearly_largest_subnet_checkpoint_is_not_a_supernet(model):
    supernet = supernet_state_dict(model)
    for what, subnet in _near_max_subnets(spec_with(model).subnet.family).items():
        weights = extract_subnet(supernet, subnet)
        report = verify_pair(_spec_of(subnet), weights)
        assert report.ok and not report.is_supernet, (what, str(report))
        # taken as it is: nothing re-sliced, no BN counter reset
        assert all(torch.equal(report.state_dict[k], v) for k, v in weights.items()), what


def test_the_largest_subnet_yaml_with_its_supernet():
    from razorzoo.weights.extract import max_subnet

    # AttentiveNAS: the supernet checkpoint *is* the largest subnet's, and is taken as it is
    supernet = supernet_state_dict("attentive_a6")
    report = verify_pair(_spec_of(max_subnet("attentive")), supernet)
    assert report.ok and not report.is_supernet
    assert all(torch.equal(report.state_dict[k], v) for k, v in supernet.items())
    # OFA: the kernel transformation matrices still mark a supernet, whose subnet is extracted
    report = verify_pair(_spec_of(max_subnet("ofa")), supernet_state_dict("ofa_lat31"))
    assert report.ok and report.is_supernet


def test_a_spos_supernet_with_two_candidates_per_block_is_a_supernet():
    from razorzoo.arch.subnet import load_subnet

    supernet = supernet_state_dict("spos_0.33M")
    chosen = load_subnet(DATA / "spos_0.33M" / "subnet.yaml").choices
    ops = sorted({k.split("._candidates.")[1].split(".")[0] for k in supernet if "._candidates." in k})
    kept = {(s, b): {op, next(o for o in ops if o != op)} for s, row in enumerate(chosen) for b, op in enumerate(row)}

    def keep(key: str) -> bool:
        if "._candidates." not in key:
            return True
        s, b = (int(x) for x in key.split(".")[2:4])
        return key.split("._candidates.")[1].split(".")[0] in kept[s, b]

    report = verify_pair(spec_with("spos_0.33M"), {k: v for k, v in supernet.items() if keep(k)})
    assert report.ok and report.is_supernet
    expected = extract_subnet(supernet, DATA / "spos_0.33M" / "subnet.yaml")
    assert all(torch.equal(report.state_dict[k], v) for k, v in expected.items())


@pytest.mark.parametrize("model", ["attentive_a6", "ofa_lat31"])
def test_a_nearly_largest_subnet_checkpoint_with_another_yaml_is_a_mismatch_not_a_supernet(model):
    """Every searched dimension must be at its maximum for a supernet: one lowered choice anywhere makes the weights
    a subnet's, which the shipped YAML does not match (slicing them would hide the mismatch)."""
    supernet = supernet_state_dict(model)
    for what, subnet in _near_max_subnets(spec_with(model).subnet.family).items():
        report = verify_pair(spec_with(model), extract_subnet(supernet, subnet))
        assert not report.is_supernet and not report.ok, what


def test_a_stage_without_any_linear_conv_is_reported_as_missing_tensors():
    weights = rule_state_dict("attentive_a6")
    gone = [k for k in weights if k.startswith("backbone.layer7.") and ".linear_conv.conv.weight" in k]
    assert gone == ["backbone.layer7.0.linear_conv.conv.weight"]  # A6's last stage has one block
    report = verify_pair(spec_with("attentive_a6"), {k: v for k, v in weights.items() if k not in gone})
    assert report.problems == [f"1 tensor the YAML needs is missing: {gone[0]}"]


def test_a_depthwise_width_that_is_no_multiple_of_the_input_is_not_read_as_an_expand_ratio():
    weights = rule_state_dict("attentive_a6")
    key = "backbone.layer3.1.depthwise_conv.conv.weight"
    cin = weights["backbone.layer3.1.expand_conv.conv.weight"].shape[1]
    shape = tuple(weights[key].shape)
    weights[key] = torch.zeros(cin * 4 + 3, *shape[1:])  # 4.x times the input: no expand ratio gives it
    assert verify_pair(spec_with("attentive_a6"), weights).problems == [
        f"1 tensor has another shape: {key} {list(shape)} in YAML, {[cin * 4 + 3, *shape[1:]]} in weights"]
