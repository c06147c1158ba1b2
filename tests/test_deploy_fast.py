"""The fast path on a runtime: the end-to-end (``nms``) export by default, the parity gate that decides it (every
output of every variant, detections matched both ways, float32's tolerance), its fallback, the exported-model
cache (keyed by the weights' content) and the metadata a file carries.

Budget: one end-to-end YOLOv5 export from a converted file into the run's cache (shared with test_val_coco.py),
classifier exports at 64 px for the cache; the gate checks and the fallback reuse the session's ``exports``. Each
gate check runs eager and ONNX Runtime on the gate's four canvases (~3 s).
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import razorzoo
from helpers import CLASSIFIERS, DATA, DETECTORS, fixture_model, unmatched_above_cutoff
from helpers.graphs import offset, rewired
from razorzoo.deploy import check_parity, open_exported
from razorzoo.deploy.cached import cached_export, export_dir
from razorzoo.deploy.end2end import OUTPUTS
from razorzoo.deploy.metadata import read_metadata
from razorzoo.errors import RazorzooError
from razorzoo.version import __version__
from val_data import converted_classifier, converted_model

onnx = pytest.importorskip("onnx", reason="needs the onnx extra: pip install -e '.[onnx,openvino]'")
pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install -e '.[onnx,openvino]'")
pytest.importorskip("openvino", reason="needs the openvino extra: pip install -e '.[onnx,openvino]'")
from onnx import helper, numpy_helper  # noqa: E402

MODEL = DETECTORS[0]  # YOLOv5: anchors, objectness and batch shapes, the most involved recipe
IMAGES = [DATA / MODEL / "image.png", DATA / MODEL / "image_portrait.png"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    return converted_model(MODEL, tmp_path_factory.mktemp("converted"))


@pytest.fixture(scope="module")
def fast(converted, run_cache):
    """``load_detector(converted file, backend=...)``: exported once into the run's cache (shared with
    test_val_coco.py's ``val --backend``)."""
    return razorzoo.load_detector(converted, backend="onnxruntime", cache_dir=run_cache)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and len(text) < 400 and isinstance(exc.value, RazorzooError)
    return text


# -- the end-to-end graph is the default -------------------------------------------------------------------------
def test_a_detector_on_a_runtime_runs_the_end_to_end_graph_and_predicts_like_eager(fast, converted, run_cache):
    eager = razorzoo.load_detector(converted)
    assert fast.variant == "nms" and "variant='nms'" in repr(fast)
    num_dets, boxes, scores, labels = fast(eager.preprocess(IMAGES[0])[0])
    assert num_dets.shape == (1, 1) and boxes.shape == (1, 300, 4) and labels.dtype == torch.int64
    for backend in ("onnxruntime", "openvino"):
        runtime = razorzoo.load_detector(converted, backend=backend, offline=True, cache_dir=run_cache)
        assert runtime.source == fast.source  # the one cached export
        for thresholds in ({}, {"score_thr": 0.3}, {"score_thr": 0.32, "iou_thr": 0.3, "max_det": 20}):
            for image in IMAGES:  # the graph runs with the thresholds asked for
                found, expected = runtime.predict(image, **thresholds), eager.predict(image, **thresholds)
                assert len(found) == len(expected) > 0
                max_det, iou_thr = thresholds.get("max_det", 300), thresholds.get("iou_thr", 0.65)
                for a, b in ((expected, found), (found, expected)):
                    assert unmatched_above_cutoff(b, a.boxes, a.scores, a.labels, max_det, iou_thr) == 0, \
                        (backend, thresholds, image.name)
    with pytest.raises(RazorzooError) as exc:
        fast.predict(IMAGES[0], max_det=301)
    assert "at most 300 detections" in _one_line(exc)
    with pytest.raises(RazorzooError) as exc:  # its outputs were made at the file's thresholds
        fast.postprocess(fast(eager.preprocess(IMAGES[0])[0]), eager.preprocess(IMAGES[0])[1], score_thr=0.5)
    assert "pass thresholds to predict()" in _one_line(exc)


def test_a_refused_end_to_end_export_falls_back_to_raw_and_says_why_once(converted, exports, tmp_path, capsys):
    """The gate's verdict on the end-to-end export is recorded in the cache; a load then runs the raw export and
    says why, once per process. (The raw export is the run's shared one of the same weights, put where the cache
    keeps it: exporting into a cache is test_deploy.py's subject, and costs 30 s.)"""
    cache = tmp_path / "cache"
    refused = export_dir(converted, "detection", cache_dir=cache, variant="nms") / "parity_refused.txt"
    refused.parent.mkdir(parents=True)
    refused.write_text("detections agreeing 1083/1084")
    raw = export_dir(converted, "detection", cache_dir=cache, variant="raw") / "model.onnx"
    raw.parent.mkdir(parents=True)
    shutil.copy(exports(MODEL)[1], raw)
    runtime = razorzoo.load_detector(converted, backend="onnxruntime", cache_dir=cache)
    again = razorzoo.load_detector(converted, backend="openvino", cache_dir=cache)
    err = capsys.readouterr().err
    assert err.count("razorzoo: notice:") == 1 and "(detections agreeing 1083/1084)" in err and "'raw'" in err
    assert runtime.variant == again.variant == "raw" and "variant='raw'" in repr(again)
    assert not (refused.parent / "model.onnx").exists()
    eager = razorzoo.load_detector(converted)
    for image in IMAGES:
        found, expected = runtime.predict(image, score_thr=0.3), eager.predict(image, score_thr=0.3)
        assert len(found) == len(expected) > 0
        assert unmatched_above_cutoff(found, expected.boxes, expected.scores, expected.labels, 300, 0.65) == 0


def test_a_refusal_is_remembered_instead_of_exporting_again(tmp_path):
    """A real refusal: logits in the ten thousands keep no decimals in float16 (its spacing there is 8 to 64), so a
    float16 export is refused; the second call reads the record instead of exporting again."""
    converted = converted_classifier(tmp_path, fc_scale=1e5)
    options = {"input_size": 64, "fp16": True}
    with pytest.raises(razorzoo.deploy.ParityError) as first:
        cached_export(converted, "classification", cache_dir=tmp_path / "cache", **options)
    record = export_dir(converted, "classification", cache_dir=tmp_path / "cache", **options) / "parity_refused.txt"
    assert record.read_text() == first.value.verdict and first.value.verdict.startswith("max raw difference ")
    assert "(limit 1e-02)" in first.value.verdict and "nothing was written" in str(first.value)
    with pytest.raises(razorzoo.deploy.ParityError) as second:
        cached_export(converted, "classification", cache_dir=tmp_path / "cache", **options)
    assert "refused this export earlier" in _one_line(second) and second.value.verdict == first.value.verdict
    assert not list((tmp_path / "cache").rglob("*.onnx"))


def test_a_recorded_refusal_is_read_as_one_bounded_line_and_a_damaged_one_says_how_to_export_again(tmp_path):
    """The record is a file in the user's cache: whatever it holds (lines, terminal escapes, any length, other
    bytes) comes back as one bounded line, and nothing is exported while it is there."""
    converted = converted_classifier(tmp_path)
    cache = tmp_path / "cache"
    record = export_dir(converted, "classification", cache_dir=cache, input_size=64) / "parity_refused.txt"
    record.parent.mkdir(parents=True)
    record.write_text("max raw difference\n\x1b[2Jnan\r\n" + "x" * 3000)
    with pytest.raises(razorzoo.deploy.ParityError) as refused:
        cached_export(converted, "classification", cache_dir=cache, input_size=64)
    assert refused.value.verdict == ("max raw difference nan " + "x" * 300)[:300]
    assert str(refused.value) == f"{record.parent / 'model.onnx'}: the parity gate refused this export earlier: " \
                                 + refused.value.verdict  # one line: the path and at most 300 characters of it
    for damaged, why in ((b"y" * 5000, "is larger than the 4096 bytes allowed"), (b"\xff\xfe", "is not UTF-8 text")):
        record.write_bytes(damaged)
        with pytest.raises(RazorzooError) as caught:
            cached_export(converted, "classification", cache_dir=cache, input_size=64)
        assert _one_line(caught) == (f"the parity gate's recorded verdict {str(record)!r} {why}; delete it to "
                                     "export again")
    assert not list(cache.rglob("*.onnx"))


def test_the_cache_key_holds_the_task_every_setting_and_the_razorzoo_and_torch_versions(tmp_path, monkeypatch):
    """Another razorzoo or torch may export another graph: an upgrade exports again instead of reusing."""
    import razorzoo.deploy.cached as cached

    converted = converted_classifier(tmp_path)
    key = lambda task="classification", **options: export_dir(converted, task, cache_dir=tmp_path, **options)  # noqa
    base = key(input_size=64)
    assert key(input_size=64) == base and base.parent == tmp_path / "exported"
    others = [key("backbone", input_size=64), key(input_size=96), key(input_size=64, fp16=True), key(),
              key(input_size=64, opset=18)]
    monkeypatch.setattr(cached, "__version__", __version__ + ".post1")
    others.append(key(input_size=64))
    monkeypatch.setattr(cached, "__version__", __version__)
    monkeypatch.setattr(torch, "__version__", torch.__version__ + "+other")
    others.append(key(input_size=64))
    assert len({base, *others}) == len(others) + 1


# -- the gate compares every output of every variant -------------------------------------------------------------
def test_the_gate_sees_a_wrong_value_in_any_one_output(exports, tmp_path):
    """One output at a time off by 3e-4 (above float32's 1e-4): every output of a backbone (three stages) and, of a
    detector's nine head outputs, the second and the last (the first is no proof that the rest are compared). The
    score outputs' change is too small to move a detection (at most 7.5e-5), so only the output comparison sees
    it."""
    backbone = fixture_model(MODEL).backbone  # the detector's: three stage outputs
    path = razorzoo.export(backbone, tmp_path / "backbone.onnx", input_size=64).path
    names = [output.name for output in onnx.load(path).graph.output]
    assert len(names) == 3
    for i, name in enumerate(names):
        report = check_parity(backbone, rewired(path, tmp_path / f"b{i}.onnx", name, offset(3e-4)))
        assert not report.passed and report.tolerance == 1e-4 and 2.9e-4 < report.max_raw_diff < 3.2e-4, name
    net, path = exports(MODEL)
    names = [output.name for output in onnx.load(path).graph.output]
    assert len(names) == 9 and names[1] == "cls_scores.1" and names[-1] == "objectnesses.2"
    for name in (names[1], names[-1]):
        report = check_parity(net, rewired(path, tmp_path / f"{name}.onnx", name, offset(3e-4)))
        assert not report.passed and 2.9e-4 < report.max_raw_diff < 3.2e-4 and report.matched == report.total, name


def test_a_float32_export_is_held_to_float32s_tolerance(exports, tmp_path):
    """Logits off by 5e-3 (within float16's 1e-2, top-1 labels unchanged): refused for a float32 export."""
    net, path = exports(CLASSIFIERS[0])
    report = check_parity(net, rewired(path, tmp_path / "off.onnx", "logits", offset(5e-3)))
    assert report.tolerance == 1e-4 and report.matched == report.total == 3 and not report.passed
    assert abs(report.max_raw_diff - 5e-3) < 1e-4
    half = razorzoo.export(net, tmp_path / "half.onnx", input_size=128, fp16=True)
    assert half.parity.tolerance == 1e-2
    assert check_parity(net, rewired(half.path, tmp_path / "half_off.onnx", "logits", offset(5e-3))).passed


def _one_extra_box(graph) -> None:
    """Rewire the end-to-end outputs (renamed ``<name>__before``) to hold one more detection (person, score 0.9, a
    box no eager detection has) in the first free row, or instead of the last one when the list is full."""
    rows = 300

    def constant(name, value):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))

    graph.node.extend([
        constant("rows", np.array(rows)), constant("last_row", np.array(rows - 1)), constant("one", np.array(1)),
        constant("row_ids", np.arange(rows)), constant("high", np.array(0.9, np.float32)),
        constant("person", np.array(0)), constant("last_axis", np.array([-1])),
        constant("box", np.array([100, 200, 260, 330], np.float32)),
        helper.make_node("Min", ["num_dets__before", "last_row"], ["target"]),
        helper.make_node("Equal", ["row_ids", "target"], ["is_new"]),  # (N, rows)
        helper.make_node("Add", ["num_dets__before", "one"], ["plus_one"]),
        helper.make_node("Min", ["plus_one", "rows"], ["num_dets"]),
        helper.make_node("Where", ["is_new", "high", "scores__before"], ["scores"]),
        helper.make_node("Where", ["is_new", "person", "labels__before"], ["labels"]),
        helper.make_node("Unsqueeze", ["is_new", "last_axis"], ["is_new_box"]),
        helper.make_node("Where", ["is_new_box", "box", "boxes__before"], ["boxes"]),
    ])


def test_the_gate_matches_detections_both_ways_an_extra_runtime_box_fails(fast, tmp_path):
    net = razorzoo.load_detector(fast.metadata["razorzoo_source"])
    assert check_parity(net, fast.source).passed
    model = onnx.load(fast.source)
    for name in ("num_dets", "scores", "labels", "boxes"):
        for node in model.graph.node:
            node.output[:] = [f"{name}__before" if n == name else n for n in node.output]
    _one_extra_box(model.graph)
    onnx.save(model, tmp_path / "extra.onnx")
    extra = razorzoo.load_detector(tmp_path / "extra.onnx", backend="onnxruntime")
    found = extra.predict(IMAGES[0], score_thr=0.3)
    assert found.scores.max() == pytest.approx(0.9) and found.names[int(found.scores.argmax())] == "person"
    report = check_parity(net, extra)
    assert not report.passed and report.max_raw_diff is None
    assert report.total - report.matched == 4  # the extra box on each of the gate's four canvases


# -- the exported-model cache ------------------------------------------------------------------------------------
def test_the_cache_is_keyed_by_the_weights_content_and_the_export_settings(tmp_path):
    cache = tmp_path / "cache"
    file = converted_classifier(tmp_path)
    first = cached_export(file, "classification", cache_dir=cache, input_size=64)
    assert cached_export(file, "classification", cache_dir=cache, input_size=64) == first
    other_size = cached_export(file, "classification", cache_dir=cache, input_size=96)
    assert other_size != first and open_exported(other_size).input_size == (96, 96)
    converted_classifier(tmp_path, scale=1.1)  # other weights under the same file name
    second = cached_export(file, "classification", cache_dir=cache, input_size=64)
    assert second != first
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = razorzoo.load_classifier(file)(x)
    torch.testing.assert_close(open_exported(second)(x), expected, rtol=0, atol=1e-4)
    assert (open_exported(first)(x) - expected).abs().max() > 1e-2  # the first export holds the first weights


def test_a_batch_one_graph_runs_a_batch_image_by_image_on_both_runtimes(tmp_path):
    """``dynamic_batch=False`` (docs/deploy.md's classifier): a batch of three runs as three single-image calls,
    and each image keeps its own outputs (OpenVINO reuses its output buffer from call to call)."""
    converted = converted_classifier(tmp_path, fc_scale=100)  # logits further apart from image to image
    path = razorzoo.export(converted, tmp_path / "batch1.onnx", input_size=64, dynamic_batch=False).path
    assert [d.dim_value for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim] == [1, 3, 64, 64]
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = razorzoo.load_classifier(converted)(x)
    for backend in ("onnxruntime", "openvino"):
        found = open_exported(path, backend=backend)(x)
        torch.testing.assert_close(found, expected, rtol=0, atol=1e-3)  # measured: 3e-5
        apart = min((found[i] - found[j]).abs().max() for i, j in ((0, 1), (1, 2), (0, 2)))
        assert apart > 0.05  # no image's logits are another's copy (measured: 0.11 apart)


# -- the metadata a file carries -----------------------------------------------------------------------------------
def test_every_metadata_field_of_a_detector_export_round_trips(fast, converted):
    from safetensors import safe_open

    with safe_open(converted, "pt") as f:
        arch = f.metadata()["razorzoo_arch"]
    eager = razorzoo.load_detector(converted)
    expected = {
        "razorzoo_format": "razorzoo-onnx/1", "razorzoo_version": __version__, "razorzoo_source": str(converted),
        "razorzoo_task": "detection", "razorzoo_variant": "nms", "razorzoo_outputs": OUTPUTS,
        "razorzoo_input_size": [640, 640], "razorzoo_recipe": eager.recipe.to_dict(), "razorzoo_arch": json.loads(arch),
        "razorzoo_fp16": False, "razorzoo_size_divisor": 32,
    }
    metadata = read_metadata(fast.source)
    assert set(metadata) == set(expected)
    for key, value in expected.items():
        assert (metadata[key] if isinstance(value, str) else json.loads(metadata[key])) == value, key
    assert fast.recipe == eager.recipe and fast.size_divisor == 32 and fast.input_size == (640, 640)


def test_every_metadata_field_of_a_classifier_export_round_trips(exports):
    net, path = exports(CLASSIFIERS[1])
    expected = {
        "razorzoo_format": "razorzoo-onnx/1", "razorzoo_version": __version__, "razorzoo_source": "",
        "razorzoo_task": "classification", "razorzoo_variant": "raw", "razorzoo_outputs": "logits",
        "razorzoo_input_size": [128, 128], "razorzoo_preprocessing": net.preprocessing.to_dict(),
        "razorzoo_class_names": list(net.class_names), "razorzoo_fp16": False, "razorzoo_size_divisor": None,
    }
    metadata = read_metadata(path)
    assert set(metadata) == set(expected)
    for key, value in expected.items():
        assert (metadata[key] if key in ("razorzoo_format", "razorzoo_version", "razorzoo_source", "razorzoo_task",
                                         "razorzoo_variant") else json.loads(metadata[key])) == value, key
    runtime = razorzoo.load_classifier(path, backend="onnxruntime")
    assert runtime.preprocessing.at_crop(128) == net.preprocessing.at_crop(128) and runtime.size_divisor is None


# -- free-size graphs ----------------------------------------------------------------------------------------------
def test_a_letterbox_detector_graph_takes_any_multiple_of_32_and_refuses_other_sizes(exports):
    net, path = exports(MODEL)
    runtime = open_exported(path, backend="openvino")
    for height, width in ((448, 672), (672, 416), (640, 640)):
        x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(height))
        with torch.no_grad():
            expected = net(x)
        found = runtime(x)
        assert max((a - b).abs().max().item() for a, b in zip(sum(expected, []), sum(found, []))) <= 1e-4
    with pytest.raises(RazorzooError) as exc:
        runtime(torch.zeros(1, 3, 640, 630))
    assert "multiples of 32 up to 4096, got 640 x 630" in _one_line(exc)
    fixed = open_exported(exports(DETECTORS[2])[1])  # RTMDet: always one 960 x 960 canvas
    with pytest.raises(RazorzooError) as exc:
        fixed(torch.zeros(1, 3, 640, 640))
    assert "takes 960 x 960 inputs, got 640 x 640" in _one_line(exc)


def test_an_end_to_end_export_keeps_the_exporters_log_lines_off_stderr(tmp_path, capfd, caplog):
    """The exporter logs 'Attribute type is ambiguous ... Defaulted to INTS' for the end-to-end graph's own empty
    attributes (right as defaulted); outside pytest, Python prints such a record on stderr. A user exporting a model
    sees razorzoo's lines only."""
    net = fixture_model(DETECTORS[2])
    with caplog.at_level(logging.WARNING):
        razorzoo.export(net, tmp_path / "e2e.onnx", variant="nms", check=False)
    assert [r.getMessage()[:80] for r in caplog.records if r.levelno >= logging.WARNING] == []
    captured = capfd.readouterr()
    assert "Attribute type" not in captured.err + captured.out and "Warning" not in captured.err, captured.err[-2000:]
