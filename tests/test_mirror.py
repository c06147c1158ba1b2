"""Weights without download.openmmlab.com: ``razorzoo mirror`` / ``razorzoo demo`` from an installed wheel, the demo
weights against the goldens' fixture rule, and a cache copied to another machine."""
import os
import shutil
import subprocess
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch
from safetensors.torch import load_file

from fixture_rule import effective_state_dict, rule_state_dict
from helpers import CLASSIFIERS, DETECTORS
from helpers.slicing import supernet_state_dict
from razorzoo.builder import resolve_spec
from razorzoo.cli import main as cli
from razorzoo.storage.fetch import sha256_of_file
from razorzoo.weights.demo import demo_state_dict, demo_supernet_state_dict
from razorzoo.zoo.registry import get_card, parse_card

SERVED = ("ofa_lat31", "yolov5s-spos_0.33M")  # a classifier and a detector with tests/data manifests


def _task(name: str) -> str:
    return get_card(name).task


@pytest.mark.parametrize("name", CLASSIFIERS + DETECTORS)
def test_demo_weights_are_the_fixture_rule_of_the_upstream_manifest(name):
    """The shipped demo weights are exactly the weights the goldens were recorded with: the upstream manifest's keys,
    in its order, each filled by the rule (so the test suite and `razorzoo mirror` cannot drift apart)."""
    ours = demo_state_dict(resolve_spec(name, _task(name)))
    expected = rule_state_dict(name)
    assert list(ours) == list(expected)
    assert all(torch.equal(ours[k], v) and ours[k].dtype == v.dtype for k, v in expected.items())


@pytest.mark.parametrize("family", ["attentive", "ofa"])
def test_demo_supernets_are_mmrazors_supernet_filled_by_the_rule(family):
    ours, expected = demo_supernet_state_dict(family), supernet_state_dict(family)
    assert list(ours) == list(expected)
    assert all(torch.equal(ours[k], v) and ours[k].dtype == v.dtype for k, v in expected.items())


def _serve(installed, directory: Path):
    """``razorzoo mirror DIR --serve`` from the wheel; returns (process, URL) once it says where it serves."""
    process = subprocess.Popen([str(installed.site / "bin" / "razorzoo"), "mirror", str(directory), "--serve"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=installed.cwd,
                               env=installed.env())
    lines = []
    timer = threading.Timer(120, process.kill)
    timer.start()
    try:
        for line in process.stdout:
            lines.append(line)
            if "export RAZORZOO_MIRROR=" in line:
                return process, line.split("=", 1)[1].strip(), lines
    finally:
        timer.cancel()
    raise AssertionError(f"the server did not start: {lines} {process.stderr.read()}")


def test_installed_wheel_writes_serves_and_downloads_from_a_mirror(installed, tmp_path):
    mirror = tmp_path / "mirror"
    out = installed.razorzoo("mirror", str(mirror), *SERVED)
    assert out.returncode == 0, out.stderr
    assert "wrote 4 files" in out.stdout and "for 2 models" in out.stdout  # per model: its weights and its YAML
    assert "untrained" in out.stdout and "writing demo weights for ofa_lat31" in out.stderr
    for name in SERVED:  # files at their card URL paths, card copies whose hashes are those files'
        card = get_card(name)
        copy = parse_card(mirror / "cards" / card.path.name)
        served = mirror / "www" / unquote(urlsplit(card.weights.url).path).lstrip("/")
        assert copy.weights.sha256 == sha256_of_file(served)
        assert copy.weights.layout == card.weights.layout and copy.subnet_path.read_bytes() == card.subnet_path.read_bytes()

    process, url, lines = _serve(installed, mirror)
    try:
        assert url.startswith("http://127.0.0.1:")
        assert any(f"export RAZORZOO_CARDS={(mirror / 'cards').resolve()}" in line for line in lines)
        env = dict(RAZORZOO_MIRROR=url, RAZORZOO_CARDS=str(mirror / "cards"), RAZORZOO_CACHE=str(tmp_path / "cache"))
        for name in SERVED:
            got = installed.razorzoo("download", name, **env)
            assert got.returncode == 0, got.stderr
            converted = Path(got.stdout.strip())
            assert converted.is_file() and (tmp_path / "cache") in converted.parents
            weights = load_file(converted)  # the served weights, converted: the upstream manifest filled by the rule
            expected = effective_state_dict(name)
            assert all(torch.equal(weights[k], expected[k]) for k in weights) and set(weights) <= set(expected)
    finally:
        process.terminate()
        process.wait(timeout=30)

    # copying a cache to a machine without network: the copy alone loads, offline, with the demo cards
    shutil.copytree(tmp_path / "cache", tmp_path / "elsewhere")
    got = installed.razorzoo("download", SERVED[0], "--offline", RAZORZOO_CARDS=str(mirror / "cards"),
                             RAZORZOO_CACHE=str(tmp_path / "elsewhere"))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "elsewhere") in Path(got.stdout.strip()).parents
    loaded = installed.python("import razorzoo; m = razorzoo.load_classifier('ofa_lat31', offline=True); "
                              "print(type(m).__name__, sum(p.numel() for p in m.parameters()))",
                              RAZORZOO_CARDS=str(mirror / "cards"), RAZORZOO_CACHE=str(tmp_path / "elsewhere"),
                              RAZORZOO_OFFLINE="1")
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == ["ImageClassifier", str(get_card("ofa_lat31").num_params)]


def test_installed_wheel_runs_the_demo_and_leaves_nothing_behind(installed, tmp_path):
    temp = tmp_path / "temp"
    temp.mkdir()
    out = installed.razorzoo("demo", "ofa_lat31", TMPDIR=str(temp), RAZORZOO_CACHE=str(tmp_path / "user-cache"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("razorzoo demo: ofa_lat31 (classification)")
    assert any("untrained" in line for line in lines)
    assert any(line.startswith("  mirror: 2 files,") and "mmrazor_subnet layout" in line for line in lines)
    assert any(line.startswith("  cold load (download, hash check, verify, convert, build):") for line in lines)
    assert any(line.startswith("  warm load (offline, from the cache):") for line in lines)
    assert any(line.startswith("  predict(a test pattern): top 5 in") for line in lines)
    assert list(temp.iterdir()) == []  # the mirror, the server's files and the demo cache are gone
    assert not (tmp_path / "user-cache").exists()  # the user's own cache is not touched


def test_mirror_and_demo_refuse_what_they_cannot_do(tmp_path, capsys):
    assert cli(["mirror", str(tmp_path / "m")]) == 2
    assert "give the models to write demo weights for (NAME ... or --all), or --serve" in capsys.readouterr().err
    assert cli(["mirror", str(tmp_path / "m"), "yolov6"]) == 2
    assert "did you mean 'yolov6s-attentive_a6'" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()  # names are checked before anything is written
    assert cli(["mirror", str(tmp_path / "nothing"), "--serve"]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert cli(["demo", "attentive_supernet"]) == 2
    assert "is a supernet, which is sliced, not loaded" in capsys.readouterr().err


def test_the_demo_runs_under_offline_mode_and_gives_the_environment_back(tmp_path, monkeypatch, capsys):
    """``RAZORZOO_OFFLINE=1`` in the user's shell must not break the demo (its downloads come from its own loopback
    mirror), and ``main`` in a longer-lived process must not keep pointing at the demo's vanished mirror and cards."""
    monkeypatch.setenv("RAZORZOO_OFFLINE", "1")
    monkeypatch.setenv("RAZORZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RAZORZOO_MIRROR", "http://127.0.0.1:9/the-users-own")
    monkeypatch.delenv("RAZORZOO_CARDS", raising=False)
    assert cli(["demo", CLASSIFIERS[0]]) == 0
    out = capsys.readouterr().out
    assert "cold load" in out and "warm load (offline, from the cache)" in out and "predict(a test pattern)" in out
    assert os.environ["RAZORZOO_MIRROR"] == "http://127.0.0.1:9/the-users-own" and "RAZORZOO_CARDS" not in os.environ
    assert not (tmp_path / "cache").exists()  # the demo's cache lived in its temporary directory
