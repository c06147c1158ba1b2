"""``razorzoo download`` and ``razorzoo cache ls|rm|prune|verify``: get models into the cache and look after it.

Every cache operation is a :class:`razorzoo.storage.cache.Cache` method; this module only prints. Torch is imported
only when a command converts a checkpoint, never to build the parser.
"""
from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from razorzoo.bounded import safe_repr, terminal_safe
from razorzoo.cli import CLIError, print_error
from razorzoo.wording import count, did_you_mean

if TYPE_CHECKING:
    from razorzoo.storage.cache import Cache

_LISTED = 10  # cached model names an error lists


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    download = subparsers.add_parser("download", help="download, verify and convert a model into the cache",
                                     description="Download a registry model's subnet YAML and weights, verify the "
                                                 "pair and convert it into the cache, so later loads are offline.")
    download.add_argument("name", help="registry name or alias")
    download.add_argument("--offline", action="store_true", help="use only the cache (fail if something is missing)")
    download.add_argument("--cache-dir", help="cache root (default: RAZORZOO_CACHE or ~/.cache/razorzoo)")
    download.set_defaults(handler=_download)

    cache = subparsers.add_parser(
        "cache", help="list, remove, prune or re-verify what razorzoo keeps in its cache",
        description="Everything razorzoo writes into its cache (default RAZORZOO_CACHE or ~/.cache/razorzoo): "
                    "converted models, downloaded checkpoints, Hub files, ONNX exports, partial downloads, and its "
                    "records and locks. Nothing else is ever listed or removed.")
    cache.add_argument("--cache-dir", help="cache root (default: RAZORZOO_CACHE or ~/.cache/razorzoo)")
    actions = cache.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = actions.add_parser("ls", help="every cached file with its size, and the total")
    ls.add_argument("--all", action="store_true", help="list records (meta.json, index.json) and locks too")
    ls.add_argument("--json", action="store_true", help="print JSON: every file (records and locks too), the total")
    ls.set_defaults(handler=_ls)
    rm = actions.add_parser("rm", help="remove a model (its downloads no other model uses, its exports), or more")
    target = rm.add_mutually_exclusive_group(required=True)
    target.add_argument("name", nargs="?", help="registry name or alias")
    target.add_argument("--all", action="store_true",
                        help="remove everything razorzoo downloaded, converted or exported (other files are kept)")
    target.add_argument("--exports", action="store_true",
                        help="remove every ONNX export (each is made again from its model when next needed)")
    rm.set_defaults(handler=_rm)
    prune = actions.add_parser("prune", help="remove downloaded checkpoints whose converted model is cached",
                               description="Loading a registry model reads only its converted model.safetensors: "
                                           "the downloaded checkpoint and subnet YAML it was made from are needed "
                                           "again only to convert anew (they then download again).")
    prune.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    prune.set_defaults(handler=_prune)
    actions.add_parser("verify", help="re-hash every cached file; exit 1 if any changed").set_defaults(handler=_verify)


def _download(args: argparse.Namespace) -> int:
    from razorzoo.loading import download

    path = download(args.name, cache_dir=args.cache_dir, offline=True if args.offline else None)
    _say(path)
    return 0


def _say(text: object) -> None:
    """Print a line holding paths (``RAZORZOO_CACHE``, ``--cache-dir`` and file names are anyone's text) without the
    escape sequences they may hold."""
    print(terminal_safe(str(text)))


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def _ls(args: argparse.Namespace) -> int:
    from razorzoo.cli.browse import format_table
    from razorzoo.storage.cache import Cache

    cache = Cache(args.cache_dir)
    entries = cache.entries()
    total = sum(e.size for e in entries)
    if args.json:
        print(json.dumps({"cache": str(cache.root), "files": [e.to_dict() for e in entries],
                          "total_files": len(entries), "total_size": total}, indent=2))
        return 0
    if not entries:
        _say(f"the cache {cache.root} is empty")
        return 0
    shown = [e for e in entries if args.all or e.kind not in ("record", "lock")]
    _say(f"cache: {cache.root}")
    if shown:
        rows = [dict(kind=e.kind, name=e.name, size=_size(e.size),
                     sha256=(e.sha256[:12] + ("*" if e.pinned else "")) if e.sha256 else None,
                     of=", ".join(e.of) or None, path=str(e.path)) for e in shown]
        print(format_table(rows, ["kind", "name", "size", "sha256", "of", "path"]))
    hidden = [e for e in entries if e not in shown]
    if hidden:
        print(f"+ {count(len(hidden), 'record or lock file')} ({_size(sum(e.size for e in hidden))}): "
              "razorzoo cache ls --all lists them")
    if any(e.pinned for e in entries):
        print("* pinned: no published sha256, the hash of the first download is enforced")
    print(f"total: {count(len(entries), 'file')}, {_size(total)}")
    return 0


def _removed(cache: "Cache", removed: list, sizes: dict, what: str) -> None:
    """One line per removed file, then how many and how much, freed from where."""
    for path in removed:
        _say(f"removed {path}")
    freed = sum(sizes.get(path, 0) for path in removed)
    _say(f"removed {count(len(removed), 'file')} ({_size(freed)}) from {cache.root}: {what}" if removed
         else f"nothing to remove ({what}) in {cache.root}")


def _rm(args: argparse.Namespace) -> int:
    from razorzoo.storage.cache import Cache, CacheError

    cache = Cache(args.cache_dir)
    try:
        sizes = {e.path: e.size for e in cache.entries()}
        if args.all:
            _removed(cache, cache.remove_all(), sizes, "everything razorzoo wrote")
            return 0
        if args.exports:
            _removed(cache, cache.remove_exports(), sizes, "every ONNX export")
            return 0
        name = _cached_name(cache, args.name)
        removed = cache.remove_model(name)
    except CacheError as exc:  # a read-only cache: say what could not be removed, and that the cache is not empty
        print_error(exc)
        return 1
    _removed(cache, removed, sizes, f"{name}, its exports and the downloads no other cached model uses")
    return 0


def _cached_name(cache: "Cache", name: str) -> str:
    """The cached model ``name`` names (a registry name or alias; a name only the cache still knows, as is)."""
    from razorzoo.errors import UnknownModelError
    from razorzoo.zoo.registry import get_card

    cached = cache.index()
    if name in cached:
        return name
    try:
        canonical = get_card(name).name
    except UnknownModelError as exc:
        listed = ", ".join(safe_repr(n) for n in sorted(cached)[:_LISTED]) + (", ..." if len(cached) > _LISTED else "")
        raise CLIError(f"{exc}; cached models: {listed or 'none'}") from None
    if canonical not in cached:
        raise CLIError(f"{canonical!r} is not in the cache{did_you_mean(name, list(cached))} (razorzoo cache ls shows "
                       "what is)")
    return canonical


def _prune(args: argparse.Namespace) -> int:
    from razorzoo.storage.cache import Cache, CacheError

    cache = Cache(args.cache_dir)
    try:
        sizes = {e.path: e.size for e in cache.entries()}
        if args.dry_run:
            files = cache.prune_downloads(dry_run=True)
            for path in files:
                _say(f"would remove {path}")
            _say(f"would remove {count(len(files), 'file')} ({_size(sum(sizes.get(p, 0) for p in files))}) from "
                 f"{cache.root}: downloads whose converted model is cached")
            return 0
        _removed(cache, cache.prune_downloads(), sizes, "downloads whose converted model is cached")
    except CacheError as exc:
        print_error(exc)
        return 1
    return 0


def _verify(args: argparse.Namespace) -> int:
    from razorzoo.storage.cache import Cache

    results = Cache(args.cache_dir).verify()
    for path, ok in results:
        _say(f"{'ok     ' if ok else 'CHANGED'}  {path}")
    bad = sum(not ok for _, ok in results)
    if bad:
        print(f"{count(bad, 'cached file')} changed or missing: remove them with `razorzoo cache rm NAME` and download "
              "again")
    return 1 if bad else 0
