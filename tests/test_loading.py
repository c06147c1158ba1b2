"""End to end through a real local mirror: registry name -> fetch -> verify -> convert -> cache -> strict load.

Cards come from ``RAZORZOO_CARDS`` (copies of the real cards whose hashes match the served fixture checkpoints) and
files from ``RAZORZOO_MIRROR`` (a real HTTP server on 127.0.0.1); outputs are compared with the upstream goldens.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import razorzoo
from checkpoints import write_checkpoint
from helpers import DATA
from http_server import FileServer, build_mirror
from razorzoo.cli import main as cli
from razorzoo.errors import OfflineError, PairMismatchError, RazorzooError, UnknownModelError
from razorzoo.zoo.registry import parse_card

DETECTOR, CLASSIFIER = "rtmdet_tiny-ofa_lat31", "ofa_lat31"
HEADS = ("cls_scores", "bbox_preds")


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    return build_mirror([DETECTOR, CLASSIFIER], tmp_path_factory.mktemp("mirror"))


@pytest.fixture
def zoo(mirror, tmp_path, monkeypatch):
    """The mirror served on 127.0.0.1, its cards registered, a fresh cache: yields (server, cache dir)."""
    www, cards = mirror
    with FileServer(www) as server:
        monkeypatch.setenv("RAZORZOO_MIRROR", server.url)
        monkeypatch.setenv("RAZORZOO_CARDS", str(cards))
        monkeypatch.setenv("RAZORZOO_CACHE", str(tmp_path / "cache"))
        monkeypatch.delenv("RAZORZOO_OFFLINE", raising=False)
        yield server, tmp_path / "cache"


def _url_path(name: str, entry: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(getattr(razorzoo.get_card(name), entry).url).path


def _max_head_diff(detector, goldens) -> float:
    with torch.no_grad():
        raw = detector(goldens["input"])
    return max((out - goldens[f"head.{name}.{i}"]).abs().max().item()
               for name, levels in zip(HEADS, raw) for i, out in enumerate(levels))


def test_registry_name_to_golden_outputs_then_offline_from_the_cache(zoo):
    server, cache = zoo
    goldens = load_file(DATA / DETECTOR / "goldens.safetensors")
    detector = razorzoo.load_detector(DETECTOR)
    assert isinstance(detector, razorzoo.Detector) and not detector.training
    assert _max_head_diff(detector, goldens) <= 1e-4
    assert [r.path for r in server.requests] == [_url_path(DETECTOR, "subnet"), _url_path(DETECTOR, "weights")]
    [converted] = list((cache / "models").rglob("model.safetensors"))
    mtime = converted.stat().st_mtime_ns
    # second call: no request, no conversion; then offline with only the converted file left
    assert _max_head_diff(razorzoo.load_detector(DETECTOR), goldens) <= 1e-4
    shutil.rmtree(cache / "downloads")
    again = razorzoo.load_detector(DETECTOR, offline=True)
    assert _max_head_diff(again, goldens) <= 1e-4
    assert len(server.requests) == 2 and converted.stat().st_mtime_ns == mtime


def test_backbone_of_a_detector_takes_the_detector_weights(zoo):
    goldens = load_file(DATA / DETECTOR / "goldens.safetensors")
    backbone = razorzoo.load_backbone(DETECTOR)
    with torch.no_grad():
        feats = backbone(goldens["input"])
    assert len(feats) == 3
    for i, feat in enumerate(feats):
        assert (feat - goldens[f"backbone.{i}"]).abs().max().item() <= 1e-4


def test_classifier_by_alias_matches_goldens(zoo):
    goldens = load_file(DATA / CLASSIFIER / "goldens.safetensors")
    alias = razorzoo.get_card(CLASSIFIER).aliases[0]
    model = razorzoo.load_classifier(alias)
    with torch.no_grad():
        assert (model(goldens["input"]) - goldens["logits"]).abs().max().item() <= 1e-4


def test_offline_without_cache_lists_exactly_what_is_missing(zoo):
    server, _ = zoo
    with pytest.raises(OfflineError) as info:
        razorzoo.load_detector(DETECTOR, offline=True)
    message = str(info.value)
    card = razorzoo.get_card(DETECTOR)
    assert card.weights.url in message and card.subnet.url in message
    assert f"razorzoo download {DETECTOR}" in message
    assert server.requests == []


def test_wrong_loader_for_the_task_is_a_clear_error(zoo):
    path = razorzoo.loading.download(DETECTOR)
    with pytest.raises(RazorzooError, match="load_detector"):
        razorzoo.load_classifier(path)
    with pytest.raises(UnknownModelError):
        razorzoo.load_detector("rtmdet_tiny-ofa_lat13")



def test_converted_file_alone_rebuilds_the_model(zoo, tmp_path):
    path = razorzoo.loading.download(DETECTOR)
    copy = tmp_path / "elsewhere" / "model.safetensors"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    goldens = load_file(DATA / DETECTOR / "goldens.safetensors")
    assert _max_head_diff(razorzoo.load_detector(copy), goldens) <= 1e-4


def test_pth_needs_a_subnet_and_a_mismatched_one_is_refused(tmp_path):
    pth = write_checkpoint(DETECTOR, "runner", tmp_path / "epoch_1.pth")
    with pytest.raises(RazorzooError, match="subnet="):
        razorzoo.load_detector(pth)
    goldens = load_file(DATA / DETECTOR / "goldens.safetensors")
    assert _max_head_diff(razorzoo.load_detector(pth, subnet=DETECTOR), goldens) <= 1e-4
    with pytest.raises(PairMismatchError):
        razorzoo.load_detector(pth, subnet="ofa_lat22", detector="rtmdet_tiny")


def test_published_yaml_that_disagrees_with_the_shipped_one_is_refused(zoo, mirror, tmp_path, monkeypatch):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "conversion"))
    from razorzoo.zoo.edit import set_card_hashes

    server, cache = zoo
    www, cards = mirror
    other = tmp_path / "cards"
    (other / "subnets").mkdir(parents=True)
    for file in cards.rglob("*"):
        if file.is_file():
            (other / file.relative_to(cards)).write_bytes(file.read_bytes())
    # the "published" copy of this card's YAML chooses lat22's architecture
    lat22 = (Path(razorzoo.zoo.registry.CARDS_DIR) / "subnets" / "OFA_SUBNET_NOTE8_LAT22.yaml").read_bytes()
    served = Path(server.root) / _url_path(DETECTOR, "subnet").lstrip("/")
    original = served.read_bytes()
    served.write_bytes(lat22)
    try:
        set_card_hashes(other / f"{DETECTOR}.md", {"subnet": hashlib.sha256(lat22).hexdigest()})
        monkeypatch.setenv("RAZORZOO_CARDS", str(other))
        with pytest.raises(PairMismatchError, match="different architecture"):
            razorzoo.load_detector(DETECTOR)
        assert not (cache / "models").exists() or not list((cache / "models").rglob("*.safetensors"))
    finally:
        served.write_bytes(original)


def test_two_processes_loading_at_once_download_once(zoo):
    server, cache = zoo
    weights = _url_path(DETECTOR, "weights")
    server.add_fault(weights, "slow")  # the first download takes a while: the second process must wait for it
    script = (
        "import sys, torch; torch.set_num_threads(1); import razorzoo; "
        "from safetensors.torch import load_file; "
        "g = load_file(sys.argv[1]); d = razorzoo.load_detector(sys.argv[2]); "
        "out = d(g['input']); "
        "print(max((o - g[f'head.{n}.{i}']).abs().max().item() for n, lv in zip(('cls_scores', 'bbox_preds'), out) "
        "for i, o in enumerate(lv)))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    args = [sys.executable, "-c", script, str(DATA / DETECTOR / "goldens.safetensors"), DETECTOR]
    children = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
    results = [child.communicate(timeout=300) for child in children]
    for child, (out, err) in zip(children, results):
        assert child.returncode == 0, err
        assert float(out.strip().splitlines()[-1]) <= 1e-4
    assert len(server.gets(weights)) == 1
    assert len(list((cache / "models").rglob("model.safetensors"))) == 1


def test_cli_download_ls_verify_rm(zoo, capsys):
    _, cache = zoo
    assert cli(["download", DETECTOR]) == 0
    converted = Path(capsys.readouterr().out.strip())
    assert converted.is_file() and converted.name == "model.safetensors"
    assert cli(["cache", "ls"]) == 0
    listing = capsys.readouterr().out
    assert DETECTOR in listing and "download" in listing and f"cache: {cache}" in listing
    assert f"{converted}" in listing  # full paths, never shortened: they are what you copy or delete
    assert cli(["cache", "verify"]) == 0
    assert "CHANGED" not in capsys.readouterr().out
    data = bytearray(converted.read_bytes())
    data[-1] ^= 0xFF
    converted.write_bytes(bytes(data))
    assert cli(["cache", "verify"]) == 1
    assert f"CHANGED  {converted}" in capsys.readouterr().out
    assert cli(["cache", "rm", DETECTOR]) == 0
    assert not converted.exists() and not list((cache / "downloads").rglob("*.pth"))
    assert cli(["cache", "rm", DETECTOR]) == 2
    assert "not in the cache" in capsys.readouterr().err


def test_cli_download_offline_fails_cleanly(zoo, capsys):
    assert cli(["download", DETECTOR, "--offline"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("razorzoo: error: offline mode is on") and "Traceback" not in err


def test_cli_pipeline_module_does_not_import_torch():
    code = ("import sys, razorzoo.cli; razorzoo.cli.build_parser(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert out.stdout.strip() == "False"


def test_index_records_the_full_hashes(zoo):
    _, cache = zoo
    path = razorzoo.loading.download(DETECTOR)
    index = json.loads((cache / "models" / "index.json").read_text())["models"][DETECTOR]
    card = parse_card(Path(os.environ["RAZORZOO_CARDS"]) / f"{DETECTOR}.md")
    assert index["weights_sha256"] == card.weights.sha256 and len(card.weights.sha256) == 64
    assert index["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.parent.name == card.weights.sha256


def test_cli_verify_by_registry_name_downloads_and_checks_the_pair(zoo, capsys):
    server, _ = zoo
    assert cli(["verify", DETECTOR]) == 0
    assert capsys.readouterr().out.startswith("OK: matching weights")
    assert len(server.gets(_url_path(DETECTOR, "weights"))) == 1
    # a classifier's YAML claimed for the detector's weights: the pair check fails in YAML/task terms, exit 1
    assert cli(["verify", DETECTOR, "--task", "classification"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("the subnet YAML and the checkpoint do not match") and "detector" in err


def test_attentive_a1_to_a5_are_sliced_from_the_supernet_checkpoint(tmp_path, monkeypatch):
    """A3 has no published weights: its card points at the AttentiveNAS supernet, which is fetched, recognised as a
    supernet by the pair check, sliced to A3 and loaded strictly: the weights MMRazor's own slicing gives."""
    from helpers.slicing import slice_mismatches

    www, cards = build_mirror(["attentive_a3", "attentive_supernet"], tmp_path / "mirror")
    with FileServer(www) as server:
        monkeypatch.setenv("RAZORZOO_MIRROR", server.url)
        monkeypatch.setenv("RAZORZOO_CARDS", str(cards))
        monkeypatch.setenv("RAZORZOO_CACHE", str(tmp_path / "cache"))
        model = razorzoo.load_classifier("attentive_a3")
    a3 = razorzoo.get_card("attentive_a3")
    assert slice_mismatches(model.state_dict(), "attentive_a3") == []
    assert sum(p.numel() for p in model.parameters()) == a3.num_params
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


@pytest.mark.parametrize("variable", ["RAZORZOO_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_environment_variables_apply_to_registry_names(zoo, monkeypatch, variable):
    server, _ = zoo
    monkeypatch.setenv(variable, "1")
    with pytest.raises(OfflineError):
        razorzoo.load_detector(DETECTOR)
    assert server.requests == []


def test_cli_cache_rm_all_empties_the_cache(zoo, capsys):
    _, cache = zoo
    assert cli(["download", DETECTOR]) == 0 and cli(["download", CLASSIFIER]) == 0
    capsys.readouterr()
    assert cli(["cache", "rm", "--all"]) == 0
    assert [p for p in cache.rglob("*") if p.is_file()] == []  # locks and records too: razorzoo wrote them all
    capsys.readouterr()
    assert cli(["cache", "ls"]) == 0
    assert capsys.readouterr().out == f"the cache {cache} is empty\n"


def test_a_card_whose_weights_hash_changed_is_converted_again_and_the_stale_file_dropped(mirror, tmp_path,
                                                                                         monkeypatch):
    """The card moves on to other weights (new file, new sha256): the next load converts the new file and removes
    the conversion of the old one, instead of serving it or keeping both."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "conversion"))
    from checkpoints import raw_state_dict
    from razorzoo.zoo.edit import set_card_hashes
    from urllib.parse import unquote

    from razorzoo.storage.fetch import sha256_of_file

    www, cards = (shutil.copytree(p, tmp_path / p.name) for p in mirror)
    monkeypatch.setenv("RAZORZOO_CARDS", str(cards))
    monkeypatch.setenv("RAZORZOO_CACHE", str(tmp_path / "cache"))
    with FileServer(www) as server:
        monkeypatch.setenv("RAZORZOO_MIRROR", server.url)
        first = razorzoo.loading.download(CLASSIFIER)
        card = razorzoo.get_card(CLASSIFIER)
        assert card.path.is_relative_to(cards)  # the copy is edited, not the shipped card
        served = www / unquote(_url_path(CLASSIFIER, "weights")).lstrip("/")
        write_checkpoint(CLASSIFIER, "mmrazor-subnet", served, raw_state_dict(CLASSIFIER))
        set_card_hashes(card.path, {"weights": sha256_of_file(served), "subnet": card.subnet.sha256})
        second = razorzoo.loading.download(CLASSIFIER)
    assert second != first and second.is_file() and not first.exists()
    assert list((tmp_path / "cache" / "models").rglob("model.safetensors")) == [second]
    loaded = load_file(second)
    assert torch.equal(loaded["head.fc.bias"], raw_state_dict(CLASSIFIER)["head.fc.bias"])


@pytest.mark.parametrize("loader", ["load_detector", "load_classifier", "load_backbone"])
def test_a_supernet_is_refused_before_anything_is_downloaded(zoo, loader):
    server, cache = zoo
    with pytest.raises(RazorzooError) as info:
        getattr(razorzoo, loader)("attentive_supernet")
    message = str(info.value)
    assert message.startswith("'attentive_supernet' is a supernet") and "\n" not in message
    ready = "load_backbone" if loader == "load_backbone" else "load_classifier"  # the supernet holds ImageNet weights
    assert f"razorzoo.{ready}('attentive_a1')" in message  # a ready subnet sliced from it
    assert "subnet='my_subnet.yaml'" in message and "razorzoo.extract_subnet(" in message  # how to slice your own
    assert server.requests == [] and not cache.exists()


def test_sources_follow_type_and_spelling_never_the_disk(zoo, tmp_path, monkeypatch):
    """A str without a separator or weights suffix is a registry name even if a file of that name exists."""
    server, _ = zoo
    monkeypatch.chdir(tmp_path)
    Path(CLASSIFIER).write_bytes(b"a file that happens to share the model's name")
    goldens = load_file(DATA / CLASSIFIER / "goldens.safetensors")
    with torch.no_grad():
        assert (razorzoo.load_classifier(CLASSIFIER)(goldens["input"]) - goldens["logits"]).abs().max() <= 1e-4
    with pytest.raises(RazorzooError, match="OpenMMLab checkpoint"):  # the same name as a Path is that file
        razorzoo.load_classifier(Path(CLASSIFIER))
    for text in ("missing.safetensors", "missing.PTH", "missing.ckpt", "missing.onnx", "sub/ofa_lat31",
                 f".{os.sep}missing_model"):
        with pytest.raises(RazorzooError, match="is not a file"):
            razorzoo.load_classifier(text)
    Path("my_search_result").write_bytes(b"x")
    with pytest.raises(UnknownModelError, match=r"unknown model .*pass pathlib.Path\('my_search_result'\)"):
        razorzoo.load_classifier("my_search_result")
    with pytest.raises(UnknownModelError) as info:
        razorzoo.load_classifier("no_such_model")
    assert "pathlib" not in str(info.value)
    with pytest.raises(RazorzooError, match="cannot load 42"):
        razorzoo.load_classifier(42)
    assert len(server.requests) == 2  # the subnet YAML and the weights of the registry name, nothing else


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_cache_files_get_the_umask_mode(zoo, umask, mode):
    _, cache = zoo
    old = os.umask(umask)
    try:
        razorzoo.loading.download(CLASSIFIER)
    finally:
        os.umask(old)
    files = [p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    # the converted file, index.json, and the two downloads (subnet YAML, weights) with their meta.json
    assert len(files) == 6 and {"index.json", "model.safetensors", "meta.json"} <= {p.name for p in files}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: oct(mode) for p in files}
