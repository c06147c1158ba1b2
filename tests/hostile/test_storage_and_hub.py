"""Hostile input to the cache, downloads and Hub resolution: each test is one class of attack or breakage, tried in
several spellings. Real files, a real HTTP server (tests/http_server.py) and a real Hub-compatible server
(tests/hub_server.py) on 127.0.0.1; nothing is mocked.

* traversal through recorded names: ``index.json`` paths and ``meta.json`` file names (``..``, ``a/../..``,
  absolute, ``%2e%2e``, backslashes, NUL) never make razorzoo list, load or delete anything outside its directories;
* ``cache rm --all`` removes only what razorzoo recorded;
* read-only caches, a cache path that is a file: one-line errors, exit 1 for a failed removal;
* Hub revisions from the user, commit ids and ETags from a hostile server: refused before they become paths, and
  nothing is written outside the test's directory;
* Hub repos whose files are the wrong kind (``config.json`` a list, ``model.safetensors`` not safetensors);
* malformed ``RAZORZOO_HTTP_TIMEOUT`` / ``RAZORZOO_MIRROR``, a mirror host that does not exist: one line, at once.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

import razorzoo

from http_server import FileServer
from hub_server import HubServer, Repo
from razorzoo.cli import main as cli
from razorzoo.errors import FetchError, HubError, IntegrityError, RazorzooError
from razorzoo.storage.cache import Cache
from razorzoo.storage.fetch import fetch
from razorzoo.storage.hub import download_hub_model, load_hub_card, parse_hub_ref

# names a recorded entry may carry to point outside its directory; VICTIM is substituted by an absolute path
TRAVERSALS = ["../../victim/model.safetensors", "models/../../victim/model.safetensors",
              "models/a/../../../victim/model.safetensors", "VICTIM", "models/%2e%2e/%2e%2e/victim/model.safetensors",
              "models\\..\\..\\victim\\model.safetensors", "models/x\x00/../../victim/model.safetensors"]


DEEP_JSON = "[" * 100_000 + "]" * 100_000  # 200 kB that exhaust json's recursion limit
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]")  # never to a terminal (newline, tab are fine)


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _one_line_error(err: str) -> str:
    assert err.startswith("razorzoo: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def victim(tmp_path):
    """A file outside the cache that a traversal would reach: tmp_path/victim/model.safetensors."""
    path = tmp_path / "victim" / "model.safetensors"
    path.parent.mkdir()
    path.write_bytes(b"not razorzoo's")
    return path


@pytest.fixture
def served(tmp_path):
    """Two small files on a real HTTP server: (server, [url, url])."""
    www = tmp_path / "www"
    www.mkdir()
    for name in ("a.pth", "b.yaml"):
        (www / name).write_bytes(name.encode() * 1000)
    with FileServer(www) as server:
        yield server, [f"{server.url}/a.pth", f"{server.url}/b.yaml"]


NOBODY = 65534  # the unprivileged uid/gid every Linux has


def _cli_output(argv: list[str]) -> tuple[int, str, str]:
    """``razorzoo ARGV`` in this process: (exit code, stdout, stderr), without capsys (works in a forked child)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli(argv)
    return code, out.getvalue(), err.getvalue()


def _in_unprivileged_child(operation):
    """``operation()`` in a forked child that has dropped root for uid/gid 65534; its result comes back pickled."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 1
        try:
            os.close(reader)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            result = ("ok", operation())
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test
            result = ("raised", f"{type(exc).__name__}: {exc}")
        try:
            with os.fdopen(writer, "wb") as pipe:
                pickle.dump(result, pipe)
            status = 0
        finally:
            os._exit(status)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        payload = pipe.read()
    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0 and payload, "the unprivileged child died"
    kind, value = pickle.loads(payload)
    assert kind == "ok", f"in the unprivileged child: {value}"
    return value


def _chmod(paths, mode_of):
    old = {path: path.stat().st_mode & 0o7777 for path in paths}
    for path in paths:
        path.chmod(mode_of(old[path]))
    return old


@pytest.fixture(params=["immutable flag", "unprivileged child"] if os.geteuid() == 0 else ["chmod 555"])
def read_only(request, tmp_path):
    """``read_only(directories, operation)``: ``operation()``'s result, run while no entry can be created, renamed or
    removed in ``directories``. A normal user: chmod 555. As root (which ignores file modes) two real techniques,
    both run: the immutable attribute (``chattr +i``, which binds root too on ext4/xfs/btrfs/tmpfs), and chmod 555
    with the operation in a forked child that dropped root for uid 65534. Where the filesystem or the machine has
    no immutable flag, that variant says so in a skip; the child variant still runs, so nothing is left untested."""
    technique = request.param

    def run(directories, operation):
        directories = [Path(d) for d in directories]
        if technique == "immutable flag":
            try:
                done = subprocess.run(["chattr", "+i", *map(str, directories)], capture_output=True, text=True)
            except FileNotFoundError:
                pytest.skip("chattr is not installed; the 'unprivileged child' variant covers this test")
            if done.returncode != 0:
                pytest.skip(f"this filesystem refuses chattr +i ({done.stderr.strip()}); the 'unprivileged child' "
                            "variant covers this test")
            try:
                return operation()
            finally:
                subprocess.run(["chattr", "-i", *map(str, directories)], check=True)
        modes = _chmod(directories, lambda mode: 0o555)
        # the child must reach tmp_path, whose parents pytest creates 0700 for root, and the package it imports
        # (a checkout under a 0700 folder: mktemp -d, a private home)
        package = Path(razorzoo.__file__).resolve().parent
        parents = [p for p in dict.fromkeys((tmp_path, *tmp_path.parents, *package.parents))
                   if not p.stat().st_mode & 1]
        parents = [] if technique == "chmod 555" else parents
        reach = _chmod(parents, lambda mode: mode | 0o001)
        try:
            return operation() if technique == "chmod 555" else _in_unprivileged_child(operation)
        finally:
            for path, mode in {**modes, **reach}.items():
                path.chmod(mode)

    return run


# -- traversal through recorded names -----------------------------------------------------------------------------
@pytest.mark.parametrize("entry_path", TRAVERSALS)
def test_index_entry_cannot_reach_outside_the_cache(tmp_path, victim, entry_path, capsys):
    cache = Cache(tmp_path / "cache")
    cache.models.mkdir(parents=True)
    entry = {"path": entry_path.replace("VICTIM", str(victim)), "sha256": "0" * 64, "size": 14,
             "weights_sha256": "0" * 64, "key": {"weights_url": "https://x/w.pth", "subnet_url": None}}
    (cache.models / "index.json").write_text(json.dumps({"version": 1, "models": {"evil": entry}}))
    # refused, or (%2e%2e is a plain name) kept inside models/; never loaded, since no such file is there
    assert all(cache.models in m.path.parents for m in cache.cached_models()) and cache.converted("evil") is None
    assert cli(["cache", "--cache-dir", str(cache.root), "ls"]) == 0
    assert str(victim) not in capsys.readouterr().out
    cache.remove_model("evil")
    assert cli(["cache", "--cache-dir", str(cache.root), "rm", "--all"]) == 0
    assert victim.read_bytes() == b"not razorzoo's"


@pytest.mark.parametrize("file_name", [t.rsplit("/", 1)[0] + "/model.safetensors" for t in TRAVERSALS] + [
    "../../../victim/model.safetensors", "", ".", ".."])
def test_meta_file_name_cannot_reach_outside_the_cache(tmp_path, victim, served, file_name):
    server, (url, _) = served
    cache = Cache(tmp_path / "cache")
    path = fetch(url, cache_dir=cache.root, sha256=hashlib.sha256(b"a.pth" * 1000).hexdigest())
    meta = json.loads((path.parent / "meta.json").read_text())
    meta["file"] = file_name.replace("VICTIM", str(victim))
    (path.parent / "meta.json").write_text(json.dumps(meta))
    assert all(path.parent in r.path.parents for r in cache.records())  # refused, or a plain name inside the entry
    cache.remove_download(url)
    cache.remove_all()
    assert victim.read_bytes() == b"not razorzoo's"


def test_rm_all_removes_only_what_razorzoo_recorded(tmp_path, served, capsys):
    server, urls = served
    cache = Cache(tmp_path / "cache")
    for url in urls:
        fetch(url, cache_dir=cache.root, sha256=hashlib.sha256(Path(url).name.encode() * 1000).hexdigest())
    converted = cache.models / "m" / ("1" * 64) / "model.safetensors"
    converted.parent.mkdir(parents=True)
    converted.write_bytes(b"converted")
    with cache.update_index() as models:
        models["m"] = {"path": f"models/m/{'1' * 64}/model.safetensors", "sha256": "2" * 64, "size": 9,
                       "weights_sha256": "1" * 64, "key": {"weights_url": urls[0], "subnet_url": None}}
    recorded = {p for p in _files(cache.root) if not p.name.endswith(".lock")}
    assert len(recorded) == 6  # 2 downloads + their meta.json, the converted file, index.json
    theirs = [cache.downloads / "thesis.pdf", cache.models / "notes.txt", cache.models / "m" / "README",
              cache.entry_dir(urls[0]) / "mine.txt", cache.root / "hub" / "org" / "keep.bin",
              cache.downloads / "notes" / "meta.json", cache.downloads / "notes" / "draft.pdf",
              cache.downloads / ("f" * 16) / "meta.json", cache.downloads / ("f" * 16) / "draft.pdf"]
    for path in theirs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"user data")
    for planted in (cache.downloads / "notes", cache.downloads / ("f" * 16)):  # a meta.json razorzoo did not write
        (planted / "meta.json").write_text(json.dumps({"url": urls[0], "file": "draft.pdf", "sha256": "0" * 64,
                                                       "size": 9}))
    assert cli(["cache", "--cache-dir", str(cache.root), "rm", "--all"]) == 0
    out = capsys.readouterr().out.splitlines()
    locks = [line for line in out if line.endswith(".lock")]  # razorzoo's own locks are listed and removed too
    assert len(locks) == 3 and out[-1].startswith(f"removed 9 files (") and "everything razorzoo wrote" in out[-1]
    assert _files(cache.root) == set(theirs)
    assert not (cache.models / "m" / ("1" * 64)).exists() and not cache.entry_dir(urls[1]).exists()


@pytest.mark.parametrize("record", ["index.json", "meta.json", "refs.json"])
def test_deeply_nested_json_records_are_ignored(tmp_path, served, capsys, record):
    """A planted or corrupted record is treated as absent: never a RecursionError, never trusted."""
    server, urls = served
    cache = Cache(tmp_path / "cache")
    fetch(urls[0], cache_dir=cache.root, sha256=hashlib.sha256(b"a.pth" * 1000).hexdigest())
    target = {"index.json": cache.models / "index.json", "meta.json": cache.entry_dir(urls[0]) / "meta.json",
              "refs.json": cache.hub / "alice" / "repo" / "refs.json"}[record]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(DEEP_JSON)
    for argv in (["ls"], ["verify"], ["rm", "--all"]):
        code = cli(["cache", "--cache-dir", str(cache.root), *argv])
        out, err = capsys.readouterr()
        assert code == 0 and err == "", (argv, err[-300:])
    assert cache.converted("spos_0.33M") is None  # a broken index reads as empty, not as an error


def test_deeply_nested_metadata_in_a_converted_file_is_one_line(tmp_path):
    from razorzoo.errors import CheckpointError
    from razorzoo.weights.convert import METADATA_KEYS

    path = tmp_path / "model.safetensors"
    metadata = {**dict.fromkeys(METADATA_KEYS, "[]"), "razorzoo_arch": DEEP_JSON, "format": "pt"}
    safetensors.torch.save_file({"w": torch.zeros(1)}, path, metadata=metadata)
    for load in (razorzoo.load_classifier, razorzoo.load_detector, razorzoo.load_backbone):
        with pytest.raises(CheckpointError) as info:
            load(path)
        assert "nested too deeply" in str(info.value) and "\n" not in str(info.value) and len(str(info.value)) < 400


# -- read-only caches and paths that are files ----------------------------------------------------------------------
def test_read_only_cache_removal_fails_with_one_line_and_exit_1(tmp_path, served, read_only):
    server, urls = served
    cache = Cache(tmp_path / "cache")
    path = fetch(urls[0], cache_dir=cache.root, sha256=hashlib.sha256(b"a.pth" * 1000).hexdigest())
    code, out, err = read_only([path.parent], lambda: _cli_output(["cache", "--cache-dir", str(cache.root), "rm",
                                                                    "--all"]))
    assert code == 1 and "emptied" not in out and "removed" not in out
    assert "cannot remove" in _one_line_error(err) and "read-only" in err
    assert path.is_file()


def test_read_only_cache_model_removal_and_download_are_one_line(tmp_path, read_only):
    cache = Cache(tmp_path / "cache")
    converted = cache.models / "spos_0.33M" / ("1" * 64) / "model.safetensors"
    converted.parent.mkdir(parents=True)
    converted.write_bytes(b"converted")
    (cache.models / "index.json").write_text(json.dumps({"version": 1, "models": {"spos_0.33M": {
        "path": f"models/spos_0.33M/{'1' * 64}/model.safetensors", "key": {"weights_url": "https://x/w.pth"}}}}))
    removal, download = read_only([cache.models, converted.parent], lambda: (
        _cli_output(["cache", "--cache-dir", str(cache.root), "rm", "spos_0.33M"]),
        _cli_output(["download", "ofa_lat31", "--cache-dir", str(cache.root)])))
    assert removal[0] == 1 and "cannot lock" in _one_line_error(removal[2])
    assert download[0] == 2 and "read-only" in _one_line_error(download[2])
    assert converted.is_file()


def test_read_only_empty_cache_is_one_line(tmp_path, read_only):
    root = tmp_path / "cache"
    root.mkdir()
    download, removal = read_only([root], lambda: (_cli_output(["download", "spos_0.33M", "--cache-dir", str(root)]),
                                                   _cli_output(["cache", "--cache-dir", str(root), "rm", "--all"])))
    assert download[0] == 2 and "cannot create the cache directory" in _one_line_error(download[2])
    assert removal[0] == 0 and removal[1].startswith("nothing to remove")
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("argv", [["cache", "ls"], ["cache", "rm", "--all"], ["cache", "verify"],
                                  ["cache", "rm", "spos_0.33M"], ["download", "spos_0.33M"]])
def test_cache_path_that_is_a_file_is_one_line(tmp_path, argv, capsys):
    root = tmp_path / "cache"
    root.write_bytes(b"a file")
    if argv[0] == "cache":
        argv = ["cache", "--cache-dir", str(root), *argv[1:]]
    else:
        argv = [*argv, "--cache-dir", str(root)]
    assert cli(argv) in (1, 2)
    assert "is a file, not a directory" in _one_line_error(capsys.readouterr().err)
    assert root.read_bytes() == b"a file"


def test_a_file_where_the_models_directory_belongs_is_one_line(tmp_path, capsys):
    """The other way to make a cache unwritable for root: a file where razorzoo needs a directory."""
    root = tmp_path / "cache"
    root.mkdir()
    (root / "models").write_bytes(b"in the way")
    assert cli(["download", "spos_0.33M", "--cache-dir", str(root)]) == 2
    assert "a file is in the way" in _one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("escape", ["\x1b[2J\x1b[H", "\x1b]0;pwned\x07", "\x9b31m", "\u202egnp"])
def test_escape_sequences_in_the_cache_path_never_reach_the_terminal(tmp_path, served, capsys, escape):
    server, urls = served
    root = tmp_path / f"cache{escape}dir"
    fetch(urls[0], cache_dir=root, sha256=hashlib.sha256(b"a.pth" * 1000).hexdigest())
    for argv in (["ls"], ["verify"], ["rm", "--all"], ["ls"]):
        assert cli(["cache", "--cache-dir", str(root), *argv]) == 0
        out = capsys.readouterr().out
        assert "cachedir" in out.replace("gnp", "") and not CONTROL.search(out), repr(out)
    assert not any(root.rglob("*.pth"))


# -- Hub: revisions from the user, commit ids and ETags from the server ------------------------------------------
@pytest.mark.parametrize("revision", ["..", "../../outside", "a/../..", "/etc", "%2e%2e", "..%2f..", "a\\..\\b",
                                      "a\x00b", "a//b", "a/", "x" * 129, "main\n", "-rf", "a b", "refs/..", "v1..2",
                                      "name.", "name.lock", "feature/x.lock"])
def test_unsafe_revisions_are_refused(revision):
    with pytest.raises(HubError, match="invalid revision") as info:
        parse_hub_ref(f"hf-hub:org/name@{revision}")
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


@pytest.mark.parametrize("revision", ["main", "v1.0", "feature/x-2", "a" * 40, "release+1", "a", "x" * 128,
                                      "v1.2.3", "lock.v1"])
def test_plain_revisions_are_accepted(revision):
    assert parse_hub_ref(f"hf-hub:org/name@{revision}").revision == revision


@pytest.mark.parametrize("repo_id", ["../name", "org/..", "org/na/me", "/org/name", "org\\x/name", "org/name\x00",
                                     "org/a..b", "o..rg/name"])
def test_unsafe_repo_ids_are_refused(repo_id):
    with pytest.raises(HubError, match="invalid Hub reference"):
        parse_hub_ref(f"hf-hub:{repo_id}")


@pytest.mark.parametrize("author", ["../../x", "a/b", "\x1b[2J", "a" * 5000, ".hidden", "a b", "a\x00b"])
def test_unsafe_hub_authors_are_refused_before_any_request(author, monkeypatch, capsys):
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        assert cli(["list", "--hub", author]) == 2
        assert "invalid Hub author" in _one_line_error(capsys.readouterr().err) and server.requests == []


@pytest.mark.parametrize("argv", [["list", "--hub"], ["list", "--hub", "alice"], ["show", "hf-hub:alice/repo"],
                                  ["predict", "hf-hub:alice/repo", "x.png"],
                                  ["push", "alice/x", "--token", "hf_x", "--subnet", "s.yaml", "--weights", "w.pth",
                                   "--base", "attentive_a6"]])
def test_an_unreachable_hub_is_one_line_at_once(argv, tmp_path, monkeypatch, capsys):
    """No retries with backoff (huggingface_hub's listing alone would retry for ~25 s, logging each try)."""
    with socket.socket() as closed:  # a port that was free a moment ago: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    assert cli(argv) == 2
    assert "cannot reach the Hub at" in _one_line_error(capsys.readouterr().err)
    assert time.monotonic() - start < 5


@pytest.fixture
def hostile_hub(tmp_path, monkeypatch):
    """A Hub holding alice/repo (README, subnet, config, weights) whose file answers the test can falsify."""
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("RAZORZOO_CACHE", str(tmp_path / "deep" / "cache"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("RAZORZOO_OFFLINE", raising=False)
        repo = Repo("alice/repo", private=False)
        server.repos[repo.repo_id] = repo
        server.new_commit(repo, "main", {"README.md": b"---\n---\n", "subnet.yaml": b"{}\n", "config.json": b"{}",
                                         "model.safetensors": b"x"}, "files", "alice")
        yield server, tmp_path


@pytest.mark.parametrize("header, value", [
    ("X-Repo-Commit", "../../../../razorzoo-pwned"), ("X-Repo-Commit", "/tmp/razorzoo-pwned"),
    ("X-Repo-Commit", "a" * 39 + "/"), ("X-Repo-Commit", "A" * 40), ("X-Repo-Commit", ""),
    ("ETag", '"../../../../razorzoo-pwned"'), ("ETag", '"/tmp/razorzoo-pwned"'), ("ETag", '"%2e%2e"'),
    ("ETag", '"' + "a" * 41 + '"'), ("X-Linked-Etag", '"../../razorzoo-pwned"'),
])
def test_hostile_commit_or_etag_writes_nothing_outside_the_cache(hostile_hub, header, value):
    server, tmp_path = hostile_hub
    server.file_headers[header] = value
    before = _files(tmp_path)
    for call in (lambda: download_hub_model("hf-hub:alice/repo"), lambda: load_hub_card("hf-hub:alice/repo@main")):
        with pytest.raises(HubError, match="refusing to use it") as info:
            call()
        assert "\n" not in str(info.value)
    cache = tmp_path / "deep" / "cache"
    assert {p for p in _files(tmp_path) - before if cache not in p.parents} == set()
    assert not [p for p in tmp_path.parent.rglob("razorzoo-pwned*")] and not Path("/tmp/razorzoo-pwned").exists()
    assert not (cache / "hub" / "alice" / "repo").exists() or not any(
        p.name in ("config.json", "README.md") for p in _files(cache))


@pytest.mark.parametrize("etag, error, message", [
    ("b" * 40, HubError, "hf-hub:alice/repo: config.json at {commit} does not match the hash the Hub states for it "
                         "(" + "b" * 40 + "); nothing was kept, retry"),  # a git blob id: regular files
    ("b" * 64, IntegrityError, "{url} does not match the sha256 the Hub states for config.json: expected "
                               + "b" * 64),  # a sha256: LFS files
])
def test_hub_file_that_differs_from_its_etag_is_not_kept(hostile_hub, etag, error, message):
    server, tmp_path = hostile_hub
    server.file_headers["ETag"] = f'"{etag}"'  # a well-formed hash that is not the file's
    commit = server.repos["alice/repo"].branches["main"]
    url = f"{server.url}/alice/repo/resolve/{commit}/config.json"
    with pytest.raises(error) as info:
        download_hub_model("hf-hub:alice/repo")
    assert str(info.value).startswith(message.format(commit=commit, url=url)), str(info.value)
    assert not [p for p in _files(tmp_path / "deep" / "cache") if p.name == "config.json"]


@pytest.mark.parametrize("config, weights, message", [
    (b"[1, 2]", b"x", "config.json holds a list of 2 items, not an object"),
    (b'"text"', b"x", "config.json holds 'text', not an object"),
    (b"{not json", b"x", "config.json is not JSON"),
    (b"\xff\xfe", b"x", "config.json is not JSON"),
    (None, b"not safetensors at all", "not a razorzoo file"),
    (None, b"\xff" * 8 + b"{}", "not a razorzoo file"),
    (DEEP_JSON.encode(), b"x", "config.json is not JSON"),
    (None, "DEEP_METADATA", "not a razorzoo file"),
])
def test_hub_files_of_the_wrong_kind_are_one_line(hostile_hub, config, weights, message):
    from razorzoo.arch.spec import ArchSpec
    from razorzoo.arch.subnet import load_subnet

    server, _ = hostile_hub
    if weights == "DEEP_METADATA":  # a real safetensors file whose architecture metadata is a nesting bomb
        weights = safetensors.torch.save({"w": torch.zeros(1)}, metadata={"razorzoo_arch": DEEP_JSON})
    spec = ArchSpec("classification", load_subnet(Path(__file__).parents[2] / "cards" / "subnets"
                                                  / "OFA_SUBNET_NOTE8_LAT31.yaml", family="ofa"))
    config = json.dumps(spec.to_dict()).encode() if config is None else config
    server.new_commit(server.repos["alice/repo"], "main", {"config.json": config, "model.safetensors": weights},
                      "broken", "alice")
    with pytest.raises(HubError) as info:
        download_hub_model("hf-hub:alice/repo")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_hub_files_get_the_umask_mode_and_rm_all_removes_them(hostile_hub):
    server, tmp_path = hostile_hub
    old = os.umask(0o002)
    try:
        with pytest.raises(RazorzooError):  # the README is not a valid card; the files are fetched first
            load_hub_card("hf-hub:alice/repo")
    finally:
        os.umask(old)
    files = _files(tmp_path / "deep" / "cache" / "hub")
    assert {p.name for p in files} >= {"README.md", "subnet.yaml", "meta.json", "refs.json"}
    assert {oct(p.stat().st_mode & 0o777) for p in files if p.name != ".lock"} == {oct(0o664)}
    theirs = tmp_path / "deep" / "cache" / "hub" / "alice" / "repo" / "mine.txt"
    theirs.write_bytes(b"user data")
    assert cli(["cache", "rm", "--all"]) == 0
    assert _files(tmp_path / "deep" / "cache") == {theirs}


# -- environment variables ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["abc", "nan", "-1", "0", "inf", "1e400", " ", "9" * 50])
def test_malformed_http_timeout_is_one_line_before_any_request(served, tmp_path, monkeypatch, value):
    server, (url, _) = served
    monkeypatch.setenv("RAZORZOO_HTTP_TIMEOUT", value)
    if not value.strip():
        fetch(url, cache_dir=tmp_path / "c")  # blank means the default
        return
    with pytest.raises(RazorzooError, match="RAZORZOO_HTTP_TIMEOUT") as info:
        fetch(url, cache_dir=tmp_path / "c")
    assert "\n" not in str(info.value) and len(str(info.value)) < 200
    assert server.requests == [] and not (tmp_path / "c").exists()


@pytest.mark.parametrize("variable", ["RAZORZOO_OFFLINE", "RAZORZOO_PROGRESS"])
@pytest.mark.parametrize("value", ["ture", "2", "nan", "\x1b[2J", "x" * 10_000])
def test_junk_yes_no_variables_are_one_line_before_any_request(served, tmp_path, monkeypatch, capsys, variable, value):
    """A typo such as RAZORZOO_OFFLINE=ture must not silently mean "no" (go online) or "yes"."""
    server, (url, _) = served
    monkeypatch.setenv(variable, value)
    with pytest.raises(RazorzooError, match=f"{variable}=.* is not a yes/no value") as info:
        fetch(url, cache_dir=tmp_path / "c")
    assert "\n" not in str(info.value) and len(str(info.value)) < 300 and "\x1b" not in str(info.value)
    assert server.requests == [] and not (tmp_path / "c").exists()
    assert cli(["download", "spos_0.33M", "--cache-dir", str(tmp_path / "c")]) == 2
    assert f"{variable}=" in _one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("value, offline", [("1", True), (" yes ", True), ("ON", True), ("0", False), ("", False),
                                            ("off", False)])
def test_yes_no_variables_take_every_usual_spelling(monkeypatch, value, offline):
    from razorzoo import constants

    monkeypatch.setenv("RAZORZOO_OFFLINE", value)
    monkeypatch.setenv("RAZORZOO_PROGRESS", value)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    assert constants.offline() is offline
    assert constants.progress_bars() is (offline or not value.strip())


@pytest.mark.parametrize("mirror", ["notaurl", "ftp://mirror.example.org", "http://", "file:///etc",
                                    "http://host:99999", "http://[::1", "https://m.example.org/?q=1",
                                    "http://a\x1b[31m"])
def test_malformed_mirror_fails_at_once_with_one_line(tmp_path, monkeypatch, mirror, capsys):
    monkeypatch.setenv("RAZORZOO_MIRROR", mirror)
    start = time.monotonic()
    with pytest.raises(RazorzooError, match="RAZORZOO_MIRROR=") as info:
        fetch("https://download.openmmlab.com/mmrazor/v1/x.pth", cache_dir=tmp_path / "c")
    assert time.monotonic() - start < 2
    assert "partial" not in str(info.value) and "\n" not in str(info.value) and "\x1b" not in str(info.value)
    assert not (tmp_path / "c").exists() or not _files(tmp_path / "c")
    assert cli(["download", "spos_0.33M", "--cache-dir", str(tmp_path / "c")]) == 2
    assert "RAZORZOO_MIRROR=" in _one_line_error(capsys.readouterr().err)


def test_mirror_host_that_does_not_exist_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("RAZORZOO_MIRROR", "http://razorzoo-no-such-host.invalid")
    start = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetch("https://download.openmmlab.com/mmrazor/v1/x.pth", cache_dir=tmp_path / "c")
    assert time.monotonic() - start < 5  # no retries with backoff (those take 8 s)
    assert "does not exist" in str(info.value) and "partial" not in str(info.value)


@pytest.mark.parametrize("tail", ["%2e%2e", "..", "a%2f..%2f..%2fvictim", "a%5c..%5cvictim", "a%00b.pth",
                                  "%0d%0aX-Injected.pth", ".hidden", "x" * 300 + ".pth"])
def test_a_urls_file_name_stays_one_plain_name_in_its_entry(tail):
    from razorzoo.storage.fetch import _file_name

    name = _file_name(f"https://download.openmmlab.com/mmrazor/{tail}")
    assert name and len(name) <= 200 and not name.startswith(".")
    assert all(c.isalnum() or c in "_.@+=-" for c in name)
