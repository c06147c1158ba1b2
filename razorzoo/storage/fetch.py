"""Downloads into the razorzoo cache: one locked, resumable, hash-checked path for every file.

Upstream (mmengine ``load_from_http``) writes downloads in place and never checks the hash in the file name (docs/upstream.md §4,
docs/upstream.md §7.17). Here every download goes through :func:`fetch`, which

* keys the cache by the card URL (before ``RAZORZOO_MIRROR`` is applied, so switching mirrors reuses the cache),
* holds a file lock per URL, so N processes asking for the same file download it once,
* streams into ``<name>.incomplete`` while hashing in the same pass, then renames it into place atomically,
* resumes an ``.incomplete`` left by an interrupted run (Ctrl-C, dropped connection, truncated body) with HTTP
  ``Range`` (+ ``If-Range`` on the ETag), retries transient failures (5xx, 408/429, resets, timeouts) with
  exponential backoff, and fails at once with a clear message on 4xx,
* checks the sha256: 64 hex = the full hash, 8 hex = OpenMMLab's file-name prefix (docs/upstream.md §4), ``None`` = unknown: then it
  pins the hash of what it downloaded (one notice line on stderr), so a later, different file is refused,
* fails at once, without retrying, on a malformed ``RAZORZOO_MIRROR``/``RAZORZOO_HTTP_TIMEOUT``, a URL scheme it
  cannot fetch, or a host name that does not resolve,
* bounds what a server can make it do: a body is never decoded (``Content-Encoding`` on a download is refused: a
  gzip bomb inflates nothing), never grows past the size the card or the Hub states (or, unstated, past
  ``RAZORZOO_MAX_DOWNLOAD_MB``; it stops at the first byte past it), nor past its ``Content-Length``; response headers
  must arrive, and at least 1 KiB of body every ``RAZORZOO_STALL_TIMEOUT`` seconds (a trickle is a stall, retried like
  a dropped connection, and every stall counts against the 5 tries); redirect loops and protocol errors are one line.

The cache layout (``downloads/<sha256(url)[:16]>/...``) and the records are :class:`razorzoo.storage.cache.Cache`'s.

All HTTP goes through ``huggingface_hub``'s shared client (``huggingface_hub.utils.get_session()``): one HTTP stack
for the Hub and for download.openmmlab.com, with its proxy and certificate settings.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import posixpath
import re
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping
from urllib.parse import unquote, urlsplit

from razorzoo import constants
from razorzoo.bounded import safe_repr
from razorzoo.errors import FetchError, IntegrityError, OfflineError, RazorzooError
from razorzoo.files import read_json, write_json_atomic
from razorzoo.storage.cache import (
    META_FILE, PARTIAL_META, PARTIAL_SUFFIX, Cache, CacheError, CachedFile, hash_matches, sha256_of_file,
)

__all__ = ["fetch", "download_to", "cached", "mirrored", "sha256_of_file", "hash_matches", "CachedFile",
           "describe_http_error", "within_deadline", "StalledError"]

_CHUNK = 1 << 20
_STALL_BYTES = 1024  # what must arrive in every stall window
_RETRIES = 5  # consecutive attempts without progress before giving up
_BACKOFF_S = 0.25  # first wait between attempts; doubles each time
_BACKOFF_MAX_S = 8.0
_FATAL_STATUS = {400, 401, 403, 404, 405, 410, 451}
_HASH = re.compile(r"^(?:[0-9a-f]{8}|[0-9a-f]{64})$")
_ETAG = re.compile(r'^(?:W/)?"?[\w.:+/=-]{1,200}"?$')  # what may go back to the server in If-Range
_UNSAFE_NAME_CHARS = re.compile(r"[^\w.@+=-]")  # anything else in a URL's file name becomes "_"
_noticed_unpinned: set[str] = set()


class _Transient(Exception):
    """A failure worth retrying (5xx, reset, timeout, truncated body); the partial file is kept for resuming."""


class _Stalled(_Transient):
    """No response headers, or less than 1 KiB of body, in a stall window: retried, and always counted as a failure
    (a trickle grows the partial file a little each time, which must not count as progress)."""


class StalledError(FetchError):
    """A server did not answer within ``RAZORZOO_STALL_TIMEOUT`` seconds (:func:`within_deadline`)."""


def describe_http_error(exc: BaseException) -> str:
    """The exact cause of an HTTP client failure, in a few words: an unknown host, no network, a refused
    connection, a timeout, a redirect loop, a protocol error... (for one-line errors; never a traceback)."""
    import httpx2

    seen: BaseException | None = exc
    while seen is not None:  # the OS error under httpx's wrapper says most
        if isinstance(seen, socket.gaierror):
            if seen.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
                return "the host name does not exist (unknown host)"
            return "the host name cannot be resolved now (no network or no DNS server)"
        if isinstance(seen, OSError) and seen.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN):
            return "no network route to the host (no network?)"
        if isinstance(seen, ConnectionRefusedError):
            return "the connection was refused (nothing listens there)"
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, httpx2.TooManyRedirects):
        return "too many redirects (a redirect loop)"
    if isinstance(exc, httpx2.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, (httpx2.RemoteProtocolError, httpx2.LocalProtocolError, httpx2.DecodingError)):
        return f"the server broke the HTTP protocol ({safe_repr(str(exc), 80)})"
    if isinstance(exc, (httpx2.UnsupportedProtocol, httpx2.InvalidURL)):
        return f"not a URL razorzoo can fetch ({safe_repr(str(exc), 80)})"
    return f"{type(exc).__name__}: {safe_repr(str(exc), 80)}"


def within_deadline(call: Any, seconds: float, *, on_late: Any = None) -> Any:
    """``call()``, or :class:`StalledError` when it has not returned within ``seconds``: for the part of an HTTP exchange
    that no per-read timeout bounds (headers sent one byte at a time). ``call`` runs on a daemon thread; if it
    returns after the deadline, ``on_late(result)`` releases what it returned (closes the response)."""
    box: dict[str, Any] = {}
    lock, done = threading.Lock(), threading.Event()

    def work() -> None:
        try:
            box["result"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            box["error"] = exc
        with lock:
            done.set()
            late = box.get("abandoned", False)
        if late and "result" in box and on_late is not None:
            on_late(box["result"])

    threading.Thread(target=work, daemon=True, name="razorzoo-http").start()
    try:
        done.wait(seconds)
    finally:
        with lock:
            if not done.is_set():
                box["abandoned"] = True
    if box.get("abandoned"):
        raise StalledError(f"no answer within {seconds:g} s (RAZORZOO_STALL_TIMEOUT)")
    if "error" in box:
        raise box["error"]
    return box["result"]


def mirrored(url: str) -> str:
    """``url`` with the ``https://download.openmmlab.com`` prefix replaced by ``RAZORZOO_MIRROR`` when it is set."""
    mirror = constants.mirror()
    base = constants.UPSTREAM_BASE_URL
    if mirror and (url == base or url.startswith(base + "/")):
        return mirror + url[len(base):]
    return url


def _file_name(url: str) -> str:
    """The last URL path segment, percent-decoded (``lat%4031ms`` -> ``lat@31ms``), safe as a file name: no
    separators, control characters or leading dots, at most 200 characters."""
    name = _UNSAFE_NAME_CHARS.sub("_", unquote(posixpath.basename(urlsplit(url).path))).lstrip(".")[-200:]
    return name or "download"


def _check_hash_format(sha256: str | None, url: str) -> str | None:
    if sha256 is None:
        return None
    sha256 = sha256.lower()
    if not _HASH.fullmatch(sha256):
        raise FetchError(f"expected sha256 for {url} is {safe_repr(sha256)}: use 64 hex digits, the 8-hex prefix "
                         f"of the OpenMMLab file name, or None when no hash is known")
    return sha256


def cached(url: str, *, sha256: str | None = None, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The cached file of ``url`` if it is complete and satisfies ``sha256``, else ``None``. No network, no
    hashing: the hash was checked when the file entered the cache (``razorzoo cache verify`` re-checks)."""
    sha256 = _check_hash_format(sha256, url)
    record = Cache(cache_dir).record(url)
    if record is None or not hash_matches(sha256, record.sha256):
        return None
    try:
        complete = record.path.stat().st_size == record.size
    except OSError:
        return None
    return record.path if complete else None


def fetch(
    url: str,
    *,
    sha256: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
    progress: bool | None = None,
    size: int | None = None,
) -> Path:
    """Path of ``url`` in the cache, downloading it first if needed.

    Args:
        url: the file's canonical URL (a card URL; ``RAZORZOO_MIRROR`` is applied when downloading).
        sha256: 64 hex (full hash), 8 hex (OpenMMLab file-name prefix) or ``None`` (unknown: pin the hash of the
            first download and say so once on stderr).
        cache_dir: cache root (default :func:`razorzoo.constants.cache_dir`).
        offline: use only the cache (default: ``RAZORZOO_OFFLINE`` / ``HF_HUB_OFFLINE``).
        progress: show a tqdm bar (default: on unless ``RAZORZOO_PROGRESS=0``/``HF_HUB_DISABLE_PROGRESS_BARS``).
        size: the file's size in bytes when known (a card's ``size``): a longer body is cut at the first byte past it.

    Raises:
        OfflineError: offline and not cached. IntegrityError: the downloaded bytes do not match the expected (or
        pinned) hash; nothing is kept. FetchError: the server refused (4xx) or kept failing after retries.
    """
    sha256 = _check_hash_format(sha256, url)
    cache = Cache(cache_dir)
    hit = cached(url, sha256=sha256, cache_dir=cache.root)
    if hit is not None:
        return hit
    entry = cache.entry_dir(url)
    if offline if offline is not None else constants.offline():
        raise OfflineError(
            f"offline mode is on and {url} is not in the cache (expected under {entry}); run once with network "
            f"access (unset RAZORZOO_OFFLINE / HF_HUB_OFFLINE, or set RAZORZOO_MIRROR to a reachable mirror)")
    # a malformed RAZORZOO_MIRROR, RAZORZOO_HTTP_TIMEOUT or RAZORZOO_PROGRESS fails here, before anything is written
    source = mirrored(url)
    constants.http_timeout()
    progress = constants.progress_bars() if progress is None else progress
    with cache.lock(entry):
        hit = cached(url, sha256=sha256, cache_dir=cache.root)  # another process may have finished meanwhile
        if hit is not None:
            return hit
        previous = cache.record(url)
        pin = previous.sha256 if sha256 is None and previous is not None and previous.pinned else None
        name = _file_name(url)
        what = "the hash pinned when it was first downloaded" if sha256 is None else "the expected sha256"
        digest, length, etag = download_to(source, entry / name, expected=sha256 or pin, what=what,
                                           progress=progress, size=size)
        _write_json(entry / META_FILE, {
            "url": url, "file": name, "sha256": digest, "size": length, "etag": etag, "source": source,
            "pinned": sha256 is None, "time": time.time()})
    if sha256 is None and pin is None and url not in _noticed_unpinned:
        _noticed_unpinned.add(url)
        print(f"razorzoo: notice: {url} has no published sha256; pinned the hash of this download ({digest}) in the "
              f"cache, a different file will be refused later", file=sys.stderr)
    return entry / name


def _write_json(path: Path, data: Any) -> None:
    try:
        write_json_atomic(path, data)
    except OSError as exc:
        raise CacheError(f"cannot write {path}: {exc.strerror or type(exc).__name__}") from None


def download_to(source: str, path: Path, *, expected: str | None = None, what: str = "the expected sha256",
                headers: Mapping[str, str] | None = None, progress: bool | None = None, size: int | None = None,
                stated_by: str = "the card") -> tuple[str, int, str | None]:
    """Download ``source`` to ``path``: streamed into ``<path>.incomplete`` (resumed if one is there), retried on
    transient failures, hash-checked against ``expected``, then renamed into place. Return (sha256, size, ETag).

    ``headers`` are sent with every request (a Hub token). ``size`` is the size ``stated_by`` states, when known:
    the body, and a partial file left from before, may not grow past it (nor, unknown, past
    ``RAZORZOO_MAX_DOWNLOAD_MB``). The parent directory must exist.
    """
    show = constants.progress_bars() if progress is None else progress  # a malformed RAZORZOO_PROGRESS: nothing written
    limit = _Limit(size, stated_by) if size is not None else _Limit(constants.max_download_bytes(),
                                                                      "RAZORZOO_MAX_DOWNLOAD_MB", exact=False)
    constants.stall_timeout()  # a malformed RAZORZOO_STALL_TIMEOUT fails before any request
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    partial_meta = path.with_name(path.name + PARTIAL_META)
    if _size(partial) > limit.bytes:  # left by an earlier, lying server: it cannot be a prefix of this file
        partial.unlink()
    # progress is a partial file longer than it ever was in this call: a server that truncates every body and
    # then refuses to resume (416, a restart from zero) cannot keep the loop going forever; a stall never counts
    failures, longest = 0, _size(partial)
    while True:
        try:
            digest, size, etag = _stream(source, partial, partial_meta, path.name, dict(headers or {}), show, limit)
            break
        except _Transient as exc:
            size = _size(partial)
            if size > longest and not isinstance(exc, _Stalled):
                failures, longest = 0, size
            else:
                failures += 1
            if failures >= _RETRIES:
                kept = (f"the partial download is kept in {partial.parent} and resumes on the next try"
                        if size else "nothing was downloaded")
                raise FetchError(f"downloading {source} failed {failures} times in a row ({exc}); {kept}") from exc
            time.sleep(_backoff_s(failures))
    if not hash_matches(expected, digest):
        partial.unlink(missing_ok=True)
        partial_meta.unlink(missing_ok=True)
        raise IntegrityError(f"{source} does not match {what}: expected {expected}, got {digest}; nothing was kept "
                             f"in the cache. The file changed or was corrupted in transit: retry, or check the mirror")
    os.replace(partial, path)
    partial_meta.unlink(missing_ok=True)
    return digest, size, etag


def _size(path: Path) -> int:
    """The file's size, 0 when it does not exist."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _backoff_s(failures: int) -> float:
    """Seconds to wait after ``failures`` attempts in a row without progress: doubling from ``_BACKOFF_S``, capped."""
    return min(_BACKOFF_S * 2 ** failures, _BACKOFF_MAX_S)


class _Limit:
    """The most bytes a download may have: ``bytes``, as ``stated_by`` states it (``exact``: the file's size)."""

    def __init__(self, size: int, stated_by: str, *, exact: bool = True) -> None:
        self.bytes, self.stated_by, self.exact = size, stated_by, exact

    def refuse(self, source: str, found: str) -> FetchError:
        stated = (f"the {self.bytes} bytes {self.stated_by} states" if self.exact
                  else f"the {self.bytes >> 20} MiB allowed by {self.stated_by}")
        return FetchError(f"{source}: the body is too long: {found}, more than {stated}; stopped there and kept "
                          "nothing (a wrong mirror, or a server that lies about the file)")


def _stream(source: str, partial: Path, partial_meta: Path, name: str, headers: dict[str, str],
            show: bool, limit: _Limit) -> tuple[str, int, str | None]:
    """Download ``source`` into ``partial`` (resuming it when possible); return (sha256, size, etag)."""
    import httpx2
    from huggingface_hub.utils import get_session
    from tqdm.auto import tqdm

    timeout = constants.http_timeout()  # a malformed RAZORZOO_HTTP_TIMEOUT fails before any request
    stall = constants.stall_timeout()
    offset = _size(partial)
    headers["Accept-Encoding"] = "identity"
    if offset:
        headers["Range"] = f"bytes={offset}-"
        etag = _recorded_etag(partial_meta)
        if etag:
            headers["If-Range"] = etag  # a changed file answers 200 with the whole new body
    session = get_session()
    try:
        request = session.build_request("GET", source, headers=headers,
                                        timeout=httpx2.Timeout(min(timeout, stall)))
        try:
            response = within_deadline(lambda: session.send(request, stream=True, follow_redirects=True), stall,
                                       on_late=lambda late: late.close())
        except StalledError as exc:
            raise _Stalled(str(exc)) from None
        with contextlib.closing(response):
            status = response.status_code
            if status in _FATAL_STATUS:
                raise FetchError(f"{source}: HTTP {status} {response.reason_phrase}; the file is not available "
                                 f"there (check the URL in the card, or RAZORZOO_MIRROR)")
            if status >= 500 or status in (408, 429):
                raise _Transient(f"HTTP {status}")
            if status == 416:  # the partial file is not a prefix of this file: start over
                partial.unlink(missing_ok=True)
                raise _Transient("HTTP 416 on resume; restarting")
            if status == 206 and _range_start(response.headers.get("Content-Range")) != offset:
                partial.unlink(missing_ok=True)
                raise _Transient("server answered a different byte range; restarting")
            if status not in (200, 206):
                raise FetchError(f"{source}: unexpected HTTP {status} {response.reason_phrase}")
            encoding = response.headers.get("Content-Encoding", "").strip().lower()
            if encoding not in ("", "identity"):  # asked for identity: a compressed answer could be a bomb
                raise FetchError(f"{source}: the server sent the file encoded ({safe_repr(encoding, 40)}) although "
                                 "razorzoo asked for it as is; refusing to decode a download (check the mirror)")
            digest = hashlib.sha256()
            if status == 200:
                offset = 0
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None and length.isdigit() and len(length) < 20 else None
            if total is not None and (total > limit.bytes or (limit.exact and total != limit.bytes)):
                if total > limit.bytes:
                    raise limit.refuse(source, f"the server announces {total} bytes")
                raise FetchError(f"{source}: the server announces {total} bytes, but {limit.stated_by} states "
                                 f"{limit.bytes}; kept nothing (a wrong mirror, or a changed file)")
            if offset:
                with open(partial, "rb") as f:  # resumed bytes still go into the hash
                    for block in iter(lambda: f.read(_CHUNK), b""):
                        digest.update(block)
            etag = response.headers.get("ETag")
            _write_json(partial_meta, {"file": name, "source": source, "etag": etag})
            with open(partial, "ab" if offset else "wb") as f, tqdm(
                    total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                    disable=not show, leave=False) as bar:
                try:
                    received = _write_body(response.iter_raw(), f, digest, bar, limit.bytes - offset, stall)
                finally:
                    f.flush()
                    os.fsync(f.fileno())
    except _TooLong:
        partial.unlink(missing_ok=True)
        raise limit.refuse(source, f"more than {limit.bytes} bytes arrived") from None
    except (httpx2.UnsupportedProtocol, httpx2.InvalidURL, httpx2.LocalProtocolError, httpx2.TooManyRedirects) as exc:
        raise FetchError(f"cannot download {safe_repr(source, 120)}: {describe_http_error(exc)}") from None
    except httpx2.TransportError as exc:  # resets, timeouts, "peer closed connection" (a truncated body)
        if _unknown_host(exc):
            host = urlsplit(source).hostname
            raise FetchError(f"cannot download {safe_repr(source, 120)}: the host {safe_repr(host)} does not exist "
                             f"(check RAZORZOO_MIRROR / HF_ENDPOINT)") from None
        raise _Transient(describe_http_error(exc)) from exc
    except httpx2.HTTPError as exc:  # anything else httpx raises: one line, never a traceback
        raise FetchError(f"cannot download {safe_repr(source, 120)}: {describe_http_error(exc)}") from None
    except OSError as exc:
        if isinstance(exc, RazorzooError):  # FetchError and CacheError are OSErrors too
            raise
        raise CacheError(f"cannot write {partial}: {exc.strerror or type(exc).__name__}") from None
    size = offset + received
    expected_total = limit.bytes if limit.exact else total
    if expected_total is not None and size != expected_total:
        raise _Transient(f"truncated body: got {size} of {expected_total} bytes")
    return digest.hexdigest(), size, etag


class _TooLong(Exception):
    """The body went past the most bytes it may have."""


def _write_body(pieces: Iterator[bytes], f: BinaryIO, digest: Any, bar: Any, room: int, stall: float) -> int:
    """Append the response's pieces to ``f`` and ``digest`` in 1 MiB batches, consumed by a worker thread while the
    next batch arrives (hashlib and file writes release the GIL); return the number of bytes. The pieces come as
    they arrive, and the batch in hand is written even when the connection drops, so every received byte is kept for
    resuming and a connection that keeps failing still makes progress. At most ``room`` bytes are kept
    (:class:`_TooLong` at the first byte past them), and fewer than 1 KiB in ``stall`` seconds is :class:`_Stalled`."""
    batch = bytearray()
    received = 0

    def consume(data: bytes) -> None:
        f.write(data)
        digest.update(data)

    with ThreadPoolExecutor(1) as worker:
        pending = None

        def hand_over() -> None:
            nonlocal pending
            if pending is not None:
                pending.result()
            pending = worker.submit(consume, bytes(batch))
            batch.clear()

        window_start, window_bytes = time.monotonic(), 0
        try:
            for piece in pieces:
                if received + len(piece) > room:
                    raise _TooLong
                batch += piece
                received += len(piece)
                bar.update(len(piece))
                if len(batch) >= _CHUNK:
                    hand_over()
                window_bytes += len(piece)
                now = time.monotonic()
                if now - window_start >= stall:
                    if window_bytes < _STALL_BYTES:
                        raise _Stalled(f"stalled: {window_bytes} bytes in {now - window_start:.1f} s "
                                       f"(RAZORZOO_STALL_TIMEOUT={stall:g})")
                    window_start, window_bytes = now, 0
        finally:
            if batch:
                hand_over()
            if pending is not None:
                pending.result()
    return received


def _recorded_etag(partial_meta: Path) -> str | None:
    meta = read_json(partial_meta)
    etag = meta.get("etag") if isinstance(meta, dict) else None
    return etag if isinstance(etag, str) and _ETAG.fullmatch(etag) else None


def _unknown_host(exc: BaseException) -> bool:
    """Whether a connection failed because the host name does not resolve (no point retrying)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, socket.gaierror) and seen.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _range_start(content_range: str | None) -> int | None:
    match = re.match(r"bytes (\d{1,19})-", content_range) if content_range else None
    return int(match.group(1)) if match else None
