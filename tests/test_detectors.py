"""Whole detectors: upstream state-dict layout, parameter counts, recipes, and raw outputs vs the MMYOLO goldens."""
from __future__ import annotations

import json
import pickletools
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import razorzoo
from helpers import DETECTOR_PARAMS, DETECTORS, MAX_PER_IMG, assert_same_detections, loaded_detector, max_abs
from fixture_rule import DATA, effective_state_dict, manifest, rule_state_dict
from razorzoo.errors import RazorzooError
from razorzoo.arch.recipes import RECIPES, DistanceCoder, Letterbox, ResizePad, TestConfig, YOLOv5Coder
from razorzoo.detection.coders import DistancePointCoder, YOLOv5BoxCoder
from razorzoo.models.detector import NECKS_AND_HEADS, build_detector_from_subnet
from razorzoo.arch.subnet import load_subnet

HEAD_OUTPUTS = ("cls_scores", "bbox_preds", "objectnesses")
SUBNETS = Path(__file__).parents[1] / "cards" / "subnets"  # upstream YAMLs shipped with the cards


@pytest.mark.parametrize("model", DETECTORS)
def test_state_dict_equals_upstream_manifest(model):
    detector = razorzoo.build_detector(model)
    ours = [[k, list(v.shape), str(v.dtype)] for k, v in detector.state_dict().items()]
    assert ours == [[k, s, d] for k, s, d in manifest(model)["state_dict"]]


@pytest.mark.parametrize("model", DETECTORS)
def test_parameter_count(model):
    detector = razorzoo.build_detector(model)
    assert sum(p.numel() for p in detector.parameters()) == DETECTOR_PARAMS[model]


@pytest.mark.parametrize("model", DETECTORS)
def test_raw_outputs_match_upstream_goldens(model):
    detector = loaded_detector(model)
    goldens = load_file(DATA / model / "goldens.safetensors")
    x = goldens["input"]
    with torch.no_grad():
        feats = detector.backbone(x)
        neck = detector.neck(feats)
        raw = detector(x)
    assert isinstance(feats, tuple) and isinstance(neck, tuple) and isinstance(raw, tuple)
    for i in range(3):
        assert max_abs(feats[i], goldens[f"backbone.{i}"]) <= 1e-4, f"backbone.{i}"
        assert max_abs(neck[i], goldens[f"neck.{i}"]) <= 1e-4, f"neck.{i}"
    names = [n for n in HEAD_OUTPUTS if f"head.{n}.0" in goldens]
    assert len(raw) == len(names) == (3 if model.startswith("yolov5") else 2)
    for name, per_level in zip(names, raw):
        assert isinstance(per_level, list) and len(per_level) == 3
        for i, out in enumerate(per_level):
            assert max_abs(out, goldens[f"head.{name}.{i}"]) <= 1e-4, f"head.{name}.{i}"


def test_rtmdet_tied_convs_take_the_last_alias():
    model = "rtmdet_tiny-ofa_lat31"
    detector = loaded_detector(model)
    state = detector.state_dict()
    effective = effective_state_dict(model)
    groups = manifest(model)["tied_groups"]
    assert len(groups) == 4
    for group in groups:
        first, *_, last = group["names"]
        assert not torch.equal(rule_state_dict(model)[first], rule_state_dict(model)[last])  # the test can fail
        for name in group["names"]:
            assert torch.equal(state[name], effective[name])
            assert state[name].data_ptr() == state[last].data_ptr()


def test_tie_weights_after_assign_load():
    model = "rtmdet_tiny-ofa_lat31"
    detector = razorzoo.build_detector(model)
    detector.load_state_dict(rule_state_dict(model), strict=True, assign=True)
    detector.tie_weights()
    head = detector.bbox_head.head_module
    for towers in (head.cls_convs, head.reg_convs):
        for j in range(2):
            assert towers[0][j].conv.weight is towers[1][j].conv.weight is towers[2][j].conv.weight
    assert sum(p.numel() for p in detector.parameters()) == DETECTOR_PARAMS[model]
    goldens = load_file(DATA / model / "goldens.safetensors")
    with torch.no_grad():
        cls_scores = detector(goldens["input"])[0]
    assert max_abs(cls_scores[2], goldens["head.cls_scores.2"]) <= 1e-4


def test_tie_weights_is_a_no_op_without_shared_convs():
    detector = loaded_detector("yolov5s-spos_0.33M")
    before = {k: v.clone() for k, v in detector.state_dict().items()}
    detector.tie_weights()
    assert all(torch.equal(v, before[k]) for k, v in detector.state_dict().items())


@pytest.mark.parametrize("model", DETECTORS)
def test_recipe_settings_equal_the_upstream_config(model):
    """The typed recipe against the test_cfg / data_preprocessor / pipeline recorded from the real config."""
    detector = razorzoo.build_detector(model)
    recipe = detector.recipe
    upstream = json.loads((DATA / model / "goldens.json").read_text())
    cfg = upstream["test_cfg"]
    assert detector.test_cfg == recipe.test_cfg == TestConfig(
        multi_label=cfg["multi_label"],
        nms_pre=cfg["nms_pre"],
        score_thr=cfg["score_thr"],
        iou_threshold=cfg["nms"]["iou_threshold"],
        max_per_img=cfg["max_per_img"],
        min_bbox_size=cfg.get("min_bbox_size"),
    )
    pre = upstream["data_preprocessor"]
    assert (list(recipe.normalize.mean), list(recipe.normalize.std)) == (pre["mean"], pre["std"])
    assert recipe.normalize.bgr_to_rgb == pre["bgr_to_rgb"]
    assert detector.transform.resize is recipe.preprocess and detector.transform.norm is recipe.normalize
    resize = upstream["test_pipeline"][1]
    assert resize["scale"] == [recipe.preprocess.size] * 2
    expected_type = Letterbox if resize["type"] == "YOLOv5KeepRatioResize" else ResizePad
    assert type(recipe.preprocess) is expected_type and recipe.preprocess.pad_value == 114
    assert recipe.strides == (8, 16, 32)
    assert len(recipe.class_names) == 80


def test_recipe_coders():
    assert RECIPES["yolov5_s"].coder.anchors[2] == ((116, 90), (156, 198), (373, 326))
    assert RECIPES["yolov6_l_d12"].coder == DistanceCoder(prior_offset=0.5)
    assert RECIPES["rtmdet_tiny"].coder == DistanceCoder(prior_offset=0.0)
    assert {r.out_indices for r in RECIPES.values()} == {(1, 2, 3), (2, 4, 6), (2, 4, 5)}
    coders = {name: type(razorzoo.build_detector(name).coder) for name in DETECTORS}
    assert coders == {"yolov5s-spos_0.33M": YOLOv5BoxCoder, "yolov6s-attentive_a6": DistancePointCoder,
                      "rtmdet_tiny-ofa_lat31": DistancePointCoder}
    assert isinstance(RECIPES["yolov5_s"].coder, YOLOv5Coder)
    assert NECKS_AND_HEADS.keys() == RECIPES.keys()  # every recipe id builds, and only those


def _pickled_class_names(path) -> tuple[str, ...]:
    """The ``dataset_meta['classes']`` strings of a real mmengine checkpoint pickle, read without unpickling."""
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    strings = [arg for op, arg, _ in pickletools.genops(data) if isinstance(arg, str) and "UNICODE" in op.name]
    start = strings.index("classes") + 1
    return tuple(strings[start:strings.index("palette", start)])


def test_class_names_are_mmdet_coco_order():
    upstream = _pickled_class_names(DATA / "layouts" / "yolov5s-spos_0.33M" / "runner_extras.pth")
    assert len(upstream) == 80
    for recipe in RECIPES.values():
        assert recipe.class_names == upstream
    assert razorzoo.build_detector("rtmdet_tiny-ofa_lat31").class_names == upstream


@pytest.mark.parametrize(
    "yaml, recipe, channels",
    [
        ("ATTENTIVE_SUBNET_A0.yaml", "yolov6_l_d12", None),  # another subnet of the upstream pairing's space
        ("OFA_SUBNET_NOTE8_LAT22.yaml", "rtmdet_tiny", None),
        ("ATTENTIVE_SUBNET_A0.yaml", "yolov5_s", None),  # cross-space: the neck adapts to the backbone
        ("SPOS_SUBNET.yaml", "rtmdet_tiny", (160, 320, 640)),
    ],
)
def test_other_subnets_get_a_working_detector(yaml, recipe, channels):
    subnet = load_subnet(SUBNETS / yaml)
    detector = build_detector_from_subnet(subnet, recipe)
    if channels is not None:
        assert tuple(detector.backbone.out_channels) == channels
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        feats = detector.backbone(x)
        raw = detector(x)
    assert [f.shape[1] for f in feats] == list(detector.backbone.out_channels)
    assert [f.shape[-2:] for f in feats] == [torch.Size([64 // s, 96 // s]) for s in (8, 16, 32)]
    num_priors = 3 if recipe == "yolov5_s" else 1
    assert [o.shape for o in raw[0]] == [torch.Size([1, 80 * num_priors, 64 // s, 96 // s]) for s in (8, 16, 32)]
    assert all(torch.isfinite(o).all() for level in raw for o in level)


def test_unknown_recipe_is_a_clear_error():
    subnet = load_subnet(DATA / "yolov5s-spos_0.33M" / "subnet.yaml")
    with pytest.raises(RazorzooError, match="unknown detector recipe 'yolov7'.*rtmdet_tiny"):
        build_detector_from_subnet(subnet, "yolov7")


def test_detector_is_built_for_inference():
    detector = razorzoo.build_detector("yolov5s-spos_0.33M")
    assert not detector.training
    assert isinstance(detector.bbox_head.head_module, torch.nn.Module)


@pytest.mark.parametrize("model", DETECTORS)
def test_predict_reproduces_upstream_inference_detector(model):
    """``predict`` on the end-to-end image vs ``mmdet.apis.inference_detector``, as sets of detections (labels,
    scores and boxes; near-flat fixture scores make the rank order a tie-break)."""
    detector = loaded_detector(model)
    goldens = load_file(DATA / model / "goldens.safetensors")
    detections = detector.predict(DATA / model / "image.png")
    assert detections.boxes.shape == (len(detections), 4) and detections.labels.dtype == torch.int64
    expected = [goldens[f"e2e.image.pred.{key}"] for key in ("bboxes", "scores", "labels")]
    assert_same_detections(detections, expected, MAX_PER_IMG[model])


def test_predict_takes_one_image_or_a_list_and_equals_the_three_steps():
    model = "rtmdet_tiny-ofa_lat31"
    detector = loaded_detector(model)
    image = DATA / model / "image_portrait.png"
    single = detector.predict(image, score_thr=0.3, max_det=20)
    both = detector.predict([image, str(DATA / model / "image.png")], score_thr=0.3, max_det=20)
    assert isinstance(both, list) and len(both) == 2
    assert len(single) <= 20 and bool((single.scores > 0.3).all())
    # a batch of two runs other float kernels: the same detections up to ties at the cutoff
    assert_same_detections(both[0], single, 20)
    batch, metas = detector.preprocess([image])
    with torch.no_grad():
        manual = detector.postprocess(detector(batch), metas, score_thr=0.3, max_det=20)[0]
    assert torch.equal(manual.boxes, single.boxes) and torch.equal(manual.scores, single.scores)
