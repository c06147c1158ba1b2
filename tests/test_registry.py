"""Registry: names, aliases, wildcards, tasks, close matches, custom cards from RAZORZOO_CARDS, clear card errors."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import razorzoo
from custom_cards import card_text
from razorzoo.arch.spec import CARD_TASKS, TASKS
from razorzoo.errors import CardError, RazorzooError, UnknownModelError
from razorzoo.zoo.registry import CARDS_DIR, FileRef, all_cards, get_card, list_models, pareto_front, parse_card

ENTRIES = {
    "spos_0.33M", "attentive_a0", "attentive_a1", "attentive_a2", "attentive_a3", "attentive_a4", "attentive_a5",
    "attentive_a6", "ofa_lat22", "ofa_lat31", "attentive_supernet", "ofa_supernet", "yolov5s-spos_0.33M",
    "yolov6s-attentive_a6", "rtmdet_tiny-ofa_lat31",
}


def _card_text(name: str, task: str = "classification", **extra: str) -> str:
    return card_text(name, task=task, aliases=f"[my-alias-{name}]", weights_sha256="ab" * 32, **extra)


@pytest.fixture
def custom_cards(tmp_path, monkeypatch):
    """A RAZORZOO_CARDS directory with one valid card whose subnet is a copy of the shipped A6 YAML."""
    shutil.copy(CARDS_DIR / "subnets" / "ATTENTIVE_SUBNET_A6.yaml", tmp_path / "my_a6.yaml")
    (tmp_path / "my_a6.md").write_text(_card_text("my_a6"))
    monkeypatch.setenv("RAZORZOO_CARDS", str(tmp_path))
    return tmp_path


def test_builtin_entries():
    assert set(list_models()) == ENTRIES
    assert [card.name for card in all_cards()] == list_models()


def test_public_api_is_the_registry():
    assert razorzoo.list_models is list_models and razorzoo.get_card is get_card


def test_wildcards_are_case_insensitive_and_sorted_naturally():
    assert list_models("attentive_a*") == [f"attentive_a{i}" for i in range(7)]
    assert list_models("OFA_LAT3?") == ["ofa_lat31"]
    assert list_models("*LAT3?") == ["ofa_lat31", "rtmdet_tiny-ofa_lat31"]
    assert list_models("*a6*") == ["attentive_a6", "yolov6s-attentive_a6"]
    assert list_models("nothing*") == []


def test_every_model_card_task_is_a_buildable_task():
    """The loader passes a card's task straight to ArchSpec: only ``supernet`` cards (sliced, never built) differ."""
    assert set(CARD_TASKS) - {"supernet"} <= set(TASKS)
    assert {card.task for card in all_cards()} == set(CARD_TASKS)


def test_task_filter():
    assert list_models(task="detection") == ["rtmdet_tiny-ofa_lat31", "yolov5s-spos_0.33M", "yolov6s-attentive_a6"]
    assert list_models("*", task="supernet") == ["attentive_supernet", "ofa_supernet"]
    assert list_models("ofa*", task="classification") == ["ofa_lat22", "ofa_lat31"]
    with pytest.raises(CardError, match="unknown task 'segmentation'"):
        list_models(task="segmentation")


def test_aliases_resolve_to_the_canonical_name():
    assert list_models("yolov6_l_attentivenas_a6_d12_syncbn_fast_8xb32-300e_coco") == ["yolov6s-attentive_a6"]
    assert list_models("AttentiveNAS-A*") == [f"attentive_a{i}" for i in range(7)]
    assert get_card("AttentiveNAS-A6").name == "attentive_a6"
    assert get_card("rtmdet_tiny_ofa_lat31_syncbn_16xb16-300e_coco").name == "rtmdet_tiny-ofa_lat31"
    assert get_card("SPOS_0.33m").name == "spos_0.33M"


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownModelError) as info:
        get_card("atentive_a6")
    message = str(info.value)
    assert "unknown model 'atentive_a6'" in message and "'attentive_a6'" in message
    assert isinstance(info.value, RazorzooError) and isinstance(info.value, KeyError)
    with pytest.raises(UnknownModelError, match="did you mean 'yolov5s-spos_0.33M'"):
        get_card("yolov5-spos")


def test_card_fields():
    card = get_card("yolov6s-attentive_a6")
    assert (card.task, card.family, card.recipe) == ("detection", "attentive", "yolov6_l_d12")
    assert card.aliases == ("yolov6_l_attentivenas_a6_d12_syncbn_fast_8xb32-300e_coco",)
    assert card.subnet_path == CARDS_DIR / "subnets" / "ATTENTIVE_SUBNET_A6.yaml"
    assert card.weights == FileRef(
        "https://download.openmmlab.com/mmrazor/v1/yolo_nas_backbone/"
        "yolov6_l_attentivenas_a6_d12_syncbn_fast_8xb32-300e_coco_20230211_222409-dcc72668.pth",
        "dcc72668", layout="mmyolo_detector")
    assert card.front_matter["library_name"] == "razorzoo"
    assert card.body.startswith("# yolov6s-attentive_a6")
    assert card.metrics == {"box_ap": 45.3}
    assert card.summary() == {"name": "yolov6s-attentive_a6", "task": "detection", "family": "attentive",
                              "params": 18.375, "flops": 8.487, "input": 640, "top1": None, "top5": None,
                              "box_ap": 45.3}


def test_sliced_subnets_name_their_supernet():
    supernet = get_card("attentive_supernet")
    assert supernet.subnet is None and supernet.subnet_path is None
    for i in range(1, 6):
        weights = get_card(f"attentive_a{i}").weights
        assert weights.extract_from == "attentive_supernet" and weights.url == supernet.weights.url


def test_custom_cards_extend_the_registry(custom_cards):
    assert "my_a6" in list_models()
    assert ENTRIES < set(list_models())
    card = get_card("my-alias-my_a6")
    assert card.name == "my_a6" and card.subnet_path == custom_cards / "my_a6.yaml"


def test_custom_cards_override_by_name(custom_cards):
    shutil.copy(custom_cards / "my_a6.yaml", custom_cards / "attentive_a6.yaml")
    (custom_cards / "attentive_a6.md").write_text(_card_text("attentive_a6"))
    card = get_card("attentive_a6")
    assert card.path == custom_cards / "attentive_a6.md"
    assert card.weights.url == "https://example.org/attentive_a6.pth"


def test_edited_cards_are_reread(custom_cards):
    assert get_card("my_a6").metrics == {}
    (custom_cards / "my_a6.md").write_text(_card_text("my_a6", metrics="{top1: 79.5}"))
    import os

    os.utime(custom_cards / "my_a6.md", ns=(1, 1))  # a different mtime even on coarse file systems
    assert get_card("my_a6").metrics == {"top1": 79.5}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("  task: classification\n", "  task: painting\n"),
         r"razorzoo.task: 'painting' is not one of classification, detection, supernet"),
        (lambda t: t.replace("  name: my_a6\n", ""), r"razorzoo.name: required key is missing"),
        (lambda t: t.replace("https://example.org/my_a6.pth", "http://example.org/x.pth"),
         r"razorzoo.weights.url: 'http://example.org/x.pth' is not an https URL"),
        (lambda t: t.replace("ab" * 32, "ABCD"), r"razorzoo.weights.sha256: 'ABCD' is neither 64 nor 8"),
        (lambda t: t.replace("file: my_a6.yaml", "file: missing.yaml"),
         r"razorzoo.subnet.file: 'missing.yaml' does not exist next to the card"),
        (lambda t: t.replace("  task: classification\n", "  task: detection\n"),
         r"razorzoo.recipe: detection cards need a detector recipe"),
        (lambda t: t.replace("---\n\n# Custom", "  num_params: 1.5\n---\n\n# Custom"),
         r"razorzoo.num_params: 1.5 is not a positive integer"),
        (lambda t: t.replace("---\n\n# Custom", "  flops: {value: 1, unit: GFLOP, input: [1, 3, 224, 224]}\n"
                                               "---\n\n# Custom"),
         r"razorzoo.flops.unit: 'GFLOP' is not one of MAC, KMAC, MMAC, GMAC"),
        (lambda t: t.replace("---\n\n# Custom", "  metrics: {mAP: 40}\n---\n\n# Custom"),
         r"razorzoo.metrics: unknown metric 'mAP'"),
        (lambda t: t.replace("aliases: [my-alias-my_a6]", "aliases: [AttentiveNAS-A6]"),
         r"'AttentiveNAS-A6' is already the name or an alias of 'attentive_a6'"),
        (lambda t: t.replace("razorzoo:\n  name", "razorzoo:\n  name: [\n  nom"),
         r"the front matter is not valid YAML"),
        (lambda t: t.replace("---\n", "", 1), r"a card starts with YAML front matter"),
    ],
)
def test_invalid_cards_fail_with_file_key_and_problem(custom_cards, edit, message):
    card = custom_cards / "my_a6.md"
    card.write_text(edit(card.read_text()))
    with pytest.raises(CardError, match=message) as info:
        list_models()
    assert str(card) in str(info.value)


def test_missing_cards_dir_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("RAZORZOO_CARDS", str(tmp_path / "nope"))
    with pytest.raises(CardError, match="RAZORZOO_CARDS=.*nope.* is not a directory"):
        list_models()


def test_card_text_with_source():
    text = (CARDS_DIR / "ofa_lat31.md").read_text()
    card = parse_card(text, source="hf-hub:me/ofa")
    assert card.name == "ofa_lat31" and card.path is None and card.subnet_path is None
    with pytest.raises(CardError, match=r"^hf-hub:me/ofa: razorzoo.task"):
        parse_card(text.replace("task: classification", "task: nope"), source="hf-hub:me/ofa")


def test_pareto_front():
    rows = [{"name": "a", "x": 1.0, "y": 70.0}, {"name": "b", "x": 2.0, "y": 75.0}, {"name": "c", "x": 3.0, "y": 74.0},
            {"name": "d", "x": 2.0, "y": 72.0}, {"name": "e", "x": None, "y": 99.0}, {"name": "f", "x": 4.0, "y": 80.0}]
    assert [r["name"] for r in pareto_front(rows, "x", "y")] == ["a", "b", "f"]


def test_import_does_not_load_torch_or_hub():
    code = ("import sys, razorzoo; razorzoo.list_models(); razorzoo.get_card('attentive_a6'); "
            "bad = [m for m in ('torch', 'numpy', 'huggingface_hub') if m in sys.modules]; print(bad); "
            "sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_front_matter_dates_stay_text():
    # card metadata is shown and re-serialized as written; a datetime.date would not survive JSON or the Hub
    text = (CARDS_DIR / "ofa_lat31.md").read_text().replace("library_name:", "last_checked: 2023-02-11\nlibrary_name:", 1)
    assert parse_card(text, source="t").front_matter["last_checked"] == "2023-02-11"
