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
  cannot fetch, or a host name that does not resolve.

The cache layout (``downloads/<sha256(url)[:16]>/...``) and the records are :class:`razorzoo.storage.cache.Cache`'s.

All HTTP goes through ``huggingface_hub``'s shared client (``huggingface_hub.utils.get_session()``): one HTTP stack
for the Hub and for download.openmmlab.com, with its proxy and certificate settings.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import re
import socket
import sys
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

__all__ = ["fetch", "download_to", "cached", "mirrored", "sha256_of_file", "hash_matches", "CachedFile"]

_CHUNK = 1 << 20
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
) -> Path:
    """Path of ``url`` in the cache, downloading it first if needed.

    Args:
        url: the file's canonical URL (a card URL; ``RAZORZOO_MIRROR`` is applied when downloading).
        sha256: 64 hex (full hash), 8 hex (OpenMMLab file-name prefix) or ``None`` (unknown: pin the hash of the
            first download and say so once on stderr).
        cache_dir: cache root (default :func:`razorzoo.constants.cache_dir`).
        offline: use only the cache (default: ``RAZORZOO_OFFLINE`` / ``HF_HUB_OFFLINE``).
        progress: show a tqdm bar (default: on unless ``RAZORZOO_PROGRESS=0``/``HF_HUB_DISABLE_PROGRESS_BARS``).

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
        digest, size, etag = download_to(source, entry / name, expected=sha256 or pin, what=what, progress=progress)
        _write_json(entry / META_FILE, {
            "url": url, "file": name, "sha256": digest, "size": size, "etag": etag, "source": source,
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
                headers: Mapping[str, str] | None = None, progress: bool | None = None) -> tuple[str, int, str | None]:
    """Download ``source`` to ``path``: streamed into ``<path>.incomplete`` (resumed if one is there), retried on
    transient failures, hash-checked against ``expected``, then renamed into place. Return (sha256, size, ETag).

    ``headers`` are sent with every request (a Hub token). The parent directory must exist.
    """
    show = constants.progress_bars() if progress is None else progress  # a malformed RAZORZOO_PROGRESS: nothing written
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    partial_meta = path.with_name(path.name + PARTIAL_META)
    # progress is a partial file longer than it ever was in this call: a server that truncates every body and
    # then refuses to resume (416, a restart from zero) cannot keep the loop going forever
    failures, longest = 0, _size(partial)
    while True:
        try:
            digest, size, etag = _stream(source, partial, partial_meta, path.name, dict(headers or {}), show)
            break
        except _Transient as exc:
            size = _size(partial)
            if size > longest:
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


def _stream(source: str, partial: Path, partial_meta: Path, name: str, headers: dict[str, str],
            show: bool) -> tuple[str, int, str | None]:
    """Download ``source`` into ``partial`` (resuming it when possible); return (sha256, size, etag)."""
    import httpx2
    from huggingface_hub.utils import get_session
    from tqdm.auto import tqdm

    timeout = constants.http_timeout()  # a malformed RAZORZOO_HTTP_TIMEOUT fails before any request
    offset = _size(partial)
    headers["Accept-Encoding"] = "identity"
    if offset:
        headers["Range"] = f"bytes={offset}-"
        etag = _recorded_etag(partial_meta)
        if etag:
            headers["If-Range"] = etag  # a changed file answers 200 with the whole new body
    try:
        with get_session().stream("GET", source, headers=headers, follow_redirects=True,
                                  timeout=httpx2.Timeout(timeout)) as response:
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
            digest = hashlib.sha256()
            if status == 200:
                offset = 0
            elif offset:
                with open(partial, "rb") as f:  # resumed bytes still go into the hash
                    for block in iter(lambda: f.read(_CHUNK), b""):
                        digest.update(block)
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None and length.isdigit() else None
            etag = response.headers.get("ETag")
            _write_json(partial_meta, {"file": name, "source": source, "etag": etag})
            with open(partial, "ab" if offset else "wb") as f, tqdm(
                    total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                    disable=not show, leave=False) as bar:
                received = _write_body(response.iter_bytes(), f, digest, bar)
                f.flush()
                os.fsync(f.fileno())
    except (httpx2.UnsupportedProtocol, httpx2.InvalidURL, httpx2.LocalProtocolError) as exc:
        raise FetchError(f"cannot download {safe_repr(source, 120)}: {exc}") from None
    except httpx2.TransportError as exc:  # resets, timeouts, "peer closed connection" (a truncated body)
        if _unknown_host(exc):
            host = urlsplit(source).hostname
            raise FetchError(f"cannot download {safe_repr(source, 120)}: the host {safe_repr(host)} does not exist "
                             f"(check RAZORZOO_MIRROR / HF_ENDPOINT)") from None
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        if isinstance(exc, RazorzooError):  # FetchError and CacheError are OSErrors too
            raise
        raise CacheError(f"cannot write {partial}: {exc.strerror or type(exc).__name__}") from None
    size = offset + received
    if total is not None and size != total:
        raise _Transient(f"truncated body: got {size} of {total} bytes")
    return digest.hexdigest(), size, etag


def _write_body(pieces: Iterator[bytes], f: BinaryIO, digest: Any, bar: Any) -> int:
    """Append the response's pieces to ``f`` and ``digest`` in 1 MiB batches, consumed by a worker thread while the
    next batch arrives (hashlib and file writes release the GIL); return the number of bytes. The pieces come as
    they arrive, and the batch in hand is written even when the connection drops, so every received byte is kept for
    resuming and a connection that keeps failing still makes progress."""
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

        try:
            for piece in pieces:
                batch += piece
                received += len(piece)
                bar.update(len(piece))
                if len(batch) >= _CHUNK:
                    hand_over()
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
    match = re.match(r"bytes (\d+)-", content_range) if content_range else None
    return int(match.group(1)) if match else None
