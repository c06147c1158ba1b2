"""Documents from outside (JSON files, JSON metadata), read into typed values through one bounded reader.

Every JSON document razorzoo did not just write itself (COCO annotations, device profiles, search states, ONNX and
safetensors metadata, the Hub's answers) is read by :func:`read_json_file` or :func:`razorzoo.bounded.load_json` (a size cap, nesting
bounded by the parser's recursion limit, no ``NaN``/``Infinity``), then taken apart field by field with
:class:`Fields`: each accessor checks one field's type and range and returns a plain Python value, so a schema is a
short function that reads like the document's description. A failure is one :class:`~razorzoo.bounded.InputError`
line (or the caller's error type) naming the document, the field path (``images[3].width``) and the expected form.

Why hand-written accessors and not pydantic or msgspec: razorzoo's documents are few and small, the accessors are
about a hundred lines on top of :mod:`razorzoo.bounded` (whose quoting and number checks they reuse), they add no
dependency to a package that must import nothing heavy for ``razorzoo list``, and their messages follow razorzoo's
one-line form (what, where, what to do) instead of a library's validation report.
"""
from __future__ import annotations

import os
import re
from typing import Any, Callable, Iterator, Sequence

from razorzoo.bounded import InputError, check_number, load_json, read_text, safe_repr

__all__ = ["MAX_JSON_BYTES", "read_json_file", "Fields", "PRINTABLE"]

MAX_JSON_BYTES = 64 << 20  # a profile, a search state, metadata: kilobytes; COCO files pass their own cap
PRINTABLE = re.compile(r"[^\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]*")  # no controls, bidi
_MISSING = object()


def read_json_file(path: str | os.PathLike, *, what: str, error: type[Exception] = InputError,
                   limit: int = MAX_JSON_BYTES) -> Any:
    """:func:`~razorzoo.bounded.load_json` of a regular file of at most ``limit`` bytes (a fifo, a device or a 50 GB file costs one
    ``stat`` and one bounded read)."""
    return load_json(read_text(path, what=what, error=error, limit=limit), what=what, error=error)


class Fields:
    """One JSON object of a document, read field by field. ``where`` is the object's path in the document
    (``""`` for the top level, ``"images[3]"``...); every error names ``what`` (the document) and the field."""

    def __init__(self, value: Any, what: str, where: str = "", *, error: type[Exception] = InputError) -> None:
        self.what, self.where, self.error = what, where, error
        if not isinstance(value, dict):
            raise self._error(where or "the top level", "an object", value)
        self.value = value

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _error(self, path: str, expected: str, value: Any = _MISSING) -> Exception:
        found = "it is missing" if value is _MISSING else f"not {safe_repr(value)}"
        return self.error(f"{self.what}: {path} must be {expected}, {found}")

    def has(self, key: str) -> bool:
        return self.value.get(key) is not None

    def _get(self, key: str, default: Any, expected: str) -> Any:
        value = self.value.get(key, _MISSING)
        if value is _MISSING or value is None:
            if default is _MISSING:
                raise self._error(self._path(key), expected)
            return _MISSING
        return value

    def int(self, key: str, *, minimum: int | None = None, maximum: int | None = None,
            default: Any = _MISSING) -> int:
        """An integer in range (``16.0`` and ``true`` are not integers)."""
        expected = "an integer" + _range(minimum, maximum)
        value = self._get(key, default, expected)
        if value is _MISSING:
            return default
        if type(value) is not int or (minimum is not None and value < minimum) or (
                maximum is not None and value > maximum):
            raise self._error(self._path(key), expected, value)
        return value

    def number(self, key: str, *, minimum: float | None = None, maximum: float | None = None,
               default: Any = _MISSING) -> float:
        """A finite number in range, as a float (integers are numbers too)."""
        expected = "a finite number" + _range(minimum, maximum)
        value = self._get(key, default, expected)
        if value is _MISSING:
            return default
        return self._number(value, self._path(key), minimum, maximum, expected)

    def _number(self, value: Any, path: str, minimum: float | None, maximum: float | None, expected: str) -> float:
        if type(value) not in (int, float):  # "12" is text in a document (check_number takes it from a command line)
            raise self._error(path, expected, value)
        try:
            return float(check_number(value, path, minimum=minimum, maximum=maximum))
        except InputError:
            raise self._error(path, expected, value) from None

    def text(self, key: str, *, max_chars: int = 1024, choices: Sequence[str] | None = None,
             pattern: re.Pattern | None = None, default: Any = _MISSING, form: str = "") -> str:
        """A string of at most ``max_chars`` printable characters (no control, escape or bidi characters), one of
        ``choices`` or matching all of ``pattern`` when given."""
        expected = (f"one of {', '.join(map(repr, choices))}" if choices is not None
                    else form or f"a string of at most {max_chars} printable characters")
        value = self._get(key, default, expected)
        if value is _MISSING:
            return default
        if not isinstance(value, str) or len(value) > max_chars or not PRINTABLE.fullmatch(value) or (
                choices is not None and value not in choices) or (pattern is not None and not pattern.fullmatch(value)):
            raise self._error(self._path(key), expected, value)
        return value

    def boolean(self, key: str, *, default: Any = _MISSING) -> bool:
        value = self._get(key, default, "true or false")
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise self._error(self._path(key), "true or false", value)
        return value

    def array(self, key: str, *, max_items: int, min_items: int = 0, default: Any = _MISSING) -> list:
        """A list of ``min_items`` to ``max_items`` raw values (check them with :meth:`numbers`, :meth:`objects`...)."""
        expected = f"a list of {min_items} to {max_items} items" if min_items else f"a list of at most {max_items} items"
        value = self._get(key, default, expected)
        if value is _MISSING:
            return default
        if not isinstance(value, list) or not min_items <= len(value) <= max_items:
            raise self._error(self._path(key), expected, value)
        return value

    def numbers(self, key: str, *, length: int, minimum: float | None = None, maximum: float | None = None) -> list:
        """A list of exactly ``length`` finite numbers in range, as floats."""
        items = self.array(key, max_items=length, min_items=length)
        expected = f"a list of {length} finite numbers{_range(minimum, maximum)}"
        return [self._number(v, f"{self._path(key)}[{i}]", minimum, maximum, expected) for i, v in enumerate(items)]

    def texts(self, key: str, *, max_items: int, max_chars: int = 256, min_items: int = 0) -> list[str]:
        """A list of printable strings (class names, output names)."""
        items = self.array(key, max_items=max_items, min_items=min_items)
        expected = f"a string of at most {max_chars} printable characters"
        for i, item in enumerate(items):
            if not isinstance(item, str) or len(item) > max_chars or not PRINTABLE.fullmatch(item):
                raise self._error(f"{self._path(key)}[{i}]", expected, item)
        return items

    def objects(self, key: str, *, max_items: int, default: Any = _MISSING) -> Iterator["Fields"]:
        """Each item of a list of objects, as :class:`Fields` named ``key[i]``."""
        items = self.array(key, max_items=max_items, default=default)
        if items is default:
            return iter(())
        return (Fields(item, self.what, f"{self._path(key)}[{i}]", error=self.error) for i, item in enumerate(items))

    def object(self, key: str, *, default: Any = _MISSING) -> "Fields":
        value = self._get(key, default, "an object")
        return Fields({} if value is _MISSING else value, self.what, self._path(key), error=self.error)

    def mapping(self, key: str, *, max_items: int, value: Callable[[Any, str], Any],
                max_key_chars: int = 1024, default: Any = _MISSING) -> dict[str, Any]:
        """An object of at most ``max_items`` entries with printable keys; ``value(v, path)`` checks each value."""
        expected = f"an object of at most {max_items} entries"
        raw = self._get(key, default, expected)
        if raw is _MISSING:
            return default
        if not isinstance(raw, dict) or len(raw) > max_items:
            raise self._error(self._path(key), expected, raw)
        out = {}
        for name, item in raw.items():
            if len(name) > max_key_chars or not PRINTABLE.fullmatch(name):
                raise self._error(self._path(key), f"an object whose keys are printable names of at most "
                                                   f"{max_key_chars} characters", name)
            out[name] = value(item, f"{self._path(key)}[{safe_repr(name, 40)}]")
        return out

    def finite(self, value: Any, path: str, *, minimum: float | None = None, maximum: float | None = None) -> float:
        """``value`` (found at ``path``) as a finite float in range: for :meth:`mapping` values."""
        return self._number(value, path, minimum, maximum, "a finite number" + _range(minimum, maximum))

    def fail(self, key: str, expected: str, value: Any) -> Exception:
        """The error for a field that passed its type check but not a rule across fields (raise it); ``value`` is
        what the field holds (never "missing": the field is there)."""
        return self._error(self._path(key), expected, value)


def _range(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in {minimum:g}..{maximum:g}"
    if minimum is not None:
        return f" >= {minimum:g}"
    return f" <= {maximum:g}" if maximum is not None else ""

