"""Maintainer recipe: fetch every upstream file the cards name, verify, convert, and record full sha256s in the cards.

Run with internet access (or ``--mirror`` pointing at a copy of download.openmmlab.com)::

    python conversion/convert_zoo.py                      # every card in cards/
    python conversion/convert_zoo.py --only yolov6s-attentive_a6 --mirror http://mirror.local
    python conversion/convert_zoo.py --cards /tmp/cards-copy --cache /tmp/zoo-cache

For each card: the subnet YAML and the weights are downloaded through :func:`razorzoo.storage.fetch.fetch` (an 8-hex hash
in the card is checked as OpenMMLab's file-name prefix, docs/upstream.md §4), the pair is verified and converted exactly as
``razorzoo.load_*`` would (:func:`razorzoo.loading.download`), and the full 64-hex sha256s of the downloaded files
replace the card's ``sha256`` values. Only those values change: the rest of each card stays byte-identical.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from razorzoo.errors import RazorzooError  # noqa: E402
from razorzoo.zoo.edit import set_card_hashes  # noqa: E402
from razorzoo.zoo.registry import CARDS_DIR, parse_card  # noqa: E402


def convert_card(card_path: Path, *, cache_dir: Path | None) -> dict[str, str]:
    """Fetch, verify and convert one card's files into the cache; return the full hashes to record."""
    from razorzoo.loading import download
    from razorzoo.storage.cache import Cache
    from razorzoo.storage.fetch import fetch

    card = parse_card(card_path)
    if card.task == "supernet":
        fetch(card.weights.url, sha256=card.weights.sha256, cache_dir=cache_dir)
    else:
        download(card.name, cache_dir=cache_dir)
    cache = Cache(cache_dir)
    hashes = {"weights": cache.record(card.weights.url).sha256}
    if card.subnet is not None and card.subnet.url:
        hashes["subnet"] = cache.record(card.subnet.url).sha256
    return hashes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cards", type=Path, default=CARDS_DIR, help="directory of cards to process and update")
    parser.add_argument("--mirror", help="base URL replacing https://download.openmmlab.com (RAZORZOO_MIRROR)")
    parser.add_argument("--cache", type=Path, help="cache root (default: RAZORZOO_CACHE)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="process only these card names")
    args = parser.parse_args(argv)
    if args.mirror:
        os.environ["RAZORZOO_MIRROR"] = args.mirror
    if args.cards.resolve() != CARDS_DIR.resolve():
        os.environ["RAZORZOO_CARDS"] = str(args.cards)  # the registry resolves names to these copies
    failures = 0
    for card_path in sorted(args.cards.glob("*.md")):
        name = parse_card(card_path).name
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        try:
            hashes = convert_card(card_path, cache_dir=args.cache)
        except RazorzooError as exc:
            failures += 1
            print(f"FAIL {name}: {exc}", file=sys.stderr)
            continue
        changed = set_card_hashes(card_path, hashes)
        print(f"ok   {name} ({time.perf_counter() - start:.1f} s){' card updated' if changed else ''}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
