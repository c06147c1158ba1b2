"""Cards for people: one Markdown reader, written out as HTML (the gallery) or as terminal text (``razorzoo show``).

Cards use a small Markdown subset (headings, paragraphs, lists, fenced code, pipe tables, inline code, links,
emphasis). :func:`markdown_blocks` splits a card body into blocks once; :func:`markdown_to_html` and
:func:`markdown_to_terminal` only decide how each block looks. Card text is untrusted (``RAZORZOO_CARDS``, Hub
READMEs): the HTML writer escapes everything before adding markup, and the terminal writer strips escape sequences
and control characters (:func:`razorzoo.bounded.terminal_safe`) before adding its own styling.
"""
from __future__ import annotations

import html
import re
import textwrap
from dataclasses import dataclass

from razorzoo.bounded import terminal_safe
from razorzoo.zoo.facts import key_facts
from razorzoo.zoo.registry import Card

__all__ = ["Block", "Style", "markdown_blocks", "markdown_to_html", "inline_html", "markdown_to_terminal",
           "render_card"]

_LIST_ITEM = re.compile(r"^\s*([-*]|\d+\.) ")
_BLOCK_START = re.compile(r"^(#{1,6} |```|\||\s*([-*]|\d+\.) )")


@dataclass(frozen=True)
class Block:
    """One Markdown block. ``text``: the title (heading), the joined text (paragraph), the items (list), the lines
    (code, table)."""

    kind: str  # "heading", "paragraph", "list", "code" or "table"
    text: tuple[str, ...]
    level: int = 0  # heading level
    ordered: bool = False  # list
    language: str = ""  # code


def markdown_blocks(markdown: str) -> list[Block]:
    """Split Markdown into blocks; blank lines only separate them."""
    blocks: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            start = i + 1
            i = start
            while i < len(lines) and not lines[i].startswith("```"):
                i += 1
            blocks.append(Block("code", tuple(lines[start:i]), language=line[3:].strip()))
            i += 1
        elif re.match(r"^#{1,6} ", line):
            blocks.append(Block("heading", (line.lstrip("#").strip(),), level=len(line) - len(line.lstrip("#"))))
            i += 1
        elif line.startswith("|"):
            start = i
            while i < len(lines) and lines[i].startswith("|"):
                i += 1
            blocks.append(Block("table", tuple(lines[start:i])))
        elif _LIST_ITEM.match(line):
            items: list[str] = []
            while i < len(lines) and lines[i].strip():
                if _LIST_ITEM.match(lines[i]):
                    items.append(_LIST_ITEM.sub("", lines[i]).strip())
                else:
                    items[-1] += " " + lines[i].strip()
                i += 1
            blocks.append(Block("list", tuple(items), ordered=bool(re.match(r"^\s*\d+\. ", line))))
        elif not line.strip():
            i += 1
        else:
            paragraph = []
            while i < len(lines) and lines[i].strip() and not _BLOCK_START.match(lines[i]):
                paragraph.append(lines[i].strip())
                i += 1
            blocks.append(Block("paragraph", (" ".join(paragraph),)))
    return blocks


# -- HTML --------------------------------------------------------------------------------------------------------
_LINK = re.compile(r"\[([^\]]+)\]\((https?://[^)\s\"]+)\)")
_BARE_URL = re.compile(r"(?<![\"=>])\b(https://[^\s<)\"]+)")


def inline_html(text: str) -> str:
    """Escape, then apply code spans, links (http/https only), bold and italics."""
    out, last = [], 0
    for match in re.finditer(r"`([^`]+)`", text):  # code spans are escaped verbatim, no further markup
        out.append(_inline_markup(text[last:match.start()]))
        out.append(f"<code>{html.escape(match.group(1))}</code>")
        last = match.end()
    out.append(_inline_markup(text[last:]))
    return "".join(out)


def _inline_markup(text: str) -> str:
    text = html.escape(text, quote=True)
    text = _LINK.sub(lambda m: f"<a href=\"{m.group(2)}\">{m.group(1)}</a>", text)
    text = _BARE_URL.sub(lambda m: f"<a href=\"{m.group(1)}\">{m.group(1)}</a>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"<em>\1</em>", text)


def markdown_to_html(markdown: str) -> str:
    """The card subset of Markdown as HTML. Raw HTML in the input is escaped, never passed through."""
    out = []
    for block in markdown_blocks(markdown):
        if block.kind == "code":
            cls = f" class=\"language-{html.escape(block.language)}\"" if block.language else ""
            out.append(f"<pre><code{cls}>{html.escape(chr(10).join(block.text))}</code></pre>")
        elif block.kind == "heading":
            level = min(block.level + 1, 6)  # the page's <h1> is the model name
            out.append(f"<h{level}>{inline_html(block.text[0])}</h{level}>")
        elif block.kind == "table":
            table = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block.text]
            rows = [r for r in table if not all(re.fullmatch(r":?-{3,}:?", c) for c in r)]
            head = "".join(f"<th>{inline_html(c)}</th>" for c in rows[0])
            body = "".join("<tr>" + "".join(f"<td>{inline_html(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif block.kind == "list":
            tag = "ol" if block.ordered else "ul"
            out.append(f"<{tag}>" + "".join(f"<li>{inline_html(item)}</li>" for item in block.text) + f"</{tag}>")
        else:
            out.append(f"<p>{inline_html(block.text[0])}</p>")
    return "\n".join(out)


# -- terminal ----------------------------------------------------------------------------------------------------
class Style:
    """ANSI styling when printing to a terminal, plain text otherwise (pipes, tests, ``NO_COLOR``)."""

    def __init__(self, enabled: bool = False) -> None:
        self.enabled = enabled

    def _wrap(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def accent(self, text: str) -> str:
        return self._wrap("36", text)


_INLINE_TERMINAL = [
    (re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)"), lambda m, s: f"{m.group(1)} <{m.group(2)}>"),
    (re.compile(r"\*\*([^*]+)\*\*"), lambda m, s: s.bold(m.group(1))),
    (re.compile(r"`([^`]+)`"), lambda m, s: s.accent(m.group(1))),
]


def _inline_terminal(text: str, style: Style) -> str:
    for pattern, repl in _INLINE_TERMINAL:
        text = pattern.sub(lambda m: repl(m, style), text)
    return text


def markdown_to_terminal(markdown: str, style: Style, width: int = 100) -> list[str]:
    """Headings in bold, paragraphs and list items re-wrapped, code blocks indented, tables kept as written; every
    escape sequence of the input removed first."""
    lines: list[str] = []
    for block in markdown_blocks(terminal_safe(markdown)):
        if block.kind == "code":
            lines.extend("    " + style.dim(line) for line in block.text)
        elif block.kind == "heading":
            lines.append(style.bold(block.text[0].upper() if block.level == 1 else block.text[0]))
        elif block.kind == "table":
            lines.extend(block.text)
        elif block.kind == "list":
            for n, item in enumerate(block.text, start=1):
                bullet = f"{n}. " if block.ordered else "- "
                wrapped = textwrap.wrap(bullet + item, width, subsequent_indent=" " * len(bullet))
                lines.extend(_inline_terminal(line, style) for line in wrapped)
        else:
            lines.extend(_inline_terminal(line, style) for line in textwrap.wrap(block.text[0], width))
        lines.append("")
    return lines[:-1]


def render_card(card: Card, style: Style | None = None) -> str:
    """A card as terminal text: title, key facts, then the prose; nothing from the card reaches the terminal
    unfiltered."""
    style = style or Style(False)
    title = terminal_safe(f"{card.name}  ·  {card.task}  ·  {card.family}")
    facts = [(label, " ".join(terminal_safe(value).split())) for label, value in key_facts(card)]
    width = max(len(label) for label, _ in facts)
    lines = [style.bold(title), "=" * len(title), ""]
    lines.extend(f"  {style.accent(label.ljust(width))}  {value}" for label, value in facts)
    lines.append("")
    lines.extend(markdown_to_terminal(card.body, style))
    return "\n".join(lines).rstrip() + "\n"
