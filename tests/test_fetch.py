"""razorzoo.storage.fetch against a real HTTP server on 127.0.0.1: hashes, faults, resume, retries, offline, mirrors."""
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from http_server import FileServer
from razorzoo.storage import fetch as fetch_module
from razorzoo.errors import FetchError, IntegrityError, OfflineError
from razorzoo.storage.cache import Cache
from razorzoo.storage.fetch import cached, fetch, mirrored

UPSTREAM = "https://download.openmmlab.com"
PATH = "/mmrazor/v1/test/model_20230211-{}.pth"


@pytest.fixture
def served(tmp_path):
    """A 3 MiB file served from a temporary directory: (server, url path, bytes, full sha256)."""
    data = os.urandom(3 << 20)
    digest = hashlib.sha256(data).hexdigest()
    path = PATH.format(digest[:8])
    file = tmp_path / "www" / path.lstrip("/")
    file.parent.mkdir(parents=True)
    file.write_bytes(data)
    with FileServer(tmp_path / "www", slow_delay=0.02) as server:
        yield server, path, data, digest


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch):
    monkeypatch.setattr(fetch_module, "_BACKOFF_S", 0.01)


def _cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.rglob("*") if p.is_file() and p.name != ".lock")


def test_full_hash_download_then_cache_hit(served, cache):
    server, path, data, digest = served
    url = server.url + path
    first = fetch(url, sha256=digest, cache_dir=cache)
    assert first.read_bytes() == data
    assert first.name == Path(path).name and "downloads" in first.parts
    again = fetch(url, sha256=digest, cache_dir=cache)
    assert again == first
    assert len(server.gets(path)) == 1  # the second call never touched the network
    [record] = Cache(cache).records()
    assert (record.url, record.sha256, record.size, record.pinned) == (url, digest, len(data), False)
    assert _cache_files(cache) == sorted([first.name, "meta.json"])


def test_eight_hex_prefix_is_the_openmmlab_file_name_convention(served, cache):
    server, path, data, digest = served
    assert fetch(server.url + path, sha256=digest[:8], cache_dir=cache).read_bytes() == data


@pytest.mark.parametrize("expected", ["0" * 64, "deadbeef"])
def test_wrong_hash_is_an_integrity_error_and_leaves_nothing(served, cache, expected):
    server, path, _, digest = served
    with pytest.raises(IntegrityError) as info:
        fetch(server.url + path, sha256=expected, cache_dir=cache)
    assert str(info.value).startswith(f"{server.url + path} does not match the expected sha256: expected {expected}, "
                                      f"got {digest}; nothing was kept")
    assert _cache_files(cache) == []
    assert cached(server.url + path, cache_dir=cache) is None


def test_flipped_byte_is_detected(served, cache):
    server, path, _, digest = served
    server.add_fault(path, "flip")
    with pytest.raises(IntegrityError, match=digest):
        fetch(server.url + path, sha256=digest, cache_dir=cache)
    assert _cache_files(cache) == []


def test_malformed_expected_hash_is_refused_before_any_request(served, cache):
    server, path, _, _ = served
    for call in (fetch, cached):
        with pytest.raises(FetchError) as info:
            call(server.url + path, sha256="xyz", cache_dir=cache)
        assert str(info.value) == (f"expected sha256 for {server.url + path} is 'xyz': use 64 hex digits, the 8-hex "
                                   f"prefix of the OpenMMLab file name, or None when no hash is known")
    assert server.requests == []


def test_500_then_success_is_retried(served, cache):
    server, path, data, digest = served
    server.add_fault(path, "500", times=2)
    assert fetch(server.url + path, sha256=digest, cache_dir=cache).read_bytes() == data
    assert len(server.gets(path)) == 3


def test_persistent_500_gives_up_with_a_clear_error(served, cache):
    server, path, _, digest = served
    server.add_fault(path, "500", times=100)
    with pytest.raises(FetchError) as info:
        fetch(server.url + path, sha256=digest, cache_dir=cache)
    assert str(info.value) == (f"downloading {server.url + path} failed {fetch_module._RETRIES} times in a row "
                               f"(HTTP 500); nothing was downloaded")
    assert len(server.gets(path)) == fetch_module._RETRIES


@pytest.mark.parametrize("status_path", ["/missing.pth", "/../outside.pth"])
def test_404_is_not_retried(served, cache, status_path):
    server, _, _, _ = served
    with pytest.raises(FetchError, match="HTTP 404") as info:
        fetch(server.url + status_path, cache_dir=cache)
    assert not isinstance(info.value, IntegrityError)
    assert len([r for r in server.requests if r.method == "GET"]) == 1


@pytest.mark.parametrize("fault", ["truncate", "drop"])
def test_truncated_or_dropped_body_resumes_with_range(served, cache, fault):
    server, path, data, digest = served
    server.add_fault(path, fault)
    assert fetch(server.url + path, sha256=digest, cache_dir=cache).read_bytes() == data
    gets = server.gets(path)
    assert len(gets) == 2
    assert gets[0].range is None
    assert gets[1].range is not None and gets[1].range.startswith("bytes=") and gets[1].range != "bytes=0-"
    assert gets[1].if_range is not None  # the ETag of the first response: a changed file restarts from 0
    assert _cache_files(cache) == sorted([Path(path).name, "meta.json"])


def test_unknown_hash_says_so_once_and_pins(served, cache, tmp_path, capsys, recwarn):
    server, path, data, digest = served
    url = server.url + path
    fetch(url, sha256=None, cache_dir=cache)
    # one plain line on stderr, not a Python warning with a source line
    assert capsys.readouterr().err == (f"razorzoo: notice: {url} has no published sha256; pinned the hash of this "
                                       f"download ({digest}) in the cache, a different file will be refused later\n")
    assert len(recwarn) == 0
    [entry] = Cache(cache).records()
    assert entry.pinned and entry.sha256 == digest
    entry.path.unlink()
    fetch(url, sha256=None, cache_dir=cache)  # downloaded again, same bytes: accepted, and no second notice
    assert capsys.readouterr().err == ""
    # the server's file changes, the cached copy is lost: the new file is refused against the pinned hash
    (tmp_path / "www" / path.lstrip("/")).write_bytes(data[::-1])
    Cache(cache).records()[0].path.unlink()
    with pytest.raises(IntegrityError) as info:
        fetch(url, sha256=None, cache_dir=cache)
    assert str(info.value).startswith(f"{url} does not match the hash pinned when it was first downloaded: expected "
                                      f"{digest}, got {hashlib.sha256(data[::-1]).hexdigest()}; nothing was kept")


def test_offline_without_cache_says_what_is_missing(served, cache):
    server, path, _, digest = served
    with pytest.raises(OfflineError) as info:
        fetch(server.url + path, sha256=digest, cache_dir=cache, offline=True)
    assert server.url + path in str(info.value) and "RAZORZOO_OFFLINE" in str(info.value)
    assert server.requests == []


def test_offline_with_cache_needs_no_network(served, cache, monkeypatch):
    server, path, data, digest = served
    fetch(server.url + path, sha256=digest, cache_dir=cache)
    monkeypatch.setenv("RAZORZOO_OFFLINE", "1")
    assert fetch(server.url + path, sha256=digest, cache_dir=cache).read_bytes() == data
    assert len(server.gets(path)) == 1


def test_mirror_replaces_the_upstream_prefix_and_keeps_the_card_url_as_key(served, cache, monkeypatch):
    server, path, data, digest = served
    monkeypatch.setenv("RAZORZOO_MIRROR", server.url + "/")
    url = UPSTREAM + path
    assert mirrored(url) == server.url + path
    assert mirrored("https://example.org/x.pth") == "https://example.org/x.pth"
    assert fetch(url, sha256=digest, cache_dir=cache).read_bytes() == data
    [record] = Cache(cache).records()
    assert record.url == url and record.source == server.url + path
    monkeypatch.setenv("RAZORZOO_MIRROR", "http://127.0.0.1:9")  # another mirror: the cache still answers
    assert fetch(url, sha256=digest, cache_dir=cache).read_bytes() == data


def test_progress_bar_can_be_turned_off(served, cache, capsys):
    server, path, _, digest = served
    fetch(server.url + path, sha256=digest, cache_dir=cache / "a", progress=True)
    assert Path(path).name[:10] in capsys.readouterr().err
    fetch(server.url + path, sha256=digest, cache_dir=cache / "b", progress=False)
    assert capsys.readouterr().err == ""


def test_ctrl_c_mid_download_leaves_a_resumable_state(served, cache):
    server, path, data, digest = served
    server.add_fault(path, "slow")  # ~48 pieces of 64 KiB, 20 ms apart
    url = server.url + path
    # a parent that ignores SIGINT (a mutation runner, some CI shells) passes SIG_IGN on: restore Python's handler
    script = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
              "from razorzoo.storage.fetch import fetch; "
              "fetch(sys.argv[1], sha256=sys.argv[2], cache_dir=sys.argv[3], progress=False)")
    child = subprocess.Popen([sys.executable, "-c", script, url, digest, str(cache)], stderr=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    partial = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = list(cache.rglob("*.incomplete"))
        if found and found[0].stat().st_size > 0:
            partial = found[0]
            break
        time.sleep(0.01)
    assert partial is not None, "the child never started writing"
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode != 0 and b"KeyboardInterrupt" in stderr
    kept = partial.stat().st_size
    assert 0 < kept < len(data)
    assert not (partial.parent / Path(path).name).exists()  # nothing half-written under the final name
    assert fetch(url, sha256=digest, cache_dir=cache).read_bytes() == data
    resumed = server.gets(path)[-1]
    assert resumed.range == f"bytes={kept}-"
    assert not partial.exists()
