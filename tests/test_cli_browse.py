"""``razorzoo list | show | search | cards build`` through the real entry point (no torch on this path)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import HubServer, Repo

from razorzoo.cli import main
from razorzoo.zoo.registry import CARDS_DIR

ROOT = Path(__file__).resolve().parent.parent


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def names_in_table(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines()[2:]]


def test_list_is_an_aligned_table(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["name", "task", "family"] and "box AP" in lines[0] and "top-1" in lines[0]
    assert set(lines[1]) == {"-", " "}
    assert len(names_in_table(out)) == 15
    assert "attentive_a6           classification  attentive       15.90      0.927    224  80.81" in out
    # numeric columns are right-aligned under their header
    box_ap_end = lines[0].index("box AP") + len("box AP")
    assert all(len(line) == box_ap_end for line in lines[2:])


def test_list_pattern_and_task(capsys):
    _, out, _ = run(capsys, "list", "AttentiveNAS-A*")
    assert names_in_table(out) == [f"attentive_a{i}" for i in range(7)]
    _, out, _ = run(capsys, "list", "--task", "detection")
    assert names_in_table(out) == ["rtmdet_tiny-ofa_lat31", "yolov5s-spos_0.33M", "yolov6s-attentive_a6"]
    assert "top-1" not in out  # columns no detector has are left out


def test_list_sort(capsys):
    _, out, _ = run(capsys, "list", "--task", "detection", "--sort", "flops", "--reverse")
    assert names_in_table(out) == ["yolov6s-attentive_a6", "yolov5s-spos_0.33M", "rtmdet_tiny-ofa_lat31"]
    _, out, _ = run(capsys, "list", "--sort", "top1")
    ranked = names_in_table(out)
    assert ranked[:5] == ["ofa_lat22", "ofa_lat31", "spos_0.33M", "attentive_a0", "attentive_a6"]
    assert ranked[5:8] == ["attentive_a1", "attentive_a2", "attentive_a3"]  # rows without top-1 go last, by name


def test_list_where(capsys):
    _, out, _ = run(capsys, "list", "--where", "box_ap>40")
    assert names_in_table(out) == ["rtmdet_tiny-ofa_lat31", "yolov6s-attentive_a6"]
    _, out, _ = run(capsys, "list", "--where", "family=ofa", "--where", "params < 4.5")
    assert names_in_table(out) == ["ofa_lat22", "rtmdet_tiny-ofa_lat31"]
    code, out, err = run(capsys, "list", "--where", "top1>=99")
    assert code == 1 and out == "" and "no models match" in err


@pytest.mark.parametrize(
    ("expr", "message"),
    [("mAP>40", "unknown column 'mAP'; columns: name, task, family, params, flops, input, top1, top5, box_ap"),
     ("box_ap>forty", "the value for box_ap must be a number, not 'forty'"),
     ("family>ofa", "family is text; only =, == and != apply"),
     ("box_ap", "cannot parse --where 'box_ap'")],
)
def test_list_where_errors(capsys, expr, message):
    code, out, err = run(capsys, "list", "--where", expr)
    assert code == 2 and out == ""
    assert err.startswith("razorzoo: error: ") and message in err


def test_list_pareto(capsys):
    # yolov5s (7.03 G, 38.0) is dominated by rtmdet_tiny (6.09 G, 41.3); spos (0.325 G, 73.87) by attentive_a0
    _, out, _ = run(capsys, "list", "--pareto", "flops,box_ap")
    assert names_in_table(out) == ["rtmdet_tiny-ofa_lat31", "yolov6s-attentive_a6"]
    _, out, _ = run(capsys, "list", "--pareto", "flops,top1")
    assert names_in_table(out) == ["ofa_lat22", "ofa_lat31", "attentive_a0", "attentive_a6"]
    _, out, _ = run(capsys, "list", "--pareto", "params,top1")  # spos 3.35 M is the smallest with 73.87
    assert names_in_table(out) == ["spos_0.33M", "attentive_a0", "attentive_a6"]
    code, _, err = run(capsys, "list", "--pareto", "flops")
    assert code == 2 and "give two numeric columns X,Y" in err


def test_list_json(capsys):
    _, out, _ = run(capsys, "list", "*lat31", "--json")
    rows = json.loads(out)
    assert rows == [
        {"name": "ofa_lat31", "task": "classification", "family": "ofa", "params": 4.596, "flops": 0.105,
         "input": 224, "top1": 72.6, "top5": None, "box_ap": None},
        {"name": "rtmdet_tiny-ofa_lat31", "task": "detection", "family": "ofa", "params": 3.911, "flops": 6.094,
         "input": 960, "top1": None, "top5": None, "box_ap": 41.3},
    ]


def test_show(capsys):
    code, out, _ = run(capsys, "show", "AttentiveNAS-A6")
    assert code == 0
    assert out.splitlines()[0] == "attentive_a6  ·  classification  ·  attentive"
    assert "15.897 M (15,896,752)" in out
    assert "0.927 G multiply-accumulates at 1x3x224x224" in out
    assert "224 (resized inside the model to 288)" in out
    assert "sha256 73d92cc6, layout mmrazor_subnet" in out
    assert "\nCITATION\n" in out or "\nCitation\n" in out
    assert "    @inproceedings{wang2021attentivenas," in out  # code blocks are indented
    assert "\033[" not in out and "**" not in out and "## " not in out


def test_show_unknown(capsys):
    code, out, err = run(capsys, "show", "yolov6-a6")
    assert code == 2 and out == ""
    assert "unknown model 'yolov6-a6'" in err and "'yolov6s-attentive_a6'" in err


def test_show_raw(capsys):
    _, out, _ = run(capsys, "show", "ofa_lat31", "--raw")
    assert out == (CARDS_DIR / "ofa_lat31.md").read_text()


def test_search(capsys):
    code, out, _ = run(capsys, "search", "note8")
    assert code == 0 and names_in_table(out) == ["ofa_lat22", "ofa_lat31"]
    _, out, _ = run(capsys, "search", "sliced-from-supernet")  # a tag
    assert names_in_table(out) == [f"attentive_a{i}" for i in range(1, 6)]
    _, out, _ = run(capsys, "search", "yolov6_l_attentivenas")  # an alias
    assert names_in_table(out) == ["yolov6s-attentive_a6"] and "alias" in out
    _, out, _ = run(capsys, "search", "RTMDet", "960")  # every word must match
    assert names_in_table(out) == ["rtmdet_tiny-ofa_lat31"]
    code, out, err = run(capsys, "search", "resnet")
    assert code == 1 and "no model matches 'resnet'" in err


def test_cards_build(capsys, tmp_path):
    code, out, _ = run(capsys, "cards", "build", str(tmp_path / "site"))
    assert code == 0 and out.strip() == f"wrote {tmp_path / 'site' / 'index.html'}"
    assert len(list((tmp_path / "site" / "models").glob("*.html"))) == 15


@pytest.fixture
def hub(monkeypatch):
    """A local Hub holding one razorzoo repo whose README is a zoo card."""
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        repo = Repo("alice/my-ofa", private=False)
        server.repos[repo.repo_id] = repo
        card = (CARDS_DIR / "ofa_lat31.md").read_text().replace("name: ofa_lat31", "name: my-ofa")
        card = card.replace("file: subnets/OFA_SUBNET_NOTE8_LAT31.yaml", "file: subnet.yaml")  # the repo's copy
        subnet = (CARDS_DIR / "subnets" / "OFA_SUBNET_NOTE8_LAT31.yaml").read_bytes()
        server.new_commit(repo, "main", {"README.md": card.encode(), "subnet.yaml": subnet}, "card", "alice")
        yield server


def test_show_and_list_hub(capsys, hub):
    code, out, err = run(capsys, "show", "hf-hub:alice/my-ofa")
    assert code == 0, err
    assert out.splitlines()[0] == "my-ofa  ·  classification  ·  ofa"
    code, out, err = run(capsys, "list", "--hub", "alice")
    assert code == 0, err
    assert "hf-hub:alice/my-ofa" in out
    code, out, err = run(capsys, "list", "--hub", "bob")
    assert code == 1 and "no razorzoo models on the Hub for 'bob'" in err


def _fresh(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=ROOT, env=env)


def test_browsing_never_imports_torch():
    code = ("import sys; from razorzoo.cli import main\n"
            "for argv in (['list'], ['list', '--pareto', 'flops,box_ap'], ['show', 'attentive_a6'], "
            "['search', 'ofa']): main(argv)\n"
            "bad = [m for m in ('torch', 'huggingface_hub', 'numpy') if m in sys.modules]\n"
            "sys.exit(f'imported {bad}' if bad else 0)")
    result = _fresh("-c", code)
    assert result.returncode == 0, result.stderr
