"""The metadata an exported file carries, read back field by field (``razorzoo.deploy.metadata.read_metadata``):
what a valid file returns, each field's accepted range at both ends, and the one-line refusal that names the field.
Tiny real ONNX graphs (one Relu) with hand-written metadata; no export, so each rule is pinned in milliseconds.
Whole-file refusals (hostile class names, NaN sizes) are in tests/hostile/test_documents.py.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx", reason="needs the onnx extra: pip install -e '.[onnx,openvino]'")

from helpers.graphs import tagged_relu  # noqa: E402
from razorzoo.deploy.metadata import FORMAT, MAX_SIDE, is_openvino_ir, read_metadata  # noqa: E402
from razorzoo.errors import RazorzooError  # noqa: E402

CLASSIFIER = {"razorzoo_format": FORMAT, "razorzoo_task": "classification", "razorzoo_variant": "raw",
              "razorzoo_outputs": '"logits"', "razorzoo_input_size": "[224, 224]",
              "razorzoo_class_names": '["cat", "dog"]', "razorzoo_preprocessing": '{"resize": 256, "crop": 224}'}
DETECTOR = {"razorzoo_format": FORMAT, "razorzoo_task": "detection", "razorzoo_variant": "nms",
            "razorzoo_outputs": '["num_dets", "boxes", "scores", "labels"]', "razorzoo_input_size": "[640, 640]",
            "razorzoo_recipe": '{"class_names": ["person"]}', "razorzoo_size_divisor": "32", "razorzoo_fp16": "false"}


def refusal(path: Path, **changes: str | None) -> str:
    """The one-line message read_metadata refuses ``CLASSIFIER`` (``DETECTOR`` with ``task=detection``) with
    ``changes`` (None: the key removed)."""
    base = dict(DETECTOR if changes.get("razorzoo_task") == "detection" else CLASSIFIER)
    base.update(changes)
    metadata = {key: value for key, value in base.items() if value is not None}
    with pytest.raises(RazorzooError) as info:
        read_metadata(tagged_relu(path, metadata))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: razorzoo metadata: "), message
    return message


def test_a_valid_file_returns_every_field_as_written(tmp_path):
    for metadata in (CLASSIFIER, DETECTOR, {**DETECTOR, "razorzoo_variant": "raw", "razorzoo_fp16": "true",
                                              "razorzoo_precision": "int8", "razorzoo_calibration": '{"n": 3}',
                                              "razorzoo_int8_cost": '{"matched": 1}'}):
        assert read_metadata(tagged_relu(tmp_path / "m.onnx", metadata)) == metadata
    # the same from the file's bytes, and for a backbone (no class names)
    backbone = {**CLASSIFIER, "razorzoo_task": "backbone", "razorzoo_outputs": '["stage1", "stage2"]'}
    del backbone["razorzoo_class_names"], backbone["razorzoo_preprocessing"]
    assert read_metadata(tagged_relu(tmp_path / "b.onnx", backbone).read_bytes()) == backbone


def test_metadata_is_read_without_the_weights(tmp_path):
    """An export's weights may be external (large models): reading its metadata never loads them, so a missing
    or huge weight file does not matter here."""
    path = tagged_relu(tmp_path / "m.onnx", CLASSIFIER, external=True)
    with pytest.raises(Exception):
        onnx.load(str(path))  # w.bin does not exist
    assert read_metadata(path)["razorzoo_task"] == "classification"


@pytest.mark.parametrize("field, good, bad, expected", [
    ("razorzoo_input_size", ["[32, 32]", f"[{MAX_SIDE}, {MAX_SIDE}]", "[32, 4096]"],
     ["[31, 32]", f"[32, {MAX_SIDE + 1}]", "[32]", "[32, 32, 32]"], "razorzoo_input_size"),
    ("razorzoo_variant", ["raw", "decoded", "nms"], ["RAW", "int8", '"raw"'], "razorzoo_variant"),  # plain text
    ("razorzoo_fp16", ["true", "false"], ['"yes"', "1"], "razorzoo_fp16"),
    ("razorzoo_size_divisor", ["1", f"{MAX_SIDE}", "null"], ["0", f"{MAX_SIDE + 1}", "32.5", '"32"'],
     "razorzoo_size_divisor"),
    ("razorzoo_precision", ["int8"], ["int4", "INT8", '"int8"'], "razorzoo_precision"),
    ("razorzoo_calibration", ['{"n": 300}'], ["[300]", '"300"'], "razorzoo_calibration"),
    ("razorzoo_int8_cost", ['{"matched": 3}'], ["[3]", "3"], "razorzoo_int8_cost"),
    ("razorzoo_class_names", ['["c"]', json.dumps(["x" * 256])], ["[]", json.dumps(["x" * 257]), "[1]"],
     "razorzoo_class_names"),
    ("razorzoo_preprocessing", ['{"resize": 64}'], ['["resize"]', '"resize"'], "razorzoo_preprocessing"),
    ("razorzoo_outputs", ['"o"', json.dumps("o" * 128), json.dumps(["o"] * 64), '[[["o"]]]'],
     ['""', json.dumps("o" * 129), json.dumps(["o"] * 65), '[[[["o"]]]]', "[]", '["o\\u001b"]', "3"],
     "razorzoo_outputs"),
])
def test_each_field_is_held_to_its_range_at_both_ends(field, good, bad, expected, tmp_path):
    for value in good:
        assert read_metadata(tagged_relu(tmp_path / "m.onnx", {**CLASSIFIER, field: value}))[field] == value
    for value in bad:
        assert expected in refusal(tmp_path / "m.onnx", **{field: value}), value


def test_a_detectors_class_names_are_checked_in_its_recipe(tmp_path):
    for names in (["person"], ["x" * 256]):
        recipe = json.dumps({"class_names": names})
        assert read_metadata(tagged_relu(tmp_path / "m.onnx", {**DETECTOR, "razorzoo_recipe": recipe}))
    for names in ([], ["x" * 257], [3]):
        message = refusal(tmp_path / "m.onnx", razorzoo_task="detection",
                          razorzoo_recipe=json.dumps({"class_names": names}))
        assert "razorzoo_recipe" in message and "class_names" in message, message
    assert "razorzoo_recipe" in refusal(tmp_path / "m.onnx", razorzoo_task="detection", razorzoo_recipe='["x"]')
    assert "razorzoo_recipe" in refusal(tmp_path / "m.onnx", razorzoo_task="detection", razorzoo_recipe=None)


@pytest.mark.parametrize("field", ["razorzoo_task", "razorzoo_variant", "razorzoo_input_size", "razorzoo_outputs",
                                   "razorzoo_class_names", "razorzoo_preprocessing"])
def test_a_missing_field_is_named(field, tmp_path):
    assert field in refusal(tmp_path / "m.onnx", **{field: None})


def test_a_value_that_is_not_json_is_named(tmp_path):
    message = refusal(tmp_path / "m.onnx", razorzoo_outputs="[logits")
    assert ": razorzoo metadata: razorzoo_outputs is not JSON" in message, message


def test_input_sizes_are_two_integer_sides(tmp_path):
    assert refusal(tmp_path / "m.onnx", razorzoo_input_size="[64.0, 64]").endswith(
        ": razorzoo_input_size must be two integer sides, not a list of 2 items")


def test_a_value_longer_than_four_mebibytes_is_refused_before_it_is_decoded(tmp_path):
    limit = 4 << 20
    at_limit, over = json.dumps("o" * (limit - 2)), json.dumps("o" * (limit - 1))
    assert (len(at_limit), len(over)) == (limit, limit + 1)
    # at the limit the value is decoded, then refused by its range (an output name has at most 128 characters)
    message = refusal(tmp_path / "m.onnx", razorzoo_outputs=at_limit)
    assert ": razorzoo_outputs must be output names (" in message and "(4194302 chars)" in message, message
    assert refusal(tmp_path / "m.onnx", razorzoo_outputs=over).endswith(
        f": razorzoo_outputs has {limit + 1} characters, more than {limit}")


def test_files_razorzoo_did_not_write_or_cannot_read_are_one_line_each(tmp_path):
    foreign = tagged_relu(tmp_path / "foreign.onnx", {"producer": "someone"})
    with pytest.raises(RazorzooError) as info:
        read_metadata(foreign)
    assert str(info.value) == (f"{foreign} is an ONNX file razorzoo did not write (no {FORMAT} metadata), so its "
                               "pre-processing and outputs are unknown; export it with `razorzoo export NAME -o FILE`")
    other_format = tagged_relu(tmp_path / "v2.onnx", {**CLASSIFIER, "razorzoo_format": "razorzoo-onnx/2"})
    with pytest.raises(RazorzooError) as info:
        read_metadata(other_format.read_bytes())
    assert str(info.value).startswith(f"the ONNX bytes is an ONNX file razorzoo did not write (no {FORMAT} ")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(RazorzooError) as info:
        read_metadata(garbage)
    message = str(info.value)
    assert message == (f"{garbage} is not a readable ONNX file (\"Error parsing message with type 'onnx.ModelProto': "
                       "Wire format was corrupt\"); export the model again with `razorzoo export`"), message
    with pytest.raises(RazorzooError) as info:
        read_metadata(tmp_path / "missing.onnx")
    assert str(info.value) == f"{tmp_path / 'missing.onnx'} does not exist"
    with pytest.raises(RazorzooError) as info:
        read_metadata(b"\xff" * 64)
    assert str(info.value).startswith("the ONNX bytes is not a readable ONNX file (")


def test_an_openvino_ir_is_told_by_its_suffix_in_any_case():
    assert is_openvino_ir("model.xml") and is_openvino_ir(Path("dir") / "MODEL.XML")
    assert not is_openvino_ir("model.onnx") and not is_openvino_ir("xml") and not is_openvino_ir(b"model.xml")


def test_an_openvino_irs_metadata_is_read_from_its_rt_info(tmp_path):
    """razorzoo's int8 exports are OpenVINO IRs carrying the same metadata in ``rt_info``."""
    ov = pytest.importorskip("openvino", reason="needs the openvino extra: pip install -e '.[onnx,openvino]'")

    def ir(path: Path, metadata: dict[str, str]) -> Path:
        model = ov.convert_model(str(tagged_relu(tmp_path / "plain.onnx", {})))
        for key, value in metadata.items():
            model.set_rt_info(value, key)
        ov.save_model(model, str(path))
        return path

    path = ir(tmp_path / "m.xml", {**CLASSIFIER, "razorzoo_precision": "int8", "other_tool": "x"})
    assert read_metadata(path) == {**CLASSIFIER, "razorzoo_precision": "int8"}  # razorzoo's keys only
    with pytest.raises(RazorzooError) as info:
        read_metadata(ir(tmp_path / "foreign.xml", {"other_tool": "x"}))
    assert str(info.value).startswith(f"{tmp_path / 'foreign.xml'} is an OpenVINO IR razorzoo did not write (no ")
    with pytest.raises(RazorzooError) as info:
        read_metadata(ir(tmp_path / "bad.xml", {**CLASSIFIER, "razorzoo_variant": "int8"}))
    assert str(info.value).startswith(f"{tmp_path / 'bad.xml'}: razorzoo metadata: razorzoo_variant must be one of")
    with pytest.raises(RazorzooError) as info:
        read_metadata(tmp_path / "missing.xml")
    assert str(info.value) == f"{tmp_path / 'missing.xml'} does not exist"
    truncated = tmp_path / "truncated.xml"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(RazorzooError) as info:
        read_metadata(truncated)
    message = str(info.value)
    assert message.startswith(f"{truncated} is not a readable OpenVINO IR (") and message.endswith(
        "); export the model again with `razorzoo export`") and "\n" not in message, message


def test_without_the_onnx_package_the_refusal_names_the_extra(tmp_path, monkeypatch):
    path = tagged_relu(tmp_path / "m.onnx", CLASSIFIER)
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now fails, as when not installed
    with pytest.raises(RazorzooError) as info:
        read_metadata(path)
    assert str(info.value) == "this needs the onnx package, which is not installed: pip install 'razorzoo[onnx]'"
