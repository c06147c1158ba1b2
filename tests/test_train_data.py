"""The training set (parsing rules, validation errors) and the loader (stages, sharding, determinism across
workers, mid-epoch resume, batches) on small COCO-format folders written by the tests."""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage
import torch

from razorzoo.arch.train_pipelines import TRAIN_PIPELINES
from razorzoo.bounded import InputError
from razorzoo.errors import DatasetError
from razorzoo.training.dataset import CocoTrainingSet
from razorzoo.training.pipeline import TrainLoader, collate, epoch_order

PHOTO = Path(skimage.__file__).parent / "data" / "chelsea.png"  # 451 x 300, public domain (skimage/data/_fetchers.py)
CATEGORIES = [{"id": 3, "name": "red"}, {"id": 1, "name": "green"}, {"id": 8, "name": "blue"}]
COLOURS = {3: (0, 0, 255), 1: (0, 255, 0), 8: (255, 0, 0)}


def write_set(root: Path, count: int = 10) -> Path:
    """``count`` images of coloured rectangles (one is scikit-image's cat photo with two boxes) + instances.json."""
    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        if i == 0:
            shutil.copy(PHOTO, root / "images" / "cat.png")
            images.append({"id": 1, "file_name": "cat.png", "width": 451, "height": 300})
            for cat, bbox in ((3, [140.0, 20.0, 200.0, 260.0]), (1, [10.0, 200.0, 60.0, 50.0])):
                annotations.append({"id": len(annotations) + 1, "image_id": 1, "category_id": cat, "bbox": bbox,
                                    "area": bbox[2] * bbox[3], "iscrowd": 0})
            continue
        w, h = int(rng.integers(120, 260)), int(rng.integers(100, 220))
        img = np.full((h, w, 3), 50, np.uint8)
        for _ in range(2):
            cat = int(rng.choice([3, 1, 8]))
            bw, bh = int(rng.integers(20, 60)), int(rng.integers(20, 60))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            img[y:y + bh, x:x + bw] = COLOURS[cat]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cat,
                                "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0})
        cv2.imwrite(str(root / "images" / f"{i}.png"), img)
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": w, "height": h})
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                     "categories": CATEGORIES}))
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_set(tmp_path_factory.mktemp("train"))


def open_set(folder: Path, recipe: str = "yolov5_s", **kwargs) -> CocoTrainingSet:
    pipeline = TRAIN_PIPELINES[recipe]
    kwargs = {"filter_empty_gt": pipeline.filter_empty_gt, "min_size": pipeline.min_size, **kwargs}
    return CocoTrainingSet(folder / "instances.json", folder / "images", **kwargs)


def same_batches(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x.images, y.images) and x.image_ids == y.image_ids and x.source_ids == y.source_ids
        and all(torch.equal(s["boxes"], t["boxes"]) and torch.equal(s["labels"], t["labels"])
                for s, t in zip(x.targets, y.targets)) for x, y in zip(a, b))


# ---- the dataset -------------------------------------------------------------------------------------------------


def test_classes_follow_the_files_category_order_and_samples_keep_the_contract(folder):
    data = open_set(folder)
    assert data.classes == ("red", "green", "blue") and data.category_ids == (3, 1, 8)
    subset = open_set(folder, classes=["blue", "red"])  # the order of `classes` does not matter
    assert subset.classes == ("red", "blue")
    record = data.records[0]
    assert record.labels.tolist() == [0, 1]
    np.testing.assert_array_equal(record.boxes, [[140, 20, 340, 280], [10, 200, 70, 250]])
    assert sum(len(r.labels) for r in subset.records) == sum((r.labels != 1).sum() for r in data.records)
    sample = data.load(0)
    assert sample.img.shape == (300, 451, 3) and sample.img.dtype == np.uint8
    assert np.array_equal(sample.img, cv2.imread(str(PHOTO)))  # BGR, as OpenCV decodes
    assert sample.boxes.dtype == np.float32 and sample.labels.dtype == np.int64
    assert (sample.img_id, sample.ori_shape, sample.source_ids) == (1, (300, 451), (1,))
    assert sample.path == folder / "images" / "cat.png"
    with pytest.raises(ValueError):
        sample.img[0, 0] = 0  # shared with caches: read-only


def test_filters_follow_upstream(tmp_path):
    root = write_set(tmp_path, 4)
    data = json.loads((root / "instances.json").read_text())
    data["images"].append({"id": 50, "file_name": "1.png", "width": 451, "height": 31})  # below min_size 32
    data["images"].append({"id": 51, "file_name": "1.png", "width": 100, "height": 100})  # no annotation
    data["images"].append({"id": 52, "file_name": "2.png", "width": 100, "height": 100})  # only a crowd box
    data["annotations"].append({"id": 90, "image_id": 52, "category_id": 3, "bbox": [0, 0, 50, 50], "area": 2500,
                                "iscrowd": 1})
    data["images"].append({"id": 53, "file_name": "3.png", "width": 32, "height": 40})  # exactly min_size: kept
    data["annotations"].append({"id": 91, "image_id": 53, "category_id": 3, "bbox": [5, 5, 1, 10], "area": 10})
    data["annotations"].append({"id": 92, "image_id": 53, "category_id": 3, "bbox": [5, 5, 0.99, 10], "area": 9.9})
    data["images"].append({"id": 54, "file_name": "3.png", "width": 100, "height": 40})  # only a green box
    data["annotations"].append({"id": 93, "image_id": 54, "category_id": 1, "bbox": [5, 5, 10, 10], "area": 100})
    data["images"].append({"id": 55, "file_name": "3.png", "width": 100, "height": 40})  # only an ignored box
    data["annotations"].append({"id": 94, "image_id": 55, "category_id": 1, "bbox": [5, 5, 10, 10], "area": 100,
                                "ignore": 1})
    (root / "instances.json").write_text(json.dumps(data))
    ann, images = root / "instances.json", root / "images"
    ids = [r.img_id for r in CocoTrainingSet(ann, images, min_size=32).records]
    assert ids == [1, 2, 3, 4, 51, 52, 53, 54, 55]
    ids = [r.img_id for r in CocoTrainingSet(ann, images, filter_empty_gt=True, min_size=32).records]
    assert ids == [1, 2, 3, 4, 52, 53, 54, 55]  # crowd or ignored boxes keep their image (upstream's cat_img_map)
    subset = CocoTrainingSet(ann, images, filter_empty_gt=True, classes=["red", "blue"]).records
    assert 54 not in [r.img_id for r in subset]  # its only annotation is of a category left out
    records = {r.img_id: r for r in CocoTrainingSet(ann, images).records}
    assert records[52].boxes.shape == (0, 4) and records[52].crowd_boxes.tolist() == [[0, 0, 50, 50]]
    assert records[53].boxes.tolist() == [[5, 5, 6, 15]]  # w = 1 is kept, w = 0.99 is not
    assert records[55].boxes.shape == records[55].crowd_boxes.shape == (0, 4)


def broken(folder: Path, tmp_path: Path, edit) -> Path:
    """A copy of the set whose annotation file ``edit(data)`` changed."""
    data = json.loads((folder / "instances.json").read_text())
    edit(data)
    (tmp_path / "bad.json").write_text(json.dumps(data))
    return tmp_path / "bad.json"


def set_(path, value):
    def edit(data):
        *keys, last = path
        target = data
        for key in keys:
            target = target[key]
        target[last] = value
    return edit


@pytest.mark.parametrize("edit, message", [
    (set_(["images"], []), "'images' is empty"),
    (set_(["categories"], []), "'categories' is empty"),
    (lambda d: d["images"].append(dict(d["images"][1])), "images[10] repeats the image id 2"),
    (lambda d: d["annotations"].append(dict(d["annotations"][3])), "repeats the annotation id 4"),
    (set_(["categories", 1, "id"], 3), "categories[1] repeats the id 3"),
    (set_(["categories", 2, "name"], "red"), "categories[2] repeats the name 'red' of categories[0]"),
    (set_(["categories", 2, "name"], "bl\x1bue"), "categories[2].name 'bl\\x1bue' is not a usable class name"),
    (set_(["annotations", 2, "image_id"], 999), "annotations[2].image_id 999 is not the id of any image"),
    (set_(["annotations", 2, "category_id"], 4), "annotations[2].category_id 4 is not the id of any category"),
    (set_(["annotations", 2, "bbox"], [1, 2, 3]), "annotations[2].bbox is a list of 3 items, not a list of 4"),
    (set_(["annotations", 2, "bbox"], "1 2 3 4"), "annotations[2].bbox is '1 2 3 4', not a list of 4 numbers"),
    (set_(["annotations", 2, "bbox", 1], "2"), "annotations[2].bbox[1] is '2', not a number"),
    (set_(["annotations", 2, "bbox", 2], float("nan")), "is not JSON ('NaN is not a JSON number')"),
    (set_(["annotations", 2, "bbox", 0], 1e300), "annotations[2].bbox[0] is 1e+300, not a finite number"),
    (set_(["annotations", 2, "area"], float("inf")), "is not JSON ('Infinity is not a JSON number')"),
    (set_(["annotations", 2, "iscrowd"], 2), "annotations[2].iscrowd is 2; use 0 or 1"),
    (set_(["annotations", 2, "id"], 4.0), "annotations[2].id is 4.0, not an integer"),
    (set_(["images", 3, "id"], True), "images[3].id is True, not an integer"),
    (set_(["images", 3, "width"], 0), "images[3].width is 0, outside 1.."),
    (set_(["images", 3, "width"], 2000000), "images[3] is 2000000x"),
    (lambda d: d["annotations"][0].pop("area"), "annotations[0] lacks one of ['id', 'image_id', 'category_id', "
                                                 "'bbox', 'area']"),
    (set_(["images", 2, "file_name"], "../outside.png"), "images[2].file_name '../outside.png' would leave"),
    (set_(["images", 2, "file_name"], "/etc/passwd"), "images[2].file_name '/etc/passwd' is not a plain relative"),
    (set_(["images", 2, "file_name"], "a\\b.png"), "is not a plain relative file name"),
    (set_(["images", 2, "file_name"], 5), "images[2].file_name 5 is not a usable file name"),
    (set_(["images", 2, "file_name"], "gone.png"), "1 of the 10 training images"),
    (lambda d: [a.update(iscrowd=1) for a in d["annotations"]], "hold no box to train on"),
    (lambda d: [a.update(bbox=[0, 0, 0.5, 9]) for a in d["annotations"]], "hold no box to train on"),
])
def test_bad_annotation_files_are_one_line_errors(folder, tmp_path, edit, message):
    ann_file = broken(folder, tmp_path, edit)
    with pytest.raises(DatasetError) as caught:
        CocoTrainingSet(ann_file, folder / "images", min_size=32)
    text = str(caught.value)
    assert message in text and "\n" not in text, text
    assert str(ann_file) in text  # every refusal names the file it is about


def test_bad_folders_and_files_are_one_line_errors(folder, tmp_path):
    ann = folder / "instances.json"
    cases = {
        "annotation file not found": lambda: CocoTrainingSet(tmp_path / "nope.json", folder / "images"),
        "image folder not found": lambda: CocoTrainingSet(ann, tmp_path / "nope"),
        "nested too deeply": lambda: CocoTrainingSet(_write(tmp_path / "deep.json", "[" * 100000 + "]" * 100000),
                                                     folder / "images"),
        "is not JSON": lambda: CocoTrainingSet(_write(tmp_path / "cut.json", '{"images": ['), folder / "images"),
        "has no category named 'dog'": lambda: CocoTrainingSet(ann, folder / "images", classes=["dog", "red"]),
        "no image is left to train on": lambda: CocoTrainingSet(ann, folder / "images", min_size=10000),
    }
    for message, make in cases.items():
        with pytest.raises(DatasetError) as caught:
            make()
        assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def test_missing_training_images_are_named_by_file_and_id_the_rest_counted(folder, tmp_path):
    def gone(data: dict) -> None:
        for image in data["images"][:7]:
            image["file_name"] = f"gone{image['id']}.png"

    ids = [image["id"] for image in json.loads((folder / "instances.json").read_text())["images"][:7]]
    with pytest.raises(DatasetError) as caught:
        CocoTrainingSet(broken(folder, tmp_path, gone), folder / "images")
    named = ", ".join(f"'gone{i}.png' (id {i})" for i in ids[:5])
    assert str(caught.value) == (f"7 of the 10 training images of {str(tmp_path / 'bad.json')!r} are missing from "
                                 f"{str(folder / 'images')!r}: {named} and 2 more")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_symlink_out_of_the_image_folder_is_refused(folder, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(folder / "images", images)
    (images / "1.png").unlink()
    os.symlink(folder / "images" / "1.png", images / "1.png")  # a file elsewhere, through a link
    with pytest.raises(DatasetError, match=r"images\[1\].file_name '1.png' resolves outside"):
        CocoTrainingSet(folder / "instances.json", images)


def test_images_that_cannot_be_used_fail_with_their_id_and_path(folder, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(folder / "images", images)
    data = CocoTrainingSet(folder / "instances.json", images)
    (images / "1.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"image id 2 of .*instances.json': .*1.png' is not an image file"):
        data.load(1)
    cv2.imwrite(str(images / "2.png"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"image id 3 .* is 10x10 pixels but the annotation file says \d+x\d+"):
        data.load(2)


# ---- the loader --------------------------------------------------------------------------------------------------


def test_stage_switch_epoch_per_recipe():
    assert TRAIN_PIPELINES["yolov5_s"].switch_epoch is None
    assert {e: TRAIN_PIPELINES["yolov5_s"].stage(e) for e in (0, 299, 1000)} == {0: 1, 299: 1, 1000: 1}
    assert [TRAIN_PIPELINES["yolov6_l_d12"].stage(e) for e in (0, 284, 285, 299)] == [1, 1, 2, 2]
    assert [TRAIN_PIPELINES["rtmdet_tiny"].stage(e) for e in (0, 279, 280, 299)] == [1, 1, 2, 2]
    # a run of another length keeps the config's last-epochs count: max_epochs - num_last_epochs
    assert TRAIN_PIPELINES["yolov6_l_d12"].switch_epoch_for(30) == 15
    assert TRAIN_PIPELINES["rtmdet_tiny"].switch_epoch_for(10) == 0  # shorter than stage 2: all of it is stage 2
    assert TRAIN_PIPELINES["rtmdet_tiny"].transforms(0, 10) == TRAIN_PIPELINES["rtmdet_tiny"].stage2


def test_shards_are_disjoint_and_complete():
    for size, world in ((10, 1), (10, 2), (11, 2), (10, 3), (7, 4), (1, 3), (2, 5)):
        shards = [epoch_order(size, epoch=2, seed=5, rank=r, world_size=world) for r in range(world)]
        positions = sorted(p for shard in shards for p, _ in shard)
        assert positions == list(range(math.ceil(size / world) * world))  # disjoint, none missing
        assert {i for shard in shards for _, i in shard} == set(range(size))  # every image
        assert len({len(shard) for shard in shards}) == 1
    assert epoch_order(10, epoch=0, seed=5) != epoch_order(10, epoch=1, seed=5)  # reshuffled every epoch


def test_loader_batches_are_deterministic_and_independent_of_workers(folder):
    data = open_set(folder)
    loader = TrainLoader(data, TRAIN_PIPELINES["yolov5_s"], batch_size=4, workers=0, seed=3)
    batches = list(loader.batches(0))
    assert len(batches) == len(loader) == 3 and [len(b.image_ids) for b in batches] == [4, 4, 2]
    first = batches[0]
    assert first.images.shape == (4, 3, 640, 640) and first.images.dtype == torch.uint8
    assert all(t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64 for t in first.targets)
    assert all(len(ids) == 4 for ids in first.source_ids)  # mosaics
    assert same_batches(batches, list(TrainLoader(data, TRAIN_PIPELINES["yolov5_s"], batch_size=4, workers=2,
                                                  seed=3).batches(0)))
    assert not same_batches(batches, list(TrainLoader(data, TRAIN_PIPELINES["yolov5_s"], batch_size=4, workers=0,
                                                      seed=4).batches(0)))
    ids = [i for b in batches for i in b.image_ids]
    assert sorted(ids) == sorted(r.img_id for r in data.records)  # one epoch sees every image once
    assert [i for b in loader.batches(1) for i in b.image_ids] != ids


def test_two_ranks_make_the_batches_of_one_process_with_twice_the_batch(folder):
    data = open_set(folder, "yolov6_l_d12")
    pipeline = TRAIN_PIPELINES["yolov6_l_d12"]
    whole = list(TrainLoader(data, pipeline, batch_size=4, workers=0, seed=9).batches(285))  # stage 2
    ranks = [list(TrainLoader(data, pipeline, batch_size=2, workers=0, seed=9, rank=r, world_size=2).batches(285))
             for r in range(2)]
    for number, batch in enumerate(whole):
        parts = [ranks[r][number] for r in range(2)]
        by_id = {i: (p.images[k], p.targets[k]) for p in parts for k, i in enumerate(p.image_ids)}
        assert sorted(by_id) == sorted(batch.image_ids)
        for k, i in enumerate(batch.image_ids):
            assert torch.equal(by_id[i][0], batch.images[k])
            assert torch.equal(by_id[i][1]["boxes"], batch.targets[k]["boxes"])


@pytest.mark.parametrize("recipe, epoch, workers", [("yolov5_s", 0, 2), ("rtmdet_tiny", 0, 2), ("rtmdet_tiny", 0, 0)])
def test_a_resumed_epoch_gives_the_rest_of_the_uninterrupted_one(folder, recipe, epoch, workers):
    data = open_set(folder, recipe)
    loader = TrainLoader(data, TRAIN_PIPELINES[recipe], batch_size=2, workers=workers, seed=1)
    whole = list(loader.batches(epoch))
    rest = list(loader.batches(epoch, skip=3))
    assert [b.number for b in rest] == list(range(3, len(loader)))
    assert same_batches(rest, whole[3:])


def test_cached_pipelines_are_deterministic_for_a_worker_count(folder):
    data = open_set(folder, "rtmdet_tiny")
    make = lambda workers: list(TrainLoader(data, TRAIN_PIPELINES["rtmdet_tiny"], batch_size=2, workers=workers,
                                            seed=2).batches(0))
    two = make(2)
    assert same_batches(two, make(2)) and same_batches(make(0), make(1))
    assert two[0].images.shape == (2, 3, 960, 960)
    assert max(len(ids) for b in two for ids in b.source_ids) > 1  # the caches filled and mixed


def test_images_without_boxes_give_empty_targets(tmp_path):
    root = write_set(tmp_path, 3)
    data = json.loads((root / "instances.json").read_text())
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 2]
    (root / "instances.json").write_text(json.dumps(data))
    stage2 = TRAIN_PIPELINES["yolov6_l_d12"]
    loader = TrainLoader(open_set(root, "yolov6_l_d12"), stage2, batch_size=3, workers=0, seed=0)
    batch = next(loader.batches(299))
    empty = batch.targets[batch.image_ids.index(2)]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)


@pytest.mark.parametrize("workers", [0, 2])
def test_an_image_broken_during_training_stops_with_one_line(folder, tmp_path, workers):
    images = tmp_path / "images"
    shutil.copytree(folder / "images", images)
    data = CocoTrainingSet(folder / "instances.json", images)
    for path in images.iterdir():
        path.write_bytes(b"gone bad")
    loader = TrainLoader(data, TRAIN_PIPELINES["yolov6_l_d12"], batch_size=2, workers=workers)
    with pytest.raises(DatasetError) as caught:
        list(loader.batches(299))
    assert "\n" not in str(caught.value) and "is not an image file" in str(caught.value)
    assert str(caught.value).startswith("image id ")


def test_loader_arguments_are_checked(folder):
    data, pipeline = open_set(folder), TRAIN_PIPELINES["yolov5_s"]
    for kwargs, message in [({"batch_size": 0}, "batch size must be >= 1"), ({"workers": -1}, "workers must be"),
                            ({"rank": 2, "world_size": 2}, "rank must be"), ({"seed": -1}, "seed must be"),
                            ({"max_epochs": 0}, "max epochs")]:
        with pytest.raises(InputError, match=message):
            TrainLoader(data, pipeline, **kwargs)
    loader = TrainLoader(data, pipeline, workers=0)
    assert (loader.batch_size, TrainLoader(data, pipeline).workers) == (16, 8)  # the recipe's
    with pytest.raises(InputError, match="batches to skip"):
        next(loader.batches(0, skip=2))
    assert "yolov5_s" in repr(loader) and "10 images" in repr(data)


def test_collate_refuses_mixed_sizes(folder):
    data = open_set(folder)
    with pytest.raises(DatasetError, match="one size"):
        collate([data.load(0), data.load(1)])
