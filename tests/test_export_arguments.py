"""``razorzoo.export``'s arguments: each refusal is one line that says what to pass instead, and comes before the
export's tens of seconds (and before anything is written); the input size's accepted range at both ends; and
``razorzoo export``'s flags, each shown in the file it writes. The range is pinned on a one-convolution backbone (a
module that records ``out_channels``, as razorzoo backbones do) in about a second an end; the flags take one export
of the SPOS classifier (about 8 s).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import razorzoo
from helpers import CLASSIFIERS, DETECTORS, fixture_model
from razorzoo.errors import RazorzooError
from val_data import converted_classifier, converted_model

onnx = pytest.importorskip("onnx", reason="needs the onnx extra: pip install -e '.[onnx,openvino]'")
pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install -e '.[onnx,openvino]'")


class OneConv(nn.Module):
    """The smallest module razorzoo exports as a backbone: it records its stage widths like razorzoo's do."""

    out_channels = (4,)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.conv(x),)


@pytest.fixture(scope="module")
def classifier() -> nn.Module:
    return fixture_model(CLASSIFIERS[0])


def _refusal(tmp_path: Path, model, **kwargs) -> str:
    with pytest.raises(RazorzooError) as caught:
        razorzoo.export(model, tmp_path / "model.onnx", **kwargs)
    text = str(caught.value)
    assert "\n" not in text and len(text) < 300, text
    assert not list(tmp_path.iterdir())  # refused before anything was written
    return text


@pytest.mark.parametrize("kwargs, message", [
    ({"variant": "fancy"}, "unknown export variant 'fancy'; expected one of raw, decoded, nms"),
    ({"variant": "nms"}, "the 'nms' variant is for detectors; export classifiers and backbones as 'raw'"),
    ({"variant": "decoded"}, "the 'decoded' variant is for detectors; export classifiers and backbones as 'raw'"),
    ({"task": "backbone"}, "task= is for files; pass the module you want to export (e.g. .backbone)"),
    ({"input_size": 31}, "input_size must be an int or (H, W) between 32 and 4096, got 31"),
    ({"input_size": 4097}, "input_size must be an int or (H, W) between 32 and 4096, got 4097"),
    ({"input_size": (64, 31)}, "input_size must be an int or (H, W) between 32 and 4096, got a tuple of 2 items"),
    ({"input_size": [64]}, "input_size must be an int or (H, W) between 32 and 4096, got a list of 1 item"),
    ({"input_size": 64.0}, "input_size must be an int or (H, W) between 32 and 4096, got 64.0"),
    ({"input_size": (64.0, 64.0)}, "input_size must be an int or (H, W) between 32 and 4096, got a tuple of 2"),
    ({"input_size": "64"}, "input_size must be an int or (H, W) between 32 and 4096, got '64'"),
    ({"input_size": True}, "input_size must be an int or (H, W) between 32 and 4096, got True"),
    ({"input_size": (64, 96)}, "a classifier's input is square (its pipeline centre-crops one), got a tuple of 2"),
    ({"min_agreement": 1.5}, "min_agreement"),
])
def test_a_classifiers_bad_export_arguments_are_one_line_refusals(classifier, tmp_path, kwargs, message):
    assert message in _refusal(tmp_path, classifier, **kwargs)


def test_a_detector_takes_its_test_size_and_only_a_module_or_a_converted_file(tmp_path):
    detector = fixture_model(DETECTORS[2])
    assert _refusal(tmp_path, detector, input_size=320) == ("input_size= is for classifiers and backbones; a "
                                                            "detector's input is its test size")
    assert _refusal(tmp_path, nn.Linear(2, 2)) == ("cannot export a Linear: pass a razorzoo detector, classifier or "
                                                   "backbone")
    for source in (tmp_path / "weights.pth", tmp_path / "absent.safetensors"):
        if source.suffix == ".pth":
            source.write_bytes(b"not read")
        with pytest.raises(RazorzooError, match=r"is not a converted \.safetensors file; (convert a \.pth first with "
                                                r"`razorzoo convert|export a model, a converted file)"):
            razorzoo.export(source, tmp_path / "out" / "model.onnx")
    assert not (tmp_path / "out").exists()


def test_int8_takes_a_detector_or_classifier_not_a_backbone(tmp_path):
    pytest.importorskip("nncf", reason="needs the int8 extra: pip install -e '.[int8]'")
    from razorzoo.deploy.runtime import check_precision

    try:
        check_precision("openvino", "int8")
    except RazorzooError as exc:  # a CPU without int8 is refused first, which test_deploy_int8.py pins
        pytest.skip(str(exc))
    converted = converted_model(DETECTORS[2], tmp_path)
    for source, task in ((OneConv(), None), (converted, "backbone")):  # a backbone module, a detector's backbone
        with pytest.raises(RazorzooError) as caught:
            razorzoo.export(source, tmp_path / "model.xml", task=task, int8=True, calib=[tmp_path / "never-read.png"])
        assert str(caught.value) == ("int8 is for detectors and classifiers (their pre-processing makes the "
                                     "calibration inputs); export the detector or classifier instead of its backbone")
    assert not (tmp_path / "model.xml").exists()


@pytest.mark.parametrize("size", [32, (32, 4096), (4096, 32)])  # each end of each side
def test_the_input_size_range_is_inclusive_at_both_ends(size, tmp_path):
    net = OneConv().eval()
    result = razorzoo.export(net, tmp_path / "model.onnx", input_size=size, dynamic_batch=False)
    runtime = razorzoo.deploy.open_exported(result.path)
    expected = (size, size) if isinstance(size, int) else size
    assert result.parity.passed and runtime.input_size == expected
    x = torch.randn(1, 3, *expected, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(runtime(x)[0], net(x)[0], rtol=0, atol=1e-5)


# -- `razorzoo export`'s flags, each shown to change what it says it changes --------------------------------------
def test_the_export_commands_flags_reach_the_file(tmp_path, capsys):
    """One converted classifier whose logits are in the ten thousands (float16 keeps no decimals there, so its
    float16 export fails the gate): ``--no-check`` writes it anyway, and the file has a fixed batch of 1, float16
    weights, opset 18 and the 64 px input asked for, and the gate refuses the file it wrote."""
    from razorzoo.cli import main

    converted = converted_classifier(tmp_path, fc_scale=1e5)
    flags = ["--fp16", "--static-batch", "--opset", "18", "--input-size", "64"]
    assert main(["export", str(converted), "-o", str(tmp_path / "a.onnx"), *flags, "--no-check"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {tmp_path / 'a.onnx'} (") and "parity" not in out  # no gate ran
    graph = onnx.load(tmp_path / "a.onnx")
    assert [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 64, 64]
    assert {o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")} == {18}
    weights = [init for init in graph.graph.initializer if len(init.dims) == 4]  # the convolutions' kernels
    assert weights and all(init.data_type == onnx.TensorProto.FLOAT16 for init in weights)
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 in and out
    runtime = razorzoo.deploy.open_exported(tmp_path / "a.onnx")
    assert runtime.input_size == (64, 64) and runtime.metadata["razorzoo_fp16"] == "true"

    # the file the gate would have refused (the same gate, run on it now: no second export needed)
    assert not razorzoo.deploy.check_parity(razorzoo.load_classifier(converted), tmp_path / "a.onnx").passed
    # --variant reaches the export: a classifier is refused it before anything is exported
    assert main(["export", str(converted), "-o", str(tmp_path / "c.onnx"), "--variant", "nms"]) == 2
    assert "the 'nms' variant is for detectors" in capsys.readouterr().err
