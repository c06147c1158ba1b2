"""Every subcommand's error paths, run through ``razorzoo.cli.main``: each ends with a non-zero exit and at most the
usage line plus one error line, never a traceback (an exception escaping ``main`` fails the test). The list of
commands is read from the parser, so a new subcommand without error cases here fails too.

Nothing is downloaded: the cache is empty and offline, the Hub endpoint refuses connections.
"""
from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import pytest

from razorzoo.cli import build_parser, main

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]")

# subcommand -> argument lists that must fail cleanly ({tmp} is a scratch folder, {file} a small text file,
# {fifo} a fifo, {missing} a path that does not exist)
ERROR_PATHS: dict[str, list[list[str]]] = {
    "list": [["--where", "box_ap>nan"], ["--sort", "\x1b[2J"], ["--task", "x" * 10_000], ["--pareto", "a"],
             ["--hub", "../x"]],
    "show": [["no-such-model"], ["hf-hub:org/name-"], ["hf-hub:alice/repo"], ["x\x00y"], ["a" * 100_000]],
    "search": [["\x1b]0;x\x07"]],
    "cards build": [["{file}"], ["{file}/sub"]],
    "download": [["no-such-model"], ["attentive_a6"], ["hf-hub:org/x"], ["ofa_lat31", "--cache-dir", "{file}"]],
    "cache ls": [["--cache-dir", "{file}"]],
    "cache rm": [["no-such-model"], ["attentive_a6"], ["--all", "--cache-dir", "{file}"]],
    "cache verify": [["--cache-dir", "{file}"]],
    "cache prune": [["attentive_a6"]],
    "mirror": [["{file}"], ["{tmp}/m", "no-such-model"], ["{tmp}/m", "x" * 10_000], ["{tmp}/m", "ofa_lat31", "--port",
                                                                                   "nan"]],
    "demo": [["no-such-model"], ["ofa_supernet"], ["attentive_a6", "--image", "{missing}"],
             ["attentive_a6", "--image", "{file}"], ["attentive_a6", "--image", "{fifo}"], ["\x1b[2J"]],
    "verify": [["no-such-model"], ["--subnet", "{missing}", "--weights", "{file}"], ["--subnet", "{file}"],
               ["attentive_a6", "--subnet", "{file}"], ["--subnet", "{fifo}", "--weights", "{fifo}"]],
    "convert": [["{missing}", "--subnet", "{file}", "-o", "{tmp}/o.safetensors"],
                ["{file}", "--subnet", "{file}", "-o", "{file}"], ["{file}", "--subnet", "{file}", "-o", "{tmp}"],
                ["{file}", "--subnet", "attentive_a6", "-o", "{fifo}"], ["{fifo}", "--subnet", "{fifo}", "-o", "x"]],
    "predict": [["no-such-model", "{file}"], ["attentive_a6", "{missing}"], ["rtmdet_tiny-ofa_lat31", "{tmp}"],
                ["rtmdet_tiny-ofa_lat31", "{tmp}/*.png"], ["rtmdet_tiny-ofa_lat31", "{file}", "--out", "{file}"],
                ["rtmdet_tiny-ofa_lat31", "{file}", "--score-thr", "nan"], ["{file}.onnx", "{file}"],
                ["attentive_a6", "{file}", "--save-json", "x.json"], ["{missing}.safetensors", "{file}"],
                ["{tmp}/list.txt", "{file}"], ["rtmdet_tiny-ofa_lat31", "{tmp}/list.txt"],
                ["hf-hub:alice/repo", "{file}"], ["rtmdet_tiny-ofa_lat31", "{file}", "--weights", "{file}"],
                ["model.xml", "{file}"], ["rtmdet_tiny-ofa_lat31", "{fifo}"]],
    "export": [["no-such-model", "-o", "x.onnx"], ["attentive_a6", "-o", "x.txt"], ["attentive_a6", "-o", "{fifo}"],
               ["{missing}.safetensors", "-o", "{tmp}/x.onnx"], ["attentive_a6", "-o", "{tmp}/x.onnx",
                                                                 "--min-agreement", "nan"]],
    "val": [["rtmdet_tiny-ofa_lat31"], ["rtmdet_tiny-ofa_lat31", "--coco-ann", "{missing}", "--images", "{tmp}"],
            ["rtmdet_tiny-ofa_lat31", "--coco-ann", "{file}", "--images", "{tmp}"],
            ["rtmdet_tiny-ofa_lat31", "--coco-ann", "{fifo}", "--images", "{tmp}"],
            ["rtmdet_tiny-ofa_lat31", "--coco-ann", "{tmp}/deep.json", "--images", "{tmp}"],
            ["attentive_a6", "--imagenet", "{missing}"], ["attentive_a6", "--imagenet", "{tmp}"],
            ["attentive_a6", "--imagenet", "{tmp}", "--ann-file", "{file}"],
            ["attentive_a6", "--imagenet", "{tmp}", "--save-json", "x.json"],
            ["rtmdet_tiny-ofa_lat31", "--coco-ann", "{file}", "--images", "{tmp}", "--limit", "0"]],
    "push": [["org/name-", "--subnet", "{file}", "--weights", "{file}", "--base", "attentive_a6"],
             ["alice/x", "--subnet", "{missing}", "--weights", "{file}", "--base", "attentive_a6"],
             ["alice/x", "--subnet", "{file}", "--weights", "{file}", "--base", "no-such-model", "--token", "hf_x"],
             ["alice/x", "--subnet", "{file}", "--weights", "{file}", "--base", "attentive_a6", "--metric", "a=nan",
              "--token", "hf_x"]],
    "specialize": [["attentive_a6", "--flops", "1M", "--calib", "{tmp}", "--val", "{tmp}", "-o", "{tmp}/o"],
                   ["ofa_supernet", "--flops", "lots", "--calib", "{tmp}", "--val", "{tmp}", "-o", "{tmp}/o"],
                   ["ofa_supernet", "--latency", "-1ms", "--calib", "{tmp}", "--val", "{tmp}", "-o", "{tmp}/o"],
                   ["ofa_supernet", "--flops", "1M", "--calib", "{missing}", "--val", "{tmp}", "-o", "{tmp}/o"],
                   ["ofa_supernet", "--flops", "1M", "--calib", "{tmp}", "--val", "{tmp}", "-o", "{file}"],
                   ["ofa_supernet", "--flops", "1M", "--calib", "{tmp}", "--val", "{tmp}", "-o", "{tmp}/o",
                    "--profile", "{fifo}"],
                   ["ofa_supernet", "--flops", "1M", "--calib", "{tmp}", "--val", "{tmp}", "-o", "{tmp}/o",
                    "--backend", "\x1b[2J"],
                   ["ofa_supernet", "--flops", "1M", "--calib", "{tmp}", "--val", "{tmp}", "-o", "{tmp}/o",
                    "--resume"]],
    "train": [["-o", "{tmp}/run"], ["--resume", "-o", "{tmp}/nothing"],
              ["rtmdet_tiny-ofa_lat31", "--coco-ann", "{missing}", "--images", "{tmp}", "-o", "{tmp}/run"],
              ["rtmdet_tiny-ofa_lat31", "--coco-ann", "{tmp}/deep.json", "--images", "{tmp}", "-o", "{tmp}/run"],
              ["rtmdet_tiny-ofa_lat31", "--coco-ann", "{fifo}", "--images", "{tmp}", "-o", "{tmp}/run"],
              ["rtmdet_tiny-ofa_lat31", "--coco-ann", "{file}", "--images", "{tmp}", "-o", "{file}"],
              ["rtmdet_tiny-ofa_lat31", "--coco-ann", "{file}", "--images", "{tmp}", "-o", "{tmp}/run",
               "--epochs", "0"]],
}


def _commands() -> set[str]:
    def names(parser: argparse.ArgumentParser, prefix: str = "") -> set[str]:
        found: set[str] = set()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    nested = names(sub, f"{prefix}{name} ")
                    found |= nested or {f"{prefix}{name}"}
        return found

    return names(build_parser())


def test_every_subcommand_has_error_paths_here():
    assert _commands() == set(ERROR_PATHS)


NEED_ARGUMENTS = set(ERROR_PATHS) - {"list", "cache ls", "cache verify", "cache prune", "demo"}  # these run fine without any
CASES = [(command, args) for command, cases in ERROR_PATHS.items()
         for args in [*cases, *([[]] if command in NEED_ARGUMENTS else []), ["--no-such-option"]]]


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    monkeypatch.setenv("RAZORZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RAZORZOO_OFFLINE", "1")
    monkeypatch.setenv("RAZORZOO_PROGRESS", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # refuses connections
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("not what any command wants\n")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "list.txt").write_text("../../etc/passwd\n")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    return {"tmp": str(tmp_path), "file": str(tmp_path / "file"), "fifo": str(tmp_path / "fifo"),
            "missing": str(tmp_path / "missing")}


@pytest.mark.parametrize("command, args", CASES, ids=[f"{c}:{json.dumps(a)[:50]}" for c, a in CASES])
def test_error_paths_end_in_one_line_without_a_traceback(command, args, scratch, capsys):
    argv = [*command.split(), *[a.format(**scratch) for a in args]]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: the usage line and one error line
        code = exc.code
    captured = capsys.readouterr()
    err = captured.err
    assert code not in (0, None), (argv, captured.out[-500:])
    assert "Traceback" not in err and not CONTROL.search(err), err
    lines = err.strip().splitlines()
    if lines and lines[0].startswith("usage:"):  # argparse's own error, after the usage (wrapped) lines
        assert lines[-1].startswith(("razorzoo: error:", f"razorzoo {command}: error:")), err
    elif code == 2:
        assert len(lines) == 1 and lines[0].startswith("razorzoo: error: "), err
    else:  # exit 1: a finding, not an error (search found nothing, verify found a mismatch)
        assert len(lines) <= 1, err
    assert Path(scratch["tmp"], "file").read_text() == "not what any command wants\n"
