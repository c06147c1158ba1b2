"""int8 exports for OpenVINO (NNCF): what the file records, that its layers really run in int8, its measured cost,
and bad input as one line each. Budget: one int8 export of the SPOS classifier at 64 px (~20-40 s); the bad-input
checks fail before any export work."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import razorzoo
from helpers import CLASSIFIERS, fixture_model
from razorzoo.deploy.metadata import read_metadata
from razorzoo.deploy.parity import match_by_overlap
from razorzoo.detection.results import Detections
from razorzoo.errors import RazorzooError
from val_data import converted_classifier, write_images

pytest.importorskip("openvino", reason="needs the int8 extra: pip install -e '.[int8]'")
pytest.importorskip("nncf", reason="needs the int8 extra: pip install -e '.[int8]'")

MODEL = CLASSIFIERS[0]


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and len(text) < 400 and isinstance(exc.value, RazorzooError)
    return text


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("calib")
    write_images(folder)  # four photos and drawings: three calibrate, the fourth measures the cost
    (folder / "notes.txt").write_text("not an image: a folder's other files are not calibration images")
    return folder


@pytest.fixture(scope="module")
def int8_export(calib, tmp_path_factory):
    net = fixture_model(MODEL)
    out = tmp_path_factory.mktemp("int8") / "spos-int8.xml"
    return net, razorzoo.export(net, out, input_size=64, int8=True, calib=calib, calib_n=3)


def test_an_int8_export_records_its_precision_calibration_set_and_cost(int8_export, calib):
    net, result = int8_export
    assert result.path.is_file() and result.path.with_suffix(".bin").is_file()
    assert sorted(p.name for p in result.path.parent.iterdir()) == ["spos-int8.bin", "spos-int8.xml"]  # no drafts
    images = sorted(p for p in calib.iterdir() if p.suffix in (".png", ".jpg"))
    assert len(images) == 4
    metadata = read_metadata(result.path)
    assert metadata["razorzoo_precision"] == "int8" and metadata["razorzoo_task"] == "classification"
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in images[:3])).hexdigest()
    assert json.loads(metadata["razorzoo_calibration"]) == {"sha256": digest, "images": 3}
    cost = result.int8_cost
    assert json.loads(metadata["razorzoo_int8_cost"]) == cost.to_dict()
    assert cost.what == "top-1 labels" and cost.images == 1 and cost.float32_total == 1  # the held-out fourth
    assert str(cost).startswith("int8 vs float32 on 1 held-out images: top-1 labels agreeing ")
    assert result.parity.passed and result.parity.tolerance == 1e-4  # the float32 graph was gated first


def test_the_quantized_layers_run_in_int8_and_the_first_and_last_stay_float(int8_export):
    net, result = int8_export
    runtime = razorzoo.load_classifier(result.path, backend="openvino")
    assert runtime.precision == "int8" and runtime.runtime["precision"] == "int8"
    [(compiled, _)] = runtime._session.compiled.values()
    convolutions = [(op.get_rt_info()["runtimePrecision"].astype(str))
                    for op in compiled.get_runtime_model().get_ordered_ops()
                    if op.get_rt_info()["layerType"].astype(str) == "Convolution"]
    int8 = [p for p in convolutions if p in ("u8", "i8")]  # depthwise convolutions may stay float
    assert len(convolutions) // 2 < len(int8) and convolutions[0] == "f32"
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(x)
    found = runtime(x)
    assert found.shape == expected.shape and 0 < (found - expected).abs().max() < expected.abs().max()


def test_an_int8_export_runs_on_openvino_only(int8_export):
    import openvino as ov

    _, result = int8_export
    with pytest.raises(RazorzooError) as exc:
        razorzoo.load_classifier(result.path, backend="onnxruntime")
    assert "int8 runs on OpenVINO" in _one_line(exc)
    with pytest.raises(RazorzooError) as exc:
        razorzoo.load_classifier(result.path, backend="openvino", precision="bf16")
    # a CPU without bf16 says so first (checked before any export); one with it names the file's precision
    bf16_cpu = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert ("its precision is int8" if bf16_cpu else "this CPU cannot run OpenVINO in bf16") in _one_line(exc)
    with pytest.raises(RazorzooError) as exc:
        razorzoo.load_classifier(str(result.path))
    assert "backend='openvino'" in _one_line(exc)


def test_an_openvino_ir_razorzoo_did_not_write_is_refused_like_a_foreign_onnx_file(int8_export, tmp_path):
    """The IR's razorzoo metadata is its contract: an IR without it (here: the same graph, its rt_info stripped) or
    with a field out of range is one line, never loaded with guessed pre-processing."""
    import openvino as ov

    _, result = int8_export
    core = ov.Core()
    foreign = core.read_model(str(result.path))
    for key in list(foreign.get_rt_info().keys()):
        if key.startswith("razorzoo_"):
            foreign.set_rt_info("", key)
    ov.save_model(foreign, str(tmp_path / "foreign.xml"))
    with pytest.raises(RazorzooError) as exc:
        razorzoo.load_classifier(tmp_path / "foreign.xml", backend="openvino")
    assert "is an OpenVINO IR razorzoo did not write" in _one_line(exc)

    tampered = core.read_model(str(result.path))
    tampered.set_rt_info(json.dumps([1, 2]), "razorzoo_input_size")
    ov.save_model(tampered, str(tmp_path / "tampered.xml"))
    with pytest.raises(RazorzooError) as exc:
        read_metadata(tmp_path / "tampered.xml")
    assert "razorzoo_input_size" in _one_line(exc)


def test_bad_int8_input_is_one_line_before_any_export_work(calib, tmp_path, exports):
    net = fixture_model(MODEL)
    out = tmp_path / "m.xml"
    (tmp_path / "empty").mkdir()
    fake = tmp_path / "fake.jpg"
    fake.write_text("a text file with an image's name")
    cases = [
        ({"calib": None}, "int8 needs calibration images"),
        ({"calib": tmp_path / "empty"}, "no images in"),
        ({"calib": calib / "chelsea.png"}, "is not a folder"),
        ({"calib": []}, "the list of images is empty"),
        ({"calib": [fake]}, "fake.jpg"),
        ({"calib": calib, "calib_n": 0}, "calib_n"),
    ]
    for options, message in cases:
        with pytest.raises(RazorzooError) as exc:
            razorzoo.export(net, out, input_size=64, int8=True, **options)
        assert message in _one_line(exc), options
    with pytest.raises(RazorzooError) as exc:
        razorzoo.export(net, tmp_path / "m.onnx", int8=True, calib=calib)
    assert "must end in .xml (int8 exports are OpenVINO IR)" in _one_line(exc)
    with pytest.raises(RazorzooError) as exc:
        razorzoo.export(net, tmp_path / "m.onnx", calib=calib)
    assert "calib= is for int8 exports" in _one_line(exc)
    assert not list(tmp_path.glob("m.*"))
    _, f32_file = exports(MODEL)
    with pytest.raises(RazorzooError) as exc:
        razorzoo.load_classifier(f32_file, backend="openvino", precision="int8")
    assert "needs an int8 export" in _one_line(exc)
    with pytest.raises(RazorzooError) as exc:
        razorzoo.load_classifier(MODEL, backend="onnxruntime", precision="int8", calib=calib)
    assert "int8 runs on OpenVINO" in _one_line(exc)
    with pytest.raises(RazorzooError) as exc:
        razorzoo.load_classifier(MODEL, backend="openvino", calib=calib)
    assert "calib= is for precision='int8'" in _one_line(exc)


def test_int8_export_command_prints_the_cost(calib, tmp_path, capsys):
    from razorzoo.cli import main

    converted = converted_classifier(tmp_path)  # MODEL's fixture weights, converted
    assert main(["export", str(converted), "-o", str(tmp_path / "cli.onnx"), "--calib", str(calib)]) == 2
    assert "--calib are for --int8 exports" in capsys.readouterr().err
    imagenet = tmp_path / "imagenet"  # class folders named by index: 0/ and 1/, two images each
    for i, image in enumerate(sorted(p for p in calib.iterdir() if p.suffix in (".png", ".jpg"))):
        (imagenet / str(i % 2)).mkdir(parents=True, exist_ok=True)
        (imagenet / str(i % 2) / image.name).write_bytes(image.read_bytes())
    out = tmp_path / "cli.xml"
    assert main(["export", str(converted), "-o", str(out), "--int8", "--calib", *map(str, sorted(calib.glob("*.png"))),
                 "--calib-n", "2", "--imagenet", str(imagenet)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"wrote {out} (") and lines[1].startswith("parity with eager on onnxruntime: ")
    assert lines[2].startswith("int8 cost: int8 vs float32 on 1 held-out images: top-1 labels agreeing ")
    assert json.loads(read_metadata(out)["razorzoo_calibration"])["images"] == 2
    assert main(["val", str(converted), "--imagenet", str(imagenet), "--json"]) == 0
    eager = json.loads(capsys.readouterr().out)
    assert lines[3] == f"float32  top-1 {eager['top1'] * 100:.2f}, top-5 {eager['top5'] * 100:.2f} on 4 images"
    assert lines[4].startswith("int8     top-1 ") and lines[4].endswith(" on 4 images")


def test_matching_by_overlap_counts_each_partner_once():
    names = ("person", "car")
    expected = Detections(torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10.]]),
                          torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([0, 0, 0, 1]), names)
    found = Detections(torch.tensor([[1, 0, 10, 10], [50, 50, 58, 60], [0, 0, 10, 10.]]),
                       torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0, 0, 0]), names)
    # IoU 0.9 and 1.0 with the first two, 0.8 with the third; the car has no partner of its class
    assert match_by_overlap(expected, found, 0.5) == 3
    assert match_by_overlap(expected, found, 0.95) == 1
    assert match_by_overlap(found, expected, 0.5) == 3
    assert match_by_overlap(expected, Detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long),
                                                 names), 0.5) == 0
