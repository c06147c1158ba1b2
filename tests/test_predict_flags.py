"""``razorzoo predict`` options, each shown to change what its help says, on single images and on streamed sources
(a folder, a list file): ``--score-thr`` drops what scores at or below it, ``--iou-thr`` is NMS's threshold,
``--max-det`` caps each image, ``--batch``/``--workers`` change how images reach the model and nothing else,
``--skip-missing`` leaves out the missing files of a list, ``--json`` prints every detection. RTMDet-tiny with
fixture weights; budget ~20 s.
"""
from __future__ import annotations

import json

import pytest
import torch

import razorzoo
from helpers import assert_same_detections
from helpers.feeding import FedBatches
from razorzoo.cli import main
from razorzoo.models.detector import Detector
from val_data import converted_model, write_images

MODEL = "rtmdet_tiny-ofa_lat31"
NAMES = ("chelsea.png", "rocket.jpg", "portrait.png")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return converted_model(MODEL, tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory, converted):
    """Three images in a folder, and each one's ``predict`` at the recipe's defaults."""
    folder = tmp_path_factory.mktemp("photos")
    write_images(folder)
    (folder / "astronaut.png").unlink()
    detector = razorzoo.load_detector(converted)
    return folder, detector, {name: detector.predict(str(folder / name)) for name in NAMES}


def _threshold(scores: torch.Tensor) -> float:
    """A threshold halfway between two neighbouring scores near the middle of the list, at least 1e-5 apart (so
    float noise cannot move a detection across it)."""
    for i in range(len(scores) // 2, len(scores) - 1):
        if scores[i] - scores[i + 1] > 1e-5:
            return float(scores[i] + scores[i + 1]) / 2
    raise AssertionError("no gap of 1e-5 between neighbouring scores")


def test_score_thr_drops_the_detections_at_or_below_it(converted, photos, capsys):
    folder, detector, expected = photos
    image = str(folder / "rocket.jpg")
    full = expected["rocket.jpg"]
    threshold = _threshold(full.scores)
    assert main(["predict", str(converted), image, "--json", "--score-thr", str(threshold)]) == 0
    (found,) = json.loads(capsys.readouterr().out)
    kept = full.scores > threshold
    assert 0 < int(kept.sum()) < len(full) and min(found["scores"]) > threshold
    assert_same_detections(found, full[kept], what="--score-thr")


def _rows(rows: list[dict], image: str, class_names) -> list[dict]:
    return [{**r, "category_id": class_names.index(r["category"])} for r in rows if r["image"] == image]


def _xywh(detections) -> tuple:
    boxes = detections.boxes.clone()
    boxes[:, 2:] -= boxes[:, :2]
    return boxes, detections.scores, detections.labels


def test_streamed_folder_takes_the_thresholds_and_feeds_batches(converted, photos, capsys, tmp_path):
    """A folder is streamed: --max-det, --score-thr and --iou-thr hold per image as for single images; --batch 2 feeds two
    images per forward pass and --workers 2 decodes on loader threads; the detections do not change."""
    folder, detector, expected = photos
    threshold = _threshold(torch.cat([expected[name].scores for name in NAMES]).sort(descending=True).values)
    runs = {"max-det": ("--batch", "2", "--workers", "2", "--max-det", "3"),
            "thresholds": ("--batch", "1", "--workers", "0", "--score-thr", str(threshold), "--iou-thr", "0.05")}
    for run, options in runs.items():
        saved = tmp_path / f"{run}.json"
        with FedBatches(Detector) as fed:
            assert main(["predict", str(converted), str(folder), *options, "--save-json", str(saved)]) == 0
        rows = json.loads(saved.read_text())
        assert capsys.readouterr().out.startswith(f"3 images, {len(rows)} detections")
        for name in NAMES:
            full = expected[name]
            if run == "max-det":
                wanted = full[:3]
            else:  # NMS at IoU 0.05 removes some of the boxes above the threshold
                wanted = detector.predict(str(folder / name), score_thr=threshold, iou_thr=0.05)
                assert len(wanted) < int((full.scores > threshold).sum())
            assert 0 < len(wanted) < len(full)
            assert_same_detections(_rows(rows, str(folder / name), detector.class_names), _xywh(wanted),
                                   what=f"{run} {name}")
        if run == "max-det":
            assert fed.batches == [2, 1] and fed.loaders
        else:
            assert fed.batches == [1, 1, 1] and not fed.loaders


def test_skip_missing_leaves_out_the_missing_files_of_a_list(converted, photos, capsys, tmp_path):
    folder, _, expected = photos
    listing = tmp_path / "images.txt"
    listing.write_text(f"{folder / 'chelsea.png'}\n{folder / 'gone.png'}\n{folder / 'portrait.png'}\n")
    # the photos live outside the list file's folder: --allow-outside (tests/hostile covers the refusal)
    assert main(["predict", str(converted), str(listing), "--json", "--allow-outside"]) == 2
    assert "1 of 3 images listed" in capsys.readouterr().err
    assert main(["predict", str(converted), str(listing), "--json", "--skip-missing", "--allow-outside"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["image"] for line in lines] == [str(folder / "chelsea.png"), str(folder / "portrait.png")]
    for line in lines:  # --json: every detection, not the table's first 10
        name = line["image"].rsplit("/", 1)[1]
        assert len(line["scores"]) == len(expected[name]) == 100
        assert_same_detections(line, expected[name], 100, what=name)
