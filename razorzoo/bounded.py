"""Bounded handling of untrusted input: YAML parsing, error-message formatting, terminal text, numbers.

Subnet YAMLs, cards, Hub READMEs and command-line values come from strangers. Everything here does a bounded amount
of work whatever it is given: YAML documents are size-, depth- and alias-limited before they become Python objects
(an alias bomb of a few hundred bytes otherwise expands to gigabytes the moment anything walks it); error messages
quote values through :func:`safe_repr`, which never walks a container nor prints more than a few dozen characters;
text shown in a terminal passes :func:`terminal_safe`; numbers pass :func:`check_number`, which refuses NaN and
infinities; JSON passes :func:`load_json`, which survives deep nesting. This module imports only the standard
library and PyYAML.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

try:
    from yaml._yaml import CParser as _CParser
except ImportError:  # PyYAML built without libyaml
    _CParser = None

from razorzoo.errors import RazorzooError

__all__ = ["InputError", "MAX_YAML_BYTES", "MAX_YAML_DEPTH", "safe_repr", "terminal_safe", "read_text", "load_yaml",
           "load_json", "check_number"]

MAX_YAML_BYTES = 1 << 20  # a card or subnet YAML is a few KiB; a MiB leaves room and still parses in milliseconds
MAX_YAML_DEPTH = 32  # cards nest 4 levels deep; deep nesting only serves to exhaust the recursion limit
_MAX_SCALAR_CHARS = 64 * 1024
_REPR_CHARS = 60


class InputError(RazorzooError, ValueError):
    """A value given to razorzoo (a number, a YAML document, a name) is outside what it accepts."""


def safe_repr(value: Any, limit: int = _REPR_CHARS) -> str:
    """A short, single-line, escape-free description of ``value`` for an error message.

    Strings and numbers are quoted with ``repr`` (control characters come out escaped) and cut to ``limit``
    characters; containers are described by type and size, never walked; huge integers by their digit count.
    """
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        if value.bit_length() > 128:
            return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
        return repr(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (str, bytes)):
        text = repr(value[: limit + 1])
        unit = "chars" if isinstance(value, str) else "bytes"
        return text if len(value) <= limit else f"{text[:limit]}... ({len(value)} {unit})"
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        return f"a {type(value).__name__} of {len(value)} item{'s' if len(value) != 1 else ''}"
    return f"a {type(value).__name__}"


# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), other two-byte escapes, then any remaining C0/C1 control
# character except newline and tab, and the Unicode bidi controls that make text display in another order than it
# reads ("Trojan Source").
_TERMINAL_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]|\x9b[0-?]*[ -/]*[@-~]|\x9d[^\x07]*\x07?"
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def terminal_safe(text: str) -> str:
    """``text`` without terminal escape sequences or control characters (newlines and tabs are kept)."""
    return _TERMINAL_ESCAPES.sub("", text)


def read_text(path: str | os.PathLike, *, what: str, error: type[Exception] = InputError,
              limit: int = MAX_YAML_BYTES) -> str:
    """The UTF-8 text of a small file, reading at most ``limit + 1`` bytes (a 50 MB "card" costs one read).

    Failures (missing, not a regular file, too large, not UTF-8) raise ``error`` with one line naming ``what``.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a fifo or a device would block or never end
            raise error(f"{what} is not a regular file")
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise error(f"{what} does not exist") from None
    except OSError as exc:
        raise error(f"{what} cannot be read: {exc.strerror or type(exc).__name__}") from None
    if len(data) > limit:
        raise error(f"{what} is larger than the {limit} bytes allowed")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{what} is not UTF-8 text") from None


class _Limits:
    """Limits shared by both loaders: no aliases, bounded nesting, bounded scalars and integers."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"YAML aliases ('*{str(event.anchor)[:30]}') are not allowed "
                                 f"(line {event.start_mark.line + 1}); write the value out")
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.YAMLError(f"nesting deeper than {MAX_YAML_DEPTH} levels is not allowed")
            return Composer.compose_node(self, parent, index)
        finally:
            self._depth -= 1

    def construct_scalar(self, node: Any) -> Any:
        if isinstance(node.value, str) and len(node.value) > _MAX_SCALAR_CHARS:
            raise yaml.YAMLError(f"a value of {len(node.value)} characters (line {node.start_mark.line + 1}) is "
                                 f"longer than the {_MAX_SCALAR_CHARS} allowed")
        return SafeConstructor.construct_scalar(self, node)

    def construct_yaml_int(self, node: Any) -> int:
        digits = node.value.lstrip("+-0").replace("_", "")
        if len(digits) > 30:
            raise yaml.YAMLError(f"an integer of {len(digits)} digits (line {node.start_mark.line + 1}) is too large")
        return SafeConstructor.construct_yaml_int(self, node)


class _PyBoundedLoader(_Limits, yaml.SafeLoader):
    """``yaml.SafeLoader`` with :class:`_Limits` (pure Python, for PyYAML builds without libyaml)."""


class _CBoundedLoader(_Limits, *((_CParser,) if _CParser else ()), SafeConstructor, Resolver):  # type: ignore[misc]
    """libyaml's scanner and parser (8x faster; ``razorzoo list`` parses every card) with PyYAML's composer, which
    is where :class:`_Limits` hooks in: libyaml's own composer would expand aliases unseen."""

    def __init__(self, stream: str) -> None:
        _CParser.__init__(self, stream)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.anchors: dict[str, Any] = {}

    check_node = Composer.check_node
    get_node = Composer.get_node
    get_single_node = Composer.get_single_node
    compose_document = Composer.compose_document
    compose_scalar_node = Composer.compose_scalar_node
    compose_sequence_node = Composer.compose_sequence_node
    compose_mapping_node = Composer.compose_mapping_node


for _loader in (_PyBoundedLoader, _CBoundedLoader):
    _loader.add_constructor("tag:yaml.org,2002:int", _Limits.construct_yaml_int)
    # ISO dates would become datetime objects; every razorzoo YAML wants them as plain text.
    _loader.add_constructor("tag:yaml.org,2002:timestamp", SafeConstructor.construct_yaml_str)
del _loader
_BoundedLoader = _CBoundedLoader if _CParser else _PyBoundedLoader


def load_yaml(text: str | bytes, *, what: str, error: type[Exception] = InputError) -> Any:
    """Parse one YAML document from an untrusted source, with bounded size, depth, aliases and numbers.

    ``what`` names the document in the error (``"subnet file 'a.yaml'"``); failures raise ``error`` with one line.
    """
    if isinstance(text, bytes):
        if len(text) > MAX_YAML_BYTES:
            raise error(f"{what} is {len(text)} bytes, more than the {MAX_YAML_BYTES} a YAML document may have")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise error(f"{what} is not UTF-8 text") from None
    if len(text) > MAX_YAML_BYTES:
        raise error(f"{what} has {len(text)} characters, more than the {MAX_YAML_BYTES} a YAML document may have")
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())  # PyYAML's messages span lines
        raise error(f"{what} is not valid YAML: {terminal_safe(problem)[:300]}") from None
    except (RecursionError, ValueError) as exc:
        raise error(f"{what} cannot be parsed: {type(exc).__name__}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def load_json(text: str | bytes, *, what: str, error: type[Exception] = InputError) -> Any:
    """Parse JSON razorzoo may not have written (cache records, Hub files, file metadata) in bounded work: deep
    nesting, which ``json`` meets with a ``RecursionError``, is one ``error`` line naming ``what``, like bad JSON;
    ``NaN`` and ``Infinity`` (which Python's ``json`` accepts, JSON does not) are refused."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise error(f"{what} is not JSON razorzoo can read: it is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both are ValueErrors
        raise error(f"{what} is not JSON ({safe_repr(str(exc), 80)})") from None


def check_number(value: Any, what: str, *, minimum: float | None = None, maximum: float | None = None,
                 exclusive_minimum: bool = False, integer: bool = False) -> float | int:
    """``value`` as a finite number in range, or :class:`InputError` naming ``what`` and the allowed range.

    Accepts numbers and numeric strings (command-line values); refuses booleans, NaN, infinities, and for
    ``integer=True`` anything with a fractional part (``16.0`` is not a channel count).
    """
    number: float | int
    if isinstance(value, bool):
        raise InputError(f"{what} must be a number, not {safe_repr(value)}")
    if isinstance(value, (int, float)):
        number = value
    elif isinstance(value, str) and len(value) <= 40:
        try:
            number = int(value) if integer else float(value)
        except ValueError:
            raise InputError(f"{what} must be {'an integer' if integer else 'a number'}, not {safe_repr(value)}"
                             ) from None
    else:
        raise InputError(f"{what} must be {'an integer' if integer else 'a number'}, not {safe_repr(value)}")
    if isinstance(number, float) and not math.isfinite(number):
        raise InputError(f"{what} must be a finite number, not {number!r}")
    if integer and not isinstance(number, int):
        raise InputError(f"{what} must be an integer, not {safe_repr(number)}")
    low_bad = minimum is not None and (number <= minimum if exclusive_minimum else number < minimum)
    if low_bad or (maximum is not None and number > maximum):
        bounds = []
        if minimum is not None:
            bounds.append(f"{'>' if exclusive_minimum else '>='} {minimum:g}")
        if maximum is not None:
            bounds.append(f"<= {maximum:g}")
        raise InputError(f"{what} must be {' and '.join(bounds)}, not {safe_repr(number)}")
    return number
