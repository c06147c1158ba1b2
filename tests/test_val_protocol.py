"""``razorzoo val`` on COCO, flag by flag, from what a user sees: the saved ``image_id`` is the annotation file's
(real COCO ids are large, non-sequential and in no particular order), ``--mmyolo-maxdets`` scores AP50...AP_large
at 10 detections, ``--limit``/``--skip-missing`` score AP over the evaluated images only, ``--batch``/``--workers``
change how the model is fed and nothing else, ``--weights`` evaluates a checkpoint against a registry name.

The dataset: three images with shuffled, non-sequential ids, each with ground truth on the fixture-weight RTMDet's
own detections (RTMDet has no batch shapes, so ``predict`` of each file is what ``val`` must find for it): its
top 3, one ranked between 10 and 100 (found at 100 detections per image, not at 10) and a box it misses.
Budget: ~25 s (a pass over the three images is ~4 s on one thread).
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import razorzoo
from checkpoints import write_checkpoint
from fixture_rule import rule_state_dict
from helpers import assert_same_detections, unmatched_detections
from helpers.feeding import FedBatches
from razorzoo.cli import main
from razorzoo.detection.results import COCO_CATEGORY_IDS
from razorzoo.models.detector import Detector
from val_data import PHOTOS, GENERATED, coco_file, converted_model, write_images

MODEL = "rtmdet_tiny-ofa_lat31"
STATS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")
# file order in the annotation file, and ids as real COCO has them: large, sparse, not sorted
ORDER = ("rocket.jpg", "chelsea.png", "portrait.png")
IDS = {"rocket.jpg": 397133, "chelsea.png": 17, "portrait.png": 5001}
SIZES = {name: (w, h) for name, (w, h, _) in (PHOTOS | GENERATED).items()}


def _xywh(box: list[float]) -> list[float]:
    x1, y1, x2, y2 = box
    return [x1, y1, x2 - x1, y2 - y1]


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def _deep_rank(boxes: list[list[float]]) -> int:
    """A rank in 30..80 whose box overlaps none of the top 10 (IoU < 0.3): found at 100 detections, not at 10."""
    for rank in range(30, 80):
        if all(_iou(boxes[rank], boxes[top]) < 0.3 for top in range(10)):
            return rank
    raise AssertionError("every detection ranked 30..80 overlaps one of the top 10")


@pytest.fixture(scope="module")
def detector():
    model = razorzoo.build_detector(MODEL)
    model.load_state_dict(rule_state_dict(MODEL), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, detector):
    root = tmp_path_factory.mktemp("coco")
    arrays = write_images(root / "images")
    (root / "images" / "astronaut.png").unlink()
    expected, boxes = {}, {}
    for name in ORDER:
        found = detector.predict(arrays[name])
        assert len(found) == detector.test_cfg.max_per_img  # 100: ranks 30..80 exist
        expected[name] = found
        listed = found.boxes.tolist()
        gt = [*range(3), _deep_rank(listed)]
        boxes[name] = [(found.names[i], _xywh(listed[i])) for i in gt] + [("person", [1.0, 2.0, 30.0, 40.0])]
    coco_file(root / "instances.json", boxes, [(name, *SIZES[name]) for name in ORDER], ids=IDS)
    return root, expected


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return converted_model(MODEL, tmp_path_factory.mktemp("model"))


def _pycocotools(ann_file, results: list[dict], max_dets=(1, 10, 100), image_ids=None) -> list[float]:
    """pycocotools run here, on its own: the reference every printed number is held to."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.params.maxDets = list(max_dets)
        if image_ids is not None:
            ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # its -1 placeholder (no ground truth of that kind) is what razorzoo reports as None (JSON null)
    return [None if v == -1 else float(v) for v in ev.stats[:6]]


def _val(capsys, converted, root, *extra: str, images: str = "images") -> tuple[dict, list[dict]]:
    """``razorzoo val --json --save-json``: the printed object and the saved results."""
    saved = root / "run" / "preds.json"
    saved.parent.mkdir(exist_ok=True)
    assert main(["val", str(converted), "--coco-ann", str(root / "instances.json"), "--images", str(root / images),
                 "--save-json", str(saved), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out), json.loads(saved.read_text())


def _of(results: list[dict], image_id: int) -> list[dict]:
    return [r for r in results if r["image_id"] == image_id]


def test_saved_image_ids_are_the_annotation_files_and_ap_is_pycocotools_on_them(dataset, converted, capsys):
    root, expected = dataset
    with FedBatches(Detector) as fed:
        printed, results = _val(capsys, converted, root, "--batch", "2", "--workers", "2")
    assert {r["image_id"] for r in results} == set(IDS.values())
    for name, image_id in IDS.items():
        wanted = expected[name].to_coco(image_id, COCO_CATEGORY_IDS)
        assert_same_detections(_of(results, image_id), wanted, 100, what=name)
    # the check can tell images apart: another image's detections are not these
    assert unmatched_detections(_of(results, IDS["chelsea.png"]),
                                expected["rocket.jpg"].to_coco(IDS["chelsea.png"], COCO_CATEGORY_IDS))
    assert printed["images"] == 3 and printed["maxdets"] == [1, 10, 100]
    assert [printed[k] for k in STATS] == pytest.approx(_pycocotools(root / "instances.json", results), abs=1e-12)
    assert 0.2 < printed["AP"] < 1
    # --batch 2: the three 640 x 640 canvases go in as 2 + 1; --workers 2: decoded on loader threads
    assert fed.batches == [2, 1] and fed.loaders


def test_mmyolo_maxdets_runs_mmyolos_evaluation_whose_numbers_are_the_standard_ones(dataset, converted, capsys):
    """MMYOLO's ``CocoMetric(proposal_nums=(100, 1, 10))`` sets ``maxDets = [100, 1, 10]``, and pycocotools'
    ``evaluate()`` sorts it into ``[1, 10, 100]`` before anything is counted: MMYOLO's logs hold the standard
    numbers, and so does ``--mmyolo-maxdets``. The dataset tells the two readings apart (each image has ground truth
    on a detection ranked 30..80): AP50 at 10 detections per image would be lower."""
    root, _ = dataset
    printed, results = _val(capsys, converted, root, "--mmyolo-maxdets")
    assert printed["maxdets"] == [100, 1, 10]
    as_mmyolo = _pycocotools(root / "instances.json", results, max_dets=(100, 1, 10))
    standard = _pycocotools(root / "instances.json", results)
    assert [printed[k] for k in STATS] == pytest.approx(as_mmyolo, abs=1e-12)
    assert as_mmyolo == standard
    at_10 = _pycocotools(root / "instances.json", results, max_dets=(1, 5, 10))  # AP50 (maxDets[2]) at 10
    assert at_10[1] < standard[1] - 0.01


def test_limit_scores_only_the_evaluated_images(dataset, converted, capsys):
    root, expected = dataset
    with FedBatches(Detector) as fed:
        printed, results = _val(capsys, converted, root, "--limit", "2", "--workers", "0")
    first_two = [IDS[name] for name in ORDER[:2]]
    assert printed["images"] == 2 and {r["image_id"] for r in results} == set(first_two)
    over_evaluated = _pycocotools(root / "instances.json", results, image_ids=first_two)
    over_all = _pycocotools(root / "instances.json", results)
    assert [printed[k] for k in STATS] == pytest.approx(over_evaluated, abs=1e-12)
    assert printed["AP"] > over_all[0] + 0.05  # the third image's ground truth would count as missed
    assert fed.batches == [1, 1] and not fed.loaders  # batch 1 by default; --workers 0 decodes inline


def test_allow_outside_reads_an_image_the_annotation_file_places_outside_the_folder(dataset, converted, capsys):
    """A ``file_name`` with ``../`` is refused by default (an annotation file decides which files are read) and read
    with ``--allow-outside``, scored under its own id."""
    root, expected = dataset
    document = json.loads((root / "instances.json").read_text())
    [entry] = [image for image in document["images"] if image["file_name"] == "chelsea.png"]
    entry["file_name"] = "../elsewhere/cat.png"
    (root / "elsewhere").mkdir(exist_ok=True)
    shutil.copy(root / "images" / "chelsea.png", root / "elsewhere" / "cat.png")
    (root / "outside.json").write_text(json.dumps(document))
    argv = ["val", str(converted), "--coco-ann", str(root / "outside.json"), "--images", str(root / "images")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "'../elsewhere/cat.png'" in err and "--allow-outside" in err and err.count("\n") == 1
    saved = root / "run" / "outside.json"
    saved.parent.mkdir(exist_ok=True)
    assert main([*argv, "--allow-outside", "--save-json", str(saved), "--json"]) == 0
    printed, results = json.loads(capsys.readouterr().out), json.loads(saved.read_text())
    assert printed["images"] == 3
    assert_same_detections(_of(results, entry["id"]),
                           expected["chelsea.png"].to_coco(entry["id"], COCO_CATEGORY_IDS), 100, what="outside")


def test_skip_missing_scores_only_the_images_on_disk(dataset, converted, capsys):
    root, _ = dataset
    partial = root / "partial"
    partial.mkdir(exist_ok=True)
    for name in ("rocket.jpg", "portrait.png"):  # the middle image of the file is missing
        shutil.copy(root / "images" / name, partial / name)
    assert main(["val", str(converted), "--coco-ann", str(root / "instances.json"), "--images", str(partial)]) == 2
    assert "1 of 3 images is missing" in capsys.readouterr().err
    printed, results = _val(capsys, converted, root, "--skip-missing", images="partial")
    kept = [IDS["rocket.jpg"], IDS["portrait.png"]]
    assert printed["images"] == 2 and printed["skipped_images"] == 1
    assert {r["image_id"] for r in results} == set(kept)
    assert [printed[k] for k in STATS] == pytest.approx(
        _pycocotools(root / "instances.json", results, image_ids=kept), abs=1e-12)
    assert printed["AP"] > _pycocotools(root / "instances.json", results)[0] + 0.05
    assert main(["val", str(converted), "--coco-ann", str(root / "instances.json"), "--images", str(partial),
                 "--skip-missing"]) == 0
    assert "2 images, 1 missing skipped" in capsys.readouterr().out


def test_weights_checkpoint_against_a_registry_name_prints_the_published_numbers(dataset, converted, capsys,
                                                                                  tmp_path):
    """``val NAME --weights model.pth``: the checkpoint is verified against NAME's subnet and recipe and evaluated;
    the table's ``published`` column is NAME's card."""
    root, expected = dataset
    checkpoint = write_checkpoint(MODEL, "mmdet-publish", tmp_path / "model.pth")
    saved = tmp_path / "preds.json"
    assert main(["val", MODEL, "--weights", str(checkpoint), "--coco-ann", str(root / "instances.json"),
                 "--images", str(root / "images"), "--limit", "1", "--save-json", str(saved)]) == 0
    table = capsys.readouterr().out.splitlines()
    published = razorzoo.get_card(MODEL).metrics["box_ap"]
    assert table[0].split() == ["metric", "razorzoo", "published"]
    assert table[1].split()[0] == "AP" and table[1].split()[2] == f"{published:.2f}"
    assert all(line.split()[2:] == ["n/a"] for line in table[2:7])  # AP50...: nothing published to compare with
    first = ORDER[0]
    assert_same_detections(json.loads(saved.read_text()),
                           expected[first].to_coco(IDS[first], COCO_CATEGORY_IDS), 100, what=first)
