"""How counts read in messages: ``count(1, "file")`` is "1 file", ``count(2, "file")`` "2 files".

At the bottom of the layers (no imports), so every module that prints or raises can use it.
"""
from __future__ import annotations

__all__ = ["count", "plural"]

_IRREGULAR = {"entry": "entries", "class": "classes", "process": "processes", "match": "matches"}


def plural(n: int, noun: str) -> str:
    """``noun`` as it reads after the number ``n``: singular for exactly 1 (and -1), plural otherwise."""
    if abs(n) == 1:
        return noun
    return _IRREGULAR.get(noun, noun + "s")


def count(n: int, noun: str) -> str:
    """``"<n> <noun>"`` with the noun in the right number: ``count(0, "detection")`` is "0 detections"."""
    return f"{n} {plural(n, noun)}"
