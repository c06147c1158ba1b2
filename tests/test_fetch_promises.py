"""The download promises the README makes, each pinned so that breaking it fails: the full 64-hex hash is
compared, ``cached`` honours the expected hash, timeouts are retried while 403 is not, a changed file restarts a
resumed download (If-Range), and the environment variables that steer downloads are read."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from http_server import FileServer
from razorzoo import constants
from razorzoo.errors import FetchError, IntegrityError
from razorzoo.storage import fetch as fetch_module
from razorzoo.storage.fetch import cached, fetch

PATH = "/mmrazor/v1/promise/model.pth"


def _same_prefix(digest: str) -> str:
    """Another full hash that agrees with ``digest`` on the first 8 hex digits (the OpenMMLab file-name prefix)."""
    return digest[:8] + "".join("0" if c != "0" else "1" for c in digest[8:])


@pytest.fixture
def www(tmp_path):
    """A 3 MiB file (several read chunks, so a truncated body leaves a partial file) on a local server:
    (server, url, bytes, sha256)."""
    data = os.urandom(3 << 20)
    (tmp_path / "www" / PATH.lstrip("/")).parent.mkdir(parents=True)
    (tmp_path / "www" / PATH.lstrip("/")).write_bytes(data)
    with FileServer(tmp_path / "www", stall_delay=1.5) as server:
        yield server, server.url + PATH, data, hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch):
    monkeypatch.setattr(fetch_module, "_BACKOFF_S", 0.01)


def test_a_hash_equal_in_its_first_8_digits_is_still_wrong(www, tmp_path):
    server, url, _, digest = www
    other = _same_prefix(digest)
    assert other[:8] == digest[:8] and other != digest
    with pytest.raises(IntegrityError):
        fetch(url, sha256=other, cache_dir=tmp_path / "cache")
    fetch(url, sha256=digest, cache_dir=tmp_path / "cache")
    with pytest.raises(IntegrityError):  # a cached file is not a hit for another full hash either
        fetch(url, sha256=other, cache_dir=tmp_path / "cache")


def test_cached_honours_the_expected_hash(www, tmp_path):
    server, url, _, digest = www
    path = fetch(url, sha256=digest, cache_dir=tmp_path / "cache")
    assert cached(url, sha256=digest, cache_dir=tmp_path / "cache") == path
    assert cached(url, sha256=digest[:8], cache_dir=tmp_path / "cache") == path
    assert cached(url, cache_dir=tmp_path / "cache") == path
    assert cached(url, sha256=_same_prefix(digest), cache_dir=tmp_path / "cache") is None
    assert cached(url, sha256="0" * 64, cache_dir=tmp_path / "cache") is None


def test_a_timeout_is_retried_within_razorzoo_http_timeout(www, tmp_path, monkeypatch):
    server, url, data, digest = www
    monkeypatch.setenv("RAZORZOO_HTTP_TIMEOUT", "0.3")
    server.add_fault(PATH, "stall")  # 1.5 s of silence: longer than the timeout, far shorter than the default 30 s
    assert fetch(url, sha256=digest, cache_dir=tmp_path / "cache").read_bytes() == data
    assert len(server.gets(PATH)) == 2


def test_403_fails_at_once(www, tmp_path):
    server, url, _, digest = www
    server.add_fault(PATH, "403", times=10)
    with pytest.raises(FetchError, match="HTTP 403"):
        fetch(url, sha256=digest, cache_dir=tmp_path / "cache")
    assert len(server.gets(PATH)) == 1


def test_a_file_changed_between_attempts_restarts_from_zero(www, tmp_path):
    """The resumed request carries If-Range with the first ETag; the server's new file answers 200 with the whole
    body, which replaces the partial bytes instead of being appended to them."""
    server, url, data, _ = www
    new = os.urandom(len(data))
    server.add_fault(PATH, "truncate", then=lambda: (tmp_path / "www" / PATH.lstrip("/")).write_bytes(new))
    got = fetch(url, sha256=hashlib.sha256(new).hexdigest(), cache_dir=tmp_path / "cache")
    assert got.read_bytes() == new
    first, resumed = server.gets(PATH)
    assert resumed.range is not None and resumed.if_range is not None


def test_xdg_cache_home_is_the_default_cache_root(www, tmp_path, monkeypatch):
    server, url, _, digest = www
    monkeypatch.delenv("RAZORZOO_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert constants.cache_dir() == tmp_path / "xdg" / "razorzoo"
    assert (tmp_path / "xdg" / "razorzoo") in fetch(url, sha256=digest).parents


@pytest.mark.parametrize("env, shown", [({}, True), ({"HF_HUB_DISABLE_PROGRESS_BARS": "1"}, False),
                                        ({"RAZORZOO_PROGRESS": "0"}, False)])
def test_progress_bar_by_default_and_its_switches(www, tmp_path, monkeypatch, capsys, env, shown):
    server, url, _, digest = www
    monkeypatch.delenv("RAZORZOO_PROGRESS", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    fetch(url, sha256=digest, cache_dir=tmp_path / "cache")
    assert (Path(PATH).name in capsys.readouterr().err) == shown
