"""Every card against the schema and against the code (like torchvision's test_schema_meta_validation).

Cards are data that users and the Hub read; this test keeps them from drifting away from what razorzoo builds:
parameter counts and FLOPs must equal what ``razorzoo.build_*`` and ``razorzoo.count_flops`` compute.
"""
from __future__ import annotations

import ast
import re
from urllib.parse import urlparse

import pytest
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

import razorzoo
from razorzoo.arch.recipes import CLASSIFIER_PREPROCESS
from razorzoo.zoo.registry import FLOP_UNITS, all_cards, get_card

CARDS = all_cards()
NAMES = [card.name for card in CARDS]
BUILDABLE = [card.name for card in CARDS if card.task != "supernet"]
HEX8_OR_64 = re.compile(r"^(?:[0-9a-f]{8}|[0-9a-f]{64})$")
# Published upstream numbers the cards must carry (docs/upstream.md §8), independent of the card files.
PUBLISHED = {
    "spos_0.33M": {"top1": 73.87, "top5": 91.6},
    "attentive_a0": {"top1": 77.19},
    "attentive_a6": {"top1": 80.81},
    "ofa_lat22": {"top1": 70.3},
    "ofa_lat31": {"top1": 72.6},
    "yolov5s-spos_0.33M": {"box_ap": 38.0},
    "yolov6s-attentive_a6": {"box_ap": 45.3},
    "rtmdet_tiny-ofa_lat31": {"box_ap": 41.3},
}
# Upstream's own counts (mmengine on the real MMRazor/MMYOLO models, tests/data/*/manifest.json).
UPSTREAM_COUNTS = {
    "spos_0.33M": (3_353_592, 324_599_616, 224),
    "attentive_a6": (15_896_752, 927_074_080, 224),
    "ofa_lat31": (4_595_536, 104_518_736, 224),
    "yolov5s-spos_0.33M": (7_041_517, 7_029_836_800, 640),
    "yolov6s-attentive_a6": (18_375_008, 8_486_819_328, 640),
    "rtmdet_tiny-ofa_lat31": (3_910_656, 6_094_039_168, 960),
}


def test_entries_are_complete():
    assert len(CARDS) == 15
    assert {c.task for c in CARDS} == {"classification", "detection", "supernet"}


@pytest.mark.parametrize("card", CARDS, ids=NAMES)
def test_required_keys_and_hub_metadata(card):
    front = card.front_matter
    assert front["library_name"] == "razorzoo"
    assert front["license"] in {"apache-2.0", "cc-by-nc-4.0"}
    assert front["pipeline_tag"] == ("object-detection" if card.task == "detection" else "image-classification")
    assert "razorzoo" in front["tags"] and card.family in front["tags"]
    assert front["datasets"] == (["coco"] if card.task == "detection" else ["imagenet-1k"])
    meta = card.meta
    for key in ("name", "task", "family", "aliases", "algorithm", "search_space", "subnet", "weights",
                "provenance"):
        assert key in meta, key
    assert meta["provenance"]["paper"].startswith("https://arxiv.org/abs/")
    assert meta["provenance"]["license_note"]
    if card.task != "supernet":
        for key in ("input_size", "preprocessing", "num_params", "flops", "published"):
            assert meta[key] is not None, key
        if card.task == "classification":  # executable: the search space's upstream test pipeline
            assert card.preprocessing == CLASSIFIER_PREPROCESS[card.family]
        else:
            assert set(meta["preprocessing"]) >= {"resize", "color", "mean", "std"}
    if card.task == "detection":
        assert front["base_model"] in NAMES and get_card(front["base_model"]).task == "classification"
    for section in ("## How to load" if card.task != "supernet" else "## How to use it", "## Limitations",
                    "## Citation", "```bibtex"):
        assert section in card.body, section


@pytest.mark.parametrize("card", CARDS, ids=NAMES)
def test_urls_and_hashes(card):
    for ref in (card.subnet, card.weights):
        if ref is None:
            continue
        url = urlparse(ref.url)
        assert (url.scheme, url.netloc) == ("https", "download.openmmlab.com"), ref.url
        assert url.path.startswith("/mmrazor/v1/") and " " not in ref.url
        assert ref.sha256 is None or HEX8_OR_64.match(ref.sha256)
        if ref.sha256 is not None and len(ref.sha256) == 8:
            # the 8-hex prefix is the last '-xxxxxxxx' before the extension (docs/upstream.md §4), never guessed for renamed files
            assert re.search(rf"-{ref.sha256}\.(pth|yaml)$", ref.url), ref.url
        if re.search(r"_v\d+\.(pth|yaml)$", ref.url):
            assert ref.sha256 is None, f"{ref.url} is a renamed re-export; its name does not hash it (docs/upstream.md §7.17)"
    assert card.weights.layout in {"mmrazor_subnet", "mmrazor_supernet", "mmyolo_detector"}
    if card.weights.extract_from is not None:
        supernet = get_card(card.weights.extract_from)
        assert supernet.task == "supernet" and supernet.family == card.family
        assert supernet.weights.url == card.weights.url


def test_aliases_are_unique():
    keys = [key.lower() for card in CARDS for key in (card.name, *card.aliases)]
    assert len(keys) == len(set(keys))


def test_detector_aliases_are_upstream_config_names():
    assert get_card("yolov5_s_spos_shufflenetv2_syncbn_8xb16-300e_coco").name == "yolov5s-spos_0.33M"
    assert get_card("yolov6_l_attentivenas_a6_d12_syncbn_fast_8xb32-300e_coco").name == "yolov6s-attentive_a6"
    assert get_card("rtmdet_tiny_ofa_lat31_syncbn_16xb16-300e_coco").name == "rtmdet_tiny-ofa_lat31"
    assert {get_card(n).recipe for n in razorzoo.list_models(task="detection")} == {
        "yolov5_s", "yolov6_l_d12", "rtmdet_tiny"}


@pytest.mark.parametrize("name", BUILDABLE)
def test_subnet_files_parse(name):
    card = get_card(name)
    subnet = razorzoo.load_subnet(card.subnet_path)
    assert subnet.family == card.family
    resolution = card.meta.get("resolution")
    if resolution is not None and getattr(subnet, "input_shape", None):
        assert tuple(subnet.input_shape) == (resolution, resolution)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_metrics(name):
    card = get_card(name)
    assert card.metrics == PUBLISHED[name]


@pytest.mark.parametrize("card", CARDS, ids=NAMES)
def test_model_index_is_valid_for_the_hub(card):
    text = card.path.read_text(encoding="utf-8")
    hub_card = ModelCard(text, ignore_metadata_errors=False)
    data = hub_card.data.to_dict()
    if not card.metrics:
        assert "model-index" not in data
        return
    model_name, results = model_index_to_eval_results(data["model-index"])
    assert model_name == card.name
    reported = {(r.metric_name, r.metric_value) for r in results}
    labels = {"top1": "Top-1 Accuracy", "top5": "Top-5 Accuracy", "box_ap": "box AP"}
    assert reported == {(labels[k], v) for k, v in card.metrics.items()}
    for result in results:
        assert result.source_url.startswith("https://github.com/open-mmlab/")
        assert result.dataset_type == ("coco" if card.task == "detection" else "imagenet-1k")


@pytest.mark.parametrize("card", CARDS, ids=NAMES)
def test_flops_units(card):
    flops = card.meta.get("flops")
    if flops is None:
        assert card.task == "supernet"
        return
    assert flops["unit"] in FLOP_UNITS
    size = card.meta["input_size"]
    assert flops["input"] == [1, 3, size, size]


@pytest.mark.parametrize("name", sorted(UPSTREAM_COUNTS))
def test_counts_match_upstream(name):
    num_params, flops, size = UPSTREAM_COUNTS[name]
    card = get_card(name)
    assert (card.num_params, card.flops, card.flops_input) == (num_params, flops, (1, 3, size, size))


@pytest.mark.parametrize("name", BUILDABLE)
def test_counts_match_the_code(name):
    card = get_card(name)
    model = razorzoo.build_detector(name) if card.task == "detection" else razorzoo.build_classifier(name)
    report = razorzoo.count_flops(model, card.flops_input)
    assert report.params == sum(p.numel() for p in model.parameters())
    assert (report.params, report.flops) == (card.num_params, card.flops)


def test_front_matter_round_trips_through_yaml():
    for card in CARDS:
        text = card.path.read_text(encoding="utf-8")
        assert yaml.safe_load(text.split("---\n")[1]) == card.front_matter


def _snippets(card) -> list[ast.Module]:
    return [ast.parse(code) for code in re.findall(r"```python\n(.*?)```", card.body, re.S)]


@pytest.mark.parametrize("card", CARDS, ids=NAMES)
def test_snippets_use_the_api_as_it_is(card):
    """A card's "How to load" code names only public razorzoo functions, loads its own model with the loader of its
    task, and never indexes the result of ``predict`` on one image (one image gives one result, not a list)."""
    snippets = _snippets(card)
    assert snippets, f"{card.name}: no python snippet"
    loader = {"classification": "load_classifier", "detection": "load_detector"}.get(card.task)
    loads = []
    for node in (n for tree in snippets for n in ast.walk(tree)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "razorzoo":
            assert node.attr in razorzoo.__all__, f"{card.name}: razorzoo.{node.attr} is not public API"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr.startswith("load_"):
            loads.append((node.func.attr, node.args[0].value if node.args and isinstance(node.args[0], ast.Constant)
                          else None))
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Call) \
                and isinstance(node.value.func, ast.Attribute) and node.value.func.attr == "predict":
            arg = node.value.args[0] if node.value.args else None
            assert isinstance(arg, (ast.List, ast.Tuple)), f"{card.name}: predict(one image)[...] indexes one result"
    if loader is not None:
        assert (loader, card.name) in loads, f"{card.name}: the snippet does not call razorzoo.{loader}({card.name!r})"
