"""Export to ONNX and run on ONNX Runtime / OpenVINO: raw outputs, MMYOLO goldens, batches, round trip, bad input.

Budget: exports dominate (9-16 s each on an idle 2-core machine, 30-150 s under heavy load). Each of the 6 fixture
models is exported once per session (``exports`` in conftest.py; classifiers at the goldens' 128 px input) and reused
by every backend and test; five more exports (bad-input file, fp16, backbone, the cache and the CLI) use the smallest
models at 64 px where the test allows. The end-to-end (``nms``) variant, the gate's checks of every output and the
exported-model cache are in test_deploy_fast.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import razorzoo
from helpers import CLASSIFIERS, DATA, DETECTORS, fixture_model, unmatched_above_cutoff
from helpers.graphs import offset, rewired
from razorzoo.deploy import ParityError, check_parity, open_exported
from razorzoo.detection.transforms import ClassifierTransform, ImageMeta
from razorzoo.errors import RazorzooError
from test_loading import CLASSIFIER, mirror, zoo  # noqa: F401 (fixtures: a real local mirror and a fresh cache)

pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install -e '.[onnx,openvino]'")
pytest.importorskip("openvino", reason="needs the openvino extra: pip install -e '.[onnx,openvino]'")

BACKENDS = ("onnxruntime", "openvino")
SMALL = "spos_0.33M"  # the cheapest model to export: the fp16 and bad-input tests use it


def _leaves(outputs) -> list[torch.Tensor]:
    return [outputs] if isinstance(outputs, torch.Tensor) else [t for item in outputs for t in _leaves(item)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model", DETECTORS + CLASSIFIERS)
def test_raw_outputs_match_eager(exports, model, backend):
    net, path = exports(model)
    runtime = open_exported(path, backend=backend)
    if model in DETECTORS:
        x, _ = net.preprocess(DATA / model / "image.png")
    else:
        x = load_file(DATA / model / "goldens.safetensors")["input"]
    with torch.no_grad():
        eager = net(x)
    found = runtime(x)
    assert type(found) is type(eager)
    pairs = list(zip(_leaves(eager), _leaves(found), strict=True))
    assert len(pairs) == (1 if model in CLASSIFIERS else 9 if model.startswith("yolov5") else 6)
    assert all(a.shape == b.shape for a, b in pairs)
    assert max((a - b).abs().max().item() for a, b in pairs) <= 1e-4
    if model in CLASSIFIERS:
        goldens = load_file(DATA / model / "goldens.safetensors")
        torch.testing.assert_close(found, goldens["logits"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model", DETECTORS)
def test_predict_reproduces_the_mmyolo_goldens(exports, model, backend):
    net, path = exports(model)
    runtime = razorzoo.load_detector(path, backend=backend)
    goldens = load_file(DATA / model / "goldens.safetensors")
    for name in ("image", "image_portrait"):
        found = runtime.predict(DATA / model / f"{name}.png")
        assert isinstance(found, razorzoo.Detections)
        expected = [goldens[f"e2e.{name}.pred.{key}"] for key in ("bboxes", "scores", "labels")]
        assert len(found) == len(expected[1]) > 0
        cfg = net.recipe.test_cfg
        assert unmatched_above_cutoff(found, *expected, cfg.max_per_img, cfg.iou_threshold) == 0, name


@pytest.mark.parametrize("model", DETECTORS)
def test_the_typed_recipe_round_trips_through_the_file(exports, model):
    net, path = exports(model)
    runtime = open_exported(path)
    assert runtime.recipe == net.recipe and type(runtime.recipe.coder) is type(net.recipe.coder)
    assert runtime.transform.resize == net.transform.resize and runtime.test_cfg == net.test_cfg
    _, metas = runtime.preprocess(DATA / model / "image.png")
    assert metas == net.preprocess(DATA / model / "image.png")[1] and isinstance(metas[0], ImageMeta)


def test_a_damaged_stored_recipe_is_one_line(exports, tmp_path):
    import onnx

    _, path = exports(DETECTORS[2])
    proto = onnx.load(path)
    for prop in proto.metadata_props:
        if prop.key == "razorzoo_recipe":
            prop.value = prop.value.replace('"type": "ResizePad"', '"type": "Crop"')
    damaged = tmp_path / "damaged.onnx"
    onnx.save(proto, damaged)
    with pytest.raises(RazorzooError) as exc:
        razorzoo.load_detector(damaged, backend="onnxruntime")
    assert "stored detector recipe is not valid" in _one_line(exc) and "Letterbox, ResizePad" in str(exc.value)


def test_an_exported_classifier_predicts_with_its_stored_pipeline(exports):
    net, path = exports(CLASSIFIERS[0])  # exported at 128 px: the pipeline runs at that crop
    runtime = razorzoo.load_classifier(path, backend="onnxruntime")
    image = DATA / DETECTORS[0] / "image.png"
    batch = ClassifierTransform(net.preprocessing.at_crop(128))(image)
    assert batch.shape == (1, 3, 128, 128) and torch.equal(runtime.preprocess(image), batch)
    found = runtime.predict(image, topk=3)
    with torch.no_grad():
        probs = net(batch).softmax(1)[0]
    assert found.names == tuple(net.class_names[i] for i in found.indices)
    torch.testing.assert_close(torch.tensor(found.probs), probs[list(found.indices)], rtol=0, atol=1e-4)
    assert probs.max() - probs[found.indices[0]] <= 1e-4  # top-1 up to ties


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model", [DETECTORS[0], CLASSIFIERS[0]])
def test_batch_of_three_equals_three_batches_of_one(exports, model, backend):
    net, path = exports(model)
    runtime = open_exported(path, backend=backend)
    if model in DETECTORS:
        images = [DATA / model / "image.png", DATA / model / "image_portrait.png", DATA / model / "image.png"]
        together = runtime.predict(images)
        for image, batch_result in zip(images, together, strict=True):
            alone = runtime.predict(image)
            assert len(batch_result) == len(alone) > 0
            cfg = net.recipe.test_cfg
            assert unmatched_above_cutoff(batch_result, alone.boxes, alone.scores, alone.labels, cfg.max_per_img,
                                           cfg.iou_threshold) == 0
    else:
        x = torch.randn(3, 3, 128, 128, generator=torch.Generator().manual_seed(1))
        together = runtime(x)
        alone = torch.cat([runtime(x[i:i + 1]) for i in range(3)])
        assert together.shape == (3, 1000)
        torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("model", [DETECTORS[2], CLASSIFIERS[1]])
def test_the_file_alone_loads_offline_with_an_empty_cache(exports, model, tmp_path):
    """Round trip: export -> copy of the file -> a fresh process (empty cache, offline) -> same outputs."""
    net, path = exports(model)
    copy = tmp_path / "elsewhere" / "model.onnx"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    x = torch.randn(1, 3, 960, 960) if model in DETECTORS else torch.randn(2, 3, 128, 128)
    np.save(tmp_path / "x.npy", x.numpy())
    code = ("import sys, numpy as np, torch, razorzoo\n"
            "load = razorzoo.load_detector if sys.argv[2] == 'detection' else razorzoo.load_classifier\n"
            "runtime = load(sys.argv[1], backend='openvino')\n"
            "out = runtime(torch.from_numpy(np.load(sys.argv[3])))\n"
            "flat = [out] if isinstance(out, torch.Tensor) else [t for group in out for t in group]\n"
            "np.savez(sys.argv[4], *[t.numpy() for t in flat])\n")
    env = {**os.environ, "RAZORZOO_CACHE": str(tmp_path / "empty-cache"), "RAZORZOO_OFFLINE": "1",
           "PYTHONPATH": str(Path(razorzoo.__file__).parent.parent)}
    task = "detection" if model in DETECTORS else "classification"
    out = subprocess.run([sys.executable, "-c", code, str(copy), task, str(tmp_path / "x.npy"), str(tmp_path / "y")],
                         capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    with torch.no_grad():
        expected = net(x)
    found = np.load(tmp_path / "y.npz")
    leaves = _leaves(expected)
    assert len(found.files) == len(leaves) > 0
    for i, leaf in enumerate(leaves):
        assert (torch.from_numpy(found[f"arr_{i}"]) - leaf).abs().max() <= 1e-4
    assert not (tmp_path / "empty-cache").exists() or not any((tmp_path / "empty-cache").rglob("*.onnx"))


@pytest.mark.parametrize("model", [DETECTORS[1], CLASSIFIERS[2]])
def test_the_parity_gate_fails_for_other_weights(exports, model):
    net, path = exports(model)
    other = fixture_model(model)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.05)
    report = check_parity(other, path)
    assert not report.passed and report.max_raw_diff > 1e-3
    with pytest.raises(ParityError, match="does not reproduce the eager one"):
        report.raise_for_failure(str(path))
    assert check_parity(net, path, backend="openvino").passed


def test_fp16_export_stores_half_weights_behind_float32_inputs(tmp_path):
    import onnx

    net = fixture_model(SMALL)
    result = razorzoo.export(net, tmp_path / "half.onnx", input_size=64, fp16=True)
    assert result.parity.passed and result.parity.tolerance == 1e-2
    weights = [init for init in onnx.load(result.path).graph.initializer if len(init.dims) == 4]
    assert weights and all(init.data_type == onnx.TensorProto.FLOAT16 for init in weights)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    found = open_exported(result.path)(x)
    with torch.no_grad():
        expected = net(x)
    assert found.dtype == torch.float32 and 0 < (found - expected).abs().max() <= 1e-2


def test_a_backbone_exports_its_stage_outputs(tmp_path):
    backbone = fixture_model(SMALL).backbone
    result = razorzoo.export(backbone, tmp_path / "backbone.onnx", input_size=64)
    assert result.parity.passed and result.parity.what == ""  # raw outputs only
    runtime = open_exported(result.path, backend="openvino")
    assert runtime.task == "backbone"
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = backbone(x)
    found = runtime(x)
    assert isinstance(found, tuple) and len(found) == len(expected) > 0
    for a, b in zip(found, expected, strict=True):
        assert a.shape == b.shape and (a - b).abs().max() <= 1e-4


# -- bad input: each a one-line RazorzooError ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def classifier_file(exports):
    """A valid export to damage or misuse (never changed in place): the SPOS classifier, the cheapest to export."""
    return exports(SMALL)[1]


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and len(text) < 400 and isinstance(exc.value, RazorzooError)
    return text


def test_truncated_and_garbage_files_are_refused(classifier_file, tmp_path):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(classifier_file.read_bytes()[: classifier_file.stat().st_size // 2])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    for bad in (truncated, garbage):
        for backend in BACKENDS:
            with pytest.raises(RazorzooError) as exc:
                razorzoo.load_classifier(bad, backend=backend)
            assert str(bad) in _one_line(exc) and "razorzoo export" in str(exc.value)


def test_an_onnx_file_razorzoo_did_not_write_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["images"], ["y"])], "foreign",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), foreign)
    with pytest.raises(RazorzooError) as exc:
        razorzoo.load_detector(foreign, backend="onnxruntime")
    assert "did not write" in _one_line(exc)


def test_corrupt_razorzoo_metadata_is_refused(classifier_file, tmp_path):
    import onnx

    proto = onnx.load(classifier_file)
    for prop in proto.metadata_props:
        if prop.key == "razorzoo_outputs":
            prop.value = "[\"logits\""  # cut JSON
    damaged = tmp_path / "damaged.onnx"
    onnx.save(proto, damaged)
    with pytest.raises(RazorzooError) as exc:
        razorzoo.load_classifier(damaged, backend="onnxruntime")
    assert "damaged.onnx: razorzoo metadata: razorzoo_outputs is not JSON" in _one_line(exc)


def test_an_onnx_file_without_a_backend_says_to_pass_one(classifier_file):
    with pytest.raises(RazorzooError) as exc:
        razorzoo.load_classifier(str(classifier_file))
    assert "backend='onnxruntime'" in _one_line(exc)


def test_unknown_backend_wrong_task_and_precisions(classifier_file):
    with pytest.raises(RazorzooError) as exc:
        razorzoo.load_classifier(classifier_file, backend="tensorrt")
    assert "onnxruntime, openvino" in _one_line(exc)
    with pytest.raises(RazorzooError) as exc:
        razorzoo.load_detector(classifier_file, backend="onnxruntime")
    assert "classification" in _one_line(exc)
    with pytest.raises(RazorzooError) as exc:
        razorzoo.load_classifier(classifier_file, backend="onnxruntime", precision="bf16")
    assert "f32" in _one_line(exc)
    with pytest.raises(RazorzooError) as exc:
        razorzoo.load_classifier(classifier_file, backend="openvino", precision="int4")
    assert "bf16" in _one_line(exc)
    # a precision this CPU lacks is refused by name; one it has runs (and is what OpenVINO reports it runs)
    import openvino

    capabilities = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    for precision, capability, ov_type in (("bf16", "BF16", openvino.Type.bf16), ("fp16", "FP16", openvino.Type.f16)):
        if capability in capabilities:
            model = razorzoo.load_classifier(classifier_file, backend="openvino", precision=precision)
            [(compiled, _)] = model._session.compiled.values()
            assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov_type
        else:
            with pytest.raises(RazorzooError) as exc:
                razorzoo.load_classifier(classifier_file, backend="openvino", precision=precision)
            assert f"cannot run OpenVINO in {precision}" in _one_line(exc)
    f32 = razorzoo.load_classifier(classifier_file, backend="openvino")
    [(compiled, _)] = f32._session.compiled.values()
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.f32


@pytest.mark.parametrize("module, extra", [("onnxruntime", "onnx"), ("openvino", "openvino")])
def test_a_missing_runtime_package_names_the_extra(classifier_file, module, extra):
    backend = "onnxruntime" if module == "onnxruntime" else "openvino"
    code = (f"import sys; sys.modules[{module!r}] = None\n"  # makes `import {module}` fail like an absent package
            "import razorzoo\n"
            "from razorzoo.errors import RazorzooError\n"
            "try:\n"
            f"    razorzoo.load_classifier(sys.argv[1], backend={backend!r})\n"
            "except RazorzooError as exc:\n"
            "    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code, str(classifier_file)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(razorzoo.__file__).parent.parent)}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"pip install 'razorzoo[{extra}]'" in out.stdout and module in out.stdout


@pytest.mark.parametrize("missing, backend, extra", [("onnxscript", "openvino", "openvino"),
                                                     ("onnx", "onnxruntime", "onnx"), ("onnxruntime", None, "onnx")])
def test_an_export_is_refused_before_any_download_when_a_package_is_missing(zoo, missing, backend, extra):
    """The first --backend use exports, which needs onnx, onnxscript and (the parity gate) onnxruntime: checked
    before the model is downloaded, and the error names the extra that installs what is missing for this use
    ([openvino] brings the ONNX packages too)."""
    server, cache = zoo
    call = (f"razorzoo.load_classifier({SERVED!r}, backend={backend!r})" if backend
            else f"razorzoo.export({SERVED!r}, 'never.onnx')")
    code = (f"import sys; sys.modules[{missing!r}] = None\n"
            "import razorzoo\n"
            "from razorzoo.errors import RazorzooError\n"
            "try:\n"
            f"    {call}\n"
            "except RazorzooError as exc:\n"
            "    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=cache.parent, env={**os.environ, "PYTHONPATH": str(Path(razorzoo.__file__).parent.parent)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"needs {missing}, which is not installed: pip install 'razorzoo[{extra}]'" in out.stdout
    assert server.requests == [] and not cache.exists()  # nothing downloaded, converted or exported


# -- names through the cache (test_loading's local mirror), and the commands --------------------------------------
SERVED = CLASSIFIER  # the classifier test_loading's mirror serves


def test_a_name_is_exported_once_into_the_cache_then_reused(zoo, tmp_path, capsys, monkeypatch):
    server, cache = zoo
    monkeypatch.setenv("RAZORZOO_PROGRESS", "1")  # the long first export says what it is doing
    first = razorzoo.load_classifier(SERVED, backend="onnxruntime")
    [file] = list((cache / "exported").rglob("*.onnx"))
    err = capsys.readouterr().err
    assert f"razorzoo: first use of a runtime: exporting {cache / 'models'}" in err
    assert f"to ONNX, parity gate on (once: later loads reuse {file}) ..." in err and ": done in " in err
    mtime, requests = file.stat().st_mtime_ns, len(server.requests)
    again = razorzoo.load_classifier(SERVED, backend="openvino", offline=True)
    assert list((cache / "exported").rglob("*.onnx")) == [file] and file.stat().st_mtime_ns == mtime
    assert len(server.requests) == requests and "exporting" not in capsys.readouterr().err
    eager = razorzoo.load_classifier(SERVED)
    x = torch.randn(2, 3, *first.input_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = eager(x)
    for runtime in (first, again):
        torch.testing.assert_close(runtime(x), expected, rtol=0, atol=1e-4)

    from razorzoo.cli import main

    out_file = tmp_path / "cli" / "ofa.onnx"
    assert main(["export", SERVED, "-o", str(out_file), "--input-size", "64"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith(f"wrote {out_file} (") and "top-1 labels agreeing 3/3" in lines[1]
    assert f"razorzoo: exporting {SERVED} to ONNX and checking parity on ONNX Runtime (tens of seconds) ..." in err
    assert f"razorzoo: exporting {SERVED} to ONNX and checking parity on ONNX Runtime (tens of seconds): done in" in err
    assert open_exported(out_file).input_size == (64, 64)
    assert main(["export", SERVED, "-o", str(tmp_path / "x.onnx"), "--task", "detection"]) == 2
    assert capsys.readouterr().err == (f"razorzoo: error: {SERVED} is a classifier: export it with --task "
                                       "classification (or --task backbone for its backbone)\n")
    assert not (tmp_path / "x.onnx").exists()
    # the name was resolved from the cache, not downloaded again (razorzoo.export, which the command calls, takes
    # names as well: the README's snippets export one)
    assert len(server.requests) == requests


def test_predict_command_on_a_runtime(exports, capsys):
    from razorzoo.cli import main

    model = DETECTORS[2]
    net, path = exports(model)
    image = str(DATA / model / "image.png")
    assert main(["predict", str(path), image, "--backend", "openvino", "--json", "--score-thr", "0.2",
                 "--max-det", "5"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert result["runtime"] == {"backend": "openvino", "precision": "f32", "variant": "raw"}  # --backend: what ran
    expected = net.predict(image, score_thr=0.2, max_det=5)
    found = razorzoo.Detections(torch.tensor(result["boxes"]).view(-1, 4), torch.tensor(result["scores"]),
                                torch.tensor(result["labels"]), net.class_names)
    assert len(found) == len(expected) == 5
    assert unmatched_above_cutoff(found, expected.boxes, expected.scores, expected.labels, 5,
                                   net.recipe.test_cfg.iou_threshold) == 0
    # an .onnx file without --backend runs on ONNX Runtime
    assert main(["predict", str(path), image, "--json", "--score-thr", "0.2", "--max-det", "5"]) == 0
    [default] = json.loads(capsys.readouterr().out)
    assert len(default["boxes"]) == 5 and default["names"][0] == result["names"][0]
    assert default["runtime"]["backend"] == "onnxruntime"


def test_the_decoded_variant_returns_every_priors_box_and_scores(tmp_path):
    model = DETECTORS[0]  # YOLOv5: anchors and objectness, the most involved decoding
    net = fixture_model(model)
    result = razorzoo.export(net, tmp_path / "decoded.onnx", variant="decoded")
    assert result.parity.passed
    runtime = open_exported(result.path)
    batch, metas = net.preprocess(DATA / model / "image.png")
    boxes, scores = runtime(batch)
    assert boxes.shape == (1, 3 * (80 * 80 + 40 * 40 + 20 * 20), 4) and scores.shape == (1, boxes.shape[1], 80)
    # eager predict's best unclamped detection, mapped back to canvas pixels, is a prior with the same score
    detections = net.predict(DATA / model / "image.png")
    h, w = metas[0].ori_shape
    inside = ((detections.boxes[:, :2] > 0).all(1) & (detections.boxes[:, 2] < w) & (detections.boxes[:, 3] < h))
    best = detections[inside.nonzero()[0, 0].item()]
    top, _, left, _ = metas[0].pad_param
    scale = torch.tensor(metas[0].scale_factor).repeat(2)
    canvas_box = best.boxes[0] * scale + torch.tensor([left, top, left, top])
    close = (boxes[0] - canvas_box).abs().amax(1) <= 1e-2
    assert (scores[0, close, best.labels[0]] - best.scores[0]).abs().min() <= 1e-5
    with pytest.raises(RazorzooError, match="for your own filtering"):
        runtime.predict(DATA / model / "image.png")
    for name in ("boxes", "scores"):  # the gate compares both outputs: boxes relative to the canvas (1 px: 1.6e-3)
        wrong = rewired(result.path, tmp_path / f"{name}.onnx", name, offset(3e-4 if name == "scores" else 1.0))
        report = check_parity(net, wrong)
        assert not report.passed and report.max_raw_diff > 1e-4, name
