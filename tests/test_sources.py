"""Streaming prediction: folders, globs, list files and videos, in Python and in ``razorzoo predict``.

Budget ~40 s: RTMDet-tiny (the smallest detector; its resize-and-pad recipe complements the letterbox one that
tests/test_val_coco.py covers) on a 3-frame clip and two photos.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import razorzoo
from fixture_rule import rule_state_dict
from razorzoo.bounded import InputError
from razorzoo.cli import main
from razorzoo.detection.results import Detections
from razorzoo.errors import DatasetError
from razorzoo.evaluation.sources import Frame, iter_source, predict_stream
from val_data import converted_model, generated_image, interrupt_cli, unmatched, write_images

MODEL = "rtmdet_tiny-ofa_lat31"


@pytest.fixture(scope="module")
def detector():
    model = razorzoo.build_detector(MODEL)
    model.load_state_dict(rule_state_dict(MODEL), strict=True)
    return model


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return converted_model(MODEL, tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    arrays = write_images(folder)
    for name in ("astronaut.png", "portrait.png"):  # two images are enough for the folder tests
        (folder / name).unlink()
    return folder, {name: arrays[name] for name in ("chelsea.png", "rocket.jpg")}


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A 3-frame MJPEG clip written with OpenCV, and the frames as OpenCV decodes them (JPEG is lossy)."""
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (320, 240))
    for seed in range(3):
        writer.write(generated_image(320, 240, seed=seed))
    writer.release()
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == 3
    return path, frames


def test_video_frames_equal_per_image_predict(detector, video):
    path, frames = video
    streamed = list(predict_stream(detector, path, batch=2, workers=1, progress=False))
    assert [item.index for item, _ in streamed] == [0, 1, 2]
    for (item, found), frame in zip(streamed, frames):
        assert isinstance(item, Frame) and item.video == str(path) and np.array_equal(item.image, frame)
        expected = detector.predict(frame)
        assert len(found) == len(expected) > 0 and unmatched(found, expected) == 0


class DetectorAPI:
    """Only what razorzoo.evaluation may use of a detector (``recipe``, a call, ``postprocess``), not an
    ``nn.Module``: how an exported model on another runtime looks to it."""

    def __init__(self, detector):
        self.recipe, self._detector = detector.recipe, detector

    def __call__(self, batch):
        return self._detector(batch)

    def postprocess(self, raw, metas, **thresholds):
        return self._detector.postprocess(raw, metas, **thresholds)


def test_any_object_with_the_detector_api_streams_like_predict(detector, photos):
    folder, arrays = photos
    ((item, found),) = predict_stream(DetectorAPI(detector), [arrays["rocket.jpg"]], workers=0, max_det=50,
                                      progress=False)
    expected = detector.predict(arrays["rocket.jpg"], max_det=50)
    assert item is arrays["rocket.jpg"] and len(found) == len(expected) == 50 and unmatched(found, expected) == 0


def test_folder_glob_and_list_file_name_the_same_images(photos, tmp_path):
    folder, _ = photos
    expected = [str(folder / "chelsea.png"), str(folder / "rocket.jpg")]
    assert list(iter_source(folder)[0]) == expected
    assert list(iter_source(str(folder / "*.*"))[0]) == expected
    (folder / "notes.md").write_text("not an image")  # ignored by folders and globs
    assert list(iter_source(folder)[0]) == expected
    listing = tmp_path / "images.txt"
    listing.write_text(f"# a comment\n{folder / 'chelsea.png'}\n\n{os.path.relpath(folder / 'rocket.jpg', tmp_path)}\n")
    # messages cut long paths (safe_repr): what is quoted is the path's start, however deep the temporary folder
    with pytest.raises(DatasetError) as info:
        iter_source(listing)  # the photos are not in the list file's folder
    assert f" line 2: {str(folder / 'chelsea.png')[:40]!r}"[:-1] in str(info.value)
    assert " is outside " in str(info.value) and "--allow-outside" in str(info.value)
    assert list(iter_source(listing, allow_outside=True)[0]) == expected
    listing.write_text(f"{folder / 'chelsea.png'}\n{folder / 'gone.png'}\n")
    with pytest.raises(DatasetError) as info:
        iter_source(listing, allow_outside=True)
    assert "1 of 2 images listed " in str(info.value) and "--skip-missing" in str(info.value)
    assert f" missing: {str(folder / 'gone.png')[:40]!r}"[:-1] in str(info.value)
    assert list(iter_source(listing, skip_missing=True, allow_outside=True)[0]) == [str(folder / "chelsea.png")]


def test_cli_predict_folder_saves_json_csv_and_drawings(detector, converted, photos, tmp_path, capsys):
    folder, arrays = photos
    out = tmp_path / "out"
    assert main(["predict", str(converted), str(folder), "--batch", "2", "--save-json", str(out / "d.json"),
                 "--save-csv", str(out / "d.csv"), "--save-dir", str(out / "drawn")]) == 0
    summary = capsys.readouterr().out.splitlines()
    saved = json.loads((out / "d.json").read_text())
    rows = list(csv.DictReader((out / "d.csv").open()))
    assert summary[0].startswith(f"2 images, {len(saved)} detections")
    assert len(rows) == len(saved)
    assert sorted(p.name for p in (out / "drawn").iterdir()) == ["chelsea.png", "rocket.png"]
    for name, array in arrays.items():
        mine = [r for r in saved if r["image"] == str(folder / name)]
        boxes = np.array([r["bbox"] for r in mine], dtype=np.float32)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        found = Detections(torch.from_numpy(boxes), torch.tensor([r["score"] for r in mine]),
                           torch.tensor([detector.class_names.index(r["category"]) for r in mine]),
                           detector.class_names)
        expected = detector.predict(array)
        assert len(found) == len(expected) > 0 and unmatched(found, expected) == 0


def _error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("razorzoo: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_bad_sources_are_one_line_errors(detector, converted, tmp_path, capsys):
    with pytest.raises(InputError, match="batch must be >= 1 and <= 1024, not 0"):
        next(predict_stream(detector, [np.zeros((8, 8, 3), np.uint8)], batch=0))
    (tmp_path / "empty").mkdir()
    assert "no images in folder" in _error(capsys, "predict", str(converted), str(tmp_path / "empty"))
    (tmp_path / "broken.mp4").write_bytes(b"this is not a video" * 100)
    err = _error(capsys, "predict", str(converted), str(tmp_path / "broken.mp4"))
    assert "cannot read video" in err and "broken.mp4" in err
    assert "video file not found" in _error(capsys, "predict", str(converted), str(tmp_path / "gone.avi"))
    assert "matches no image files" in _error(capsys, "predict", str(converted), str(tmp_path / "nothing" / "*.jpg"))
    assert "--batch" in _error(capsys, "predict", str(converted), str(tmp_path / "empty"), "--batch", "0")


def test_ctrl_c_leaves_a_valid_partial_json(converted, photos, tmp_path):
    folder, arrays = photos
    for i in range(6):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), arrays["chelsea.png"])
    saved = tmp_path / "partial.json"
    code, err = interrupt_cli(["predict", str(converted), str(tmp_path), "--batch", "1", "--workers", "0",
                               "--save-json", str(saved)], b"2/6")
    assert code == 130 and b"razorzoo: interrupted" in err
    done = {r["image"] for r in json.loads(saved.read_text())}
    assert 2 <= len(done) < 6 and done <= {str(tmp_path / f"img{i}.png") for i in range(6)}


# -- classifiers: the same sources, their top-k per image ----------------------------------------------------------
CLASSIFIER = "ofa_lat31"


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory):
    """ofa_lat31's fixture weights as a converted file (what the command loads) and the eager model."""
    import contextlib
    import io

    from checkpoints import write_checkpoint

    folder = tmp_path_factory.mktemp("classifier")
    checkpoint = write_checkpoint(CLASSIFIER, "mmrazor-subnet", folder / "model.pth")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["convert", str(checkpoint), "--subnet", CLASSIFIER, "-o", str(folder / "model.safetensors")]) == 0
    return folder / "model.safetensors", razorzoo.load_classifier(folder / "model.safetensors")


def _same_top(found, expected) -> None:
    assert found.indices == expected.indices and found.names == expected.names
    assert found.probs == pytest.approx(expected.probs, abs=1e-5)


def test_classifier_streams_video_frames_like_predict(classifier_file, video):
    from razorzoo.evaluation.sources import classify_stream

    _, classifier = classifier_file
    path, frames = video
    streamed = list(classify_stream(classifier, path, topk=3, batch=2, workers=1, progress=False))
    assert [item.index for item, _ in streamed] == [0, 1, 2]
    for (item, top), frame in zip(streamed, frames):
        assert np.array_equal(item.image, frame)
        _same_top(top, classifier.predict(frame, topk=3))


def test_cli_classifies_a_folder_a_glob_and_a_video_with_top_k_per_image(classifier_file, photos, video, tmp_path,
                                                                         capsys):
    converted, classifier = classifier_file
    folder, arrays = photos
    out = tmp_path / "out"
    out.mkdir()
    assert main(["predict", str(converted), str(folder), "--topk", "3", "--batch", "2", "--save-json",
                 str(out / "top.json"), "--save-csv", str(out / "top.csv")]) == 0
    summary = capsys.readouterr().out.splitlines()
    assert summary[0].startswith("2 images, ") and summary[0].endswith(" ms per image")
    assert summary[1].split() == ["top-1", "class", "images"]
    saved = json.loads((out / "top.json").read_text())
    rows = list(csv.DictReader((out / "top.csv").open()))
    assert list(rows[0]) == ["image", "frame", "rank", "class_index", "class", "prob"] and len(rows) == len(saved) == 6
    top1 = {}
    for name, array in arrays.items():
        expected = classifier.predict(array, topk=3)
        mine = [r for r in saved if r["image"] == str(folder / name)]
        assert [r["rank"] for r in mine] == [1, 2, 3] and all(r["frame"] is None for r in mine)
        _same_top(type(expected)(tuple(r["class_index"] for r in mine), tuple(r["class"] for r in mine),
                                 tuple(r["prob"] for r in mine)), expected)
        in_csv = [r for r in rows if r["image"] == str(folder / name)]
        assert [(int(r["class_index"]), r["class"]) for r in in_csv] == list(zip(expected.indices, expected.names))
        top1[expected.names[0]] = top1.get(expected.names[0], 0) + 1
    assert {line.rsplit(None, 1)[0].strip(): int(line.rsplit(None, 1)[1]) for line in summary[2:]} == top1

    assert main(["predict", str(converted), str(folder / "*.png"), "--json"]) == 0  # a glob; JSON lines
    [line] = capsys.readouterr().out.splitlines()
    printed = json.loads(line)
    assert printed["image"] == str(folder / "chelsea.png") and len(printed["names"]) == 5
    expected = classifier.predict(arrays["chelsea.png"])
    _same_top(type(expected)(tuple(printed["indices"]), tuple(printed["names"]), tuple(printed["probs"])), expected)

    path, frames = video
    assert main(["predict", str(converted), str(path), "--json", "--topk", "1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(entry["image"], entry["frame"]) for entry in lines] == [(str(path), i) for i in range(3)]
    assert [entry["indices"] for entry in lines] == [list(classifier.predict(f, topk=1).indices) for f in frames]


def test_cli_refuses_detector_options_for_a_classifier(classifier_file, photos, tmp_path, capsys):
    converted, _ = classifier_file
    folder, _ = photos
    err = _error(capsys, "predict", str(converted), str(folder), "--save-dir", str(tmp_path / "drawn"))
    assert "detector options (--save-dir) do not apply" in err and "takes --topk" in err
    assert not (tmp_path / "drawn").exists()


def test_missing_listed_files_are_named_five_at_most_then_counted(tmp_path, monkeypatch):
    from razorzoo.evaluation.sources import check_missing

    monkeypatch.chdir(tmp_path)
    present = Path("here.png")
    present.write_bytes(b"\x89PNG")
    gone = [Path(f"gone{i}.png") for i in range(7)]
    advice = "; pass --skip-missing (skip_missing=True) to use the others"
    for missing, wording in ((gone[:1], "1 of 2 images listed in 'list.txt' is missing: "),
                             (gone[:5], "5 of 6 images listed in 'list.txt' are missing: "),
                             (gone, "7 of 8 images listed in 'list.txt' are missing: ")):
        with pytest.raises(DatasetError) as info:
            check_missing([present, *missing], "list.txt", skip_missing=False)
        named = ", ".join(repr(str(path)) for path in missing[:5])
        assert str(info.value) == wording + named + (" and 2 more" if len(missing) == 7 else "") + advice
        assert check_missing([present, *missing], "list.txt", skip_missing=True) == {present}


def test_classify_stream_options_each_do_what_they_say(photos, tmp_path, capsys):
    """The classifier's stream: ``topk`` results per image, a listed file outside the list's folder refused unless
    ``allow_outside``, a missing one unless ``skip_missing``, and a progress bar on stderr only when asked."""
    import shutil

    from helpers import fixture_model
    from razorzoo.evaluation.sources import classify_stream, list_images

    classifier = fixture_model("spos_0.33M")
    names = [path.name for path in list_images(photos[0])[:2]]
    folder = tmp_path / "images"
    folder.mkdir()
    for name in names:
        shutil.copy(photos[0] / name, folder / name)
    shutil.copy(folder / names[0], tmp_path / "outside.png")
    listed = folder / "list.txt"
    listed.write_text("".join(f"{name}\n" for name in names))
    found = list(classify_stream(classifier, listed, progress=True))
    bar = capsys.readouterr().err
    assert "predict: 100%" in bar and "2/2" in bar and "img/s" in bar, bar
    for (item, result), name in zip(found, names, strict=True):
        expected = classifier.predict(folder / name)
        assert str(item) == str(folder / name) and len(result.indices) == 5 and result.indices == expected.indices
    assert [len(r.indices) for _, r in classify_stream(classifier, listed, topk=3, progress=False)] == [3, 3]
    assert capsys.readouterr().err == ""
    listed.write_text("../outside.png\n")
    with pytest.raises(DatasetError, match="outside"):
        list(classify_stream(classifier, listed, progress=False))
    assert len(list(classify_stream(classifier, listed, allow_outside=True, progress=False))) == 1
    listed.write_text(f"{names[0]}\ngone.png\n")
    with pytest.raises(DatasetError, match="1 of 2 images listed"):
        list(classify_stream(classifier, listed, progress=False))
    assert len(list(classify_stream(classifier, listed, skip_missing=True, progress=False))) == 1


def test_each_kind_of_source_is_told_apart(photos, tmp_path, monkeypatch):
    """An image file is itself (even a missing one: it is refused by name when decoded), an object is one item, a
    folder is its own images (not its subfolders'), a pattern globs from the working directory or the folder before
    its first wildcard, and a list file's lines are bounded; each problem is one exact line."""
    import shutil

    from razorzoo.evaluation.sources import MAX_LIST_LINE, list_images

    image = list_images(photos[0])[0]
    assert iter_source(str(image)) == ([str(image)], 1)
    assert iter_source(tmp_path / "missing.png") == ([str(tmp_path / "missing.png")], 1)
    array = np.zeros((4, 4, 3), np.uint8)
    items, total = iter_source(array)
    assert total == 1 and items[0] is array
    with pytest.raises(DatasetError) as info:
        iter_source([])
    assert str(info.value) == "no images given"
    monkeypatch.chdir(tmp_path)  # short relative paths: messages quote them whole
    (tmp_path / "f" / "deeper").mkdir(parents=True)
    shutil.copy(image, tmp_path / "f" / "a.png")
    shutil.copy(image, tmp_path / "f" / "deeper" / "b.png")
    assert list_images("f") == [Path("f/a.png")]
    assert list_images("f", recursive=True) == [Path("f/a.png"), Path("f/deeper/b.png")]
    assert iter_source("f") == (["f/a.png"], 1)
    assert iter_source("f/**/*.png") == (["f/a.png", "f/deeper/b.png"], 2)
    monkeypatch.chdir(tmp_path / "f")
    assert iter_source("*.png") == (["a.png"], 1)
    with pytest.raises(DatasetError) as info:
        iter_source("*.jpg")
    assert str(info.value) == "the pattern '*.jpg' matches no image files"
    Path("empty.txt").write_text("# nothing listed\n\n")
    with pytest.raises(DatasetError) as info:
        iter_source("empty.txt")
    assert str(info.value) == "the list file 'empty.txt' names no images"
    Path("long.txt").write_text("a.png\n" + "x" * (MAX_LIST_LINE + 1) + "\n")
    with pytest.raises(DatasetError) as info:
        iter_source("long.txt")
    assert str(info.value) == (f"the list file 'long.txt' line 2 has {MAX_LIST_LINE + 1} characters, more than the "
                               f"{MAX_LIST_LINE} a path may have")
    Path("long.txt").write_text("a.png\n" + "x/" * (MAX_LIST_LINE // 2 - 3) + "bb.png\n")  # MAX_LIST_LINE exactly
    with pytest.raises(DatasetError) as info:
        iter_source("long.txt")
    assert str(info.value).startswith("1 of 2 images listed in 'long.txt' is missing: ")
