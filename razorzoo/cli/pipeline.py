"""``razorzoo download`` and ``razorzoo cache ls|rm|verify``: get models into the cache and look after it.

Every cache operation is a :class:`razorzoo.storage.cache.Cache` method; this module only prints. Torch is imported
only when a command converts a checkpoint, never to build the parser.
"""
from __future__ import annotations

import argparse

from razorzoo.bounded import terminal_safe
from razorzoo.cli import CLIError, print_error

_WIDTH = 100  # `razorzoo cache ls` fits a 100-column terminal


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    download = subparsers.add_parser("download", help="download, verify and convert a model into the cache",
                                     description="Download a registry model's subnet YAML and weights, verify the "
                                                 "pair and convert it into the cache, so later loads are offline.")
    download.add_argument("name", help="registry name or alias")
    download.add_argument("--offline", action="store_true", help="use only the cache (fail if something is missing)")
    download.add_argument("--cache-dir", help="cache root (default: RAZORZOO_CACHE or ~/.cache/razorzoo)")
    download.set_defaults(handler=_download)

    cache = subparsers.add_parser("cache", help="list, remove or re-verify cached files")
    cache.add_argument("--cache-dir", help="cache root (default: RAZORZOO_CACHE or ~/.cache/razorzoo)")
    actions = cache.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("ls", help="table of converted models and downloads").set_defaults(handler=_ls)
    rm = actions.add_parser("rm", help="remove a model (and downloads no other cached model uses)")
    target = rm.add_mutually_exclusive_group(required=True)
    target.add_argument("name", nargs="?", help="registry name or alias")
    target.add_argument("--all", action="store_true",
                        help="remove everything razorzoo downloaded or converted (other files are kept)")
    rm.set_defaults(handler=_rm)
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


def _shorten(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters: leading path segments become ``…/`` (``…/model.safetensors``);
    a last segment that alone is too long is cut from the left (``…-449bb2a0.pth``)."""
    if len(text) <= width:
        return text
    parts = text.split("/")
    while len(parts) > 1:
        parts.pop(0)
        if len("…/" + "/".join(parts)) <= width:
            return "…/" + "/".join(parts)
    return "…" + text[len(text) - width + 1:]


def _ls(args: argparse.Namespace) -> int:
    from razorzoo.cli.browse import format_table
    from razorzoo.storage.cache import Cache

    cache = Cache(args.cache_dir)
    models, files = cache.scan()
    rows = [dict(name=m.name, kind="model", size=_size(m.size), sha256=m.sha256[:12], path=m.path) for m in models]
    rows += [dict(name=f.path.name, kind="hub" if cache.hub in f.path.parents else "download", size=_size(f.size),
                  sha256=f.sha256[:12] + ("*" if f.pinned else ""), path=f.path) for f in files]
    if not rows:
        _say(f"the cache {cache.root} is empty")
        return 0
    for row in rows:
        row["name"] = _shorten(row["name"], 32)
        row["path"] = row["path"].relative_to(cache.root).as_posix()
    fixed = max(len(r["name"]) for r in rows) + 8 + 9 + 13 + 4 * 2  # name, kind, size, sha256 and the gaps
    for row in rows:
        row["path"] = _shorten(row["path"], max(_WIDTH - fixed - 2, 20))
    _say(f"cache: {cache.root}")
    print(format_table(rows, ["name", "kind", "size", "sha256", "path"]))
    if any(f.pinned for f in files):
        print("* pinned: no published sha256, the hash of the first download is enforced")
    return 0


def _rm(args: argparse.Namespace) -> int:
    from razorzoo.storage.cache import Cache, CacheError

    cache = Cache(args.cache_dir)
    try:
        if args.all:
            removed = cache.remove_all()
            _say(f"removed {len(removed)} file(s) from {cache.root}" if removed
                 else f"nothing to remove: razorzoo has recorded no files in {cache.root}")
            return 0
        from razorzoo.zoo.registry import get_card

        name = get_card(args.name).name
        removed = cache.remove_model(name)
    except CacheError as exc:  # a read-only cache: say what could not be removed, and that the cache is not empty
        print_error(exc)
        return 1
    if not removed:
        raise CLIError(f"{name!r} is not in the cache (razorzoo cache ls shows what is)")
    for path in removed:
        _say(f"removed {path}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from razorzoo.storage.cache import Cache

    results = Cache(args.cache_dir).verify()
    for path, ok in results:
        _say(f"{'ok     ' if ok else 'CHANGED'}  {path}")
    bad = sum(not ok for _, ok in results)
    if bad:
        print(f"{bad} cached file(s) changed or missing: remove them with `razorzoo cache rm NAME` and download again")
    return 1 if bad else 0
