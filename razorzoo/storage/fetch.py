"""Downloads into the razorzoo cache: one locked, resumable, hash-checked path for every file.

Upstream (mmengine ``load_from_http``) writes downloads in place and never checks the hash in the file name (§4,
§7.17). Here every download goes through :func:`fetch`, which

* keys the cache by the card URL (before ``RAZORZOO_MIRROR`` is applied, so switching mirrors reuses the cache),
* holds a file lock per URL, so N processes asking for the same file download it once,
* streams into ``<name>.incomplete`` while hashing in the same pass, then renames it into place atomically,
* resumes an ``.incomplete`` left by an interrupted run (Ctrl-C, dropped connection, truncated body) with HTTP
  ``Range`` (+ ``If-Range`` on the ETag), retries transient failures (5xx, 408/429, resets, timeouts) with
  exponential backoff, and fails at once with a clear message on 4xx,
* checks the sha256: 64 hex = the full hash, 8 hex = OpenMMLab's file-name prefix (§4), ``None`` = unknown: then it
  warns once and pins the hash of what it downloaded, so a later, different file is refused.

Cache layout (``root`` = ``cache_dir=`` or :func:`razorzoo.constants.cache_dir`)::

    <root>/downloads/<sha256(url)[:16]>/<file name>               the verified file
    <root>/downloads/<sha256(url)[:16]>/meta.json                 url, sha256 (full), size, etag, source, pinned
    <root>/downloads/<sha256(url)[:16]>/<file name>.incomplete    a partial download, resumed on the next call
    <root>/downloads/<sha256(url)[:16]>/.lock                     held while downloading
    <root>/models/...                                             converted models (:mod:`razorzoo.loading`)

All HTTP goes through ``huggingface_hub``'s shared client (``huggingface_hub.utils.get_session()``): one HTTP stack
for the Hub and for download.openmmlab.com, with its proxy and certificate settings.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from razorzoo import constants
from razorzoo.errors import FetchError, IntegrityError, OfflineError

__all__ = ["fetch", "cached", "cached_file", "cached_files", "remove_download", "mirrored", "sha256_of_file",
           "hash_matches", "write_json_atomic", "CachedFile", "DOWNLOADS_DIR"]

DOWNLOADS_DIR = "downloads"
META_FILE = "meta.json"
PARTIAL_SUFFIX = ".incomplete"
_PARTIAL_META = "incomplete.json"  # the ETag the partial bytes came with, for If-Range on resume
_CHUNK = 1 << 20
_RETRIES = 5  # consecutive attempts without progress before giving up
_BACKOFF_S = 0.25  # first wait between attempts; doubles each time
_BACKOFF_MAX_S = 8.0
_FATAL_STATUS = {400, 401, 403, 404, 405, 410, 451}
_HASH = re.compile(r"^(?:[0-9a-f]{8}|[0-9a-f]{64})$")
_warned_unpinned: set[str] = set()


@dataclass(frozen=True)
class CachedFile:
    """A verified download in the cache, as recorded in its ``meta.json``."""

    url: str
    path: Path
    sha256: str  # full 64-hex hash of the file's bytes
    size: int
    pinned: bool  # True when no trusted hash was known: ``sha256`` is what was downloaded first
    source: str = ""  # the URL actually downloaded (after RAZORZOO_MIRROR)
    etag: str | None = None


class _Transient(Exception):
    """A failure worth retrying (5xx, reset, timeout, truncated body); the partial file is kept for resuming."""


def mirrored(url: str) -> str:
    """``url`` with the ``https://download.openmmlab.com`` prefix replaced by ``RAZORZOO_MIRROR`` when it is set."""
    mirror = constants.mirror()
    base = constants.UPSTREAM_BASE_URL
    if mirror and (url == base or url.startswith(base + "/")):
        return mirror + url[len(base):]
    return url


def hash_matches(expected: str | None, actual: str) -> bool:
    """Whether the full hash ``actual`` satisfies ``expected`` (64 hex: equal; 8 hex: prefix, §4; ``None``: any)."""
    if expected is None:
        return True
    return actual == expected if len(expected) == 64 else actual.startswith(expected)


def sha256_of_file(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _root(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else constants.cache_dir()


def _entry_dir(root: Path, url: str) -> Path:
    return root / DOWNLOADS_DIR / hashlib.sha256(url.encode()).hexdigest()[:16]


def _file_name(url: str) -> str:
    """The last URL path segment, percent-decoded (``lat%4031ms`` -> ``lat@31ms``), safe as a file name."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1]).replace(os.sep, "_").lstrip(".")
    return name or "download"


def _check_hash_format(sha256: str | None, url: str) -> str | None:
    if sha256 is None:
        return None
    sha256 = sha256.lower()
    if not _HASH.match(sha256):
        raise FetchError(f"expected sha256 for {url} is {sha256!r}: use 64 hex digits, the 8-hex prefix of the "
                         f"OpenMMLab file name, or None when no hash is known")
    return sha256


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` atomically (temp file in the same directory, then rename)."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _entry(entry: Path) -> CachedFile | None:
    meta = _read_json(entry / META_FILE)
    if not meta:
        return None
    return CachedFile(url=meta["url"], path=entry / meta["file"], sha256=meta["sha256"], size=meta["size"],
                      pinned=meta.get("pinned", False), source=meta.get("source", ""), etag=meta.get("etag"))


def cached_file(url: str, *, cache_dir: str | os.PathLike | None = None) -> CachedFile | None:
    """The cache record of ``url`` (whether or not its file is still there), without any network access."""
    record = _entry(_entry_dir(_root(cache_dir), url))
    return record if record is not None and record.url == url else None


def cached(url: str, *, sha256: str | None = None, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The cached file of ``url`` if it is complete and satisfies ``sha256``, else ``None``. No network, no
    hashing: the hash was checked when the file entered the cache (``razorzoo cache verify`` re-checks)."""
    record = cached_file(url, cache_dir=cache_dir)
    if record is None or not hash_matches(_check_hash_format(sha256, url), record.sha256):
        return None
    try:
        complete = record.path.stat().st_size == record.size
    except OSError:
        return None
    return record.path if complete else None


def cached_files(cache_dir: str | os.PathLike | None = None) -> list[CachedFile]:
    """Every download recorded in the cache, sorted by file name."""
    downloads = _root(cache_dir) / DOWNLOADS_DIR
    records = (_entry(entry) for entry in downloads.iterdir()) if downloads.is_dir() else ()
    return sorted((r for r in records if r is not None), key=lambda r: (r.path.name, r.url))


def remove_download(url: str, *, cache_dir: str | os.PathLike | None = None) -> bool:
    """Delete ``url``'s cache entry (file, record, partial download); ``True`` if there was one."""
    entry = _entry_dir(_root(cache_dir), url)
    if not entry.exists():
        return False
    shutil.rmtree(entry)
    return True


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
        sha256: 64 hex (full hash), 8 hex (OpenMMLab file-name prefix) or ``None`` (unknown: warn once, pin).
        cache_dir: cache root (default :func:`razorzoo.constants.cache_dir`).
        offline: use only the cache (default: ``RAZORZOO_OFFLINE`` / ``HF_HUB_OFFLINE``).
        progress: show a tqdm bar (default: on unless ``RAZORZOO_PROGRESS=0``/``HF_HUB_DISABLE_PROGRESS_BARS``).

    Raises:
        OfflineError: offline and not cached. IntegrityError: the downloaded bytes do not match the expected (or
        pinned) hash; nothing is kept. FetchError: the server refused (4xx) or kept failing after retries.
    """
    from filelock import FileLock

    sha256 = _check_hash_format(sha256, url)
    root = _root(cache_dir)
    hit = cached(url, sha256=sha256, cache_dir=root)
    if hit is not None:
        return hit
    entry = _entry_dir(root, url)
    if offline if offline is not None else constants.offline():
        raise OfflineError(
            f"offline mode is on and {url} is not in the cache (expected under {entry}); run once with network "
            f"access (unset RAZORZOO_OFFLINE / HF_HUB_OFFLINE, or set RAZORZOO_MIRROR to a reachable mirror)")
    entry.mkdir(parents=True, exist_ok=True)
    with FileLock(str(entry / ".lock")):
        hit = cached(url, sha256=sha256, cache_dir=root)  # another process may have finished meanwhile
        if hit is not None:
            return hit
        previous = cached_file(url, cache_dir=root)
        pin = previous.sha256 if sha256 is None and previous is not None and previous.pinned else None
        return _download(url, entry, expected=sha256 or pin, pinned=sha256 is None, progress=progress)


def _download(url: str, entry: Path, *, expected: str | None, pinned: bool, progress: bool | None) -> Path:
    source = mirrored(url)
    name = _file_name(url)
    partial = entry / (name + PARTIAL_SUFFIX)
    failures = 0
    while True:
        size_before = partial.stat().st_size if partial.exists() else 0
        try:
            digest, size, etag = _stream(source, partial, entry / _PARTIAL_META, name, progress)
            break
        except _Transient as exc:
            made_progress = partial.exists() and partial.stat().st_size > size_before
            failures = 0 if made_progress else failures + 1
            if failures >= _RETRIES:
                raise FetchError(f"downloading {source} failed {failures} times in a row ({exc}); the partial "
                                 f"download is kept in {entry} and resumes on the next try") from exc
            time.sleep(min(_BACKOFF_S * 2 ** failures, _BACKOFF_MAX_S))
    if not hash_matches(expected, digest):
        partial.unlink(missing_ok=True)
        (entry / _PARTIAL_META).unlink(missing_ok=True)
        what = "the hash pinned when it was first downloaded" if pinned else "the expected sha256"
        raise IntegrityError(f"{source} does not match {what}: expected {expected}, got {digest}; nothing was kept "
                             f"in the cache. The file changed or was corrupted in transit: retry, or check the mirror")
    os.replace(partial, entry / name)
    (entry / _PARTIAL_META).unlink(missing_ok=True)
    write_json_atomic(entry / META_FILE, {"url": url, "file": name, "sha256": digest, "size": size, "etag": etag,
                                    "source": source, "pinned": pinned, "time": time.time()})
    if pinned and expected is None and url not in _warned_unpinned:
        _warned_unpinned.add(url)
        warnings.warn(f"{url} has no published sha256; razorzoo pinned the hash of this download ({digest}) in the "
                      f"cache and will refuse a different file later", stacklevel=3)
    return entry / name


def _stream(source: str, partial: Path, partial_meta: Path, name: str, progress: bool | None
            ) -> tuple[str, int, str | None]:
    """Download ``source`` into ``partial`` (resuming it when possible); return (sha256, size, etag)."""
    import httpx2
    from huggingface_hub.utils import get_session
    from tqdm.auto import tqdm

    offset = partial.stat().st_size if partial.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        etag = (_read_json(partial_meta) or {}).get("etag")
        if etag:
            headers["If-Range"] = etag  # a changed file answers 200 with the whole new body
    try:
        with get_session().stream("GET", source, headers=headers, follow_redirects=True,
                                  timeout=httpx2.Timeout(constants.http_timeout())) as response:
            status = response.status_code
            if status in _FATAL_STATUS:
                raise FetchError(f"{source}: HTTP {status} {response.reason_phrase}; the file is not available "
                                 f"there (check the URL in the card, or RAZORZOO_MIRROR={constants.mirror()!r})")
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
            total = offset + int(length) if length is not None else None
            etag = response.headers.get("ETag")
            write_json_atomic(partial_meta, {"source": source, "etag": etag})
            received = 0
            show = constants.progress_bars() if progress is None else progress
            with open(partial, "ab" if offset else "wb") as f, tqdm(
                    total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                    disable=not show, leave=False) as bar, ThreadPoolExecutor(1) as worker:
                def consume(chunk: bytes) -> None:  # hashlib and file writes release the GIL
                    f.write(chunk)
                    digest.update(chunk)

                pending = None
                for chunk in response.iter_bytes(_CHUNK):  # receive the next chunk while the last is consumed
                    if pending is not None:
                        pending.result()
                    pending = worker.submit(consume, chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                if pending is not None:
                    pending.result()
                f.flush()
                os.fsync(f.fileno())
    except httpx2.TransportError as exc:  # resets, timeouts, "peer closed connection" (a truncated body)
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc
    size = offset + received
    if total is not None and size != total:
        raise _Transient(f"truncated body: got {size} of {total} bytes")
    return digest.hexdigest(), size, etag


def _range_start(content_range: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-", content_range or "")
    return int(match.group(1)) if match else None
