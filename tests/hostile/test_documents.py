"""Outside documents, generated field by field: COCO annotation files, ImageNet list files, device profiles, search
states and ONNX metadata, each with every field replaced by values of the wrong type, out of range, huge, deep or
non-finite. Each is refused in one line that names the file and the field, in bounded time, and nothing of a foreign
file leaks into the message. Real files; the CLI where a user would meet the error.
"""
from __future__ import annotations

import copy
import json
import os
import re
import time
from pathlib import Path

import pytest

from helpers.graphs import tagged_relu
from razorzoo.cli import main
from razorzoo.errors import DatasetError, RazorzooError
from razorzoo.evaluation.coco import read_coco
from razorzoo.evaluation.imagenet import read_imagenet

DEEP = "[" * 100_000 + "]" * 100_000
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]")

# hostile replacements for a field: name -> JSON text (so NaN/Infinity and nesting bombs are spelled as sent)
WRONG = {"string": '"12"', "float": "12.5", "bool": "true", "null": "null", "list": "[1]", "object": '{"a": 1}',
         "negative": "-1", "huge": "1" + "0" * 40, "nan": "NaN", "infinity": "Infinity", "1e400": "1e400",
         "deep": DEEP, "long text": json.dumps("x" * 100_000), "escape": json.dumps("\x1b]0;pwned\x07")}

COCO = {"images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 0}]}
# field -> the wrong values that must be refused there (a value a field accepts is left out)
COCO_FIELDS = {
    ("images", 0, "id"): ["string", "float", "bool", "negative", "huge", "nan", "deep", "list"],
    ("images", 0, "width"): ["string", "float", "bool", "null", "negative", "huge", "nan", "infinity", "1e400"],
    ("images", 0, "height"): ["string", "null", "negative", "huge", "deep"],
    ("images", 0, "file_name"): ["float", "null", "list", "long text", "escape", "deep"],
    ("categories", 0, "id"): ["string", "float", "negative", "huge", "nan"],
    ("categories", 0, "name"): ["float", "null", "object", "long text", "escape"],
    ("annotations", 0, "image_id"): ["string", "negative", "huge", "nan", "float"],
    ("annotations", 0, "category_id"): ["string", "bool", "huge", "nan"],
    ("annotations", 0, "bbox"): ["string", "null", "list", "object", "nan", "deep"],
    ("annotations", 0, "area"): ["string", "null", "negative", "nan", "infinity", "1e400"],
    ("annotations", 0, "iscrowd"): ["string", "float", "negative", "huge", "bool"],
    ("images",): ["string", "null", "object", "deep", "nan"],
    ("annotations",): ["string", "object", "nan"],
}
COCO_CASES = [(path, wrong) for path, wrongs in COCO_FIELDS.items() for wrong in wrongs]


def _coco_text(path: tuple, wrong: str) -> str:
    """The base document with the field at ``path`` replaced by ``WRONG[wrong]``, spelled as JSON text."""
    data = copy.deepcopy(COCO)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = "@@WRONG@@"
    return json.dumps(data).replace('"@@WRONG@@"', WRONG[wrong])


def _field_name(path: tuple) -> str:
    name = str(path[0])
    for key in path[1:]:
        name += f"[{key}]" if isinstance(key, int) else f".{key}"
    return name


def _one_line(message: str) -> str:
    assert "\n" not in message.strip() and not CONTROL.search(message), message
    return message


@pytest.mark.parametrize("path, wrong", COCO_CASES, ids=[f"{_field_name(p)}={w}" for p, w in COCO_CASES])
def test_coco_fields_of_the_wrong_kind_are_one_line_naming_the_field(path, wrong, tmp_path):
    ann = tmp_path / "instances.json"
    ann.write_text(_coco_text(path, wrong))
    start = time.monotonic()
    with pytest.raises(DatasetError) as info:
        read_coco(ann, tmp_path)
    assert time.monotonic() - start < 5
    message = _one_line(str(info.value))
    assert str(ann) in message
    field = _field_name(path)
    assert field in message or "not JSON" in message or "NaN" in message or "Infinity" in message, message


@pytest.mark.parametrize("change, problem", [
    (lambda d: d["images"].append(dict(d["images"][0])), "an id twice"),
    (lambda d: d["annotations"][0].update(image_id=7), "annotations[0].image_id must be the id of an image"),
    (lambda d: d["annotations"][0].update(category_id=7), "annotations[0].category_id must be the id of a category"),
    (lambda d: d["annotations"][0].update(bbox=[0, 0, -1, 2]), "annotations[0].bbox must be"),
    (lambda d: d["annotations"][0].update(bbox=[0, 0, 1]), "annotations[0].bbox must be a list of 4"),
    (lambda d: d.update(images=[]), "lists no images"),
    (lambda d: d.pop("categories"), "'categories' is missing, not a list"),
])
def test_coco_documents_that_contradict_themselves_are_refused(change, problem, tmp_path):
    data = copy.deepcopy(COCO)
    change(data)
    (tmp_path / "instances.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=re.escape(problem)):
        read_coco(tmp_path / "instances.json", tmp_path)


@pytest.fixture
def secret(tmp_path):
    """A file outside the image folder whose content and type must never appear in an error."""
    path = tmp_path / "private" / "secret.png"
    path.parent.mkdir()
    path.write_text("TOP-SECRET-CONTENT")
    return path


@pytest.mark.parametrize("name", ["../private/secret.png", "ABSOLUTE", "images/../../private/secret.png",
                                  "link/secret.png", "loop/x.png"])
def test_coco_file_names_stay_inside_the_image_folder(name, tmp_path, secret, capsys):
    images = tmp_path / "images"
    images.mkdir()
    (images / "link").symlink_to(secret.parent)
    (images / "loop").symlink_to("loop")
    data = copy.deepcopy(COCO)
    data["images"][0]["file_name"] = str(secret) if name == "ABSOLUTE" else name
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    with pytest.raises(DatasetError) as info:
        read_coco(ann, images)
    message = _one_line(str(info.value))
    assert ("is outside" in message and "--allow-outside" in message) or "not a usable path" in message, message
    assert "TOP-SECRET" not in message and "pixels" not in message and "decode" not in message
    assert main(["val", "rtmdet_tiny-ofa_lat31", "--coco-ann", str(ann), "--images", str(images)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("razorzoo: error: ") and err.count("\n") == 1 and "TOP-SECRET" not in err
    if name in ("../private/secret.png", "ABSOLUTE", "link/secret.png"):  # allowed, the file is then found
        _, kept, _ = read_coco(ann, images, allow_outside=True)
        assert [image.path.resolve() for image in kept] == [secret.resolve()]


LIST_LINES = {"parent": "../private/secret.png 1", "absolute": "ABSOLUTE 1", "label 1000": "a.png 1000",
              "negative label": "a.png -1", "no label": "a.png", "label text": "a.png cat",
              "long line": "a" * 5000 + ".png 1", "escape": "\x1b]0;x\x07.png 1"}


@pytest.mark.parametrize("case", LIST_LINES)
def test_imagenet_list_lines_are_bounded_and_confined(case, tmp_path, secret):
    root = tmp_path / "val"
    root.mkdir()
    (root / "a.png").write_bytes(b"x")
    listing = tmp_path / "val.txt"
    listing.write_text("a.png 3\n" + LIST_LINES[case].replace("ABSOLUTE", str(secret)) + "\n")
    with pytest.raises(DatasetError) as info:
        read_imagenet(root, listing)
    message = _one_line(str(info.value))
    assert ("line 2" in message or case == "escape") and "TOP-SECRET" not in message, message


def test_imagenet_list_file_that_is_not_a_small_text_file(tmp_path):
    root = tmp_path / "val"
    root.mkdir()
    for name, make in {"fifo": lambda p: os.mkfifo(p), "binary": lambda p: p.write_bytes(b"\xff\xfe\x00"),
                       "huge": lambda p: os.truncate(p.open("wb").name, 300 << 20)}.items():
        listing = tmp_path / f"{name}.txt"
        make(listing)
        start = time.monotonic()
        with pytest.raises(DatasetError) as info:
            read_imagenet(root, listing)
        assert time.monotonic() - start < 10 and _one_line(str(info.value)).startswith("the image list '")


PROFILE = {"format": "razorzoo-device-profile", "version": 1, "backend": "torch", "threads": 1, "batch_size": 1,
           "repeats": 20, "unit": "ms", "machine": {"machine": "x86_64"}, "entries": {"block:a": 0.5}}
PROFILE_FIELDS = {"format": ["string", "null", "deep"], "version": ["string", "huge", "nan"],
                  "backend": ["float", "escape", "string"], "threads": ["huge", "negative", "float", "nan", "string"],
                  "repeats": ["huge", "negative", "float", "nan", "infinity", "1e400", "string"],
                  "entries": ["string", "list", "deep", "nan"], "machine": ["string", "list", "long text"]}


@pytest.mark.parametrize("field, wrong", [(f, w) for f, ws in PROFILE_FIELDS.items() for w in ws])
def test_device_profiles_are_checked_field_by_field(field, wrong, tmp_path):
    from razorzoo.search.latency import DeviceProfile

    path = tmp_path / "profile.json"
    data = dict(PROFILE, **{field: "@@WRONG@@"})
    path.write_text(json.dumps(data).replace('"@@WRONG@@"', WRONG[wrong]))
    with pytest.raises(RazorzooError) as info:
        DeviceProfile.load(path)
    message = _one_line(str(info.value))
    assert "device profile" in message and (field in message or "JSON" in message), message


@pytest.mark.parametrize("entry", ["NaN", "-1", "1e12", '"fast"', DEEP])
def test_device_profile_entries_must_be_plausible_latencies(entry, tmp_path):
    from razorzoo.search.latency import DeviceProfile

    path = tmp_path / "profile.json"
    path.write_text(json.dumps(PROFILE).replace("0.5", entry))
    with pytest.raises(RazorzooError, match="device profile"):
        DeviceProfile.load(path)


def _saved_search(tmp_path):
    from razorzoo.search.evolution import ChoiceSpace, EvolutionSearch, SearchSettings

    space = ChoiceSpace.for_family("ofa")
    settings = SearchSettings.for_population(6, 3, seed=1)

    def new():
        return EvolutionSearch(space, settings, score=lambda g: (float(sum(g) % 7), 0.0), feasible=lambda g: True,
                               state_path=tmp_path / "state.json", key={"constraint": "flops<=1M"})

    search = new()
    search.run(stop_after=1)
    return new, json.loads((tmp_path / "state.json").read_text())


STATE_CHANGES = {
    "generation -1e9": lambda s: s.update(generation=-10**9), "generation 1e9": lambda s: s.update(generation=10**9),
    "generation float": lambda s: s.update(generation=1.0), "generation text": lambda s: s.update(generation="1"),
    "candidates not a list": lambda s: s.update(candidates={"a": 1}),
    "too many candidates": lambda s: s.update(candidates=s["candidates"] * 100),
    "candidate outside the space": lambda s: s["candidates"][0].update({"first_channels": 10**6}),
    "candidate a number": lambda s: s["candidates"].__setitem__(0, 5),
    "score not finite": lambda s: s["scores"][0].update(score=[1e400, 0]),
    "score wrong length": lambda s: s["scores"][0].update(score=[1]),
    "rng garbage": lambda s: s.update(rng=[3, [1, 2], None]), "rng words huge": lambda s: s["rng"][1].__setitem__(
        0, 1 << 40), "rng missing": lambda s: s.pop("rng"),
    "top_k unscored": lambda s: s.update(scores=[]),
    "other settings": lambda s: s["settings"].update(population=10**9),
}


@pytest.mark.parametrize("change", STATE_CHANGES)
def test_resumed_search_states_are_checked_against_the_search(change, tmp_path):
    new, state = _saved_search(tmp_path)
    STATE_CHANGES[change](state)
    (tmp_path / "state.json").write_text(json.dumps(state))
    start = time.monotonic()
    with pytest.raises(RazorzooError) as info:
        new().resume(tmp_path / "state.json")
    assert time.monotonic() - start < 2
    assert "search state" in _one_line(str(info.value))


def test_an_untouched_search_state_resumes(tmp_path):
    new, state = _saved_search(tmp_path)
    search = new()
    search.resume(tmp_path / "state.json")
    assert search.generation == state["generation"] == 1 and len(search.scores) == len(state["scores"]) == 6


def _onnx_with_metadata(path: Path, **changes: str) -> Path:
    """A tiny real ONNX graph tagged as a razorzoo classifier export, with metadata ``changes``."""
    metadata = {"razorzoo_format": "razorzoo-onnx/1", "razorzoo_task": "classification", "razorzoo_variant": "raw",
                "razorzoo_outputs": '"logits"', "razorzoo_input_size": "[32, 32]",
                "razorzoo_class_names": json.dumps(["cat", "dog"]),
                "razorzoo_preprocessing": json.dumps({"resize": 32, "crop": 32}), **changes}
    return tagged_relu(path, metadata)


ONNX_METADATA = {
    "class name with an escape": {"razorzoo_class_names": json.dumps(["cat", "\x1b]0;pwned\x07dog"])},
    "class name with bidi": {"razorzoo_class_names": json.dumps(["\u202ecat"])},
    "class names not a list": {"razorzoo_class_names": '"cat"'},
    "class names deep": {"razorzoo_class_names": DEEP},
    "input size NaN": {"razorzoo_input_size": "[NaN, 32]"}, "input size huge": {"razorzoo_input_size": "[1e9, 32]"},
    "input size float": {"razorzoo_input_size": "[32.5, 32]"},
    "unknown task": {"razorzoo_task": "mining"}, "unknown variant": {"razorzoo_variant": "\x1b[2J"},
    "outputs deep": {"razorzoo_outputs": "[[[[[\"a\"]]]]]"}, "outputs empty": {"razorzoo_outputs": "[]"},
    "detector class names with escapes": {"razorzoo_task": "detection",
                                          "razorzoo_recipe": json.dumps({"class_names": ["\x1b[31mred"]})},
}


@pytest.mark.parametrize("case", ONNX_METADATA)
def test_onnx_metadata_is_checked_before_anything_runs(case, tmp_path, capsys):
    from razorzoo.deploy.metadata import read_metadata

    path = _onnx_with_metadata(tmp_path / "model.onnx", **ONNX_METADATA[case])
    with pytest.raises(RazorzooError) as info:
        read_metadata(path)
    _one_line(str(info.value))
    assert main(["predict", str(path), str(tmp_path / "x.png")]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("razorzoo: error: ") and captured.err.count("\n") == 1
    assert not CONTROL.search(captured.out + captured.err)


@pytest.mark.parametrize("field, value, problem", [
    ("\n  name: attentive_a0\n", '\n  name: "attentive_a0\\n"\n', "razorzoo.name"),
    ("\n  name: attentive_a0\n", '\n  name: "attentive_a0\\e[2J"\n', "razorzoo.name"),
    ("\n  name: attentive_a0\n", "\n  name: " + "a" * 300 + "\n", "razorzoo.name"),
    ("sha256: 282a1f70", 'sha256: "282a1f70\\n"', "razorzoo.weights.sha256"),
    ("layout: mmrazor_subnet", "layout: mmrazor_subnet\n    size: -5", "razorzoo.weights.size"),
    ("layout: mmrazor_subnet", "layout: mmrazor_subnet\n    size: 1.5e3", "razorzoo.weights.size"),
    ("layout: mmrazor_subnet", "layout: mmrazor_subnet\n    size: .nan", "razorzoo.weights.size"),
    ("layout: mmrazor_subnet", "layout: mmrazor_subnet\n    size: '12'", "razorzoo.weights.size"),
])
def test_card_names_hashes_and_sizes_match_whole(field, value, problem):
    """``re.match`` with ``$`` let a trailing newline through (regression); ``size`` is a positive integer."""
    from razorzoo.errors import CardError
    from razorzoo.zoo.registry import parse_card

    text = (Path(__file__).parents[2] / "cards" / "attentive_a0.md").read_text()
    assert parse_card(text.replace("layout: mmrazor_subnet", "layout: mmrazor_subnet\n    size: 1000"),
                      source="card").weights.size == 1000
    changed = text.replace(field, value, 1)
    assert changed != text
    with pytest.raises(CardError, match=re.escape(problem)):
        parse_card(changed, source="card")
