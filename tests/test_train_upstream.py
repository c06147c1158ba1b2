"""razorzoo's training data against MMYOLO's own, recorded in tests/data/train_pipeline (its README says how): the
dataset's parsing and filtering, every transform's parameters, whole pipelines replayed with upstream's random
draws (images and boxes), and mmengine's sampler order."""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers.draws import UpstreamDraws
from razorzoo.arch.train_pipelines import TRAIN_PIPELINES
from razorzoo.training.dataset import CocoTrainingSet
from razorzoo.training.pipeline import epoch_order, make_sample
from razorzoo.training.transforms import Pipeline

DATA = Path(__file__).parent / "data" / "train_pipeline"
GOLDENS = json.loads((DATA / "goldens.json").read_text())
CONFIGS = json.loads((DATA / "configs.json").read_text())
CLASSES = ("disc", "square", "bar")  # the recorder's metainfo classes

# upstream attributes razorzoo does not expose, and the only values its transforms implement
IMPLIED = {
    "Mosaic": {"max_refetch": 15},
    "YOLOv5MixUp": {"max_refetch": 15},
    "YOLOXMixUp": {"max_refetch": 15},
    "YOLOv5RandomAffine": {"use_mask_refine": False, "resample_num": 1000},  # masks only
    "RandomFlip": {"direction": "horizontal", "swap_seg_labels": None},
    "YOLOv5KeepRatioResize": {"backend": "cv2", "interpolation": "bilinear", "keep_ratio": True,
                              "clip_object_border": True, "scale_factor": None},
    "LetterResize": {"backend": "cv2", "interpolation": "bilinear", "keep_ratio": True, "clip_object_border": True,
                     "scale_factor": None, "use_mini_pad": False, "stretch_only": False, "half_pad_param": False},
    "RandomResize": {"resize_cfg": {"type": "mmdet.Resize", "keep_ratio": True}},
    "RandomCrop": {"crop_type": "absolute", "recompute_bbox": False},
    "Pad": {"size_divisor": None, "pad_to_square": False, "padding_mode": "constant"},
}
IMPLICIT_STEPS = {"LoadImageFromFile", "LoadAnnotations", "mmdet.PackDetInputs"}


def dataset(recipe: str) -> CocoTrainingSet:
    pipeline = TRAIN_PIPELINES[recipe]
    return CocoTrainingSet(DATA / "dataset" / "instances.json", DATA / "dataset" / "images", classes=CLASSES,
                           filter_empty_gt=pipeline.filter_empty_gt, min_size=pipeline.min_size)


@pytest.mark.parametrize("recipe", sorted(GOLDENS["datasets"]))
def test_dataset_parses_and_filters_like_mmdet(recipe):
    records = dataset(recipe).records
    expected = GOLDENS["datasets"][recipe]
    assert [r.img_id for r in records] == [e["img_id"] for e in expected]
    for record, e in zip(records, expected):
        np.testing.assert_array_equal(record.boxes, np.array(e["boxes"], np.float32).reshape(-1, 4))
        assert record.labels.tolist() == e["labels"]
        np.testing.assert_array_equal(record.crowd_boxes, np.array(e["crowd"], np.float32).reshape(-1, 4))


def _mine(transform) -> dict:
    """A razorzoo transform's fields as upstream's attributes (JSON form, as recorded)."""
    data = json.loads(json.dumps({f.name: getattr(transform, f.name) for f in fields(transform)
                                  if f.name != "pre_transform"}))
    if type(transform).__name__ in ("LetterResize", "Pad"):
        data["pad_val"] = {"img": data["pad_val"]}  # the configs' pad_val=dict(img=...)
    return data


@pytest.mark.parametrize("key", sorted(GOLDENS["transforms"]))
def test_every_transform_has_upstreams_parameters(key):
    recipe, stage = key.split("/")
    pipeline = TRAIN_PIPELINES[recipe]
    mine = pipeline.stage1 if stage == "1" else pipeline.stage2

    def compare(ours, theirs):
        assert [type(t).__name__ for t in ours] == [t["type"] for t in theirs]
        for transform, upstream in zip(ours, theirs):
            expected = dict(upstream["attributes"])
            implied = IMPLIED.get(upstream["type"], {})
            for name, value in implied.items():
                assert expected.pop(name) == value, f"{upstream['type']}.{name}"
            compare(getattr(transform, "pre_transform", ()), expected.pop("pre_transform", []))
            assert _mine(transform) == expected, upstream["type"]

    compare(mine, GOLDENS["transforms"][key])


@pytest.mark.parametrize("recipe", sorted(CONFIGS))
def test_train_settings_are_the_configs(recipe):
    config, pipeline = CONFIGS[recipe], TRAIN_PIPELINES[recipe]
    assert pipeline.switch_epoch == config["switch_epoch"] and pipeline.max_epochs == config["max_epochs"]
    assert (pipeline.stage2 is None) == (config["train_pipeline_stage2"] is None)
    assert config["filter_cfg"] == {"filter_empty_gt": pipeline.filter_empty_gt, "min_size": pipeline.min_size}
    assert (config["batch_size"], config["num_workers"]) == (pipeline.batch_size, pipeline.workers)
    assert tuple(config["img_scale"]) == pipeline.img_scale
    steps = [t["type"] for t in config["train_pipeline"] if t["type"] not in IMPLICIT_STEPS]
    assert [s for s in steps if s in pipeline.omitted] == list(pipeline.omitted)
    kept = [s for s in steps if s not in pipeline.omitted]
    assert kept == [("mmdet." if type(t).__name__ in _MMDET else "") + type(t).__name__ for t in pipeline.stage1]


_MMDET = {"RandomFlip", "RandomResize", "RandomCrop", "YOLOXHSVRandomAug", "Pad"}


@pytest.mark.parametrize("case", GOLDENS["cases"], ids=lambda c: f"{c['recipe']}-stage{c['stage']}")
def test_pipeline_replays_mmyolo_exactly(case):
    recipe = TRAIN_PIPELINES[case["recipe"]]
    pipeline = Pipeline(recipe.stage1 if case["stage"] == 1 else recipe.stage2)
    source, draws = dataset(case["recipe"]), UpstreamDraws(case["seed"])
    sources, refetched = [], False
    for index, expected in zip(case["indices"], case["outputs"]):
        sample = make_sample(pipeline, source, index, draws)
        reference = cv2.imread(str(DATA / "outputs" / expected["image"]))
        assert sample.img.shape == reference.shape
        different = sample.img != reference
        # bit-identical where recorded (AVX-512); OpenCV's SIMD paths on another CPU round some pixels of a
        # resized or colour-jittered image one level differently (AVX2: up to 0.4% of them), never by more
        assert different.mean() <= 1e-2 and np.abs(sample.img.astype(int) - reference).max(initial=0) <= 1
        assert sample.img_id == expected["img_id"]
        np.testing.assert_allclose(sample.boxes, np.array(expected["boxes"], np.float32).reshape(-1, 4), atol=1e-3)
        assert sample.labels.tolist() == expected["labels"]
        sources.append(len(sample.source_ids))
        refetched |= sample.img_id != source.records[index].img_id
    # what the recorded sequences cover: mosaics everywhere in stage 1 (once RTMDet's cache holds 5), a mix-up in
    # the YOLOv6 and RTMDet ones (more than 4 images), RTMDet crops that lost every box and were replaced
    if case["stage"] == 2:
        assert set(sources) == {1}
    else:
        assert sources[-1] >= 4 and (max(sources) > 4) == (case["recipe"] != "yolov5_s")
    assert refetched == (case["recipe"] == "rtmdet_tiny")  # only RandomCrop refuses samples


def test_epoch_order_is_mmengines_default_sampler():
    for entry in GOLDENS["samplers"]:
        order = epoch_order(entry["size"], epoch=entry["epoch"], seed=entry["seed"], rank=entry["rank"],
                            world_size=entry["world_size"])
        assert [index for _, index in order] == entry["indices"]
