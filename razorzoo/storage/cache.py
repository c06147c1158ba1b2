"""The razorzoo cache as one object: where downloads, converted models and Hub files live, and how they go away.

Layout (``root`` = ``cache_dir=``, else :func:`razorzoo.constants.cache_dir`)::

    <root>/downloads/<sha256(url)[:16]>/<file>               a verified download   (razorzoo.storage.fetch)
    <root>/downloads/<sha256(url)[:16]>/meta.json            url, file, sha256 (full), size, etag, source, pinned
    <root>/downloads/<sha256(url)[:16]>/<file>.incomplete    a partial download (+ <file>.incomplete.json: ETag)
    <root>/models/<name>/<weights sha256>/model.safetensors  a converted model    (razorzoo.loading)
    <root>/models/index.json                                 name -> converted file, what it was made from
    <root>/hub/<org>/<name>/<commit>/<file>                  Hub files at one commit + meta.json (razorzoo.storage.hub)
    <root>/hub/<org>/<name>/refs.json                        branch/tag -> commit, for offline use
    <root>/exported/<key>/model.onnx                         a model exported once for a runtime (razorzoo.deploy)
    <root>/exported/<key>/meta.json                          which converted file (sha256) and task it was made from
    .lock files beside each of them                          inter-process locks (razorzoo's too: listed, removed)

The cache removes only what it wrote *and recorded*: the files a ``meta.json`` or ``index.json`` entry names, the
files of an ``exported/<key>/`` folder (razorzoo names those folders by a content hash), the locks beside them, then
the directories those files leave empty; :meth:`Cache.entries` lists every one of those files, with its size.
Anything else a user put there survives ``razorzoo cache rm --all``. Every recorded name becomes a path through :func:`razorzoo.files.safe_join`, so an edited ``index.json`` or ``meta.json``
(``../``, absolute paths) can never make razorzoo read or delete outside its own directories. File-system failures
(a read-only cache, a cache path that is a file) become one-line :class:`CacheError`\\ s.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from razorzoo import constants
from razorzoo.bounded import safe_repr
from razorzoo.errors import RazorzooError
from razorzoo.files import UnsafePathError, read_json, safe_join, write_json_atomic

__all__ = ["Cache", "CacheError", "CachedFile", "CachedModel", "CacheEntry", "ENTRY_KINDS", "cache_root",
           "hash_matches", "sha256_of_file"]

DOWNLOADS_DIR = "downloads"
MODELS_DIR = "models"
HUB_DIR = "hub"
EXPORTS_DIR = "exported"  # <cache>/exported/<content key>/model.onnx (razorzoo.deploy.cached)
META_FILE = "meta.json"
INDEX_FILE = "index.json"
PARTIAL_SUFFIX = ".incomplete"
PARTIAL_META = ".incomplete.json"  # suffix of the record (file name, ETag) beside a partial download
REFS_FILE = "refs.json"
_LOCK = ".lock"
_CHUNK = 1 << 20
_ENTRY_NAME = re.compile(r"[0-9a-f]{16}")
_EXPORT_KEY = re.compile(r"[0-9a-f]{16,64}")
# what `razorzoo cache ls` shows, in its order: the files a user asked for, then razorzoo's own bookkeeping
ENTRY_KINDS = ("model", "download", "hub", "export", "partial", "record", "lock")


class CacheError(RazorzooError, OSError):
    """The cache cannot be read or changed: its path is a file, it is read-only, or a file in it is in the way."""


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` (``~`` expanded), else the configured cache root."""
    return Path(cache_dir).expanduser() if cache_dir is not None else constants.cache_dir()


@dataclass(frozen=True)
class CachedFile:
    """A verified download, as recorded in its ``meta.json``."""

    url: str
    path: Path
    sha256: str  # full 64-hex hash of the file's bytes
    size: int
    pinned: bool  # True when no trusted hash was known: ``sha256`` is what was downloaded first
    source: str = ""  # the URL actually downloaded (after RAZORZOO_MIRROR)
    etag: str | None = None


@dataclass(frozen=True)
class CachedModel:
    """An entry of ``<cache>/models/index.json``."""

    name: str
    path: Path
    sha256: str  # of the converted file
    size: int
    weights_url: str
    weights_sha256: str  # full hash of the downloaded checkpoint
    subnet_url: str | None


@dataclass(frozen=True)
class CacheEntry:
    """One file razorzoo wrote into the cache: ``kind`` (one of :data:`ENTRY_KINDS`), where, how big, and what it
    is: the model or file ``name``, its recorded ``sha256``, ``of`` (the model an export or download belongs to)."""

    kind: str
    path: Path
    size: int
    name: str
    sha256: str | None = None
    pinned: bool = False
    of: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "size": self.size, "sha256": self.sha256,
                "pinned": self.pinned, "of": list(self.of), "path": str(self.path)}


def hash_matches(expected: str | None, actual: str) -> bool:
    """Whether the full hash ``actual`` satisfies ``expected`` (64 hex: equal; 8 hex: OpenMMLab's file-name prefix,
    docs/upstream.md §4; ``None``: any)."""
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


def _os_error(action: str, exc: OSError) -> CacheError:
    where = f" {exc.filename}" if exc.filename else ""
    return CacheError(f"cannot {action}{where}: {exc.strerror or type(exc).__name__}"
                      + ("; the cache is read-only for this user (choose another with RAZORZOO_CACHE or --cache-dir)"
                         if isinstance(exc, PermissionError) or exc.errno == 30 else ""))


def _source_urls(entry: Any) -> set[str]:
    """The download URLs an index entry was converted from."""
    key = entry.get("key") if isinstance(entry, dict) else None
    urls = (key.get("weights_url"), key.get("subnet_url")) if isinstance(key, dict) else ()
    return {url for url in urls if isinstance(url, str) and url}


class Cache:
    """``Cache(root)``: the downloads, converted models and Hub files under one root (``None``: the default root)."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = cache_root(root)
        self.downloads = self.root / DOWNLOADS_DIR
        self.models = self.root / MODELS_DIR
        self.hub = self.root / HUB_DIR

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r})"

    # -- directories and locks -----------------------------------------------------------------------------------
    def check(self) -> None:
        """Refuse a cache root that exists but is not a directory (one line instead of NotADirectoryError later)."""
        if self.root.exists() and not self.root.is_dir():
            raise CacheError(f"the cache path {self.root} is a file, not a directory; point RAZORZOO_CACHE or "
                             f"--cache-dir at a directory")

    def ensure(self, directory: Path) -> Path:
        """Create ``directory`` (under the root); a file in the way or a read-only cache is a :class:`CacheError`."""
        self.check()
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise CacheError(f"cannot use the cache directory {directory}: a file is in the way") from None
        except OSError as exc:
            raise _os_error("create the cache directory", exc) from None
        return directory

    @contextlib.contextmanager
    def lock(self, directory: Path, name: str = _LOCK) -> Iterator[None]:
        """Hold an inter-process lock file in ``directory`` (created if needed) for the block."""
        from filelock import FileLock

        lock = FileLock(str(self.ensure(directory) / name))
        try:
            lock.acquire()
        except OSError as exc:  # a read-only directory: the lock file cannot be created
            raise _os_error("lock", exc) from None
        try:
            yield
        finally:
            lock.release()

    # -- downloads -----------------------------------------------------------------------------------------------
    def entry_dir(self, url: str) -> Path:
        """The directory that holds ``url``'s download (named by a hash of the URL, never by the URL)."""
        return self.downloads / hashlib.sha256(url.encode()).hexdigest()[:16]

    def record(self, url: str) -> CachedFile | None:
        """The recorded download of ``url`` (whether or not its file is still there); no network."""
        record = self._record_at(self.entry_dir(url))
        return record if record is not None and record.url == url else None

    def records(self) -> list[CachedFile]:
        """Every recorded download, sorted by file name."""
        found = (self._record_at(entry) for entry in self._subdirs(self.downloads))
        return sorted((r for r in found if r is not None), key=lambda r: (r.path.name, r.url))

    def _record_at(self, entry: Path) -> CachedFile | None:
        """The record in ``entry``, if razorzoo wrote it: a ``meta.json`` in the directory its URL hashes to."""
        meta = read_json(entry / META_FILE)
        try:
            if self.entry_dir(meta["url"]) != entry:
                return None
            return CachedFile(url=str(meta["url"]), path=safe_join(entry, meta["file"], what="meta.json file"),
                              sha256=str(meta["sha256"]), size=int(meta["size"]), pinned=bool(meta.get("pinned")),
                              source=str(meta.get("source", "")), etag=meta.get("etag"))
        except (AttributeError, TypeError, KeyError, ValueError, UnsafePathError):  # not razorzoo's: not ours to use
            return None

    def _download_files(self, entry: Path) -> list[Path]:
        """What razorzoo wrote into a download entry, as its records (``meta.json``, partial records) name it."""
        records = [*([entry / META_FILE] if self._record_at(entry) else []), *sorted(entry.glob("*" + PARTIAL_META))]
        files = [entry / _LOCK]
        for record in records:
            meta = read_json(record)
            name = meta.get("file") if isinstance(meta, dict) else None
            files.append(record)
            with contextlib.suppress(UnsafePathError):
                if name is not None:
                    files += [safe_join(entry, name + suffix, what=f"{record.name} file")
                              for suffix in ("", PARTIAL_SUFFIX, PARTIAL_META)]
        return files

    def remove_download(self, url: str) -> list[Path]:
        """Delete ``url``'s download (file, record, partial download); return the files removed."""
        return self._remove(self._download_files(self.entry_dir(url)), stop=self.downloads)

    # -- converted models ----------------------------------------------------------------------------------------
    def index(self) -> dict[str, dict[str, Any]]:
        """``models/index.json``'s entries (empty when there is none or it is unreadable)."""
        data = read_json(self.models / INDEX_FILE)
        models = data.get("models") if isinstance(data, dict) else None
        return models if isinstance(models, dict) else {}

    @contextlib.contextmanager
    def update_index(self) -> Iterator[dict[str, dict[str, Any]]]:
        """The index, locked; written back atomically when the block succeeds."""
        with self.lock(self.models, ".index.lock"):
            models = self.index()
            yield models
            try:
                write_json_atomic(self.models / INDEX_FILE, {"version": 1, "models": models})
            except OSError as exc:
                raise _os_error("write the model index", exc) from None

    def model_file(self, entry: dict[str, Any]) -> Path:
        """The converted file an index entry names; refused (:class:`UnsafePathError`) unless it is under models/."""
        relative = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(relative, str) or not relative.startswith(MODELS_DIR + "/"):
            raise UnsafePathError(f"index.json path {safe_repr(relative)} is not under {MODELS_DIR}/")
        return safe_join(self.models, relative[len(MODELS_DIR) + 1:], what="index.json path")

    def converted(self, name: str) -> tuple[dict[str, Any], Path] | None:
        """``name``'s index entry and converted file, if the entry is usable and the file exists."""
        entry = self.index().get(name)
        try:
            path = self.model_file(entry)
        except UnsafePathError:
            return None
        return (entry, path) if path.is_file() else None

    def cached_models(self) -> list[CachedModel]:
        """The converted models the index records, sorted by name (entries that are not razorzoo's are skipped)."""
        models = []
        for name, entry in sorted(self.index().items()):
            try:
                models.append(CachedModel(name=name, path=self.model_file(entry), sha256=entry["sha256"],
                                          size=int(entry["size"]), weights_url=entry["key"]["weights_url"],
                                          weights_sha256=entry["weights_sha256"],
                                          subnet_url=entry["key"]["subnet_url"]))
            except (TypeError, KeyError, ValueError, UnsafePathError):
                continue
        return models

    def remove_model(self, name: str) -> list[Path]:
        """Remove a converted model and the downloads no other cached model uses; return the files removed."""
        self.check()
        if name not in self.index():
            return []
        with self.update_index() as models:
            entry = models.pop(name, None)
            if entry is None:
                return []
            removed = self.remove_converted(entry)
            in_use = {url for other in models.values() for url in _source_urls(other)}
            for url in _source_urls(entry) - in_use:
                removed += self.remove_download(url)
            for export in self._exports():
                if self._export_source(export) == entry.get("sha256"):
                    removed += self._remove(self._export_files(export), stop=self.exports)
        removed += self._remove([self.models / f".{name}.lock"], stop=self.models)
        return removed

    def prune_downloads(self, *, dry_run: bool = False) -> list[Path]:
        """Remove the downloads a converted model in the cache was made from (loading reads only the converted file;
        a conversion redone later downloads them again); return the files removed (``dry_run``: that would be)."""
        self.check()
        if dry_run:
            return [path for url in self._prunable(self.index()) for path in self._download_files(self.entry_dir(url))
                    if path.is_file()]
        with self.update_index() as models:
            removed: list[Path] = []
            for url in self._prunable(models):
                removed += self.remove_download(url)
        return removed

    def _prunable(self, models: dict[str, Any]) -> list[str]:
        """The download URLs of index entries whose converted file is there."""
        return sorted({url for entry in models.values() if self._has_converted(entry) for url in _source_urls(entry)})

    def _has_converted(self, entry: Any) -> bool:
        try:
            return self.model_file(entry).is_file()
        except UnsafePathError:
            return False

    def remove_converted(self, entry: dict[str, Any]) -> list[Path]:
        """Delete the converted file of an index entry (not the entry itself)."""
        with contextlib.suppress(UnsafePathError):
            return self._remove([self.model_file(entry)], stop=self.models)
        return []

    # -- Hub snapshots -------------------------------------------------------------------------------------------
    def hub_repo_dir(self, repo_id: str) -> Path:
        """``hub/<org>/<name>`` of a validated ``org/name`` repo id."""
        return safe_join(self.hub, repo_id, what="Hub repo id")

    def _hub_snapshots(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        for org in self._subdirs(self.hub):
            for repo in self._subdirs(org):
                for snapshot in self._subdirs(repo):
                    meta = read_json(snapshot / META_FILE)
                    if isinstance(meta, dict) and isinstance(meta.get("files"), dict):
                        yield snapshot, meta

    def hub_files(self) -> list[CachedFile]:
        """Every recorded Hub file, sorted by path."""
        found = []
        for snapshot, meta in self._hub_snapshots():
            for name, info in meta["files"].items():
                with contextlib.suppress(TypeError, KeyError, ValueError, UnsafePathError):
                    found.append(CachedFile(url=str(info["url"]), path=safe_join(snapshot, name, what="Hub file"),
                                            sha256=str(info["sha256"]), size=int(info["size"]), pinned=False,
                                            etag=info.get("etag")))
        return sorted(found, key=lambda f: str(f.path))

    def _hub_written(self, snapshot: Path, meta: dict[str, Any]) -> list[Path]:
        files = [snapshot / META_FILE, snapshot / _LOCK]
        for name in meta["files"]:
            with contextlib.suppress(UnsafePathError):
                files += [safe_join(snapshot, name + suffix, what="Hub file")
                          for suffix in ("", PARTIAL_SUFFIX, PARTIAL_META)]
        return files

    # -- exports -------------------------------------------------------------------------------------------------
    @property
    def exports(self) -> Path:
        return self.root / EXPORTS_DIR

    def export_dir(self, key: str) -> Path:
        """The folder of one export, named by its content key (hex)."""
        if not _EXPORT_KEY.fullmatch(key):
            raise ValueError(f"an export key is 16 to 64 lowercase hex digits, not {safe_repr(key)}")
        return self.exports / key

    def record_export(self, folder: Path, *, converted_sha256: str, task: str) -> None:
        """Say which converted file (by hash) and task an export folder was made from, so removing that model
        removes its exports too."""
        try:
            write_json_atomic(folder / META_FILE, {"converted_sha256": converted_sha256, "task": task})
        except OSError as exc:
            raise _os_error("record the export", exc) from None

    def _exports(self) -> list[Path]:
        return [d for d in self._subdirs(self.exports) if _EXPORT_KEY.fullmatch(d.name)]

    def _export_source(self, folder: Path) -> str | None:
        meta = read_json(folder / META_FILE)
        source = meta.get("converted_sha256") if isinstance(meta, dict) else None
        return source if isinstance(source, str) else None

    def _export_files(self, folder: Path) -> list[Path]:
        """Every regular file of an export folder (razorzoo made the folder; nothing else writes into it)."""
        try:
            return sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink())
        except OSError:
            return []

    def remove_exports(self) -> list[Path]:
        """Remove every export (each is made again from its converted model when next needed)."""
        self.check()
        removed: list[Path] = []
        for folder in self._exports():
            removed += self._remove(self._export_files(folder), stop=self.exports)
        return removed

    # -- the whole cache -----------------------------------------------------------------------------------------
    def remove_all(self) -> list[Path]:
        """Remove everything razorzoo recorded (downloads, converted models, Hub files); return what was removed.

        Files razorzoo did not record survive, and so do the directories that hold them.
        """
        self.check()
        removed: list[Path] = []
        for entry in self._subdirs(self.downloads):
            if _ENTRY_NAME.fullmatch(entry.name):  # only directories named the way entry_dir names them
                removed += self._remove(self._download_files(entry), stop=self.downloads)
        for entry in self.index().values():
            removed += self.remove_converted(entry)
        removed += self._remove([self.models / INDEX_FILE, self.models / ".index.lock"], stop=self.models)
        for snapshot, meta in list(self._hub_snapshots()):
            removed += self._remove(self._hub_written(snapshot, meta), stop=self.hub)
        for repo in [r for org in self._subdirs(self.hub) for r in self._subdirs(org)]:
            removed += self._remove([repo / REFS_FILE, repo / _LOCK], stop=self.hub)
        removed += self.remove_exports()
        removed += self._remove(self._model_locks(), stop=self.models)
        return removed

    def _model_locks(self) -> list[Path]:
        """The conversion locks ``models/.<name>.lock`` and the index lock."""
        try:
            return sorted(p for p in self.models.glob(".*.lock") if p.is_file())
        except OSError:
            return []

    def entries(self) -> list[CacheEntry]:
        """Every file razorzoo wrote into the cache that is there now, with its size: converted models, downloads,
        Hub files, exports, partial downloads, records (``meta.json``, ``index.json``...) and locks. No hashing."""
        self.check()
        models = self.cached_models()
        by_source: dict[str, list[str]] = {}
        for entry_name, entry in self.index().items():
            for url in _source_urls(entry):
                by_source.setdefault(url, []).append(entry_name)
        by_sha = {m.sha256: m.name for m in models}
        found: list[CacheEntry] = [CacheEntry("model", m.path, 0, m.name, m.sha256) for m in models]
        found += [CacheEntry("record", self.models / INDEX_FILE, 0, INDEX_FILE)]
        found += [CacheEntry("lock", path, 0, path.name) for path in self._model_locks()]
        for entry in self._subdirs(self.downloads):
            if not _ENTRY_NAME.fullmatch(entry.name):
                continue
            record = self._record_at(entry)
            if record is not None:
                found.append(CacheEntry("download", record.path, 0, record.path.name, record.sha256, record.pinned,
                                        tuple(by_source.get(record.url, ()))))
            found += [CacheEntry(_bookkeeping_kind(path), path, 0, path.name)
                      for path in self._download_files(entry) if record is None or path != record.path]
        hub_files = {f.path: f for f in self.hub_files()}
        for snapshot, meta in self._hub_snapshots():
            for path in self._hub_written(snapshot, meta):
                known = hub_files.get(path)
                found.append(CacheEntry("hub", path, 0, f"{snapshot.parent.parent.name}/{snapshot.parent.name}/"
                                        f"{path.name}", known.sha256) if known is not None
                             else CacheEntry(_bookkeeping_kind(path), path, 0, path.name))
        for repo in [r for org in self._subdirs(self.hub) for r in self._subdirs(org)]:
            found += [CacheEntry(_bookkeeping_kind(p), p, 0, p.name) for p in (repo / REFS_FILE, repo / _LOCK)]
        for folder in self._exports():
            source = by_sha.get(self._export_source(folder) or "")
            for path in self._export_files(folder):
                kind = _bookkeeping_kind(path) if path.name in (META_FILE, _LOCK) else "export"
                found.append(CacheEntry(kind, path, 0, f"{folder.name[:12]}/{path.name}" if kind == "export"
                                        else path.name, of=(source,) if source else ()))
        sized = []
        for item in found:
            try:
                if item.path.is_file() and not item.path.is_symlink():
                    sized.append(CacheEntry(item.kind, item.path, item.path.stat().st_size, item.name, item.sha256,
                                            item.pinned, item.of))
            except OSError:
                continue
        order = {kind: i for i, kind in enumerate(ENTRY_KINDS)}
        return sorted(dict.fromkeys(sized), key=lambda e: (order[e.kind], str(e.path)))

    def scan(self) -> tuple[list[CachedModel], list[CachedFile]]:
        """(converted models, downloads + Hub files) as recorded; no hashing, no network."""
        self.check()
        return self.cached_models(), self.records() + self.hub_files()

    def verify(self) -> list[tuple[Path, bool]]:
        """Re-hash every recorded file against its record: ``(path, ok)`` for each."""
        models, files = self.scan()
        return [(record.path, record.path.is_file() and hash_matches(record.sha256, sha256_of_file(record.path)))
                for record in [*models, *files]]

    # -- helpers -------------------------------------------------------------------------------------------------
    def _subdirs(self, directory: Path) -> list[Path]:
        """Real (not symlinked) subdirectories of ``directory``, sorted; none if it is missing or unreadable."""
        try:
            return sorted(p for p in directory.iterdir() if p.is_dir() and not p.is_symlink())
        except OSError:
            return []

    def _remove(self, files: list[Path], *, stop: Path) -> list[Path]:
        """Delete those of ``files`` that exist, then their parent directories up to ``stop`` that became empty."""
        removed = []
        for path in files:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _os_error("remove", exc) from None
            removed.append(path)
        for parent in {p.parent for p in files}:
            while parent != stop and stop in parent.parents:
                try:
                    parent.rmdir()
                except OSError:  # not empty (someone else's files), or already gone
                    break
                parent = parent.parent
        return removed


def _bookkeeping_kind(path: Path) -> str:
    """``lock``, ``partial`` (an unfinished download, resumed next time) or ``record`` (meta.json and friends)."""
    if path.name.endswith(".lock"):
        return "lock"
    if path.name.endswith(PARTIAL_SUFFIX):
        return "partial"
    return "record"
