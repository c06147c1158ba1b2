"""``razorzoo val`` on COCO: MMYOLO's batch shapes, the saved predictions, and AP as pycocotools computes it.

The dataset is built here (tests/val_data.py); its ground truth is the top detections of the fixture-weight model
plus one box it does not find, so AP lands strictly between 0 and 1 and a wrong score or box would move it.
Budget: ~40 s (each full pass over the 4 images is ~5 s of YOLOv5 on one thread).
"""
from __future__ import annotations

import collections
import contextlib
import io
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import razorzoo
from fixture_rule import rule_state_dict
from helpers import MAX_PER_IMG, assert_same_detections, unmatched_detections
from razorzoo.cli import main
from razorzoo.detection.transforms import ImageMeta
from razorzoo.detection.batch_shapes import batch_shape, letterbox_to_batch_shape
from razorzoo.errors import RazorzooError
from razorzoo.evaluation.coco import coco_stats, evaluate_coco, read_coco
from val_data import GENERATED, PHOTOS, SHAPES, coco_file, converted_model, interrupt_cli, write_images

MODEL = "yolov5s-spos_0.33M"  # a letterbox recipe: the one with batch shapes
STATS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")


@pytest.fixture(scope="module")
def detector():
    model = razorzoo.build_detector(MODEL)
    model.load_state_dict(rule_state_dict(MODEL), strict=True)
    return model


def hand_predict(detector, image: np.ndarray, canvas: tuple[int, int]):
    """YOLOv5KeepRatioResize(640) + LetterResize onto ``canvas`` written out from the upstream description, then
    ``Detector.forward`` / ``postprocess``: what ``Detector.predict`` would give on that batch shape."""
    h, w = image.shape[:2]
    r = 640 / max(h, w)
    nw, nh = int(w * r), int(h * r)
    if r != 1:
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR)
    pad_h, pad_w = canvas[0] - nh, canvas[1] - nw
    top, left = int(round(pad_h // 2 - 0.1)), int(round(pad_w // 2 - 0.1))
    image = cv2.copyMakeBorder(image, top, pad_h - top, left, pad_w - left, cv2.BORDER_CONSTANT, value=(114,) * 3)
    batch = torch.from_numpy(image[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    meta = ImageMeta(ori_shape=(h, w), img_shape=canvas, scale_factor=(nw / w, nh / h), batch_input_shape=canvas,
                     pad_param=(top, pad_h - top, left, pad_w - left))
    with torch.no_grad():
        return detector.postprocess(detector(batch), [meta])[0]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, detector):
    """Images, the hand-computed predictions, and an annotation file whose GT is 3 of them plus a missed box."""
    root = tmp_path_factory.mktemp("coco")
    arrays = write_images(root / "images")
    expected, boxes = {}, {}
    for name, array in arrays.items():
        expected[name] = hand_predict(detector, array, SHAPES[name])
        top = expected[name][:3]
        xywh = [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in top.boxes.tolist()]
        boxes[name] = [*zip(top.names, xywh), ("person", [1.0, 2.0, 30.0, 40.0])]
    data = coco_file(root / "instances.json", boxes)
    return root, data, expected


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return converted_model(MODEL, tmp_path_factory.mktemp("model"))


def _by_image(results: list[dict]) -> dict[int, list[dict]]:
    grouped: dict[int, list[dict]] = {}
    for r in results:
        grouped.setdefault(r["image_id"], []).append(r)
    return grouped


def _pycocotools(ann_file, results_file, max_dets=(1, 10, 100)) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        ev = COCOeval(gt, gt.loadRes(str(results_file)), "bbox")
        ev.params.maxDets = list(max_dets)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats[:6]]


def _as_printed(stats: list[float]) -> list[float | None]:
    """pycocotools' stats as razorzoo reports them: its -1 placeholder (no ground truth of that kind) is None."""
    return [None if v == -1 else v for v in stats]


def assert_same_stats(got: list, expected: list[float]) -> None:
    expected = _as_printed(expected)
    assert [v is None for v in got] == [v is None for v in expected]
    assert [v for v in got if v is not None] == pytest.approx([v for v in expected if v is not None], abs=1e-12)


@pytest.mark.parametrize(("width", "height", "canvas"), [
    (640, 480, (512, 672)),  # 480/640*20 + .5 = 15.5 -> 16 * 32
    (480, 640, (672, 512)),  # portrait: the transpose
    (640, 320, (352, 672)),  # 10.5 -> 11: the half-stride pad rounds up even on an exact multiple
    (300, 500, (672, 416)),
    (512, 512, (672, 672)),  # square: 20.5 -> 21
    (1000, 999, (672, 672)),  # 999/1000*20 + .5 = 20.48 -> 21
])
def test_batch_shapes_equal_hand_derived_values(width, height, canvas):
    assert batch_shape(width, height) == canvas
    image = np.zeros((height, width, 3), np.uint8)
    padded, meta = letterbox_to_batch_shape(image, 640, 114, canvas)
    assert padded.shape[:2] == canvas
    r = 640 / max(width, height)
    pad_h, pad_w = canvas[0] - int(height * r), canvas[1] - int(width * r)
    assert meta.pad_param == (pad_h // 2, pad_h - pad_h // 2, pad_w // 2, pad_w - pad_w // 2)
    assert meta.ori_shape == (height, width) and meta.img_shape == meta.batch_input_shape == canvas
    assert meta.scale_factor == (int(width * r) / width, int(height * r) / height)


@pytest.fixture(scope="module")
def val_run(dataset, detector, tmp_path_factory):
    """``evaluate_coco`` with batch 1 and no threads, and its saved predictions grouped by image id."""
    root, _, _ = dataset
    saved = tmp_path_factory.mktemp("val") / "preds.json"
    result = evaluate_coco(detector, root / "instances.json", root / "images", save_json=saved, progress=False)
    return result, _by_image(json.loads(saved.read_text()))


def test_val_predictions_equal_predict_with_each_images_batch_shape(dataset, detector, val_run):
    root, data, expected = dataset
    result, results = val_run
    ids = {image["file_name"]: image["id"] for image in data["images"]}
    assert result.num_images == len(PHOTOS) + len(GENERATED) == len(results)
    for name, detections in expected.items():
        found, wanted = results[ids[name]], detections.to_coco(ids[name])
        assert len(found) == len(wanted) > 0
        assert_same_detections(found, wanted, detector.test_cfg.max_per_img, score_tol=1e-6, box_tol=1e-4,
                               what=name)
    # the plain 640 x 640 canvas of predict() is a different protocol: its boxes differ
    plain = detector.predict(str(root / "images" / "chelsea.png"))
    assert unmatched_detections(results[ids["chelsea.png"]], plain.to_coco(ids["chelsea.png"]))
    # GT = 3 found boxes + 1 missed per image: AP is neither 0 nor 1
    assert 0.2 < result.stats["AP"] < 1


def test_cli_ap_equals_pycocotools_on_the_saved_predictions(dataset, converted, tmp_path, capsys):
    root, _, _ = dataset
    saved = tmp_path / "preds.json"
    argv = ["val", str(converted), "--coco-ann", str(root / "instances.json"), "--images", str(root / "images"),
            "--save-json", str(saved), "--json", "--batch", "2", "--workers", "2"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert_same_stats([printed[k] for k in STATS], _pycocotools(root / "instances.json", saved))
    assert printed["images"] == 4 and printed["maxdets"] == [1, 10, 100]
    # MMYOLO's proposal_nums=(100, 1, 10): AP at 100, the other five at 10 detections per image
    mmyolo = _pycocotools(root / "instances.json", saved, max_dets=(100, 1, 10))
    stats = coco_stats(json.loads((root / "instances.json").read_text()), json.loads(saved.read_text()),
                       maxdets=(100, 1, 10))
    assert_same_stats([stats[k] for k in STATS], mmyolo)


def test_ground_truth_as_predictions_scores_ap_one(dataset):
    _, data, _ = dataset
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in data["annotations"]]
    stats = coco_stats(data, perfect)
    assert stats["AP"] == stats["AP50"] == stats["AP75"] == 1.0
    assert {stats[k] for k in ("AP_small", "AP_medium", "AP_large")} <= {1.0, None}  # None: no GT of that size


def test_results_do_not_depend_on_batch_or_workers(dataset, detector, val_run, tmp_path):
    root, _, _ = dataset
    one, first = val_run
    saved = tmp_path / "preds.json"
    # the two landscape photos share a canvas, so batch 3 really runs a batch of 2
    many = evaluate_coco(detector, root / "instances.json", root / "images", batch=3, workers=2, save_json=saved,
                         progress=False)
    second = _by_image(json.loads(saved.read_text()))
    assert one.stats == pytest.approx(many.stats, abs=1e-6)
    assert first.keys() == second.keys()
    for image_id, found in second.items():
        assert_same_detections(found, first[image_id], MAX_PER_IMG[MODEL], what=str(image_id))


def _cli_error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("razorzoo: error: ") and err.count("\n") == 1
    return err


def test_bad_inputs_are_one_line_errors(dataset, converted, tmp_path, capsys):
    root, data, _ = dataset
    images = str(root / "images")
    err = _cli_error(capsys, "val", str(converted), "--coco-ann", str(tmp_path / "nope.json"), "--images", images)
    assert "annotation file not found" in err and "nope.json" in err
    (tmp_path / "list.json").write_text("[1, 2]")
    err = _cli_error(capsys, "val", str(converted), "--coco-ann", str(tmp_path / "list.json"), "--images", images)
    assert "not a COCO detection annotation file" in err
    (tmp_path / "classes.json").write_text(json.dumps({"images": [], "categories": [{"id": 1}]}))
    err = _cli_error(capsys, "val", str(converted), "--coco-ann", str(tmp_path / "classes.json"), "--images", images)
    assert "not a COCO detection annotation file" in err
    (tmp_path / "garbage.json").write_bytes(b"\x00\xff not json")
    assert "is not UTF-8 text" in _cli_error(capsys, "val", str(converted), "--coco-ann", str(tmp_path / "garbage.json"),
                                          "--images", images)
    (tmp_path / "cut.json").write_text('{"images": [')
    assert "is not JSON" in _cli_error(capsys, "val", str(converted), "--coco-ann", str(tmp_path / "cut.json"),
                                       "--images", images)
    # images missing from the folder: listed, not skipped
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "chelsea.png").write_bytes((root / "images" / "chelsea.png").read_bytes())
    err = _cli_error(capsys, "val", str(converted), "--coco-ann", str(root / "instances.json"),
                     "--images", str(partial))
    assert "3 of 4 images are missing" in err and "'rocket.jpg'" in err and "--skip-missing" in err
    _, kept, skipped = read_coco(root / "instances.json", partial, skip_missing=True)
    assert [image.file_name for image in kept] == ["chelsea.png"] and len(skipped) == 3
    assert "--coco-ann" in _cli_error(capsys, "val", str(converted), "--images", images)
    assert "--batch" in _cli_error(capsys, "val", str(converted), "--coco-ann", "a.json", "--images", images,
                                   "--batch", "0")


def test_ctrl_c_leaves_a_valid_partial_json(dataset, converted, tmp_path):
    root, data, _ = dataset
    saved = tmp_path / "preds.json"
    code, err = interrupt_cli(["val", str(converted), "--coco-ann", str(root / "instances.json"), "--images",
                               str(root / "images"), "--save-json", str(saved), "--workers", "0"], b"2/4")
    assert code == 130 and b"razorzoo: interrupted" in err
    done = json.loads(saved.read_text())
    image_ids = {r["image_id"] for r in done}
    assert 2 <= len(image_ids) < len(data["images"])
    assert all(set(r) == {"image_id", "category_id", "bbox", "score"} for r in done)


def test_val_parser_and_import_razorzoo_do_not_import_torch():
    code = ("import sys, razorzoo; from razorzoo.cli import build_parser; "
            "build_parser().parse_args(['val', 'm', '--imagenet', 'd']); "
            "build_parser().parse_args(['predict', 'm', 'dir/', '--save-json', 'x.json']); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_val_on_a_runtime_keeps_the_batch_shapes_and_equals_eager_val(dataset, detector, converted, val_run,
                                                                      run_cache, tmp_path, capsys, monkeypatch):
    """``val --backend``: the converted file is exported once (gate on) into the cache, as the end-to-end graph with
    a free height and width, so every image runs on its own ``BatchShapePolicy`` canvas like eager ``val``: the
    same detections per image and the same AP. Budget: one YOLOv5 export (~30-60 s) into the run's cache, shared
    with test_deploy_fast.py."""
    pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install -e '.[onnx]'")
    monkeypatch.setenv("RAZORZOO_CACHE", str(run_cache))
    root, data, _ = dataset
    eager, eager_results = val_run
    saved = tmp_path / "preds.json"
    assert main(["val", str(converted), "--backend", "onnxruntime", "--coco-ann", str(root / "instances.json"),
                 "--images", str(root / "images"), "--save-json", str(saved), "--json", "--batch", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["runtime"] == {"backend": "onnxruntime", "precision": "f32", "variant": "nms"}
    assert [printed[k] is None for k in STATS] == [eager.stats[k] is None for k in STATS]
    assert [printed[k] for k in STATS if printed[k] is not None] == pytest.approx(
        [eager.stats[k] for k in STATS if eager.stats[k] is not None], abs=1e-9)
    assert_same_stats([printed[k] for k in STATS], _pycocotools(root / "instances.json", saved))
    results = _by_image(json.loads(saved.read_text()))
    assert printed["images"] == len(eager_results) == len(results) == len(data["images"])
    for image in data["images"]:
        assert_same_detections(results[image["id"]], eager_results[image["id"]], detector.test_cfg.max_per_img,
                               what=image["file_name"])


def _person_only(path, data: dict) -> dict:
    """``data``'s images, one small (10 x 10) person on each, and only the person category: nothing medium or
    large to score, and every other class the model finds is one the file does not have."""
    annotations = [{"id": i + 1, "image_id": image["id"], "iscrowd": 0, "category_id": 1, "bbox": [5, 5, 10, 10],
                    "area": 100} for i, image in enumerate(data["images"])]
    small = {"images": data["images"], "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}
    path.write_text(json.dumps(small))
    return small


def test_unscorable_metrics_read_n_a_and_unscored_classes_are_counted(dataset, converted, tmp_path, capsys):
    root, data, _ = dataset
    common = ["val", str(converted), "--images", str(root / "images"), "--json"]
    assert main([*common, "--coco-ann", str(root / "instances.json")]) == 0
    every = json.loads(capsys.readouterr().out)  # the 80 COCO categories: every detection is scored
    assert every["detections_of_other_classes"] == 0 and every["detections"] > 0
    _person_only(tmp_path / "person.json", data)
    assert main([*common, "--coco-ann", str(tmp_path / "person.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["AP_medium"] is None and printed["AP_large"] is None  # JSON null, not pycocotools' -1
    assert printed["AP_small"] is not None and printed["AP"] is not None
    other = printed["detections_of_other_classes"]
    assert other > 0 and printed["detections"] + other == every["detections"]  # the same boxes, sorted out

    assert main(common[:-1] + ["--coco-ann", str(tmp_path / "person.json")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert [line.split() for line in table if line.startswith(("AP_medium", "AP_large"))] == [
        ["AP_medium", "n/a", "n/a"], ["AP_large", "n/a", "n/a"]]
    assert "n/a: no ground truth of that kind among the evaluated images" in "\n".join(table)
    hint = [line for line in table if "of classes the annotation file has no category for" in line]
    assert len(hint) == 1 and hint[0].startswith(f"{other} detections of classes") and hint[0].endswith(
        f"were not scored; {printed['detections']} detection{'s' if printed['detections'] != 1 else ''} of its own "
        "classes were")


def test_nothing_detected_scores_zero_where_there_is_ground_truth_and_n_a_elsewhere(dataset, tmp_path):
    _, data, _ = dataset
    small = _person_only(tmp_path / "person.json", data)
    assert coco_stats(small, []) == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "AP_small": 0.0, "AP_medium": None,
                                     "AP_large": None}


def test_val_says_in_its_own_terms_which_data_a_model_takes(dataset, converted, tmp_path, capsys):
    root, _, _ = dataset
    assert main(["val", str(converted), "--imagenet", str(root / "images")]) == 2
    assert capsys.readouterr().err == ("razorzoo: error: " + str(converted) + " is a detector: evaluate it on COCO "
                                       "with --coco-ann JSON --images DIR (--imagenet is for classifiers)\n")
    assert main(["val", "attentive_a6", "--coco-ann", str(root / "instances.json"), "--images",
                 str(root / "images")]) == 2
    assert "attentive_a6 is a classifier: evaluate it on ImageNet with --imagenet DIR" in capsys.readouterr().err
    assert main(["val", "yolov6", "--imagenet", str(root)]) == 2
    assert "did you mean 'yolov6s-attentive_a6'" in capsys.readouterr().err


def test_a_batch_shape_canvas_holds_the_resized_image_exactly_or_is_refused():
    """The canvas may equal the resized image's size (no padding) but not be smaller in either direction; it is a
    uint8 BGR canvas; the defaults are MMYOLO's (640 px, stride 32, half a stride of padding)."""
    image = np.random.default_rng(3).integers(0, 256, (300, 400, 3), dtype=np.uint8)  # resized to 640 x 480
    # 290 / 400 = 0.725: 0.725 * 640 / 32 + 0.5 is 15.0 exactly, so the ceil keeps 15 strides (at 641 px: 16)
    assert batch_shape(400, 290) == (15 * 32, 21 * 32)
    canvas, meta = letterbox_to_batch_shape(image, 640, 114, (480, 640))
    assert canvas.dtype == np.uint8 and canvas.shape == (480, 640, 3) and meta.pad_param == (0.0, 0.0, 0.0, 0.0)
    for shape in ((479, 640), (480, 639), (479, 800), (800, 639)):
        with pytest.raises(ValueError) as info:
            letterbox_to_batch_shape(image, 640, 114, shape)
        assert str(info.value) == f"batch shape {shape} is smaller than the 640x480 resized image"


def test_batches_go_to_the_models_device_and_dtype():
    """A float64 model gets float64 batches; a model on another device gets them there (the meta device stands in
    for a GPU); anything that is not a module gets the batch as it is."""
    from razorzoo.evaluation.engine import on_device

    batch = torch.zeros(1, 3, 4, 4)
    assert on_device(batch, torch.nn.Conv2d(3, 1, 1).double()).dtype == torch.float64
    moved = on_device(batch, torch.nn.Conv2d(3, 1, 1, device="meta"))
    assert moved.device.type == "meta" and moved.dtype == torch.float32
    assert on_device(batch, lambda x: x) is batch


def test_the_result_dictionary_has_every_key_the_cli_prints():
    from razorzoo.evaluation.coco import CocoResult

    result = CocoResult(stats={"AP": 0.5}, num_images=3, num_detections=7, seconds_per_image=0.25,
                        maxdets=(1, 10, 100), skipped=("a.jpg",), other_classes={"dog": 2})
    assert result.to_dict() == {"AP": 0.5, "images": 3, "detections": 7, "detections_of_other_classes": 2,
                                "seconds_per_image": 0.25, "maxdets": [1, 10, 100], "skipped_images": 1}


def test_a_file_name_too_long_for_the_system_is_a_missing_image(tmp_path):
    """A file_name that fits the annotation file's bounds but not PATH_MAX once joined to the image folder is
    reported like any missing image (one line; --skip-missing leaves it out), never as an OSError."""
    from razorzoo.errors import DatasetError

    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    deep = "x/" * 2045 + "b.png"  # 4095 characters: within the file_name bound
    coco_file(tmp_path / "ann.json", {}, images=[("a.png", 8, 8), (deep, 8, 8)])
    with pytest.raises(DatasetError) as info:
        read_coco(tmp_path / "ann.json", tmp_path / "images")
    assert str(info.value).startswith("1 of 2 images is missing from ") and "--skip-missing" in str(info.value)
    _, images, skipped = read_coco(tmp_path / "ann.json", tmp_path / "images", skip_missing=True)
    assert [image.file_name for image in images] == ["a.png"] and skipped == (deep,)


def test_category_ids_are_the_files_own_from_zero_in_any_order_and_its_other_categories_are_not_scored(
        dataset, detector, val_run, tmp_path):
    """Custom COCO files number their categories their own way (from 0, shuffled) and may hold categories the model
    does not have. The classes are matched by name: the same detections, scored under the file's ids, give the same
    AP as the standard file, and a category the model cannot detect, with ground truth, is left out of the mean
    (not scored as 0). seconds_per_image is the run's time over its images."""
    import random
    import time

    root, data, _ = dataset
    standard, _ = val_run
    shuffled = list(range(len(data["categories"])))
    random.Random(0).shuffle(shuffled)
    renumber = {c["id"]: new for c, new in zip(data["categories"], shuffled)}
    first_class = data["annotations"][0]["category_id"]  # a class the model finds gets id 0
    holder = next(old for old, new in renumber.items() if new == 0)
    renumber[holder], renumber[first_class] = renumber[first_class], 0
    unicorn = 500
    custom = {"images": data["images"],
              "annotations": [{**a, "category_id": renumber[a["category_id"]]} for a in data["annotations"]]
              + [{"id": 10_000 + i, "image_id": image["id"], "iscrowd": 0, "category_id": unicorn,
                  "bbox": [1.0, 1.0, 50.0, 50.0], "area": 2500.0} for i, image in enumerate(data["images"])],
              "categories": [{"id": renumber[c["id"]], "name": c["name"]} for c in reversed(data["categories"])]
              + [{"id": unicorn, "name": "unicorn"}]}
    (tmp_path / "custom.json").write_text(json.dumps(custom))
    saved = tmp_path / "preds.json"
    start = time.perf_counter()
    result = evaluate_coco(detector, tmp_path / "custom.json", root / "images", save_json=saved, progress=False)
    elapsed = time.perf_counter() - start
    assert result.stats == pytest.approx(standard.stats, abs=1e-12)
    assert result.num_detections == standard.num_detections and not result.other_classes
    assert 0 in {r["category_id"] for r in json.loads(saved.read_text())}
    assert 0 < result.seconds_per_image * result.num_images <= elapsed


def test_classes_the_file_lacks_are_counted_most_frequent_first(dataset, detector, val_run, tmp_path):
    """``other_classes`` (the CLI names its first five) runs from the most to the least frequent class, not in the
    order they were met: the file keeps person and the classes that every image meets first, and the image
    evaluated first is one whose first unscored detection is of a rarer class than the most frequent one."""
    root, data, _ = dataset
    found = val_run[1]  # every detection per image id, in the order val met them
    kept = {1}  # person
    while True:
        totals = collections.Counter(r["category_id"] for rows in found.values() for r in rows
                                     if r["category_id"] not in kept)
        first = {i: next(r["category_id"] for r in rows if r["category_id"] not in kept) for i, rows in found.items()}
        rarest = min(first, key=lambda image_id: totals[first[image_id]])
        if totals[first[rarest]] < max(totals.values()):
            break
        kept.add(first[rarest])  # every image meets the most frequent class first: score it, look again
    names = {c["id"]: c["name"] for c in data["categories"]}
    images = sorted(data["images"], key=lambda image: image["id"] != rarest)
    (tmp_path / "some.json").write_text(json.dumps({
        "images": images, "categories": [{"id": i, "name": names[i]} for i in sorted(kept)],
        "annotations": [{**a, "id": n} for n, a in enumerate(data["annotations"], 1) if a["category_id"] in kept]}))
    result = evaluate_coco(detector, tmp_path / "some.json", root / "images", progress=False)
    counts = list(result.other_classes.values())
    assert len(counts) >= 2 and counts == sorted(counts, reverse=True), result.other_classes
    assert set(result.other_classes) == {names[i] for i in totals}
    assert sum(counts) + result.num_detections == val_run[0].num_detections


@pytest.mark.parametrize("option, message", [({"batch": 0}, "batch"), ({"workers": -1}, "workers"),
                                             ({"limit": 0}, "limit")])
def test_evaluate_coco_refuses_bad_batching_before_reading_anything(option, message, detector, tmp_path):
    """The Python API checks its own arguments (the CLI's checks do not guard it), before the files are read."""
    with pytest.raises(RazorzooError, match=rf"^{message} must be"):
        evaluate_coco(detector, tmp_path / "missing.json", tmp_path / "missing", **option)


def test_prefetch_reads_ahead_on_its_threads_and_at_most_twice_their_number():
    """The images val decodes ahead of the model: on ``workers`` threads (``0``: inline, in the caller's thread), in
    order, and no more than ``2 * workers`` at a time (a bound on memory, whatever the dataset's size)."""
    import threading

    from razorzoo.evaluation.engine import prefetch

    pulled = []

    def items():
        for i in range(20):
            pulled.append(i)
            yield i

    for workers in (1, 3):
        pulled.clear()
        ahead = prefetch(lambda i: (i, threading.current_thread().name), items(), workers)
        first = next(ahead)
        assert len(pulled) == 2 * workers  # handed to the threads when the first result is taken
        rest = [first, *ahead]
        assert [i for i, _ in rest] == list(range(20))
        assert all(name.startswith("razorzoo-load") for _, name in rest)
    inline = list(prefetch(lambda i: threading.current_thread().name, range(3), 0))
    assert inline == [threading.current_thread().name] * 3
