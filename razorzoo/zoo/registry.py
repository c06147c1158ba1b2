"""The model registry: one Markdown card per model, read from ``cards/`` (and ``RAZORZOO_CARDS``).

A card is a Hugging Face style model card: YAML front matter (Hub keys plus a ``razorzoo:`` block) then prose. The
``razorzoo:`` block is the single source of truth for what a name means: which subnet YAML, which weights, which
detector recipe, and the published numbers. Cards are validated when loaded, so a broken card fails with the file,
the key and the problem instead of surfacing later as a ``KeyError`` deep in the loader.

This module must stay cheap to import (no torch, no huggingface_hub): every ``razorzoo list`` parses all cards.
"""
from __future__ import annotations

import fnmatch
import functools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from razorzoo.arch.recipes import RECIPE_IDS as RECIPES, ClassifierPreprocess
from razorzoo.arch.spec import CARD_TASKS as TASKS
from razorzoo.arch.subnet import FAMILIES
from razorzoo.bounded import MAX_YAML_BYTES, load_yaml, read_text, safe_repr
from razorzoo.constants import extra_cards_dir
from razorzoo.errors import CardError, RazorzooError, UnknownModelError
from razorzoo.files import UnsafePathError, safe_join
from razorzoo.wording import close_matches, did_you_mean

MAX_CARD_CHARS = 2 * MAX_YAML_BYTES  # front matter plus prose; the zoo's cards are under 10 KB

__all__ = ["Card", "FileRef", "list_models", "get_card", "all_cards", "parse_card", "pareto_front", "subnet_source",
           "CARDS_DIR", "TASKS", "FAMILIES", "FLOP_UNITS", "METRICS"]

# In a checkout this is a symlink to the top-level cards/ (where maintainers edit them); wheels and sdists carry a copy.
CARDS_DIR = Path(__file__).resolve().parent / "cards"
# FLOPs are multiply-accumulates (mmengine convention, docs/upstream.md §8: upstream "FLOPs" columns are MACs).
FLOP_UNITS = {"MAC": 1, "KMAC": 10**3, "MMAC": 10**6, "GMAC": 10**9}
METRICS = ("top1", "top5", "box_ap")  # ImageNet top-1/top-5 accuracy (%), COCO val2017 box AP (%)

_HASH = re.compile(r"[0-9a-f]{8}|[0-9a-f]{64}")  # always fullmatch: "$" would let a trailing newline through
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}")
MAX_FILE_SIZE = 1 << 40  # a card's `size` (bytes): checkpoints are megabytes to a few gigabytes
# upstream config names hold '@'; no blanks, no controls, no bidi/invisible formatting (they make a name read as another)
_ALIAS = re.compile(r"[^\s\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]{1,200}")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)(.*)\Z", re.S)


@dataclass(frozen=True)
class FileRef:
    """A downloadable file: ``url`` plus ``sha256`` (64 hex, the 8-hex OpenMMLab file-name prefix, or ``None``).

    ``file`` is a copy shipped with the card (relative to ``cards/``); ``layout`` names the checkpoint layout;
    ``extract_from`` names the supernet card whose weights this entry is sliced from (docs/upstream.md §2.3);
    ``size`` is the file's size in bytes, when stated.
    """

    url: str | None
    sha256: str | None
    file: str | None = None
    layout: str | None = None
    extract_from: str | None = None
    size: int | None = None  # bytes, when the card states it: a download is cut at the first byte past it


@dataclass(frozen=True)
class Card:
    """A parsed, validated model card."""

    name: str
    task: str
    family: str
    aliases: tuple[str, ...]
    recipe: str | None
    subnet: FileRef | None
    weights: FileRef
    front_matter: dict[str, Any] = field(repr=False)
    body: str = field(repr=False)
    path: Path | None = None

    @property
    def meta(self) -> dict[str, Any]:
        """The ``razorzoo:`` block of the front matter."""
        return self.front_matter["razorzoo"]

    @property
    def subnet_path(self) -> Path | None:
        """The subnet YAML shipped with the card (``None`` when the card ships none)."""
        if self.subnet is None or self.subnet.file is None or self.path is None:
            return None
        return _subnet_file(self.path, self.subnet.file, str(self.path))

    @property
    def preprocessing(self) -> ClassifierPreprocess | None:
        """A classification card's test pipeline (its ``preprocessing:`` block), typed; ``None`` for other cards."""
        block = self.meta.get("preprocessing")
        return ClassifierPreprocess.from_dict(block) if self.task == "classification" and block else None

    @property
    def num_params(self) -> int | None:
        return self.meta.get("num_params")

    @property
    def flops(self) -> int | None:
        """Multiply-accumulates at ``flops_input`` (an exact integer)."""
        flops = self.meta.get("flops")
        return None if flops is None else int(flops["value"] * FLOP_UNITS[flops["unit"]])

    @property
    def flops_input(self) -> tuple[int, ...] | None:
        flops = self.meta.get("flops")
        return None if flops is None else tuple(flops["input"])

    @property
    def metrics(self) -> dict[str, float]:
        """Published metrics (``top1``, ``top5``, ``box_ap``), in percent."""
        return dict(self.meta.get("metrics") or {})

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(self.front_matter.get("tags") or ())

    @property
    def description(self) -> str:
        """The first prose paragraph of the body (Markdown), for tables and search results."""
        for block in re.split(r"\n\s*\n", self.body):
            block = block.strip()
            if block and not block.startswith(("#", "|", "```", "-", "*", ">")):
                return " ".join(block.split())
        return ""

    def summary(self) -> dict[str, Any]:
        """One flat row for tables, ``--where``/``--pareto`` and the gallery (params in M, FLOPs in G MACs)."""
        row: dict[str, Any] = {
            "name": self.name,
            "task": self.task,
            "family": self.family,
            "params": None if self.num_params is None else round(self.num_params / 1e6, 3),
            "flops": None if self.flops is None else round(self.flops / 1e9, 3),
            "input": None if self.flops_input is None else self.flops_input[-1],
        }
        row.update({metric: self.metrics.get(metric) for metric in METRICS})
        return row


def parse_card(card: str | os.PathLike, *, source: str | None = None) -> Card:
    """Read and validate one card: a file path, or the card's text (then ``source`` names it in errors, e.g. a Hub
    repo). Raises :class:`CardError` naming the card, the key and the problem."""
    if isinstance(card, str) and "\n" in card:
        text, path, where = card, None, source or "<card text>"
        if len(text) > MAX_CARD_CHARS:
            raise CardError(f"{where}: a card of {len(text)} characters is longer than the {MAX_CARD_CHARS} allowed")
    else:
        path = Path(card)
        where = source or str(path)
        text = read_text(path, what=where, error=CardError, limit=MAX_CARD_CHARS)
    match = _FRONT_MATTER.match(text)
    if match is None:
        raise CardError(f"{where}: a card starts with YAML front matter between '---' lines")
    front = load_yaml(match.group(1), what=f"{where}: the front matter", error=CardError)
    return _validate(front, match.group(2), path, where)


def _validate(front: Any, body: str, path: Path | None, where: str) -> Card:
    def fail(key: str, problem: str) -> CardError:
        return CardError(f"{where}: {key}: {problem}")

    if not isinstance(front, dict) or not isinstance(front.get("razorzoo"), dict):
        raise fail("razorzoo", "missing; the front matter needs a 'razorzoo:' mapping")
    meta = front["razorzoo"]
    for key in ("name", "task", "family", "weights"):
        if meta.get(key) is None:
            raise fail(f"razorzoo.{key}", "required key is missing")
    name = meta["name"]
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise fail("razorzoo.name", f"{safe_repr(name)} is not a valid name (letters, digits, '_', '.', '-')")
    if meta["task"] not in TASKS:
        raise fail("razorzoo.task", f"{safe_repr(meta['task'])} is not one of {', '.join(TASKS)}")
    if meta["family"] not in FAMILIES:
        raise fail("razorzoo.family", f"{safe_repr(meta['family'])} is not one of {', '.join(FAMILIES)}")
    recipe = meta.get("recipe")
    if (meta["task"] == "detection") != (recipe is not None):
        raise fail("razorzoo.recipe", "detection cards need a detector recipe, and only they take one")
    if recipe is not None and recipe not in RECIPES:
        raise fail("razorzoo.recipe", f"{safe_repr(recipe)} is not one of {', '.join(RECIPES)}")
    aliases = meta.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) and _ALIAS.fullmatch(a) for a in aliases):
        raise fail("razorzoo.aliases", "must be a list of names (up to 200 characters, no blanks, control or "
                                       "invisible characters)")
    tags = front.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise fail("tags", "must be a list of strings")
    if "subnet" not in meta:
        raise fail("razorzoo.subnet", "required key is missing (null for a supernet)")
    if meta["subnet"] is None and meta["task"] != "supernet":
        raise fail("razorzoo.subnet", "only supernet cards may have no subnet")
    subnet = None if meta["subnet"] is None else _file_ref(meta["subnet"], "razorzoo.subnet", fail)
    weights = _file_ref(meta["weights"], "razorzoo.weights", fail)
    if path is not None and subnet is not None and subnet.file is not None:
        _subnet_file(path, subnet.file, where)
    _validate_numbers(meta, fail)
    if meta["task"] == "classification" and meta.get("preprocessing") is not None:
        try:
            ClassifierPreprocess.from_dict(meta["preprocessing"])
        except RazorzooError as exc:
            raise fail("razorzoo.preprocessing", str(exc)) from None
    return Card(
        name=name,
        task=meta["task"],
        family=meta["family"],
        aliases=tuple(aliases),
        recipe=recipe,
        subnet=subnet,
        weights=weights,
        front_matter=front,
        body=body.lstrip("\n"),
        path=path,
    )


def _subnet_file(card_path: Path, file: str, where: str) -> Path:
    """The card's ``subnet.file`` under the card's directory; ``../``, absolute paths and symlinks that lead out
    are refused (a card from ``RAZORZOO_CARDS`` or the Hub must not make razorzoo read ``/etc/passwd``).

    A card in huggingface_hub's cache (``models--org--name/snapshots/<commit>/README.md``) names files that are
    symlinks into the repo's ``blobs/``: there the repo folder is the root they must resolve under.
    """
    root = card_path.parent
    if root.parent.name == "snapshots" and (root.parent.parent / "blobs").is_dir():
        root = root.parent.parent
    try:
        path = safe_join(root, *card_path.parent.relative_to(root).parts, file, what="razorzoo.subnet.file")
    except UnsafePathError as exc:
        raise CardError(f"{where}: {exc}") from None
    if not path.is_file():
        raise CardError(f"{where}: razorzoo.subnet.file: {safe_repr(file)} does not exist next to the card")
    return path


def _file_ref(value: Any, key: str, fail) -> FileRef:
    if not isinstance(value, dict):
        raise fail(key, "must be a mapping with 'url' and 'sha256'")
    unknown = [k for k in value if k not in ("url", "sha256", "size", "file", "layout", "extract_from")]
    if unknown:
        raise fail(key, f"unknown keys {', '.join(safe_repr(k) for k in unknown[:5])}")
    for name in ("file", "layout", "extract_from"):
        if value.get(name) is not None and not isinstance(value[name], str):
            raise fail(f"{key}.{name}", f"{safe_repr(value[name])} is not a string")
    url = value.get("url")
    if value.get("file") is not None and url is None:
        pass  # a file shipped with the card (e.g. in its Hub repo) needs no URL
    elif not isinstance(url, str) or not url.startswith("https://"):
        raise fail(f"{key}.url", f"{safe_repr(url)} is not an https URL")
    if "sha256" not in value:
        raise fail(f"{key}.sha256", "required key is missing (null when no hash is known)")
    sha256 = value["sha256"]
    if sha256 is not None and not (isinstance(sha256, str) and _HASH.fullmatch(sha256)):
        raise fail(f"{key}.sha256", f"{safe_repr(sha256)} is neither 64 nor 8 lowercase hex digits nor null")
    size = value.get("size")
    if size is not None and not (type(size) is int and 0 < size <= MAX_FILE_SIZE):
        raise fail(f"{key}.size", f"{safe_repr(size)} is not a file size in bytes (a positive integer), nor null")
    return FileRef(url, sha256, value.get("file"), value.get("layout"), value.get("extract_from"), size)


def _finite(value: Any) -> bool:
    """A real number (not a bool, not a string), neither NaN nor infinite: ``.nan`` would poison sorting,
    ``--where`` and the Pareto front without a word."""
    return type(value) in (int, float) and math.isfinite(value)


def _validate_numbers(meta: dict[str, Any], fail) -> None:
    num_params = meta.get("num_params")
    if num_params is not None and (type(num_params) is not int or num_params <= 0):
        raise fail("razorzoo.num_params",
                   f"{safe_repr(num_params)} is not a positive integer (exact parameter count)")
    flops = meta.get("flops")
    if flops is not None:
        if not isinstance(flops, dict) or set(flops) != {"value", "unit", "input"}:
            raise fail("razorzoo.flops", "must be a mapping {value, unit, input}")
        if flops["unit"] not in FLOP_UNITS:
            raise fail("razorzoo.flops.unit", f"{safe_repr(flops['unit'])} is not one of {', '.join(FLOP_UNITS)}")
        if not _finite(flops["value"]) or flops["value"] <= 0:
            raise fail("razorzoo.flops.value", f"{safe_repr(flops['value'])} is not a positive finite number")
        shape = flops["input"]
        if not (isinstance(shape, list) and len(shape) == 4 and all(type(s) is int and 0 < s <= 8192 for s in shape)):
            raise fail("razorzoo.flops.input", f"{safe_repr(shape)} is not an input shape [N, C, H, W]")
    metrics = meta.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise fail("razorzoo.metrics", "must be a mapping of metric name to percent")
    for metric, value in metrics.items():
        if metric not in METRICS:
            raise fail("razorzoo.metrics", f"unknown metric {safe_repr(metric)}; expected one of {', '.join(METRICS)}")
        if not _finite(value) or not 0 <= value <= 100:  # 0: a run that has not learned yet, published as it is
            raise fail(f"razorzoo.metrics.{metric}", f"{safe_repr(value)} is not a percentage from 0 to 100")


def _card_dirs() -> tuple[Path, ...]:
    dirs = [CARDS_DIR]
    extra = extra_cards_dir()
    if extra:
        extra_dir = Path(extra).expanduser()
        if not extra_dir.is_dir():
            raise CardError(f"RAZORZOO_CARDS={safe_repr(str(extra_dir), 300)} is not a directory of card files (*.md)")
        dirs.append(extra_dir)
    return tuple(dirs)


def _card_files(dirs: tuple[Path, ...]) -> tuple[tuple[str, int], ...]:
    return tuple((str(p), p.stat().st_mtime_ns) for d in dirs for p in sorted(d.glob("*.md")))


@functools.lru_cache(maxsize=8)
def _load(files: tuple[tuple[str, int], ...]) -> tuple[dict[str, Card], dict[str, str]]:
    """Parse the card files (keyed by path and mtime, so edited cards are re-read); later dirs override by name."""
    cards: dict[str, Card] = {}
    for file, _ in files:
        card = parse_card(file)
        cards[card.name] = card
    index: dict[str, str] = {}
    for card in cards.values():
        for key in (card.name, *card.aliases):
            other = index.get(key.lower())
            if other is not None and other != card.name:
                raise CardError(f"{card.path}: {safe_repr(key)} is already the name or an alias of "
                                f"{safe_repr(other)} "
                                f"({cards[other].path}); names and aliases must be unique")
            index[key.lower()] = card.name
    return cards, index


def _registry() -> tuple[dict[str, Card], dict[str, str]]:
    return _load(_card_files(_card_dirs()))


def all_cards() -> list[Card]:
    """Every registered card, sorted by name."""
    cards, _ = _registry()
    return [cards[name] for name in sorted(cards, key=_natural_key)]


def list_models(pattern: str = "*", *, task: str | None = None) -> list[str]:
    """Registered model names matching ``pattern`` (fnmatch wildcards, case-insensitive; aliases match too and
    resolve to their canonical name), optionally only those of one ``task``."""
    if task is not None and task not in TASKS:
        raise CardError(f"unknown task {safe_repr(task)}; expected one of {', '.join(TASKS)}")
    cards, index = _registry()
    pattern = pattern.lower()
    names = {name for key, name in index.items() if fnmatch.fnmatchcase(key, pattern)}
    return sorted((n for n in names if task is None or cards[n].task == task), key=_natural_key)


def get_card(name: str) -> Card:
    """The card registered under ``name`` or one of its aliases (case-insensitive)."""
    cards, index = _registry()
    canonical = index.get(name.lower())
    if canonical is None:
        close = close_matches(name, index)  # several aliases may name one model: each named once
        hint = f"; did you mean {', '.join(map(safe_repr, close))}?" if close else ""
        raise UnknownModelError(f"unknown model {safe_repr(name)}{hint} (razorzoo list shows all {len(cards)} models)")
    return cards[canonical]


def subnet_source(source: Any) -> Any:
    """A subnet source (for ``load_subnet``) as given, except a bare YAML/JSON file name that is not a file here: the
    subnet the zoo ships under that name (``"ATTENTIVE_SUBNET_A3.yaml"``, as MMRazor's docs and the README name them),
    so a snippet runs as written from any directory. A file of that name in the working directory is what the user
    pointed at, and wins.

    Raises:
        SubnetError: a bare file name that is neither a file here nor a shipped subnet (with close matches).
    """
    from razorzoo.errors import SubnetError

    if not isinstance(source, str) or "\n" in source or os.sep in source or "/" in source \
            or not source.lower().endswith((".yaml", ".yml", ".json")) or os.path.exists(source):
        return source
    shipped = {path.name: path for card in all_cards() if (path := card.subnet_path) is not None}
    by_lower = {name.lower(): path for name, path in shipped.items()}
    if source.lower() in by_lower:
        return by_lower[source.lower()]
    raise SubnetError(f"subnet file {safe_repr(source)} does not exist here, and the zoo ships no subnet of that "
                      f"name{did_you_mean(source, sorted(shipped))} (shipped: {', '.join(sorted(shipped))})")


def pareto_front(rows: list[dict[str, Any]], x: str, y: str) -> list[dict[str, Any]]:
    """Rows (``Card.summary()`` dicts) not dominated in (min ``x``, max ``y``), sorted by ``x``; rows missing
    either value are left out."""
    points = [r for r in rows if r.get(x) is not None and r.get(y) is not None]
    front = [
        r for r in points
        if not any(o[x] <= r[x] and o[y] >= r[y] and (o[x] < r[x] or o[y] > r[y]) for o in points)
    ]
    return sorted(front, key=lambda r: (r[x], -r[y]))


def _natural_key(name: str) -> list[Any]:
    """Sort ``attentive_a2`` before ``attentive_a10`` and keep families together."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]
