"""``razorzoo cache``: every file razorzoo writes is listed with its size (exports, locks and records too), the total
is the real one, ``--json`` says the same, ``prune`` drops downloads a converted model no longer needs, and ``rm``
removes a model with its exports and lock, or everything, and nothing of anyone else's."""
import json
import os
from pathlib import Path

import pytest

import razorzoo
from razorzoo.cli import main as cli
from test_loading import CLASSIFIER, DETECTOR, mirror, zoo  # noqa: F401 (fixtures: a real local mirror, a fresh cache)

pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install -e '.[onnx]'")


def _files(root: Path) -> dict[Path, int]:
    """Every file under ``root`` with its size, read from the file system (not from razorzoo)."""
    return {p: p.stat().st_size for p in root.rglob("*") if p.is_file()}


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"


def test_every_file_is_listed_pruned_and_removed(zoo, capsys):
    server, cache = zoo
    assert cli(["download", DETECTOR]) == 0
    razorzoo.load_classifier(CLASSIFIER, backend="onnxruntime")  # downloads, converts, exports once
    [export] = list((cache / "exported").rglob("model.onnx"))
    on_disk = _files(cache)
    assert any(p.name.endswith(".lock") for p in on_disk) and len(on_disk) > 10
    capsys.readouterr()

    assert cli(["cache", "ls", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert {Path(f["path"]): f["size"] for f in listing["files"]} == on_disk  # every file, its real size
    assert listing["total_size"] == sum(on_disk.values()) and listing["total_files"] == len(on_disk)
    kinds = {f["kind"] for f in listing["files"]}
    assert kinds == {"model", "download", "export", "record", "lock"}
    [listed_export] = [f for f in listing["files"] if f["kind"] == "export"]
    assert listed_export["path"] == str(export) and listed_export["of"] == [CLASSIFIER]
    downloads = [f for f in listing["files"] if f["kind"] == "download"]
    assert len(downloads) == 4 and {tuple(f["of"]) for f in downloads} == {(DETECTOR,), (CLASSIFIER,)}

    assert cli(["cache", "ls"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"cache: {cache}" and out[-1] == f"total: {len(on_disk)} files, {_mib(sum(on_disk.values()))}"
    for entry in listing["files"]:  # the table: full paths, never shortened; records and locks summed up below it
        shown = any(line.endswith(entry["path"]) for line in out)
        assert shown == (entry["kind"] not in ("record", "lock")), entry
    hidden = [f for f in listing["files"] if f["kind"] in ("record", "lock")]
    assert f"+ {len(hidden)} record or lock files (" in out[-2] and "cache ls --all lists them" in out[-2]
    assert cli(["cache", "ls", "--all"]) == 0
    every = capsys.readouterr().out.splitlines()
    assert all(any(line.endswith(f"  {p}") for line in every) for p in on_disk)

    # prune: the downloads of both converted models go; both still load, offline, without a request
    assert cli(["cache", "prune", "--dry-run"]) == 0
    dry = capsys.readouterr().out.splitlines()
    assert _files(cache) == on_disk and sum(line.startswith("would remove /") for line in dry) >= 4
    assert cli(["cache", "prune"]) == 0
    pruned = capsys.readouterr().out.splitlines()
    gone = {Path(line.removeprefix("removed ")) for line in pruned[:-1]}
    assert gone == {Path(line.removeprefix("would remove ")) for line in dry[:-1]}
    assert {Path(f["path"]) for f in downloads} <= gone and not any(p.exists() for p in gone)
    freed = sum(on_disk[p] for p in gone)
    assert pruned[-1] == (f"removed {len(gone)} files ({_mib(freed)}) from {cache}: downloads whose converted model "
                          "is cached")
    requests = len(server.requests)
    razorzoo.load_detector(DETECTOR, offline=True)
    razorzoo.load_classifier(CLASSIFIER, backend="onnxruntime", offline=True)
    assert len(server.requests) == requests

    # rm NAME: the model, its export and its conversion lock; the other model stays
    before = _files(cache)
    assert cli(["cache", "rm", CLASSIFIER]) == 0
    removed = {Path(line.removeprefix("removed ")) for line in capsys.readouterr().out.splitlines()[:-1]}
    assert export in removed and cache / "models" / f".{CLASSIFIER}.lock" in removed
    assert set(before) - set(_files(cache)) == removed
    assert razorzoo.loading.converted_file(DETECTOR, offline=True).is_file()

    # rm --all: nothing razorzoo wrote is left; a file of the user's is
    mine = cache / "exported" / "my-notes" / "keep.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("mine")
    assert cli(["cache", "rm", "--all"]) == 0
    assert list(_files(cache)) == [mine]


def test_rm_exports_removes_only_export_folders(tmp_path, capsys):
    from razorzoo.storage.cache import Cache

    cache = Cache(tmp_path / "cache")
    folder = cache.export_dir("a" * 32)
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"x" * 2048)
    cache.record_export(folder, converted_sha256="b" * 64, task="classification")
    (folder / ".lock").touch()
    theirs = cache.exports / "not-a-key" / "model.onnx"  # not a folder razorzoo names: not razorzoo's
    theirs.parent.mkdir(parents=True)
    theirs.write_bytes(b"theirs")
    assert cli(["cache", "--cache-dir", str(cache.root), "rm", "--exports"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith(f"removed 3 files (") and out[-1].endswith(f"from {cache.root}: every ONNX export")
    assert not folder.exists() and theirs.read_bytes() == b"theirs"


def test_names_that_are_not_cached_get_suggestions(zoo, capsys):
    assert cli(["download", CLASSIFIER]) == 0
    capsys.readouterr()
    assert cli(["cache", "rm", "ofa_lat2"]) == 2  # a prefix of two registry names: both suggested
    err = capsys.readouterr().err
    assert "did you mean 'ofa_lat22', 'ofa_lat31'" in err and f"cached models: '{CLASSIFIER}'" in err
    assert cli(["cache", "rm", "ofa_lat22"]) == 2  # registered, not cached: the cached one it resembles
    assert f"'ofa_lat22' is not in the cache; did you mean '{CLASSIFIER}'?" in capsys.readouterr().err
    assert os.path.exists(razorzoo.loading.converted_file(CLASSIFIER, offline=True))
