"""A local stand-in for download.openmmlab.com: files at the cards' URL paths, card copies that trust them, a server.

:func:`build_mirror` writes, for some registry cards::

    <out>/www/<URL path of each card file>   demo weights (razorzoo.weights.demo) in the card's checkpoint layout,
                                             and the subnet YAMLs the cards name
    <out>/cards/                             copies of those cards (and their subnet YAMLs) whose sha256 values are
                                             the hashes of the files in www/

so that ``RAZORZOO_CARDS=<out>/cards`` plus ``RAZORZOO_MIRROR=<URL serving www/>`` runs the whole download, verify,
convert and load path without the network. :class:`MirrorServer` serves a directory over HTTP on this machine: the
demo's ``www/``, or a copy of real OpenMMLab files laid out by their URL paths (then the shipped cards apply as
they are). ``razorzoo mirror`` and ``razorzoo demo`` are the commands.
"""
from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import unquote, urlsplit

from razorzoo.bounded import safe_repr
from razorzoo.errors import RazorzooError
from razorzoo.files import safe_join
from razorzoo.storage.cache import sha256_of_file

__all__ = ["Mirror", "MirrorServer", "build_mirror", "url_path"]

WWW_DIR = "www"
CARDS_DIR = "cards"


@dataclass(frozen=True)
class Mirror:
    """Where :func:`build_mirror` wrote: ``www`` (to serve) and ``cards`` (for ``RAZORZOO_CARDS``)."""

    root: Path
    www: Path
    cards: Path
    names: tuple[str, ...]
    files: tuple[Path, ...]  # the files written under www/

    @property
    def size(self) -> int:
        return sum(path.stat().st_size for path in self.files)


def url_path(www: Path, url: str) -> Path:
    """Where the file of ``url`` lies in a mirror directory: its URL path under ``www`` (never outside it)."""
    return safe_join(www, unquote(urlsplit(url).path).lstrip("/"), what="card URL path")


def build_mirror(out: str | os.PathLike, names: Iterable[str], *,
                 progress: Callable[[str], None] = lambda message: None) -> Mirror:
    """Write demo weights, subnet YAMLs and matching card copies for the registry cards ``names`` under ``out``.

    A supernet's weights are written once for every card sliced from it (``extract_from``), and a weights file
    that is already there is kept (so a mirror grows model by model). Returns what was written where.

    Raises:
        UnknownModelError: a name is not in the registry (with close matches).
    """
    import torch

    from razorzoo.arch.spec import ArchSpec
    from razorzoo.arch.subnet import load_subnet
    from razorzoo.weights.demo import demo_state_dict, demo_supernet_state_dict, write_checkpoint
    from razorzoo.zoo.edit import set_card_hashes
    from razorzoo.zoo.registry import get_card

    cards = [get_card(name) for name in names]  # every name checked before anything is written
    root = Path(out)
    www, copies = root / WWW_DIR, root / CARDS_DIR
    written: dict[Path, None] = {}
    for card in cards:
        hashes = {}
        weights = url_path(www, card.weights.url)
        if not weights.is_file():
            progress(f"writing demo weights for {card.name} ({card.weights.layout}): {weights.relative_to(root)}")
            if card.weights.layout == "mmrazor_supernet":
                state_dict = demo_supernet_state_dict(card.family)
            else:
                spec = ArchSpec(card.task, load_subnet(card.subnet_path, family=card.family), recipe=card.recipe,
                                preprocessing=card.preprocessing)
                state_dict = demo_state_dict(spec)
            with torch.no_grad():
                write_checkpoint(state_dict, weights, card.weights.layout)
        written[weights] = None
        hashes["weights"] = sha256_of_file(weights)
        if card.subnet is not None and card.subnet_path is not None:
            shipped = card.subnet_path.read_bytes()
            _write(safe_join(copies, card.subnet.file, what="card subnet file"), shipped)
            if card.subnet.url:
                served = url_path(www, card.subnet.url)
                _write(served, shipped)
                written[served] = None
                hashes["subnet"] = sha256_of_file(served)
        copy = copies / card.path.name
        _write(copy, card.path.read_bytes())
        set_card_hashes(copy, hashes)
    return Mirror(root, www, copies, tuple(card.name for card in cards), tuple(written))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


class _QuietHandler(SimpleHTTPRequestHandler):
    """Files under the served directory, GET and HEAD; no request log on stderr."""

    def log_message(self, *args: object) -> None:
        pass


class MirrorServer:
    """``with MirrorServer(directory) as server: server.url`` serves ``directory`` over HTTP from a thread;
    ``serve_forever()`` serves in the calling thread instead (until Ctrl-C)."""

    def __init__(self, directory: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise RazorzooError(f"cannot serve {safe_repr(str(self.directory))}: not a directory (write a mirror "
                                "first with `razorzoo mirror DIR NAME`)")
        try:
            self._httpd = ThreadingHTTPServer((host, port), functools.partial(_QuietHandler,
                                                                              directory=str(self.directory)))
        except OSError as exc:
            raise RazorzooError(f"cannot serve on {safe_repr(host)} port {port}: {exc.strerror or exc}") from None
        self._httpd.daemon_threads = True
        bound_host, bound_port = self._httpd.server_address[:2]
        self.url = f"http://{'[' + bound_host + ']' if ':' in bound_host else bound_host}:{bound_port}"
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "MirrorServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def serve_forever(self) -> None:
        try:
            self._httpd.serve_forever()
        finally:
            self._httpd.server_close()
