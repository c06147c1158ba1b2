"""A real threaded HTTP file server on 127.0.0.1 with fault injection, standing in for download.openmmlab.com.

``FileServer`` serves files from a directory (``GET``/``HEAD``, ``Range``/``If-Range``, strong ``ETag``s) and logs
every request. Faults are queued per path and consumed one per request:

* ``"500"``: answer HTTP 500;
* ``"truncate"``: announce the full ``Content-Length``, send half the body, close the connection cleanly;
* ``"drop"``: send a third of the body, then reset the connection (TCP RST);
* ``"flip"``: serve the file with one byte flipped;
* ``"slow"``: stream in 64 KiB pieces with ``slow_delay`` seconds between them (for races and Ctrl-C tests);
* ``"403"``: answer HTTP 403 (a refusal: must not be retried);
* ``"stall"``: wait ``stall_delay`` seconds before answering (longer than a short client timeout);
* ``"norange"``: answer 206 with the whole body and no ``Content-Range`` (a broken proxy's answer to ``Range``);
* ``"416"``, ``"429"``, ``"408"``, ``"300"``: answer that status, whatever was asked;
* ``"redirect"``: answer 302 to the same path (the next request is served as usual), as a CDN-fronted mirror does;
* hostile servers (:data:`HOSTILE`, written by :func:`hostile_answer`, shared with ``tests/hub_server.py``):
  ``"endless"`` (a chunked body that never ends), ``"longer"`` (no ``Content-Length``, the file then 1 MiB more),
  ``"gzip"`` (``Content-Encoding: gzip`` on a gzip bomb), ``"trickle"`` (one body byte per ``trickle_delay``),
  ``"header_trickle"`` (one header byte per ``trickle_delay``), ``"redirect_loop"`` (302 to itself, every time).
  Each stops by itself after ``HOSTILE_SECONDS`` or when the client hangs up.

``add_fault(..., then=callback)`` runs ``callback()`` once that faulty response is sent (e.g. to change the file
between a truncated download and its resumption).

:func:`build_mirror` lays out a local copy of download.openmmlab.com for some registry cards (razorzoo's own
``razorzoo mirror``): fixture-rule checkpoints in the card's upstream layout at the card's URL paths, the shipped
subnet YAMLs at theirs, and copies of the cards whose ``sha256`` values are the served files' hashes, for
``RAZORZOO_CARDS`` + ``RAZORZOO_MIRROR``.

Run it as a script (``python tests/http_server.py DIR``) to serve a directory from another process.
"""
from __future__ import annotations

import functools
import hashlib
import socket
import struct
import sys
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlsplit

HOSTILE = ("endless", "longer", "gzip", "trickle", "header_trickle", "redirect_loop")
FAULTS = ("500", "truncate", "drop", "flip", "slow", "403", "stall", "norange", "416", "429", "408", "300", "redirect",
          *HOSTILE)
HOSTILE_SECONDS = 20.0  # a hostile answer gives up by itself: no test may leave a thread sending for ever


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # percent-decoded
    range: str | None
    if_range: str | None
    accept_encoding: str | None = None


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up early (timeouts, Ctrl-C, a resumed download) are normal here: no traceback on stderr,
    where tests check what razorzoo itself prints."""

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class FileServer:
    """``with FileServer(root) as server: server.url``; ``server.add_fault(path, kind, times)``,
    ``server.requests`` (every :class:`Request`), ``server.gets(path)``."""

    def __init__(self, root: str | Path, *, slow_delay: float = 0.05, stall_delay: float = 1.0,
                 trickle_delay: float = 0.2) -> None:
        self.root = Path(root)
        self.slow_delay = slow_delay
        self.trickle_delay = trickle_delay
        self.stall_delay = stall_delay
        self._then: dict[str, Callable[[], None]] = {}
        self.requests: list[Request] = []
        self._faults: dict[str, deque[str]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._httpd = _QuietServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FileServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def add_fault(self, path: str, kind: str, times: int = 1, then: Callable[[], None] | None = None) -> None:
        """Queue ``kind`` for the next ``times`` requests of ``path`` (URL path, e.g. ``/mmrazor/v1/x.pth``); run
        ``then()`` after the first of them is answered."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {FAULTS}")
        with self._lock:
            self._faults[unquote(path)].extend([kind] * times)
            if then is not None:
                self._then[unquote(path)] = then

    def gets(self, path: str) -> list[Request]:
        """The GET requests of ``path`` so far."""
        path = unquote(path)
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and r.path == path]

    def _next_fault(self, path: str) -> str | None:
        with self._lock:
            queue = self._faults.get(path)
            return queue.popleft() if queue else None

    def _log(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)


def _make_handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, *, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            server._log(Request(self.command, path, self.headers.get("Range"), self.headers.get("If-Range"),
                                self.headers.get("Accept-Encoding")))
            file = (server.root / path.lstrip("/")).resolve()
            if server.root.resolve() not in file.parents or not file.is_file():
                return self._reply(404, b"not found\n")
            fault = server._next_fault(path) if body else None
            try:
                self._answer(path, file, fault, body=body)
            finally:
                if fault is not None and path in server._then:
                    server._then.pop(path)()

        def _answer(self, path: str, file: Path, fault: str | None, *, body: bool) -> None:
            if fault in HOSTILE:
                return hostile_answer(self, fault, file.read_bytes(), {}, server.trickle_delay)
            if fault in ("500", "403", "416", "429", "408", "300"):
                return self._reply(int(fault), b"injected\n")
            if fault == "redirect":
                return self._reply(302, b"moved\n", {"Location": path})
            if fault == "stall":
                time.sleep(server.stall_delay)
            data = file.read_bytes()
            etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
            if fault == "flip":
                data = data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:]
            start = 0 if fault == "norange" else self._range_start(len(data), etag)
            if start is None:
                return self._reply(416, b"range not satisfiable\n", {"Content-Range": f"bytes */{len(data)}"})
            part = data[start:]
            self.send_response(206 if start or fault == "norange" else 200)
            self.send_header("Content-Length", str(len(part)))
            self.send_header("ETag", etag)
            self.send_header("Accept-Ranges", "bytes")
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if not body:
                return
            if fault == "truncate":
                self.wfile.write(part[:len(part) // 2])
                self.wfile.flush()
                self.close_connection = True
            elif fault == "drop":
                self.wfile.write(part[:len(part) // 3])
                self.wfile.flush()
                time.sleep(0.2)  # let the client read what was sent: a reset discards unread received data
                # SO_LINGER 0: close() sends a TCP reset instead of a clean FIN
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
            elif fault == "slow":
                for i in range(0, len(part), 1 << 16):
                    self.wfile.write(part[i:i + (1 << 16)])
                    self.wfile.flush()
                    time.sleep(server.slow_delay)
            else:
                self.wfile.write(part)

        def _range_start(self, size: int, etag: str) -> int | None:
            """Start offset to serve: 0 without a (valid) Range, or when If-Range names another version."""
            header = self.headers.get("Range")
            if not header or not header.startswith("bytes=") or not header.endswith("-"):
                return 0
            if_range = self.headers.get("If-Range")
            if if_range is not None and if_range != etag:
                return 0
            start = int(header[len("bytes="):-1])
            return start if start < size else None

        def _reply(self, status: int, text: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(text)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(text)

    return Handler


@functools.lru_cache(maxsize=1)
def gzip_bomb() -> bytes:
    """64 MiB of zeros, gzip-compressed to about 64 KiB (made once per process: 0.4 s of compression, more under
    load; call it before a client with a short stall window asks for one)."""
    import gzip

    return gzip.compress(b"\0" * (64 << 20), 9)


def hostile_answer(handler: BaseHTTPRequestHandler, kind: str, data: bytes, headers: dict[str, str],
                   delay: float) -> None:
    """Answer ``handler``'s request the way a hostile server would (``kind`` in :data:`HOSTILE`) for a file holding
    ``data``; ``headers`` are sent too (minus ``Content-Length``). Ends after :data:`HOSTILE_SECONDS` at most."""

    deadline = time.monotonic() + HOSTILE_SECONDS
    headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
    handler.close_connection = True
    try:
        if kind == "header_trickle":
            handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
            while time.monotonic() < deadline:
                handler.wfile.write(b"X")
                handler.wfile.flush()
                time.sleep(delay)
            return
        if kind == "redirect_loop":
            handler.send_response(302)
            handler.send_header("Connection", "close")
            handler.send_header("Location", handler.path)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        handler.send_response(200)
        handler.send_header("Connection", "close")
        for key, value in headers.items():
            handler.send_header(key, value)
        if kind == "gzip":
            bomb = gzip_bomb()
            handler.send_header("Content-Encoding", "gzip")
            handler.send_header("Content-Length", str(len(bomb)))
            handler.end_headers()
            handler.wfile.write(bomb)
        elif kind == "endless":
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            piece = b"\0" * (1 << 16)
            while time.monotonic() < deadline:
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        elif kind == "longer":  # no Content-Length: the body ends when the connection closes
            handler.end_headers()
            handler.wfile.write(data + b"\0" * (1 << 20))
        elif kind == "trickle":
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            for i in range(len(data)):
                if time.monotonic() > deadline:
                    break
                handler.wfile.write(data[i:i + 1])
                handler.wfile.flush()
                time.sleep(delay)
        handler.wfile.flush()
    except (ConnectionError, OSError):  # the client gave up: what a good client does
        pass


def build_mirror(names: list[str], out: str | Path) -> tuple[Path, Path]:
    """``out/www`` (the mirror's files) and ``out/cards`` (card copies with matching hashes) for the registry cards
    ``names``: razorzoo's own :func:`razorzoo.storage.mirror.build_mirror`, whose demo weights are the fixture rule's
    (the tests/data goldens were recorded with them)."""
    from razorzoo.storage.mirror import build_mirror as build

    mirror = build(out, names)
    return mirror.www, mirror.cards


if __name__ == "__main__":  # serve a directory: python tests/http_server.py DIR  (prints the URL)
    with FileServer(sys.argv[1]) as srv:
        print(srv.url, flush=True)
        threading.Event().wait()
