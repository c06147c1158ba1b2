"""Images -> boxes end to end vs ``mmdet.apis.inference_detector`` goldens, and the ``razorzoo predict`` command."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import razorzoo
from checkpoints import write_checkpoint
from helpers import DATA, DETECTORS, MAX_PER_IMG, assert_same_detections, loaded_detector
from razorzoo.cli import main

CLI_MODEL = "rtmdet_tiny-ofa_lat31"  # the smallest detector keeps the command tests quick


@pytest.mark.slow
@pytest.mark.parametrize("model", DETECTORS)
def test_images_to_boxes_equal_inference_detector(model):
    detector = loaded_detector(model)
    goldens = load_file(DATA / model / "goldens.safetensors")
    for name in ("image", "image_portrait"):
        batch, metas = detector.preprocess(DATA / model / f"{name}.png")
        with torch.no_grad():
            (found,) = detector.postprocess(detector(batch), metas)
        expected = [goldens[f"e2e.{name}.pred.{key}"] for key in ("bboxes", "scores", "labels")]
        assert len(expected[1]) > 0
        assert_same_detections(found, expected, MAX_PER_IMG[model], what=name)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The fixture weights of CLI_MODEL as a published mmdet checkpoint (legacy pickle, meta + state_dict)."""
    return write_checkpoint(CLI_MODEL, "mmdet-publish", tmp_path_factory.mktemp("ckpt") / "rtmdet.pth")


def _run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_predict_command_json_and_annotated_images(checkpoint, tmp_path, capsys):
    images = [str(DATA / CLI_MODEL / "image.png"), str(DATA / CLI_MODEL / "image_portrait.png")]
    out_dir = tmp_path / "annotated"
    code, out, _ = _run_cli(capsys, "predict", CLI_MODEL, *images, "--weights", str(checkpoint), "--json",
                            "--out", str(out_dir), "--max-det", "5", "--score-thr", "0.2")
    assert code == 0
    results = json.loads(out)
    assert [r["image"] for r in results] == images

    detector = loaded_detector(CLI_MODEL)
    detector.tie_weights()
    for result, image in zip(results, images):
        expected = detector.predict(image, score_thr=0.2, max_det=5)
        assert len(result["names"]) == len(result["labels"]) == 5
        assert sorted(result["names"]) == sorted(expected.names)
        assert_same_detections(result, expected, 5, what=image)

    written = sorted(p.name for p in out_dir.iterdir())
    assert written == ["image.png", "image_portrait.png"]
    assert Image.open(out_dir / "image_portrait.png").size == Image.open(images[1]).size
    assert Image.open(out_dir / "image.png").tobytes() != Image.open(images[0]).convert("RGB").tobytes()


@pytest.mark.slow
def test_predict_command_table_from_a_converted_file(checkpoint, tmp_path, capsys):
    converted = tmp_path / "model.safetensors"
    assert main(["convert", str(checkpoint), "--subnet", CLI_MODEL, "--detector", CLI_MODEL,
                 "-o", str(converted)]) == 0
    capsys.readouterr()
    image = str(DATA / CLI_MODEL / "image.png")
    code, out, _ = _run_cli(capsys, "predict", CLI_MODEL, image, image, "--weights", str(converted),
                            "--out", str(tmp_path / "out"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"{image}: 100 detections"  # the recipe's max_per_img
    assert lines[1].split() == ["class", "score", "x1", "y1", "x2", "y2"]
    assert lines[2].split()[0] == "bed" and lines[12] == "  ... 90 more (--json lists all)"
    # the same file twice: the second annotated copy does not overwrite the first
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["image.png", "image_1.png"]


def test_predict_command_errors(checkpoint, tmp_path, capsys):
    code, _, err = _run_cli(capsys, "predict", CLI_MODEL, str(tmp_path / "missing.jpg"), "--weights",
                            str(checkpoint))
    assert code == 2 and "missing.jpg" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as info:  # argparse refuses it (tests/hostile has the variants)
        main(["predict", CLI_MODEL, "x.png", "--max-det", "0"])
    assert info.value.code == 2 and "--max-det must be >= 1" in capsys.readouterr().err
    code, _, err = _run_cli(capsys, "predict", CLI_MODEL, "x.png", "--weights", str(tmp_path / "nope.pth"))
    assert code == 2 and "nope.pth" in err


def test_predict_parser_does_not_import_torch():
    code = ("import sys; from razorzoo.cli import build_parser; "
            "build_parser().parse_args(['predict', 'm', 'a.png', '--json']); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.slow
def test_predict_command_iou_thr(checkpoint, capsys):
    image = str(DATA / CLI_MODEL / "image.png")
    detector = loaded_detector(CLI_MODEL)
    detector.tie_weights()
    loose = detector.predict(image, iou_thr=0.9, max_det=1000)
    tight = detector.predict(image, iou_thr=0.05, max_det=1000)
    assert len(tight) < len(loose)  # the threshold matters on this image
    code, out, _ = _run_cli(capsys, "predict", CLI_MODEL, image, "--weights", str(checkpoint), "--json",
                            "--iou-thr", "0.05", "--max-det", "1000")
    assert code == 0
    assert_same_detections(json.loads(out)[0], tight, 1000)


def test_predict_command_classifies_with_a_classifier(tmp_path, capsys):
    """A classifier NAME prints its top-k ImageNet classes (same as ``predict``), and refuses detector options."""
    converted = tmp_path / "spos.safetensors"
    checkpoint = write_checkpoint("spos_0.33M", "mmrazor-subnet", tmp_path / "spos.pth")
    assert main(["convert", str(checkpoint), "--subnet", "spos_0.33M", "-o", str(converted)]) == 0
    capsys.readouterr()
    image = str(DATA / CLI_MODEL / "image.png")
    code, out, _ = _run_cli(capsys, "predict", "spos_0.33M", image, "--weights", str(converted), "--topk", "3",
                            "--json")
    assert code == 0
    (result,) = json.loads(out)
    expected = razorzoo.load_classifier(converted).predict(image, topk=3)
    assert result["indices"] == list(expected.indices) and result["names"] == list(expected.names)
    assert torch.allclose(torch.tensor(result["probs"]), torch.tensor(expected.probs), atol=1e-6)
    code, out, _ = _run_cli(capsys, "predict", "spos_0.33M", image, "--weights", str(converted))
    lines = out.splitlines()
    assert code == 0 and lines[0] == f"{image}: top 5" and len(lines) == 6
    assert lines[1].split()[0] == expected.names[0].split()[0]
    code, _, err = _run_cli(capsys, "predict", "spos_0.33M", image, "--weights", str(converted), "--max-det", "3")
    assert code == 2 and "detector options (--max-det) do not apply" in err
    # the streaming options save its top-k per image (tests/test_sources.py has folders, globs and videos)
    code, out, _ = _run_cli(capsys, "predict", "spos_0.33M", image, "--save-json", str(tmp_path / "out.json"),
                            "--weights", str(converted), "--topk", "3")
    saved = json.loads((tmp_path / "out.json").read_text())
    assert code == 0 and out.startswith("1 image, ")
    assert [(r["image"], r["rank"], r["class_index"]) for r in saved] == [(image, rank, index) for rank, index in
                                                                          enumerate(expected.indices, start=1)]
