"""Edit a card's file hashes in place: the one writer of card files (the maintainer recipe
``conversion/convert_zoo.py`` records the full hashes of downloaded files; ``razorzoo mirror`` writes card copies
whose hashes are those of the demo files it serves)."""
from __future__ import annotations

import os
import re
from pathlib import Path

from razorzoo.errors import CardError
from razorzoo.zoo.registry import parse_card

__all__ = ["set_card_hashes"]

_SHA_LINE = re.compile(r"^(?P<lead>\s*sha256:[ \t]*)(?P<value>[^#\r\n]*?)(?P<tail>[ \t]*(?:#.*)?)$")


def set_card_hashes(card_path: str | os.PathLike, hashes: dict[str, str]) -> bool:
    """Set ``razorzoo.<entry>.sha256`` for each ``entry`` (``"subnet"``, ``"weights"``) in ``hashes``; edit nothing
    else. Returns whether the file changed."""
    path = Path(card_path)
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    end = next(i for i, line in enumerate(lines) if i > 0 and line.rstrip() == "---")  # front matter ends here
    block, block_indent, razorzoo_indent = None, -1, None
    done = set()
    for i, line in enumerate(lines[1:end], start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        if razorzoo_indent is None:
            if stripped == "razorzoo:":
                razorzoo_indent = indent
            continue
        if indent <= razorzoo_indent:
            break  # left the razorzoo block
        key = stripped.split(":", 1)[0]
        if block is not None and indent <= block_indent:
            block = None
        if block is None and key in hashes and stripped.endswith(":"):
            block, block_indent = key, indent
        elif block is not None and key == "sha256" and indent > block_indent:
            match = _SHA_LINE.match(line.rstrip("\r\n"))
            newline = line[len(line.rstrip("\r\n")):]
            lines[i] = f"{match['lead']}{hashes[block]}{match['tail']}{newline}"
            done.add(block)
    if done != set(hashes):
        raise CardError(f"{path}: no sha256 line found under razorzoo.{', razorzoo.'.join(sorted(set(hashes) - done))}")
    new = "".join(lines)
    card = parse_card(new, source=str(path))  # the edited card must still be valid and say what we wrote
    wrong = [entry for entry, sha in hashes.items() if getattr(card, entry).sha256 != sha]
    if wrong:
        raise CardError(f"{path}: editing razorzoo.{', razorzoo.'.join(wrong)}.sha256 did not take; edit by hand")
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text
