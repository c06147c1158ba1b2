"""Hostile servers: a mirror or a Hub that answers with an endless body, a gzip bomb, a body longer than the size it
states, a trickle of body or header bytes, a redirect loop. Each ends in one line (exit 2 from the CLI), within
seconds (the stall and size limits are set small through their variables), with nothing written past the stated
size and nothing outside the cache. Real servers on 127.0.0.1 (``tests/http_server.py``, ``tests/hub_server.py``).
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from http_server import HOSTILE, FileServer, gzip_bomb
from hub_server import HubServer, Repo
from razorzoo.cli import main as cli
from razorzoo.errors import FetchError, HubError, RazorzooError
from razorzoo.storage import fetch as fetch_module
from razorzoo.storage.fetch import fetch
from razorzoo.storage.hub import download_hub_model, parse_hub_ref

FILE = bytes(range(256)) * 64  # 16 KiB
STALL_S = 0.5
# what each hostile answer must be refused as (a word of the one-line message)
EXPECTED = {"endless": "too long", "longer": "too long", "gzip": "encoded", "trickle": "stalled",
            "header_trickle": "no answer within", "redirect_loop": "redirect loop"}


@pytest.fixture
def limits(monkeypatch):
    """Small limits, so that every hostile answer is cut within seconds: 0.5 s stall window and read timeout,
    1 MiB for a download whose size nobody states, and 20 ms before the first retry (the stalled tries' backoff
    is test_fetch_promises.py's; here it would only add 7.5 s of sleep to each trickle). The gzip bomb is made
    first: made by the server's first hostile answer, it kept the headers back past the 0.5 s window on a loaded
    machine, and the client rightly said "no answer" instead of "encoded"."""
    gzip_bomb()
    monkeypatch.setattr(fetch_module, "_BACKOFF_S", 0.01)
    monkeypatch.setenv("RAZORZOO_STALL_TIMEOUT", str(STALL_S))
    monkeypatch.setenv("RAZORZOO_HTTP_TIMEOUT", "2")
    monkeypatch.setenv("RAZORZOO_MAX_DOWNLOAD_MB", "1")
    monkeypatch.setenv("RAZORZOO_PROGRESS", "0")


def _bytes_under(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _files_outside(tmp_path: Path, allowed: Path) -> set[Path]:
    return {p for p in tmp_path.rglob("*") if p.is_file() and allowed not in p.parents}


@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize("stated", [False, True], ids=["size-unknown", "size-stated"])
def test_a_hostile_mirror_is_cut_in_seconds_with_one_line(kind, stated, tmp_path, limits):
    www = tmp_path / "www"
    www.mkdir()
    (www / "w.pth").write_bytes(FILE)
    cache = tmp_path / "cache"
    with FileServer(www, trickle_delay=0.2) as server:
        server.add_fault("/w.pth", kind, times=100)
        start = time.monotonic()
        with pytest.raises(FetchError) as info:
            fetch(f"{server.url}/w.pth", cache_dir=cache, size=len(FILE) if stated else None)
        elapsed = time.monotonic() - start
    message = str(info.value)
    assert EXPECTED[kind] in message and "\n" not in message, message
    assert elapsed < 15, elapsed  # 5 stalled tries with backoff at most, never the server's 20 s
    kept = _bytes_under(cache)
    assert kept <= (len(FILE) if stated else 1 << 20) + 4096, kept  # + the small records beside the partial
    assert not list(cache.rglob("w.pth")), "a hostile answer must never become the cached file"
    assert _files_outside(tmp_path, cache) == {www / "w.pth"}


def test_a_partial_left_larger_than_the_stated_size_is_not_resumed(tmp_path, limits):
    www = tmp_path / "www"
    www.mkdir()
    (www / "w.pth").write_bytes(FILE)
    cache = tmp_path / "cache"
    with FileServer(www) as server:
        url = f"{server.url}/w.pth"
        server.add_fault("/w.pth", "longer")
        with pytest.raises(FetchError, match="too long"):
            fetch(url, cache_dir=cache, size=len(FILE))
        partial = next(cache.rglob("w.pth.incomplete"), None)
        assert partial is None  # a too-long body is thrown away, never resumed
        # an oversized .incomplete planted by an earlier run: refused as a prefix, the download starts over
        entry = next(p for p in cache.rglob("*") if p.is_dir() and p.parent.name == "downloads")
        (entry / "w.pth.incomplete").write_bytes(b"\0" * (len(FILE) + 10))
        assert fetch(url, cache_dir=cache, size=len(FILE)).read_bytes() == FILE
        assert all(r.range is None for r in server.gets("/w.pth")[-1:])


@pytest.fixture
def hub_repo(tmp_path, monkeypatch, limits):
    """A Hub holding alice/repo (config.json, model.safetensors) that the test turns hostile."""
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("RAZORZOO_CACHE", str(tmp_path / "cache"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("RAZORZOO_OFFLINE", raising=False)
        repo = Repo("alice/repo", private=False)
        server.repos[repo.repo_id] = repo
        server.new_commit(repo, "main", {"config.json": b"{}", "model.safetensors": FILE}, "files", "alice")
        server.trickle_delay = 0.2
        yield server, tmp_path


@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize("on_head", [False, True], ids=["get", "head-too"])
def test_a_hostile_hub_is_cut_in_seconds_with_one_line(kind, on_head, hub_repo, capsys):
    server, tmp_path = hub_repo
    server.hostile, server.hostile_head = kind, on_head
    start = time.monotonic()
    assert cli(["predict", "hf-hub:alice/repo", str(tmp_path / "x.png")]) == 2
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert err.startswith("razorzoo: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    if not on_head or kind in ("endless", "longer", "gzip", "trickle"):  # a HEAD has no body to be hostile with
        assert EXPECTED[kind] in err, err
    assert elapsed < 20, elapsed
    cache = tmp_path / "cache"
    assert _bytes_under(cache) <= len(FILE) + 4096  # the size the Hub states (X-Linked-Size) caps every file
    assert not list(cache.rglob("model.safetensors"))
    assert [p.read_bytes() for p in cache.rglob("config.json")] in ([], [b"{}"])  # 2 bytes may trickle in time
    assert {p for p in tmp_path.rglob("*") if p.is_file() and cache not in p.parents} == set()


@pytest.mark.parametrize("repo_id", ["org/name-", "org/name.", "org--x/name", "orgé/name", "org/naïve",
                                     "org/name\n", "-org/name", "org/" + "n" * 97])
def test_repo_ids_the_hub_client_refuses_are_refused_first(repo_id, capsys):
    """razorzoo's rule and huggingface_hub's agree, so no id reaches the client to crash there (regression)."""
    with pytest.raises(HubError, match="invalid Hub reference"):
        parse_hub_ref(f"hf-hub:{repo_id}")
    assert cli(["show", f"hf-hub:{repo_id}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("razorzoo: error: invalid Hub reference") and err.count("\n") == 1, err
    assert cli(["push", "--subnet", "s.yaml", "--weights", "w.pth", "--base", "attentive_a6", "--token", "hf_x",
                "--", repo_id]) == 2
    err = capsys.readouterr().err
    assert err.startswith("razorzoo: error: invalid repo id") and err.count("\n") == 1, err


@pytest.mark.parametrize("mirror, cause", [
    ("http://razorzoo-no-such-host.invalid", "unknown host"),
    ("http://127.0.0.1:9", "refused"),
])
def test_network_failures_name_their_exact_cause(mirror, cause, tmp_path, monkeypatch, capsys, limits):
    """'no such host' and 'connection refused' are told apart (regression: one generic 'cannot reach')."""
    monkeypatch.setenv("HF_ENDPOINT", mirror)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("RAZORZOO_OFFLINE", raising=False)
    monkeypatch.setenv("RAZORZOO_CACHE", str(tmp_path / "cache"))
    with pytest.raises(RazorzooError) as info:
        download_hub_model("hf-hub:alice/repo")
    assert cause in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_hub_listing_answers_are_bounded_text(tmp_path, monkeypatch, capsys):
    """What the Hub lists (card data anyone wrote) reaches the table as short printable text or not at all."""
    import yaml

    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("RAZORZOO_OFFLINE", raising=False)
        repo = Repo("alice/loud", private=False)
        server.repos[repo.repo_id] = repo
        front = {"library_name": "razorzoo", "razorzoo": {"task": "\x1b]0;pwned\x07detection", "family": "x" * 5000,
                                                          "base": ["a", "list"]}}
        server.new_commit(repo, "main", {"README.md": f"---\n{yaml.safe_dump(front)}---\n".encode()}, "c", "alice")
        assert cli(["list", "--hub", "alice"]) == 0
    out = capsys.readouterr().out
    assert "hf-hub:alice/loud" in out and "pwned" not in out and "xxxxx" not in out and "\x1b" not in out, out
