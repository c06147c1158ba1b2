"""The download promises the README makes, each pinned so that breaking it fails: the full 64-hex hash is
compared, ``cached`` honours the expected hash, timeouts are retried while 403 is not, a changed file restarts a
resumed download (If-Range), and the environment variables that steer downloads are read."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from http_server import FileServer
from razorzoo import constants
from razorzoo.errors import FetchError, IntegrityError
from razorzoo.storage import fetch as fetch_module
from razorzoo.storage.cache import META_FILE, PARTIAL_META, Cache, CacheError
from razorzoo.storage.fetch import cached, download_to, fetch

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


# --- retries: progress resets the count, a kept partial without progress does not --------------------------------

def test_each_attempt_that_makes_progress_resets_the_retry_count(www, tmp_path):
    server, url, data, digest = www
    server.add_fault(PATH, "truncate", times=fetch_module._RETRIES + 3)  # every attempt delivers half of the rest
    assert fetch(url, sha256=digest, cache_dir=tmp_path / "cache").read_bytes() == data
    assert len(server.gets(PATH)) == fetch_module._RETRIES + 4


def test_failures_after_progress_are_counted_from_zero(www, tmp_path):
    server, url, data, digest = www
    server.add_fault(PATH, "truncate")
    server.add_fault(PATH, "500", times=fetch_module._RETRIES - 1)  # one short of giving up
    assert fetch(url, sha256=digest, cache_dir=tmp_path / "cache").read_bytes() == data


def test_a_kept_partial_that_stops_growing_gives_up_and_says_it_is_kept(www, tmp_path):
    server, url, _, digest = www
    server.add_fault(PATH, "truncate")
    server.add_fault(PATH, "500", times=100)
    cache = tmp_path / "cache"
    with pytest.raises(FetchError) as info:
        fetch(url, sha256=digest, cache_dir=cache)
    entry = Cache(cache).entry_dir(url)
    assert str(info.value) == (f"downloading {url} failed {fetch_module._RETRIES} times in a row (HTTP 500); the "
                               f"partial download is kept in {entry} and resumes on the next try")
    assert len(server.gets(PATH)) == 1 + fetch_module._RETRIES


@pytest.mark.parametrize("meta,sent", [
    ({"etag": "GOOD"}, True),
    (["not", "a", "record"], False),
    ({"etag": 123}, False),
    ({"etag": '"abc"\r\nX-Injected: 1'}, False),
    ({"etag": '"' + "a" * 300 + '"'}, False),
])
def test_resume_sends_only_a_well_formed_recorded_etag(www, tmp_path, meta, sent):
    """The ``.incomplete.json`` beside a partial download is read back, never trusted: a malformed ETag is not sent."""
    server, url, data, digest = www
    server.add_fault(PATH, "truncate")  # leave a partial download and its record behind
    server.add_fault(PATH, "500", times=fetch_module._RETRIES)
    cache = tmp_path / "cache"
    with pytest.raises(FetchError):
        fetch(url, sha256=digest, cache_dir=cache)
    [record] = Cache(cache).entry_dir(url).glob("*" + PARTIAL_META)
    etag = json.loads(record.read_text())["etag"]
    record.write_text(json.dumps({"etag": etag} if meta == {"etag": "GOOD"} else meta))
    assert fetch(url, sha256=digest, cache_dir=cache).read_bytes() == data
    resumed = server.gets(PATH)[-1]
    assert resumed.range is not None and resumed.range != "bytes=0-"
    assert resumed.if_range == (etag if sent else None)


def test_a_206_without_content_range_restarts_from_zero(www, tmp_path):
    server, url, data, digest = www
    server.add_fault(PATH, "truncate")
    server.add_fault(PATH, "norange")  # the resumed request gets the whole body labelled as a partial one
    assert fetch(url, sha256=digest, cache_dir=tmp_path / "cache").read_bytes() == data
    first, resumed, restarted = server.gets(PATH)
    assert resumed.range is not None and restarted.range is None


def test_a_cache_record_that_cannot_be_written_is_one_clear_error(www, tmp_path):
    server, url, _, digest = www
    cache = tmp_path / "cache"
    entry = Cache(cache).entry_dir(url)
    (entry / META_FILE).mkdir(parents=True)  # something else already holds the record's name
    with pytest.raises(CacheError) as info:
        fetch(url, sha256=digest, cache_dir=cache)
    assert str(info.value) == f"cannot write {entry / META_FILE}: Is a directory"


# --- download_to, which the Hub client calls directly -------------------------------------------------------------

def test_download_to_names_the_expected_hash_and_reads_the_progress_switch(www, tmp_path, monkeypatch, capsys):
    server, url, data, digest = www
    with pytest.raises(IntegrityError) as info:
        download_to(url, tmp_path / "a.pth", expected="0" * 64)
    assert str(info.value).startswith(f"{url} does not match the expected sha256: expected {'0' * 64}, got {digest};")
    assert not (tmp_path / "a.pth").exists()
    monkeypatch.setenv("RAZORZOO_PROGRESS", "1")
    assert download_to(url, tmp_path / "b.pth", expected=digest)[:2] == (digest, len(data))
    assert "b.pth" in capsys.readouterr().err
    monkeypatch.setenv("RAZORZOO_PROGRESS", "0")
    download_to(url, tmp_path / "c.pth", expected=digest)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("url,name", [
    ("https://h/a/lat%4031ms.pth", "lat@31ms.pth"),
    ("https://h/a/b/XY.Z..pth", "XY.Z..pth"),
    ("https://h/a/..hidden.pth", "hidden.pth"),
    ("https://h/a/name.", "name."),
    ("https://h/a/we%20ird%2F..%2Fname?.pth", "we_ird_.._name"),
    ("https://h/a/", "download"),
    ("https://h", "download"),
    ("https://h/" + "n" * 300 + ".pth", "n" * 196 + ".pth"),
])
def test_cache_file_names_come_from_the_last_url_segment_made_safe(url, name):
    assert fetch_module._file_name(url) == name


def test_a_cached_file_that_lost_bytes_is_no_hit_and_is_downloaded_again(www, tmp_path):
    server, url, data, digest = www
    cache = tmp_path / "cache"
    path = fetch(url, sha256=digest, cache_dir=cache)
    path.write_bytes(data[: len(data) // 2])  # a disk that filled up, a copy interrupted by the user
    assert cached(url, sha256=digest, cache_dir=cache) is None
    assert fetch(url, sha256=digest, cache_dir=cache).read_bytes() == data
    assert len(server.gets(PATH)) == 2


def test_processes_asking_for_the_same_file_download_it_once(www, tmp_path):
    """The second process waits on the cache entry's lock and finds the file the first one finished."""
    server, url, data, digest = www
    server.add_fault(PATH, "slow", times=2)  # ~48 pieces 50 ms apart: the downloads would overlap
    cache = tmp_path / "cache"
    script = ("import sys; from razorzoo.storage.fetch import fetch; "
              "print(fetch(sys.argv[1], sha256=sys.argv[2], cache_dir=sys.argv[3], progress=False))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent), "RAZORZOO_CACHE": str(tmp_path / "other")}
    children = [subprocess.Popen([sys.executable, "-c", script, url, digest, str(cache)], stdout=subprocess.PIPE,
                                 env=env) for _ in range(2)]
    paths = {child.communicate(timeout=120)[0].decode().strip() for child in children}
    assert [child.returncode for child in children] == [0, 0]
    assert len(paths) == 1 and Path(paths.pop()).read_bytes() == data
    assert len(server.gets(PATH)) == 1


def test_a_server_that_truncates_and_refuses_to_resume_is_given_up_on(www, tmp_path):
    """Each attempt restarts from zero and reaches the same length: that is no progress, so the retries end."""
    server, url, _, digest = www
    for _ in range(20):
        server.add_fault(PATH, "truncate")
        server.add_fault(PATH, "416")
    with pytest.raises(FetchError) as info:
        fetch(url, sha256=digest, cache_dir=tmp_path / "cache")
    assert str(info.value) == (f"downloading {url} failed {fetch_module._RETRIES} times in a row (HTTP 416 on resume; "
                               f"restarting); nothing was downloaded")
    assert len(server.gets(PATH)) < 4 * fetch_module._RETRIES


def test_retries_back_off_doubling_up_to_a_cap():
    waits = [fetch_module._backoff_s(n) for n in range(1, 20)]
    assert waits[:3] == [2 * fetch_module._BACKOFF_S, 4 * fetch_module._BACKOFF_S, 8 * fetch_module._BACKOFF_S]
    assert max(waits) == waits[-1] == fetch_module._BACKOFF_MAX_S and waits == sorted(waits)


def test_downloads_ask_for_the_bytes_as_stored_and_follow_redirects(www, tmp_path):
    """No content coding (a gzip answer would break byte ranges and hashes); a mirror behind a CDN redirects."""
    server, url, data, digest = www
    server.add_fault(PATH, "redirect")
    assert fetch(url, sha256=digest, cache_dir=tmp_path / "cache").read_bytes() == data
    assert [r.accept_encoding for r in server.gets(PATH)] == ["identity", "identity"]


def test_the_unpinned_notice_is_said_once_per_url_per_process(www, tmp_path, capsys):
    server, url, _, _ = www
    fetch_module._noticed_unpinned.discard(url)
    fetch(url, cache_dir=tmp_path / "a")
    fetch(url, cache_dir=tmp_path / "b")  # pinned again in another cache, said once
    assert capsys.readouterr().err.count("razorzoo: notice:") == 1


@pytest.mark.parametrize("status", ["429", "408"])
def test_too_many_requests_and_request_timeout_are_retried(www, tmp_path, status):
    server, url, data, digest = www
    server.add_fault(PATH, status, times=2)
    assert fetch(url, sha256=digest, cache_dir=tmp_path / "cache").read_bytes() == data
    assert len(server.gets(PATH)) == 3


def test_an_unexpected_status_fails_at_once(www, tmp_path):
    server, url, _, digest = www
    server.add_fault(PATH, "300", times=10)
    with pytest.raises(FetchError) as info:
        fetch(url, sha256=digest, cache_dir=tmp_path / "cache")
    assert str(info.value) == f"{url}: unexpected HTTP 300 Multiple Choices"
    assert len(server.gets(PATH)) == 1


def test_a_failed_write_is_raised_not_lost(tmp_path):
    """The body is written by a worker thread; an error in its last write must still reach the caller."""
    from types import SimpleNamespace

    target = tmp_path / "partial"
    target.write_bytes(b"")
    with open(target, "rb") as read_only, pytest.raises(OSError):
        fetch_module._write_body(iter([b"x" * 10]), read_only, hashlib.sha256(), SimpleNamespace(update=len),
                                 room=1 << 20, stall=60.0)
