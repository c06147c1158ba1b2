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
import textwrap
from typing import Any, Callable

from razorzoo.cli import CLIError

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
    p.add_argument("--task", choices=("classification", "detection", "supernet"))
    p.add_argument("--sort", metavar="KEY", choices=tuple(COLUMNS), help="sort by a column (ascending)")
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

    rows = [get_card(name).summary() for name in list_models(args.pattern, task=args.task)]
    for expr in args.where:
        rows = [row for row in rows if _where(expr)(row)]
    if args.pareto:
        x, y = _pareto_axes(args.pareto)
        rows = pareto_front(rows, x, y)
    if args.sort:
        present = [r for r in rows if r[args.sort] is not None]
        missing = [r for r in rows if r[args.sort] is None]  # rows without the value go last either way
        rows = sorted(present, key=lambda r: r[args.sort], reverse=args.reverse) + missing
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no models match", file=sys.stderr)
        return 1
    else:
        print(format_table(rows, _visible_columns(rows)))
    return 0


def _where(expr: str) -> Callable[[dict[str, Any]], bool]:
    match = _WHERE.match(expr)
    if match is None:
        raise CLIError(f"cannot parse --where {expr!r}; write COLUMN OP VALUE, e.g. 'box_ap>40' "
                       f"(OP: {', '.join(_OPS)})")
    column, op, value = match.groups()
    if column not in COLUMNS:
        raise CLIError(f"--where {expr!r}: unknown column {column!r}; columns: {', '.join(COLUMNS)}")
    if column in NUMERIC:
        try:
            target: Any = float(value)
        except ValueError:
            raise CLIError(f"--where {expr!r}: {column} is numeric, {value!r} is not a number") from None
    elif op in ("=", "==", "!="):
        target = value.strip("'\"")
    else:
        raise CLIError(f"--where {expr!r}: {column} is text; only =, == and != apply")
    compare = _OPS[op]
    return lambda row: row[column] is not None and compare(row[column], target)


def _pareto_axes(spec: str) -> tuple[str, str]:
    axes = [a.strip() for a in spec.split(",")]
    if len(axes) != 2 or any(a not in NUMERIC for a in axes):
        raise CLIError(f"--pareto {spec!r}: give two numeric columns X,Y (minimize X, maximize Y) from "
                       f"{', '.join(NUMERIC)}, e.g. 'flops,box_ap'")
    return axes[0], axes[1]


def _visible_columns(rows: list[dict[str, Any]]) -> list[str]:
    """All columns that hold a value in at least one row (a detector-only list needs no top-1 column)."""
    return [c for c in COLUMNS if any(row.get(c) is not None for row in rows)]


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """An aligned plain-text table; numbers right-aligned, missing values as '-'."""
    def cell(row: dict[str, Any], column: str) -> str:
        value = row.get(column)
        if value is None:
            return "-"
        fmt = COLUMNS[column][1] if column in COLUMNS else str
        return fmt(value) if not isinstance(value, (list, dict)) else json.dumps(value)

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
        print(f"no razorzoo models on the Hub{f' for {author!r}' if author else ''}", file=sys.stderr)
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
        print(card.path.read_text(encoding="utf-8"), end="")
        return 0
    style = _Style(sys.stdout.isatty() and "NO_COLOR" not in os.environ)
    print(render_card(card, style))
    return 0


class _Style:
    """ANSI styling when printing to a terminal, plain text otherwise (pipes, tests, NO_COLOR)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def _wrap(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def accent(self, text: str) -> str:
        return self._wrap("36", text)


def key_facts(card) -> list[tuple[str, str]]:
    """(label, value) pairs for the header of ``razorzoo show`` and the gallery's card pages."""
    meta = card.meta
    facts = [("task", card.task + (f" (recipe {card.recipe})" if card.recipe else "")), ("family", card.family)]
    if card.aliases:
        facts.append(("aliases", ", ".join(card.aliases)))
    for key in ("algorithm", "search_space"):
        if meta.get(key):
            facts.append((key.replace("_", " "), str(meta[key])))
    if card.num_params:
        facts.append(("params", f"{card.num_params / 1e6:.3f} M ({card.num_params:,})"))
    if card.flops:
        shape = "x".join(map(str, card.flops_input))
        facts.append(("FLOPs", f"{card.flops / 1e9:.3f} G multiply-accumulates at {shape}"))
    if meta.get("input_size"):
        resolution = meta.get("resolution")
        resized = f" (resized inside the model to {resolution})" if resolution and resolution != meta["input_size"] else ""
        facts.append(("input", f"{meta['input_size']}{resized}"))
    for metric, label in (("top1", "top-1"), ("top5", "top-5"), ("box_ap", "box AP")):
        if metric in card.metrics:
            source = (meta.get("provenance") or {}).get("metrics_source")
            facts.append((label, f"{card.metrics[metric]}" + (f"  ({source})" if source else "")))
    if card.front_matter.get("license"):
        facts.append(("license", str(card.front_matter["license"])))
    for label, ref in (("subnet", card.subnet), ("weights", card.weights)):
        if ref is not None:
            details = [f"sha256 {ref.sha256}" if ref.sha256 else "no published hash"]
            if ref.layout:
                details.append(f"layout {ref.layout}")
            if ref.extract_from:
                details.append(f"sliced from {ref.extract_from}")
            facts.append((label, f"{ref.url or ref.file}  ({', '.join(details)})"))
    return facts


def render_card(card, style: _Style | None = None) -> str:
    """A card as terminal text: title, key facts, then the prose with Markdown lightly rendered."""
    style = style or _Style(False)
    title = f"{card.name}  ·  {card.task}  ·  {card.family}"
    facts = key_facts(card)
    width = max(len(label) for label, _ in facts)
    lines = [style.bold(title), "=" * len(title), ""]
    for label, value in facts:
        lines.append(f"  {style.accent(label.ljust(width))}  {value}")
    lines.append("")
    lines.extend(render_markdown(card.body, style))
    return "\n".join(lines).rstrip() + "\n"


_INLINE = [
    (re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)"), lambda m, s: f"{m.group(1)} <{m.group(2)}>"),
    (re.compile(r"\*\*([^*]+)\*\*"), lambda m, s: s.bold(m.group(1))),
    (re.compile(r"`([^`]+)`"), lambda m, s: s.accent(m.group(1))),
]


def _inline(text: str, style: _Style) -> str:
    for pattern, repl in _INLINE:
        text = pattern.sub(lambda m: repl(m, style), text)
    return text


def render_markdown(markdown: str, style: _Style, width: int = 100) -> list[str]:
    """Headings in bold, paragraphs and list items re-wrapped, code blocks indented, tables kept as written."""
    lines: list[str] = []
    in_code = False
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            text = " ".join(paragraph)
            bullet = re.match(r"^([-*]|\d+\.) ", text)
            indent = " " * len(bullet.group(0)) if bullet else ""
            lines.extend(_inline(l, style) for l in textwrap.wrap(text, width, subsequent_indent=indent))
            paragraph.clear()

    for raw in markdown.splitlines():
        if raw.startswith("```"):
            flush()
            in_code = not in_code
            continue
        if in_code:
            lines.append("    " + style.dim(raw))
        elif raw.startswith("#"):
            flush()
            heading = raw.lstrip("#").strip()
            lines.extend(["", style.bold(heading.upper() if raw.startswith("# ") else heading)])
        elif not raw.strip():
            flush()
            lines.append("")
        elif raw.startswith("|"):
            flush()
            lines.append(raw)
        elif re.match(r"^\s*([-*]|\d+\.) ", raw):
            flush()
            paragraph.append(raw.strip())
        else:
            paragraph.append(raw.strip())
    flush()
    out: list[str] = []
    for line in lines:  # collapse runs of blank lines
        if line or (out and out[-1]):
            out.append(line)
    return out


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
        print(f"no model matches {' '.join(args.text)!r}", file=sys.stderr)
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
