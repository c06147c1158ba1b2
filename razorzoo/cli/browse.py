"""``razorzoo list | show | search | cards build``: browse the zoo from the terminal.

Everything here reads cards only, so it never imports torch (``razorzoo list`` runs on every shell completion and
in scripts; it must stay well under a second).
"""
from __future__ import annotations

import argparse
import json
import operator
import os
import re
import sys
from typing import Any, Callable

from razorzoo.arch.spec import CARD_TASKS
from razorzoo.bounded import check_number, safe_repr, terminal_safe
from razorzoo.cli import CLIError
from razorzoo.wording import did_you_mean

# column -> (header, format); the keys are those of Card.summary()
COLUMNS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "name": ("name", str),
    "task": ("task", str),
    "family": ("family", str),
    "params": ("params (M)", lambda v: f"{v:.2f}"),
    "flops": ("FLOPs (G)", lambda v: f"{v:.3f}"),
    "input": ("input", str),
    "top1": ("top-1", lambda v: f"{v:.2f}"),
    "top5": ("top-5", lambda v: f"{v:.2f}"),
    "box_ap": ("box AP", lambda v: f"{v:.1f}"),
}
NUMERIC = ("params", "flops", "input", "top1", "top5", "box_ap")
_OPS = {"<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne, "<": operator.lt,
        ">": operator.gt, "=": operator.eq}
_WHERE = re.compile(r"^\s*([A-Za-z_0-9]+)\s*(<=|>=|==|!=|<|>|=)\s*(.+?)\s*$")


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    columns = ", ".join(COLUMNS)
    p = subparsers.add_parser(
        "list", help="list the models of the zoo",
        description=f"List registered models as a table. Columns: {columns} (params in M, FLOPs in G "
                    "multiply-accumulates at the input size shown, metrics in percent).",
    )
    p.add_argument("pattern", nargs="?", default="*", help="name or alias pattern, fnmatch wildcards (default: *)")
    p.add_argument("--task", metavar="TASK", help=f"only models of one task: {', '.join(CARD_TASKS)}")
    p.add_argument("--sort", metavar="KEY", help=f"sort by a column (ascending): {columns}")
    p.add_argument("--reverse", action="store_true", help="sort descending")
    p.add_argument("--where", metavar="EXPR", action="append", default=[],
                   help="keep rows where EXPR holds, e.g. 'box_ap>40' or 'flops<=1' (repeat to combine)")
    p.add_argument("--pareto", metavar="X,Y",
                   help="keep the Pareto-optimal rows: smallest X for the largest Y, e.g. 'flops,box_ap'")
    p.add_argument("--json", action="store_true", help="print JSON (a list of rows) instead of a table")
    p.add_argument("--hub", nargs="?", const="", metavar="AUTHOR",
                   help="list razorzoo models on the Hugging Face Hub (of AUTHOR) instead of the built-in zoo")
    p.set_defaults(handler=_list)

    p = subparsers.add_parser("show", help="show a model card", description="Render a model card for the terminal.")
    p.add_argument("name", help="registry name or alias, or hf-hub:ORG/NAME")
    p.add_argument("--raw", action="store_true", help="print the card file as is")
    p.set_defaults(handler=_show)

    p = subparsers.add_parser("search", help="search names, aliases, tags and card text",
                              description="Find models whose name, aliases, tags or card text contain every word.")
    p.add_argument("text", nargs="+")
    p.set_defaults(handler=_search)

    p = subparsers.add_parser("cards", help="build things from the cards")
    cards = p.add_subparsers(dest="cards_command", metavar="COMMAND", required=True)
    b = cards.add_parser("build", help="write the static gallery site (index, Pareto plots, one page per card)")
    b.add_argument("out_dir")
    b.set_defaults(handler=_cards_build)


# -- list --------------------------------------------------------------------------------------------------------
def _list(args: argparse.Namespace) -> int:
    if args.hub is not None:
        return _list_hub(args.hub or None, as_json=args.json)
    from razorzoo.zoo.registry import get_card, list_models, pareto_front

    if args.sort is not None and args.sort not in COLUMNS:
        raise CLIError(f"--sort {safe_repr(args.sort)}: unknown column; columns: {', '.join(COLUMNS)}"
                       f"{did_you_mean(args.sort, list(COLUMNS))}")
    filters = [_where(expr) for expr in args.where]  # all checked before any card is read
    axes = _pareto_axes(args.pareto) if args.pareto is not None else None
    rows = [get_card(name).summary() for name in list_models(args.pattern, task=args.task)]
    rows = [row for row in rows if all(keep(row) for keep in filters)]
    if axes is not None:
        rows = pareto_front(rows, *axes)
    if args.sort:
        present = [r for r in rows if r[args.sort] is not None]
        missing = [r for r in rows if r[args.sort] is None]  # rows without the value go last either way
        rows = sorted(present, key=lambda r: r[args.sort], reverse=args.reverse) + missing
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no models match{_hint(args.pattern)}", file=sys.stderr)
        return 1
    else:
        print(format_table(rows, _visible_columns(rows)))
    return 0


def _hint(pattern: str) -> str:
    """For a name that matches nothing: the names it resembles (a plain prefix such as ``yolov6`` is no pattern)."""
    from razorzoo.zoo.registry import all_cards

    if pattern == "*" or any(c in pattern for c in "*?["):
        return ""
    names = {spelling: card.name for card in all_cards() for spelling in (card.name, *card.aliases)}
    close = did_you_mean(pattern, names)
    return f" {safe_repr(pattern)}{close} (patterns take wildcards: '{pattern}*')" if close else ""


def _where(expr: str) -> Callable[[dict[str, Any]], bool]:
    """The row filter of one ``--where COLUMN OP VALUE``; numeric values must be finite (``nan`` compares false
    with everything, so ``params>nan`` would silently match nothing)."""
    match = _WHERE.match(expr) if len(expr) <= 200 else None
    if match is None:
        raise CLIError(f"cannot parse --where {safe_repr(expr)}; write COLUMN OP VALUE, e.g. 'box_ap>40' "
                       f"(OP: {', '.join(_OPS)})")
    column, op, value = match.groups()
    if column not in COLUMNS:
        raise CLIError(f"--where {safe_repr(expr)}: unknown column {safe_repr(column)}; "
                       f"columns: {', '.join(COLUMNS)}{did_you_mean(column, list(COLUMNS))}")
    if column in NUMERIC:
        target: Any = check_number(value, f"--where {safe_repr(expr)}: the value for {column}")
    elif op in ("=", "==", "!="):
        target = value.strip("'\"")
    else:
        raise CLIError(f"--where {safe_repr(expr)}: {column} is text; only =, == and != apply")
    compare = _OPS[op]
    return lambda row: row[column] is not None and compare(row[column], target)


def _pareto_axes(spec: str) -> tuple[str, str]:
    axes = [a.strip() for a in spec.split(",")]
    if len(axes) != 2 or any(a not in NUMERIC for a in axes):
        raise CLIError(f"--pareto {safe_repr(spec)}: give two numeric columns X,Y (minimize X, maximize Y) from "
                       f"{', '.join(NUMERIC)}, e.g. 'flops,box_ap'")
    return axes[0], axes[1]


def _visible_columns(rows: list[dict[str, Any]]) -> list[str]:
    """All columns that hold a value in at least one row (a detector-only list needs no top-1 column)."""
    return [c for c in COLUMNS if any(row.get(c) is not None for row in rows)]


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """An aligned plain-text table; numbers right-aligned, missing values as '-', control characters removed."""
    def cell(row: dict[str, Any], column: str) -> str:
        value = row.get(column)
        if value is None:
            return "-"
        fmt = COLUMNS[column][1] if column in COLUMNS else str
        text = fmt(value) if not isinstance(value, (list, dict)) else json.dumps(value)
        return " ".join(terminal_safe(text).split())  # cells come from cards and Hub listings: no escapes, one line

    headers = [COLUMNS[c][0] if c in COLUMNS else c for c in columns]
    body = [[cell(row, c) for c in columns] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
    right = [c in NUMERIC for c in columns]

    def line(cells: list[str]) -> str:
        return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(cells, widths, right)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, body)])


def _list_hub(author: str | None, *, as_json: bool) -> int:
    from razorzoo.storage.hub import list_hub_models

    models = list_hub_models(author)
    if as_json:
        print(json.dumps(models, indent=2, default=str))
    elif not models:
        print(f"no razorzoo models on the Hub{f' for {safe_repr(author)}' if author else ''}", file=sys.stderr)
        return 1
    else:
        columns = [c for c in ("id", "task", "family", "base", "downloads", "likes", "last_modified")
                   if any(m.get(c) is not None for m in models)]
        print(format_table(models, columns))
    return 0


# -- show --------------------------------------------------------------------------------------------------------
def _show(args: argparse.Namespace) -> int:
    if args.name.startswith("hf-hub:"):
        from razorzoo.storage.hub import load_hub_card

        card = load_hub_card(args.name)
    else:
        from razorzoo.zoo.registry import get_card

        card = get_card(args.name)
    if args.raw and card.path is not None:
        print(terminal_safe(card.path.read_text(encoding="utf-8")), end="")
        return 0
    from razorzoo.zoo.render import Style, render_card

    print(render_card(card, Style(sys.stdout.isatty() and "NO_COLOR" not in os.environ)))
    return 0


# -- search ------------------------------------------------------------------------------------------------------
def _search(args: argparse.Namespace) -> int:
    from razorzoo.zoo.registry import all_cards

    words = [w.lower() for w in args.text]
    hits = []
    for card in all_cards():
        fields = {"name": card.name, "alias": " ".join(card.aliases), "tag": " ".join(card.tags), "card": card.body}
        lowered = {k: v.lower() for k, v in fields.items()}
        if all(any(w in v for v in lowered.values()) for w in words):
            where = [k for k, v in lowered.items() if any(w in v for w in words)]
            hits.append({"name": card.name, "task": card.task, "matched in": ", ".join(where),
                         "context": _snippet(card.body, words[0]) or card.description[:60]})
    if not hits:
        names = {spelling: card.name for card in all_cards() for spelling in (card.name, *card.aliases)}
        close = "".join(did_you_mean(word, names) for word in args.text[:1])
        print(f"no model matches {safe_repr(' '.join(args.text))}{close}", file=sys.stderr)
        return 1
    print(format_table(hits, ["name", "task", "matched in", "context"]))
    return 0


def _snippet(text: str, word: str, radius: int = 30) -> str:
    flat = " ".join(text.split())
    at = flat.lower().find(word)
    if at < 0:
        return ""
    start, end = max(0, at - radius), min(len(flat), at + len(word) + radius)
    return ("…" if start else "") + flat[start:end] + ("…" if end < len(flat) else "")


# -- cards build -------------------------------------------------------------------------------------------------
def _cards_build(args: argparse.Namespace) -> int:
    from razorzoo.zoo.gallery import build_gallery

    index = build_gallery(args.out_dir)
    print(f"wrote {index}")
    return 0
