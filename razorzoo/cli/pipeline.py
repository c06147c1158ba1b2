"""``razorzoo download`` and ``razorzoo cache ls|rm|verify``: get models into the cache and look after it.

Torch is imported only when a command converts a checkpoint, never to build the parser.
"""
from __future__ import annotations

import argparse
import shutil

from razorzoo.cli import CLIError


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
    target.add_argument("--all", action="store_true", help="empty the whole cache")
    rm.set_defaults(handler=_rm)
    actions.add_parser("verify", help="re-hash every cached file; exit 1 if any changed").set_defaults(handler=_verify)


def _download(args: argparse.Namespace) -> int:
    from razorzoo.loading import download

    path = download(args.name, cache_dir=args.cache_dir, offline=True if args.offline else None)
    print(path)
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def _ls(args: argparse.Namespace) -> int:
    from razorzoo.storage.fetch import cached_files
    from razorzoo.loading import cached_models

    from razorzoo.cli.browse import format_table

    rows = [dict(name=m.name, kind="model", size=_size(m.size), sha256=m.sha256[:12], path=str(m.path))
            for m in cached_models(args.cache_dir)]
    rows += [dict(name=f.path.name, kind="download", size=_size(f.size),
                  sha256=f.sha256[:12] + (" (pinned)" if f.pinned else ""), path=str(f.path))
             for f in cached_files(args.cache_dir)]
    print(format_table(rows, ["name", "kind", "size", "sha256", "path"]) if rows else "the cache is empty")
    return 0


def _rm(args: argparse.Namespace) -> int:
    from razorzoo import constants
    from razorzoo.storage.fetch import DOWNLOADS_DIR
    from razorzoo.loading import MODELS_DIR, remove_model

    if args.all:
        root = constants.cache_dir() if args.cache_dir is None else args.cache_dir
        for sub in (MODELS_DIR, DOWNLOADS_DIR):
            shutil.rmtree(f"{root}/{sub}", ignore_errors=True)
        print(f"emptied {root}")
        return 0
    from razorzoo.zoo.registry import get_card

    name = get_card(args.name).name
    removed = remove_model(name, cache_dir=args.cache_dir)
    if not removed:
        raise CLIError(f"{name!r} is not in the cache (razorzoo cache ls shows what is)")
    for path in removed:
        print(f"removed {path}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from razorzoo.storage.fetch import cached_files, hash_matches, sha256_of_file
    from razorzoo.loading import cached_models, verify_cached_model

    bad = 0
    for model in cached_models(args.cache_dir):
        ok = verify_cached_model(model)
        bad += not ok
        print(f"{'ok     ' if ok else 'CHANGED'}  {model.path}")
    for record in cached_files(args.cache_dir):
        ok = record.path.is_file() and hash_matches(record.sha256, sha256_of_file(record.path))
        bad += not ok
        print(f"{'ok     ' if ok else 'CHANGED'}  {record.path}")
    if bad:
        print(f"{bad} cached file(s) changed or missing: remove them with `razorzoo cache rm NAME` and download again")
    return 1 if bad else 0
