"""Run the Python snippets of a Markdown document as a reader would: in order, sharing their names, statement by
statement, and hold each statement to what its comment promises.

* a statement whose comment names an exception (``get_card("atentive_a6")   # UnknownModelError: ...``) must raise
  it;
* an expression whose trailing comment (or the comment lines right after it) is a Python literal
  (``bb.out_channels, bb.strides   # (40, 112, 160), (8, 16, 32)``) must evaluate to that literal;
* every other statement must simply run.

Placeholders a reader fills in (``<commit>``) are replaced by the caller, each replacement stated and required to
apply, so a changed snippet cannot silently escape the test.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```", re.S | re.M)
_RAISES = re.compile(r"#\s*([A-Z]\w*(?:Error|Exception))\b")


@dataclass
class Report:
    snippets: int = 0
    statements: int = 0
    raised_as_promised: int = 0
    values_checked: int = 0


def python_blocks(path: Path) -> list[str]:
    return [match.group(1) for match in _BLOCK.finditer(path.read_text(encoding="utf-8"))]


def substitute(blocks: list[str], replacements: list[tuple[str, str]]) -> list[str]:
    """Apply ``(old, new)`` replacements; each must match in exactly one snippet, exactly once."""
    blocks = list(blocks)
    for old, new in replacements:
        hits = [i for i, block in enumerate(blocks) if old in block]
        assert len(hits) == 1 and blocks[hits[0]].count(old) == 1, f"replacement {old!r} must apply exactly once"
        blocks[hits[0]] = blocks[hits[0]].replace(old, new)
    return blocks


def _literal(comment: str) -> Any:
    """The Python literal a comment holds, or ``None`` (prose, ``...`` elisions)."""
    text = comment.strip()
    if not text or "..." in text:
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None


def run_blocks(blocks: list[str], namespace: dict[str, Any], where: str) -> Report:
    report = Report()
    for number, block in enumerate(blocks, start=1):
        lines = block.splitlines()
        tree = ast.parse(block, filename=f"{where} snippet {number}")
        for i, statement in enumerate(tree.body):
            source = lines[statement.lineno - 1:statement.end_lineno]
            comments = [line.split("#", 1)[1] for line in source if "#" in line]
            following = []  # whole-line comments right after the statement
            end = tree.body[i + 1].lineno - 1 if i + 1 < len(tree.body) else len(lines)
            for line in lines[statement.end_lineno:end]:
                if line.strip().startswith("#"):
                    following.append(line.strip()[1:])
            code = compile(ast.Module([statement], type_ignores=[]), f"{where} snippet {number}", "exec")
            context = f"{where} snippet {number}, line {statement.lineno}: {source[0].strip()}"
            raises = next((m.group(1) for c in comments for m in [_RAISES.search("#" + c)] if m), None)
            report.statements += 1
            if raises is not None:
                try:
                    exec(code, namespace)
                except Exception as exc:  # noqa: BLE001 - the comment names which one
                    assert raises in {type(exc).__name__, *(k.__name__ for k in type(exc).__mro__)}, \
                        f"{context}: raised {type(exc).__name__}, the comment promises {raises}"
                    report.raised_as_promised += 1
                    continue
                raise AssertionError(f"{context}: the comment promises {raises}, nothing was raised")
            expected = None
            if isinstance(statement, ast.Expr):
                candidates = [comments[-1]] if comments else []
                candidates.append(" ".join(following))
                expected = next((v for v in map(_literal, candidates) if v is not None), None)
            if expected is not None:
                value = eval(compile(ast.Expression(statement.value), context, "eval"), namespace)
                assert value == expected, f"{context}: gives {value!r}, the comment says {expected!r}"
                report.values_checked += 1
            else:
                try:
                    exec(code, namespace)
                except Exception as exc:
                    raise AssertionError(f"{context}: {type(exc).__name__}: {exc}") from exc
        report.snippets += 1
    return report
