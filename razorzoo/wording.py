"""How messages read: counts in the right number (``count(1, "file")`` is "1 file", ``count(2, "file")`` "2 files")
and the names a mistyped one probably meant (``close_matches("yolov6", names)``).

Beside :mod:`razorzoo.bounded` in the layers: a suggested name may come from a file razorzoo did not write (a card, an
index), so it is quoted with :func:`~razorzoo.bounded.safe_repr`.
"""
from __future__ import annotations

import difflib
from typing import Callable, Iterable, Mapping, Sequence, TypeVar

from razorzoo.bounded import safe_repr

__all__ = ["count", "plural", "first_few", "close_matches", "did_you_mean"]

T = TypeVar("T")

_IRREGULAR = {"entry": "entries", "class": "classes", "process": "processes", "match": "matches"}


def plural(n: int, noun: str) -> str:
    """``noun`` as it reads after the number ``n``: singular for exactly 1 (and -1), plural otherwise."""
    if abs(n) == 1:
        return noun
    return _IRREGULAR.get(noun, noun + "s")


def count(n: int, noun: str) -> str:
    """``"<n> <noun>"`` with the noun in the right number: ``count(0, "detection")`` is "0 detections"."""
    return f"{n} {plural(n, noun)}"


def first_few(items: Sequence[T], describe: Callable[[T], str] = safe_repr, limit: int = 5) -> str:
    """The first ``limit`` items described and joined with commas, then how many more: ``"'a.jpg', 'b.jpg' and 3
    more"``. A message names a few of a list of any length and counts the rest, so its length stays bounded."""
    shown = ", ".join(describe(item) for item in items[:limit])
    return f"{shown} and {len(items) - limit} more" if len(items) > limit else shown


def close_matches(word: str, choices: "Iterable[str] | Mapping[str, str]", n: int = 3) -> list[str]:
    """The ``choices`` a mistyped ``word`` probably meant, best first, case-insensitively: those it begins (a prefix
    such as ``yolov6`` of ``yolov6s-attentive_a6``), those it is part of, then difflib's close spellings.

    ``choices`` may map spellings (aliases) to what they name: the spellings are matched, the names returned once.
    """
    names = dict(choices) if isinstance(choices, Mapping) else {choice: choice for choice in choices}
    by_lower = {spelling.lower(): name for spelling, name in names.items()}
    word = word.lower()
    found = []
    if len(word) >= 3:  # "a" or "s" is part of nearly every name: no hint rather than a random one
        found += [name for lower, name in by_lower.items() if lower.startswith(word)]
        found += [name for lower, name in by_lower.items() if word in lower]
    found += [by_lower[m] for m in difflib.get_close_matches(word, list(by_lower), n=max(n, 1) * 3, cutoff=0.5)]
    return list(dict.fromkeys(found))[:n]


def did_you_mean(word: str, choices: "Iterable[str] | Mapping[str, str]", n: int = 3) -> str:
    """``"; did you mean 'a', 'b'?"`` for :func:`close_matches`, or ``""`` when nothing is close."""
    close = close_matches(word, choices, n)
    return f"; did you mean {', '.join(safe_repr(c) for c in close)}?" if close else ""
