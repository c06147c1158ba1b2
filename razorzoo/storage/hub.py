"""``hf-hub:org/name[@revision]`` -> files in the razorzoo cache, all taken at one commit.

A razorzoo Hub repo holds ``model.safetensors`` (converted weights whose metadata carries the architecture),
``config.json`` (the same :class:`~razorzoo.arch.spec.ArchSpec` as a dict), ``subnet.yaml`` and a ``README.md`` card
(:mod:`razorzoo.publish` writes them).

The revision is resolved to a commit once (a ``HEAD`` of the first file); every other file is then fetched at that
commit, so a push in between cannot pair files of two commits. Files land in ``<cache>/hub/<org>/<name>/<commit>/``
(:class:`~razorzoo.storage.cache.Cache`), downloaded by :func:`razorzoo.storage.fetch.download_to` and checked against
the ETag the Hub gives them (git blob sha1, or sha256 for LFS files). Nothing the server answers becomes a path
unchecked: the user's revision is a 40-hex commit or a plain branch/tag name, the commit the server names must be 40
hex, ETags must be hashes, and the snapshot path is built with :func:`razorzoo.files.safe_join`. (``huggingface_hub``'s
own downloader uses the server's ETag as a file name, so it is not used for files.) A branch or tag's commit is
remembered in ``refs.json``, so offline loads (``HF_HUB_OFFLINE=1``, ``RAZORZOO_OFFLINE=1``) need no request.

All traffic uses ``huggingface_hub``'s HTTP client and auth (``HF_TOKEN``); the endpoint is ``HF_ENDPOINT`` read at
call time. Nothing here imports torch at module level.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from razorzoo import constants
from razorzoo.bounded import InputError, load_json, safe_repr
from razorzoo.documents import PRINTABLE
from razorzoo.errors import HubError, OfflineError, RazorzooError
from razorzoo.files import read_json, safe_join, write_json_atomic
from razorzoo.storage.cache import META_FILE, REFS_FILE, Cache
from razorzoo.storage.fetch import describe_http_error, within_deadline

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from razorzoo.zoo.registry import Card

__all__ = ["download_hub_model", "download_hub_onnx", "list_hub_models", "load_hub_card", "parse_hub_ref", "check_revision", "check_repo_id", "is_repo_id",
           "HubRef"]

HUB_PREFIX = "hf-hub:"
LIBRARY_NAME = "razorzoo"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
SUBNET_FILE = "subnet.yaml"
ONNX_FILE = "model.onnx"  # optional: `razorzoo push --onnx` (razorzoo.deploy)
CARD_FILE = "README.md"
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}", re.ASCII)
_AUTHOR = re.compile(r"[A-Za-z0-9][\w.-]{0,95}", re.ASCII)  # the namespace half of a repo id
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_BRANCH = re.compile(r"^[A-Za-z0-9][\w.+-]*(?:/[\w][\w.+-]*)*$")  # git-like names: no "..", "//", leading "/"
_MAX_REVISION = 128
_HASH_ETAG = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")  # git blob sha1 (regular file) or sha256 (LFS)


@dataclass(frozen=True)
class HubRef:
    """A parsed ``hf-hub:org/name[@revision]``; ``revision`` is None for the default branch."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{HUB_PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def check_revision(revision: str, what: str = "revision") -> str:
    """``revision`` if it is a 40-hex commit id or a plain branch/tag name, else :class:`HubError`.

    A name may use letters, digits, ``_ . + -`` and ``/`` between parts; ``..``, a leading ``/``, empty parts,
    control characters and more than 128 characters are refused (it names a directory and a URL segment).
    """
    if (not isinstance(revision, str) or len(revision) > _MAX_REVISION or ".." in revision
            or revision.endswith((".", "/", ".lock")) or not _BRANCH.fullmatch(revision)):
        raise HubError(f"invalid {what} {safe_repr(revision)}: use a 40-hex commit id or a branch/tag name "
                       f"(letters, digits, '_.+-', '/' between parts; at most {_MAX_REVISION} characters)")
    return revision


def parse_hub_ref(ref: str) -> HubRef:
    """Parse ``hf-hub:org/name[@revision]`` (the prefix is optional); raise :class:`HubError` when malformed."""
    if not isinstance(ref, str):
        raise HubError(f"invalid Hub reference {safe_repr(ref)}: expected 'hf-hub:org/name[@revision]'")
    repo_id, at, revision = ref.removeprefix(HUB_PREFIX).partition("@")
    if (at and not revision) or not is_repo_id(repo_id):
        raise HubError(f"invalid Hub reference {safe_repr(ref)}: expected 'hf-hub:org/name' or "
                       f"'hf-hub:org/name@revision' ({_REPO_ID_RULE})")
    return HubRef(repo_id, check_revision(revision) if revision else None)


_REPO_ID_RULE = "ASCII letters, digits and '_.-'; no '--' or '..', not ending in '-' or '.'"


def is_repo_id(repo_id: object) -> bool:
    """Whether ``repo_id`` is ``org/name`` by razorzoo's rule (it names cache folders) and by huggingface_hub's own
    (``validate_repo_id``), so an id razorzoo lets through never fails later inside the client (``org/name-``)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(repo_id, str) or not REPO_ID.fullmatch(repo_id) or ".." in repo_id:
        return False
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return False
    return True


def check_repo_id(repo_id: object) -> str:
    """``repo_id`` if :func:`is_repo_id`, else one :class:`HubError` line with the rule."""
    if not is_repo_id(repo_id):
        raise HubError(f"invalid repo id {safe_repr(repo_id)}: expected 'org/name' ({_REPO_ID_RULE})")
    return repo_id  # type: ignore[return-value]


# -- environment, read at call time (razorzoo.constants) -------------------------------------------------------
def endpoint() -> str:
    """``HF_ENDPOINT`` now, else huggingface_hub's default endpoint."""
    from huggingface_hub import constants as hf_constants

    return constants.hub_endpoint() or hf_constants.ENDPOINT


def is_offline(offline: bool | None = None) -> bool:
    return constants.offline() if offline is None else offline


def require_online(what: str) -> None:
    if is_offline():
        raise OfflineError(f"{what} needs the network, but offline mode is on (HF_HUB_OFFLINE / RAZORZOO_OFFLINE)")


def api(token: str | None = None) -> "HfApi":
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint(), token=token, library_name=LIBRARY_NAME)


@contextlib.contextmanager
def hub_errors(what: str, repo_id: str) -> Iterator[None]:
    """Turn ``huggingface_hub`` errors into :class:`HubError`\\ s that say what failed and what to do."""
    import httpx2
    from huggingface_hub.errors import (
        HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, RemoteEntryNotFoundError,
        RepositoryNotFoundError, RevisionNotFoundError,
    )

    try:
        yield
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        raise OfflineError(f"{what}: {repo_id} is not in the Hub cache and offline mode is on; run once online "
                           f"(unset HF_HUB_OFFLINE / RAZORZOO_OFFLINE) to cache it") from exc
    except RevisionNotFoundError as exc:
        raise HubError(f"{what}: {repo_id} has no such revision (a branch, tag or 40-hex commit id)") from exc
    except RemoteEntryNotFoundError as exc:
        raise HubError(f"{what}: {repo_id} is not a razorzoo repo (a file is missing)") from exc
    except RepositoryNotFoundError as exc:
        raise HubError(f"{what}: repository {repo_id} not found at {endpoint()}; if it is private, set HF_TOKEN "
                       f"to a token that can read it") from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 401:
            raise HubError(f"{what}: the Hub at {endpoint()} refused the token (401); check HF_TOKEN or token=") \
                from exc
        if status == 403:
            raise HubError(f"{what}: no write access to {repo_id}; the name belongs to someone else, pick a repo "
                           f"under your own namespace") from exc
        raise HubError(f"{what}: {repo_id}: HTTP {status}") from exc
    except httpx2.TransportError as exc:  # refused, reset, timed out, no such host, no network
        raise HubError(f"{what}: cannot reach the Hub at {endpoint()}: {describe_http_error(exc)}") from None
    except httpx2.HTTPError as exc:  # a redirect loop, a body that does not decode, ...
        raise HubError(f"{what}: the Hub at {endpoint()} answered badly: {describe_http_error(exc)}") from None
    except ValueError as exc:  # huggingface_hub's own checks of what the server answered (HFValidationError...)
        raise HubError(f"{what}: the Hub at {endpoint()} answered something huggingface_hub refuses "
                       f"({type(exc).__name__}: {safe_repr(str(exc), 120)})") from None


# -- files at one commit -----------------------------------------------------------------------------------------
def _head(ref: HubRef, filename: str, revision: str) -> tuple[str, str, int | None]:
    """(commit, ETag, size) of ``filename`` at ``revision``, as the server states them, validated."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(ref.repo_id, filename, revision=revision, endpoint=endpoint())
    timeout = constants.http_timeout()
    with hub_errors(f"cannot download {filename}", str(ref)):  # headers sent a byte at a time: the stall deadline
        meta = within_deadline(lambda: get_hf_file_metadata(url, library_name=LIBRARY_NAME, timeout=timeout),
                               constants.stall_timeout())
    if not isinstance(meta.commit_hash, str) or not _COMMIT.fullmatch(meta.commit_hash):
        raise HubError(f"{ref}: the Hub answered commit id {safe_repr(meta.commit_hash)} for {filename}, which is "
                       f"not a 40-hex commit; refusing to use it (is HF_ENDPOINT a Hub?)")
    if not isinstance(meta.etag, str) or not _HASH_ETAG.fullmatch(meta.etag):
        raise HubError(f"{ref}: the Hub answered ETag {safe_repr(meta.etag)} for {filename}, which is not a file "
                       f"hash; refusing to use it (is HF_ENDPOINT a Hub?)")
    size = meta.size if type(meta.size) is int and meta.size >= 0 else None
    return meta.commit_hash, meta.etag, size


def _resolve(ref: HubRef, cache: Cache, first_file: str, offline: bool) -> str:
    """The commit ``ref`` names now (offline: the one remembered from the last online resolution)."""
    if ref.revision is not None and _COMMIT.fullmatch(ref.revision):
        return ref.revision
    refs_path = cache.hub_repo_dir(ref.repo_id) / REFS_FILE
    if offline:
        refs = read_json(refs_path)
        commit = refs.get(ref.revision or "") if isinstance(refs, dict) else None
        if not isinstance(commit, str) or not _COMMIT.fullmatch(commit):
            raise OfflineError(f"{ref} is not in the Hub cache ({cache.hub}) and offline mode is on; run once online "
                               f"(unset HF_HUB_OFFLINE / RAZORZOO_OFFLINE) to cache it")
        return commit
    commit, _, _ = _head(ref, first_file, ref.revision or "main")
    with cache.lock(refs_path.parent):
        refs = read_json(refs_path)
        refs = refs if isinstance(refs, dict) else {}
        if refs.get(ref.revision or "") != commit:
            write_json_atomic(refs_path, {**refs, ref.revision or "": commit})
    return commit


def _git_blob_sha1(path: Path) -> str:
    """The git object id of a file's bytes: what the Hub reports as a regular file's ETag."""
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)  # noqa: S324 - git's id, not a security hash
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _hub_file(ref: HubRef, commit: str, filename: str, cache: Cache, offline: bool) -> Path:
    """``filename`` of ``ref`` at ``commit`` in the cache, downloaded and checked against its ETag if needed."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    from razorzoo.storage.fetch import download_to

    snapshot = safe_join(cache.hub_repo_dir(ref.repo_id), commit, what="Hub commit id")
    path = safe_join(snapshot, filename, what="Hub file name")
    hit = _recorded(snapshot, filename, path)
    if hit is not None:
        return hit
    if offline:
        raise OfflineError(f"{ref}: {filename} at {commit} is not in the Hub cache ({cache.hub}) and offline mode "
                           f"is on; run once online (unset HF_HUB_OFFLINE / RAZORZOO_OFFLINE) to cache it")
    served_commit, etag, size = _head(ref, filename, commit)
    if served_commit != commit:
        raise HubError(f"{ref}: asked for {filename} at {commit}, the Hub answered commit {served_commit}")
    url = hf_hub_url(ref.repo_id, filename, revision=commit, endpoint=endpoint())
    with cache.lock(snapshot):
        hit = _recorded(snapshot, filename, path)  # another process may have finished meanwhile
        if hit is not None:
            return hit
        _record(snapshot, ref, commit, filename, {"url": url, "etag": etag})  # recorded before a partial exists
        digest, size, _ = download_to(url, path, expected=etag if len(etag) == 64 else None,
                                      what=f"the sha256 the Hub states for {filename}",
                                      headers=build_hf_headers(library_name=LIBRARY_NAME), size=size,
                                      stated_by=f"the Hub (for {filename})")
        if len(etag) == 40 and _git_blob_sha1(path) != etag:
            path.unlink()
            raise HubError(f"{ref}: {filename} at {commit} does not match the hash the Hub states for it ({etag}); "
                           f"nothing was kept, retry")
        _record(snapshot, ref, commit, filename, {"url": url, "sha256": digest, "size": size, "etag": etag})
    return path


def _recorded_files(snapshot: Path) -> dict[str, Any]:
    meta = read_json(snapshot / META_FILE)
    files = meta.get("files") if isinstance(meta, dict) else None
    return files if isinstance(files, dict) else {}


def _record(snapshot: Path, ref: HubRef, commit: str, filename: str, info: dict[str, Any]) -> None:
    """Write ``filename``'s record into the snapshot's ``meta.json`` (the cache removes only recorded files)."""
    files = {**_recorded_files(snapshot), filename: info}
    write_json_atomic(snapshot / META_FILE, {"repo": ref.repo_id, "commit": commit, "files": files})


def _recorded(snapshot: Path, filename: str, path: Path) -> Path | None:
    """``path`` if the snapshot records ``filename`` as complete and the file has the recorded size."""
    record = _recorded_files(snapshot).get(filename)
    try:
        return path if isinstance(record, dict) and path.stat().st_size == record["size"] else None
    except (OSError, KeyError):
        return None


def fetch_hub_files(ref: str, filenames: tuple[str, ...], *, cache_dir: str | os.PathLike | None = None,
                    offline: bool | None = None) -> tuple[HubRef, str, list[Path]]:
    """(parsed ref, commit, paths) of ``filenames`` of ``hf-hub:org/name[@revision]``, all at one commit."""
    hub_ref = parse_hub_ref(ref)
    cache = Cache(cache_dir)
    offline = is_offline(offline)
    commit = _resolve(hub_ref, cache, filenames[0], offline)
    return hub_ref, commit, [_hub_file(hub_ref, commit, name, cache, offline) for name in filenames]


def download_hub_model(ref: str, *, cache_dir: str | os.PathLike | None = None,
                       offline: bool | None = None) -> Path:
    """Path of ``model.safetensors`` of ``hf-hub:org/name[@revision]`` in the razorzoo cache.

    ``config.json`` and ``model.safetensors`` come from the *same commit*, and the safetensors metadata must describe
    the same architecture as ``config.json``. Cached files are not downloaded again; offline (``offline=True``,
    ``HF_HUB_OFFLINE=1`` or ``RAZORZOO_OFFLINE=1``) only the cache is used.
    """
    from razorzoo.arch.spec import ArchSpec

    hub_ref, commit, (config_path, weights_path) = fetch_hub_files(ref, (CONFIG_FILE, WEIGHTS_FILE),
                                                                   cache_dir=cache_dir, offline=offline)
    where = f"{hub_ref} at {commit}"
    try:
        config = load_json(config_path.read_bytes(), what="config.json")
    except InputError:
        raise HubError(f"{where}: config.json is not JSON; the repo was not written by razorzoo push") from None
    if not isinstance(config, dict):
        raise HubError(f"{where}: config.json holds {safe_repr(config)}, not an object; the repo was not written "
                       f"by razorzoo push")
    try:
        expected = ArchSpec.from_dict(config)
        stored = ArchSpec.from_dict(load_json(_safetensors_metadata(weights_path)["razorzoo_arch"],
                                              what="the razorzoo_arch metadata"))
    except (KeyError, TypeError, ValueError, RazorzooError) as exc:
        raise HubError(f"{where}: model.safetensors or config.json is not a razorzoo file "
                       f"({type(exc).__name__}: {safe_repr(str(exc), 200)})") from None
    if stored != expected:
        raise HubError(f"{where}: model.safetensors describes a different architecture than config.json; the repo "
                       f"is inconsistent, ask its owner to push again with razorzoo push")
    return weights_path


def download_hub_onnx(ref: str, *, cache_dir: str | os.PathLike | None = None,
                      offline: bool | None = None) -> Path | None:
    """Path of the ``model.onnx`` that ``razorzoo push --onnx`` published beside ``model.safetensors``, at the commit
    ``config.json`` resolves to (validated and cached like every Hub file), or None when the repo has none (or,
    offline, when it was never downloaded)."""
    from huggingface_hub.errors import RemoteEntryNotFoundError

    hub_ref, commit, _ = fetch_hub_files(ref, (CONFIG_FILE,), cache_dir=cache_dir, offline=offline)
    try:
        return _hub_file(hub_ref, commit, ONNX_FILE, Cache(cache_dir), is_offline(offline))
    except OfflineError:
        return None
    except HubError as exc:
        if isinstance(exc.__cause__, RemoteEntryNotFoundError):
            return None
        raise


def _safetensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:  # reads the header only
            return f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise ValueError("model.safetensors is not a safetensors file") from exc


def list_hub_models(author: str | None = None) -> list[dict[str, Any]]:
    """razorzoo models on the Hub (``library_name: razorzoo``), optionally of one author or organization.

    Each entry: ``id`` (``hf-hub:org/name``), ``repo_id``, ``author``, ``task``, ``family``, ``base``, ``private``,
    ``downloads``, ``likes``, ``last_modified`` (ISO date or None).
    """
    if author is not None and not (isinstance(author, str) and _AUTHOR.fullmatch(author)):
        raise HubError(f"invalid Hub author {safe_repr(author)}: a user or organization name (letters, digits, "
                       "'_.-', at most 96 characters)")
    require_online("listing Hub models")
    from huggingface_hub.utils import get_session

    with hub_errors("cannot list Hub models", author or "the Hub"):
        # huggingface_hub retries a refused listing for ~25 s, logging every try: one request first fails at once
        get_session().head(endpoint(), timeout=constants.http_timeout())
        infos = list(api().list_models(filter=LIBRARY_NAME, author=author, cardData=True))
    models = []
    for info in infos:
        if not is_repo_id(info.id):  # the server's answer: an id razorzoo could not load is not listed
            continue
        card = info.card_data.to_dict() if info.card_data is not None else {}
        block = card.get("razorzoo") if isinstance(card.get("razorzoo"), dict) else {}
        models.append({
            "id": f"{HUB_PREFIX}{info.id}", "repo_id": info.id, "author": _short_text(info.author),
            "task": _short_text(block.get("task")), "family": _short_text(block.get("family")),
            "base": _short_text(block.get("base")), "private": bool(info.private),
            "downloads": _count(info.downloads), "likes": _count(info.likes),
            "last_modified": info.last_modified.isoformat() if info.last_modified else None,
        })
    return models


def _short_text(value: Any) -> str | None:
    """A short printable string from a Hub answer, else None (a card may hold anything under ``razorzoo:``)."""
    return value if isinstance(value, str) and len(value) <= 200 and PRINTABLE.fullmatch(value) else None


def _count(value: Any) -> int | None:
    return value if type(value) is int and 0 <= value < 1 << 63 else None


def load_hub_card(ref: str, *, cache_dir: str | os.PathLike | None = None, offline: bool | None = None) -> "Card":
    """The registry :class:`~razorzoo.zoo.registry.Card` of a Hub repo, parsed from its ``README.md`` by the
    registry's own parser (``subnet.yaml`` of the same commit is fetched beside it: the card refers to it)."""
    from razorzoo.zoo.registry import parse_card

    hub_ref, _, (card_path, _) = fetch_hub_files(ref, (CARD_FILE, SUBNET_FILE), cache_dir=cache_dir, offline=offline)
    return parse_card(card_path, source=str(hub_ref))
