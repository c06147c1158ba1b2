"""Hostile input to subnet YAMLs, model cards (files, RAZORZOO_CARDS, Hub READMEs) and the browsing CLI.

Read as a list: one test per class of attack, parametrized over its variants. Every attack must end in one short
line naming the problem (a ``RazorzooError``, or ``razorzoo: error: ...`` from the CLI), quickly, with nothing of the
attacker's text reaching the terminal raw. Budget: under 30 s for the module.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

import razorzoo
from custom_cards import card_text
from razorzoo.arch.subnet import load_subnet
from razorzoo.cli import main
from razorzoo.errors import CardError, SubnetError, UnknownModelError
from razorzoo.zoo.registry import CARDS_DIR, get_card, list_models, parse_card

SUBNETS = CARDS_DIR / "subnets"
A6 = (SUBNETS / "ATTENTIVE_SUBNET_A6.yaml").read_text()
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]")  # never to a terminal (newline, tab are fine)


def _billion_laughs() -> str:
    """The classic: nine levels of nine aliases each, 559 bytes that expand to 9^9 strings when walked."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\n"


BOMBS = {
    "billion laughs": _billion_laughs(),
    "merge-key aliases": "base: &b {x: 1}\n" + "".join(f"k{i}: {{<<: *b}}\n" for i in range(50)),
    "anchor on a subnet value": "backbone.first_channels: &c {chosen: 16}\nbackbone.last_channels: *c\n",
    "deep flow nesting": "x: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "deep block nesting": "".join(" " * i + f"k{i}:\n" for i in range(200)) + " " * 200 + "v: 1\n",
    "10^5-digit integer": "backbone.first_channels: " + "9" * 100_000 + "\n",
    "huge hex integer": "backbone.first_channels: 0x" + "f" * 5_000 + "\n",
    "megabyte scalar": "x: " + "a" * (1 << 20) + "\n",
    "python object tag": "x: !!python/object/apply:os.system ['true']\n",
}


@pytest.fixture
def cards(tmp_path, monkeypatch):
    """An empty RAZORZOO_CARDS directory; ``cards(name, text)`` adds a card (and a copy of the A6 subnet)."""
    root = tmp_path / "cards"
    root.mkdir()
    monkeypatch.setenv("RAZORZOO_CARDS", str(root))

    def add(name: str, text: str) -> Path:
        (root / f"{name}.yaml").write_text(A6)
        path = root / f"{name}.md"
        path.write_text(text, encoding="utf-8")
        return path

    return add


def _one_line_error(error: type[Exception], call, *, seconds: float = 2.0) -> str:
    start = time.perf_counter()
    with pytest.raises(error) as info:
        call()
    elapsed = time.perf_counter() - start
    message = str(info.value)
    assert "\n" not in message and len(message) < 600, message[:1000]
    assert elapsed < seconds, f"took {elapsed:.2f} s"
    return message


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _cli_error(capsys, *argv: str) -> str:
    code, out, err = _cli(capsys, *argv)
    assert code == 2 and out == "", (code, out[:300], err[:300])
    assert err.startswith("razorzoo: error: ") and err.count("\n") == 1 and "Traceback" not in err, err[:1000]
    assert not CONTROL.search(err.rstrip("\n"))
    return err


# -- 1. YAML bombs: aliases, nesting, huge numbers and scalars fail in milliseconds with one line -----------------
@pytest.mark.parametrize("bomb", BOMBS.values(), ids=BOMBS.keys())
@pytest.mark.parametrize("surface", ["subnet text", "subnet file", "card file", "hub README"])
def test_yaml_bombs_fail_fast_with_one_line(bomb, surface, tmp_path, cards):
    if surface == "subnet text":
        _one_line_error(SubnetError, lambda: load_subnet(bomb))
    elif surface == "subnet file":
        (tmp_path / "bomb.yaml").write_text(bomb)
        _one_line_error(SubnetError, lambda: load_subnet(tmp_path / "bomb.yaml"))
    elif surface == "card file":
        path = cards("bomb", card_text("bomb", front=bomb))
        message = _one_line_error(CardError, lambda: parse_card(path))
        assert str(path) in message
    else:  # a Hub README is parsed by the same parser, from text
        message = _one_line_error(CardError, lambda: parse_card(card_text("bomb", front=bomb), source="hf-hub:evil/x"))
        assert message.startswith("hf-hub:evil/x: the front matter")


# -- 2. Files that are not small UTF-8 text: oversized, binary, not files at all -----------------------------------
@pytest.mark.parametrize("kind", ["50 MB (sparse)", "not UTF-8", "UTF-16 with BOM", "a directory", "a fifo"])
def test_files_that_are_not_small_text_are_refused(kind, tmp_path, cards):
    subnet = tmp_path / "subnet.yaml"
    card = Path(os.environ["RAZORZOO_CARDS"]) / "x.md"
    for path in (subnet, card):
        if kind == "50 MB (sparse)":
            with open(path, "wb") as f:
                f.truncate(50 << 20)
        elif kind == "not UTF-8":
            path.write_bytes(b"backbone.first_channels: \xff\xfe\x80\n")
        elif kind == "UTF-16 with BOM":
            path.write_bytes("backbone.first_channels: 16\n".encode("utf-16"))
        elif kind == "a directory":
            path.mkdir()
        else:
            os.mkfifo(path)
    _one_line_error(SubnetError, lambda: load_subnet(subnet))
    message = _one_line_error(CardError, lambda: parse_card(card))
    assert str(card) in message


# -- 3. Values of the wrong type or outside the search space: refused at validation, naming key and allowed values --
@pytest.mark.parametrize("value", ["16.0", "true", "'16'", "null", "[16]", "{a: 1}", ".nan", ".inf", "-.inf",
                                   "1.0e+400", "2020-01-01"])
def test_subnet_choices_of_the_wrong_type_are_refused(value):
    text = A6.replace("backbone.first_channels:\n  chosen: 16", f"backbone.first_channels:\n  chosen: {value}")
    assert text != A6
    message = _one_line_error(SubnetError, lambda: load_subnet(text))
    assert "'backbone.first_channels'" in message and "allowed: 16, 24" in message


@pytest.mark.parametrize("value", ["[100000, 100000]", "[16, 16]", "[224.0, 224]", "[true, true]", ".nan", "'224'",
                                   "[224, 224, 224]", "[-224, 224]", "100000", "[.inf, 224]"])
def test_input_shape_is_bounded(value):
    text = re.sub(r"input_shape:\n  chosen:\n  - \d+\n  - \d+\n", f"input_shape:\n  chosen: {value}\n", A6)
    assert text != A6
    message = _one_line_error(SubnetError, lambda: load_subnet(text))
    assert "'input_shape'" in message and "from 32 to 4096" in message


# -- 4. Non-finite numbers, in every spelling, in cards and on the command line ------------------------------------
NON_FINITE = [".nan", ".NaN", ".inf", "+.inf", "-.Inf", "1.0e+400", "-1.0e+400"]


@pytest.mark.parametrize("spelling", NON_FINITE)
@pytest.mark.parametrize("field", ["num_params", "flops.value", "metrics.top1", "metrics.box_ap"])
def test_non_finite_card_numbers_are_refused(spelling, field, cards):
    meta = {
        "num_params": {"num_params": spelling},
        "flops.value": {"flops": f"{{value: {spelling}, unit: GMAC, input: [1, 3, 224, 224]}}"},
        "metrics.top1": {"metrics": f"{{top1: {spelling}}}"},
        "metrics.box_ap": {"metrics": f"{{box_ap: {spelling}}}"},
    }[field]
    cards("nonfinite", card_text("nonfinite", **meta))
    message = _one_line_error(CardError, list_models)
    assert f"razorzoo.{field}" in message


@pytest.mark.parametrize("value, valid", [("0", True), ("0.0", True), ("100", True), ("37.5", True),
                                          ("-0.01", False), ("100.01", False), ("1000", False)])
def test_card_metrics_are_percentages_from_0_to_100(value, valid, cards):
    cards("percent", card_text("percent", metrics=f"{{box_ap: {value}}}"))
    if valid:
        assert "percent" in list_models() and get_card("percent").metrics == {"box_ap": float(value)}
    else:
        message = _one_line_error(CardError, list_models)
        assert "razorzoo.metrics.box_ap" in message and "is not a percentage from 0 to 100" in message


@pytest.mark.parametrize("expr", ["params>nan", "top1>inf", "box_ap<-inf", "flops>=1e999", "params>NaN",
                                  "top1 > +Infinity", "input==nan"])
def test_non_finite_where_values_are_refused(expr, capsys):
    err = _cli_error(capsys, "list", "--where", expr)
    assert "must be a finite number" in err


# -- 5. Card file references that leave the card's directory ------------------------------------------------------
@pytest.mark.parametrize("file", ["../../../../etc/passwd", "/etc/passwd", "subnets/../../../etc/passwd", "..",
                                  "..\\\\..\\\\etc\\\\passwd", "./../x.yaml", "C:/Windows/win.ini", "a\\x00b.yaml",
                                  "symlink out"])
def test_card_subnet_files_stay_under_the_cards_dir(file, tmp_path, cards):
    if file == "symlink out":
        secret = tmp_path / "secret.yaml"
        secret.write_text(A6)  # a readable, valid subnet: only its place is wrong
        (Path(os.environ["RAZORZOO_CARDS"]) / "link.yaml").symlink_to(secret)
        file = "link.yaml"
    cards("traversal", card_text("traversal", subnet_file=f'"{file}"'))
    message = _one_line_error(CardError, list_models)
    assert "razorzoo.subnet.file" in message
    assert re.search("would leave|resolves outside|not a plain relative", message), message  # refused, not missing


# -- 6. Terminal escape sequences in card text never reach the terminal -------------------------------------------
ESCAPES = {
    "CSI colour": "\x1b[31mred\x1b[0m",
    "CSI clear screen": "\x1b[2J\x1b[H",
    "OSC window title (BEL)": "\x1b]0;pwned\x07",
    "OSC 8 hyperlink (ST)": "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\",
    "C1 CSI": "\x9b31m",
    "C1 OSC": "\x9d0;pwned\x07",
    "DCS": "\x1bP1$r\x1b\\",
    "bell, backspace, carriage return": "\x07\x08\rover",
    "bidi override": "\u202egnp.exe\u202c",
}


def _yaml_escaped(text: str) -> str:
    return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\x{ord(c):02x}" if ord(c) < 256
                         else f"\\u{ord(c):04x}" for c in text) + '"'


@pytest.mark.parametrize("escape", ESCAPES.values(), ids=ESCAPES.keys())
@pytest.mark.parametrize("command", [("show", "evil"), ("show", "evil", "--raw"), ("search", "payload"),
                                     ("list", "evil")])
def test_escape_sequences_never_reach_the_terminal(escape, command, capsys, cards):
    cards("evil", card_text("evil", body=f"A payload {escape} here.\n\n## Notes {escape}\n\n- item {escape}\n",
                        algorithm=_yaml_escaped(f"Attentive{escape}NAS"), search_space=_yaml_escaped(escape)))
    code, out, err = _cli(capsys, *command)
    assert code == 0, err
    assert "evil" in out
    assert not CONTROL.search(out), repr(out[:400])


def test_error_messages_carry_no_escape_sequences(capsys, cards):
    err = _cli_error(capsys, "show", "\x1b]0;pwned\x07\x1b[2J")
    assert "unknown model" in err


@pytest.mark.parametrize("escape", ["\x1b[2J", "\x1b]0;pwned\x07", "\x9b31m", "\u202e", "\u200b", "\u2066"])
@pytest.mark.parametrize("field", ["name", "aliases"])
def test_escape_sequences_in_names_and_aliases_are_refused(escape, field, capsys, cards):
    """Names and aliases become file names, URLs and table cells: a control character in one refuses the card."""
    evil = _yaml_escaped(f"evil{escape}name")
    text = card_text("evil") if field == "aliases" else card_text("evil").replace("name: evil", f"name: {evil}", 1)
    cards("evil", text.replace("aliases: []", f"aliases: [{evil}]") if field == "aliases" else text)
    message = _one_line_error(CardError, list_models)
    assert f"razorzoo.{field}" in message and not CONTROL.search(message)
    assert "razorzoo." in _cli_error(capsys, "list")


@pytest.mark.parametrize("escape", ESCAPES.values(), ids=ESCAPES.keys())
def test_escape_sequences_in_tags_never_reach_the_terminal(escape, capsys, cards):
    cards("evil", card_text("evil", front=f"tags: [{_yaml_escaped(f'zz{escape}tag')}, plain]\n"))
    for command in (("search", "zz"), ("show", "evil"), ("show", "evil", "--raw"), ("list", "--json", "evil")):
        code, out, err = _cli(capsys, *command)
        assert code == 0 and "evil" in out, err
        assert not CONTROL.search(out), (command, repr(out[:400]))


# -- 7. Garbage on the command line: one-line errors, nothing half done --------------------------------------------
@pytest.mark.parametrize("argv", [
    ("list", "--where", "params>"), ("list", "--where", "x" * 100_000), ("list", "--where", "params>" + "9" * 100_000),
    ("list", "--where", "params>1e5x"), ("list", "--where", "name>ofa"), ("list", "--where", "mAP>1"),
    ("list", "--sort", "nonsense"), ("list", "--sort", "\x1b[2J"), ("list", "--sort", "x" * 100_000),
    ("list", "--pareto", "flops"), ("list", "--pareto", "flops,nonsense"), ("list", "--pareto", "name,top1"),
    ("list", "--pareto", ","), ("list", "--task", "painting"), ("list", "--task", "x" * 100_000),
    ("show", "x" * 100_000), ("download", "x" * 100_000), ("download", "a\x00b"), ("predict", "x" * 100_000, "a.png"),
    ("cache", "rm", "\x1b]0;pwned\x07"),
])
def test_garbage_arguments_give_one_line_errors(argv, capsys):
    err = _cli_error(capsys, *argv)
    assert len(err) < 600


@pytest.mark.parametrize("name", ["x" * 100_000, "a\x00b", "\x1b[2J", "attentive_a6\n", ""])
def test_garbage_model_names_give_one_line_errors_from_every_loader(name):
    """What a name cannot be (too long for a file name, a NUL, an escape) is an unknown name, said in one line."""
    for load in (razorzoo.load_classifier, razorzoo.load_detector, razorzoo.load_backbone):
        message = _one_line_error(UnknownModelError, lambda: load(name))
        assert message.startswith("unknown model") and not CONTROL.search(message)


# -- 8. Everything a card holds is checked where it is read: the built-in zoo still passes ------------------------
def test_the_shipped_cards_pass_every_check():
    assert len(list_models()) == 15
    for name in list_models():
        card = get_card(name)
        assert card.subnet_path is None or card.subnet_path.is_file()
        assert "§" not in re.sub(r"docs/upstream\.md §[\d.]+(?: and §[\d.]+)?", "", card.body), name
