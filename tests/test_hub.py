"""Publishing to and loading from the Hugging Face Hub, with the real ``huggingface_hub`` client against the
Hub-compatible server of ``tests/hub_server.py`` on 127.0.0.1."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

import razorzoo
from checkpoints import write_checkpoint
from fixture_rule import rule_tensor
from helpers import flat_outputs
from hub_server import HubServer
from razorzoo.cli import main as cli_main
from razorzoo.errors import HubError, OfflineError, SubnetError
from razorzoo.publish import push_to_hub
from razorzoo.storage.hub import download_hub_model, list_hub_models, load_hub_card, parse_hub_ref
from razorzoo.arch.spec import ArchSpec

# An AttentiveNAS subnet nobody shipped: A6-like widths, other depths (2,4,3,3,3,3,2) and kernels, input 192.
CUSTOM_SUBNET = """\
backbone.first_channels: {chosen: 16}
backbone.last_channels: {chosen: 1792}
""" + "".join(
    f"backbone.layers.{i}.kernel_size: {{chosen: {k}}}\n"
    f"backbone.layers.{i}.depth: {{chosen: {d}}}\n"
    f"backbone.layers.{i}.expand_ratio: {{chosen: {e}}}\n"
    f"backbone.layers.{i}.out_channels: {{chosen: {c}}}\n"
    for i, (k, d, e, c) in enumerate(
        [(3, 2, 1, 16), (5, 4, 4, 24), (5, 3, 5, 32), (3, 3, 4, 64), (5, 3, 4, 112), (3, 3, 6, 192), (5, 2, 6, 216)],
        start=1)
) + "input_shape: {chosen: [192, 192]}\n"
DETECTOR_BASE = "yolov6s-attentive_a6"


def rule_weights(model: torch.nn.Module, salt: str = "") -> "OrderedDict[str, torch.Tensor]":
    """The fixture rule on the model's own key set (``salt`` gives a second, different set of weights)."""
    return OrderedDict((k, rule_tensor(salt + k, v.shape, str(v.dtype))) for k, v in model.state_dict().items())


def assert_same_outputs(got: torch.Tensor, expected: torch.Tensor) -> None:
    # the same weights, loaded differently (safetensors-backed vs freshly made tensors), pick different float
    # kernels: measured max-abs differences are ~5e-7 on outputs of magnitude ~1
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def load_from_hub(ref: str, task: str) -> torch.nn.Module:
    """The one line a user writes: ``razorzoo.load_classifier("hf-hub:org/name")`` / ``load_detector``."""
    loader = {"classification": razorzoo.load_classifier, "detection": razorzoo.load_detector}[task]
    return loader(ref)


def local_outputs(build, weights, x) -> torch.Tensor:
    model = build()
    model.load_state_dict(weights, strict=True)
    with torch.no_grad():
        return flat_outputs(model.eval()(x))


def commit_files(hub: HubServer, repo_id: str, files: dict, message: str) -> str:
    """Create ``repo_id`` as alice with one commit of ``files`` (name -> bytes) through the real client, the way
    someone other than ``razorzoo push`` would; returns the commit id."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=hub.url, token="hf_alice")
    api.create_repo(repo_id)
    api.create_commit(repo_id, [CommitOperationAdd(name, data) for name, data in files.items()],
                      commit_message=message)
    return hub.repos[repo_id].branches["main"]


def pushed_files(hub: HubServer) -> dict:
    """The files ``razorzoo push`` wrote for the ``pushed_classifier`` fixture."""
    return hub.repos["alice/attentive-custom"].commits[-1].files


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """One server for the module; the client is pointed at it through HF_ENDPOINT and logged in as alice."""
    with HubServer() as server, pytest.MonkeyPatch.context() as env:
        env.setenv("HF_ENDPOINT", server.url)
        env.setenv("HF_TOKEN", "hf_alice")
        env.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))
        env.delenv("HF_HUB_OFFLINE", raising=False)
        env.delenv("RAZORZOO_OFFLINE", raising=False)
        env.delenv("HF_HUB_CACHE", raising=False)
        env.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        yield server


@pytest.fixture
def fresh_cache(monkeypatch, tmp_path):
    """A razorzoo cache nobody has downloaded Hub files into yet; returns its hub/ directory."""
    monkeypatch.setenv("RAZORZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "hub"


@pytest.fixture(scope="module")
def classifier_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("classifier")
    (directory / "best_fix_subnet.yaml").write_text(CUSTOM_SUBNET)
    weights = rule_weights(razorzoo.build_classifier(CUSTOM_SUBNET))
    # MMRazor's subnet checkpoint layout: architecture.-prefixed keys (layouts.md docs/upstream.md §4)
    path = write_checkpoint("attentive_a6", "mmrazor-subnet", directory / "subnet_custom.pth", weights)
    return directory / "best_fix_subnet.yaml", path, weights


@pytest.fixture(scope="module")
def pushed_classifier(hub, classifier_files):
    subnet, weights_path, weights = classifier_files
    url = push_to_hub("alice/attentive-custom", subnet=subnet, weights=weights_path, base="attentive_a6",
                      metrics={"top1": 77.7}, constraint="flops<=400M")
    return url, weights


def test_push_writes_one_commit_with_the_four_files(hub, pushed_classifier):
    url, _ = pushed_classifier
    assert url == f"{hub.url}/alice/attentive-custom"
    repo = hub.repos["alice/attentive-custom"]
    # the repo's initial commit, then one commit with everything (other tests may add commits on other branches)
    initial, pushed = repo.commits[:2]
    assert initial.summary == "initial commit" and repo.branches["main"] == pushed.oid
    assert sorted(pushed.files) == [".gitattributes", "README.md", "config.json", "model.safetensors", "subnet.yaml"]
    config = json.loads(pushed.files["config.json"])
    assert config["task"] == "classification" and config["family"] == "attentive" and config["base"] == "attentive_a6"
    assert config["razorzoo_version"] == razorzoo.__version__
    assert ArchSpec.from_dict(config).subnet == razorzoo.load_subnet(CUSTOM_SUBNET)
    # the card names each file by its public Hub address and its content's hash (what a registry download checks)
    import yaml

    front = yaml.safe_load(pushed.files["README.md"].decode().split("---\n")[1])
    # what the Hub indexes: the library (list_hub_models' filter on the real Hub) and the task
    assert (front["library_name"], front["pipeline_tag"]) == ("razorzoo", "image-classification")
    assert front["tags"] == ["razorzoo", "mmrazor", "nas", "attentive", "image-classification", "base:attentive_a6"]
    assert front["datasets"] == ["imagenet-1k"] and "base_model" not in front  # a built-in base has no Hub repo
    # the Hub's model-index schema: the metric passed to push, on ImageNet, for this repo
    assert front["model-index"] == [{"name": "alice/attentive-custom", "results": [{
        "task": {"type": "image-classification"}, "dataset": {"type": "imagenet-1k", "name": "ImageNet-1k"},
        "metrics": [{"type": "top1", "name": "top1", "value": 77.7}]}]}]
    block = front["razorzoo"]
    for key, name in (("subnet", "subnet.yaml"), ("weights", "model.safetensors")):
        assert block[key]["sha256"] == hashlib.sha256(pushed.files[name]).hexdigest()
        assert block[key]["url"] == f"https://huggingface.co/alice/attentive-custom/resolve/main/{name}"
    a6 = razorzoo.zoo.registry.get_card("attentive_a6").meta  # the search is the base entry's, as it says it
    assert {key: block[key] for key in ("name", "task", "family", "aliases", "base", "hub_id", "algorithm",
                                        "search_space", "constraint")} == {
        "name": "attentive-custom", "task": "classification", "family": "attentive", "aliases": [],
        "base": "attentive_a6", "hub_id": "alice/attentive-custom", "algorithm": a6["algorithm"],
        "search_space": a6["search_space"], "constraint": "flops<=400M"}
    assert "recipe" not in block  # a classifier has no detector recipe
    assert block["weights"]["layout"] == "razorzoo"  # a converted file: no key mapping on download
    # the card's body: what was searched, its size at the base's FLOPs input, the metric, a usage snippet that runs
    body = pushed.files["README.md"].decode().split("---\n", 2)[2]
    model = razorzoo.build_classifier(CUSTOM_SUBNET)
    flops = razorzoo.count_flops(model, (1, 3, 224, 224)).flops
    assert body.startswith(
        "\n# alice/attentive-custom\n\nA subnet of the AttentiveMobileNetV3 search space found by AttentiveNAS "
        "search, published with razorzoo. It follows the built-in entry `attentive_a6`.\n\n"
        f"- Search: {a6['algorithm']}, constraint `flops<=400M`\n"
        f"- Params: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M; FLOPs: {flops / 1e9:.3f} G "
        "(multiply-accumulates) at input [1, 3, 224, 224]\n\n| metric | value |\n|---|---|\n| top1 | 77.7 |\n")
    assert 'model = razorzoo.load_classifier("hf-hub:alice/attentive-custom")' in body
    assert body.endswith("in the metadata of `model.safetensors`.\n")  # no training section: not trained here


def test_card_file_urls_name_an_https_endpoint_and_the_public_hub_for_any_other(monkeypatch):
    """Cards require https addresses: a plain-http endpoint (like the loopback Hub here) is named by the public form."""
    from razorzoo.publish import _file_url

    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.org")
    assert _file_url("alice/x", "subnet.yaml") == "https://hub.example.org/alice/x/resolve/main/subnet.yaml"
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:8080")
    assert _file_url("alice/x", "subnet.yaml") == "https://huggingface.co/alice/x/resolve/main/subnet.yaml"


def test_load_classifier_by_id_matches_the_local_model(hub, pushed_classifier, fresh_cache):
    _, weights = pushed_classifier
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(6))
    expected = local_outputs(lambda: razorzoo.build_classifier(CUSTOM_SUBNET), weights, x)
    with torch.no_grad():
        got = flat_outputs(load_from_hub("hf-hub:alice/attentive-custom", "classification")(x))
    assert got.shape == expected.shape == (2 * 1000,)
    assert_same_outputs(got, expected)


def test_detector_round_trip(hub, tmp_path, fresh_cache):
    """A YOLOv6 recipe on the custom subnet: neck channels follow the YAML (32, 112, 216)."""
    build = lambda: razorzoo.build_detector(CUSTOM_SUBNET, detector=DETECTOR_BASE)  # noqa: E731
    weights = rule_weights(build())
    path = write_checkpoint(DETECTOR_BASE, "mmdet-publish", tmp_path / "yolov6_custom.pth", weights)
    push_to_hub("razor-team/yolov6-custom", subnet=CUSTOM_SUBNET, weights=path, base=DETECTOR_BASE,
                metrics=["box_ap=41.5", "AP50=60.25"])
    config = json.loads(hub.repos["razor-team/yolov6-custom"].commits[-1].files["config.json"])
    assert config["task"] == "detection" and config["recipe"] == "yolov6_l_d12"
    x = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(7))
    expected = local_outputs(build, weights, x)
    with torch.no_grad():
        got = flat_outputs(load_from_hub("hf-hub:razor-team/yolov6-custom", "detection")(x))
    assert_same_outputs(got, expected)
    card = load_hub_card("hf-hub:razor-team/yolov6-custom")
    assert (card.task, card.recipe, card.metrics) == ("detection", "yolov6_l_d12", {"box_ap": 41.5})
    assert "constraint" not in card.meta  # none was given: none is claimed
    readme = hub.repos["razor-team/yolov6-custom"].commits[-1].files["README.md"].decode()
    assert 'model = razorzoo.load_detector("hf-hub:razor-team/yolov6-custom")' in readme
    assert f"`{DETECTOR_BASE}` (detector recipe `yolov6_l_d12`).\n\n- Search: {card.meta['algorithm']}\n" in readme
    assert "| metric | value |\n|---|---|\n| box_ap | 41.5 |\n| AP50 | 60.25 |\n" in readme  # every metric passed
    assert card.front_matter["datasets"] == ["coco"] and card.front_matter["pipeline_tag"] == "object-detection"


def test_revision_pinning_returns_the_old_weights(hub, classifier_files, tmp_path, fresh_cache):
    subnet, first_path, first = classifier_files
    push_to_hub("alice/pinned", subnet=subnet, weights=first_path, base="attentive_a6")
    first_commit = hub.repos["alice/pinned"].commits[-1].oid
    second = rule_weights(razorzoo.build_classifier(CUSTOM_SUBNET), salt="v2/")
    second_path = write_checkpoint("attentive_a6", "mmrazor-subnet", tmp_path / "v2.pth", second)
    push_to_hub("alice/pinned", subnet=subnet, weights=second_path, base="attentive_a6")
    assert hub.repos["alice/pinned"].commits[-1].oid != first_commit

    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(8))
    build = lambda: razorzoo.build_classifier(CUSTOM_SUBNET)  # noqa: E731
    with torch.no_grad():
        pinned = flat_outputs(load_from_hub(f"hf-hub:alice/pinned@{first_commit}", "classification")(x))
        latest = flat_outputs(load_from_hub("hf-hub:alice/pinned", "classification")(x))
    assert_same_outputs(pinned, local_outputs(build, first, x))
    assert_same_outputs(latest, local_outputs(build, second, x))
    assert (pinned - latest).abs().max() > 0.1


def test_push_to_a_branch_leaves_main_alone(hub, pushed_classifier, classifier_files, tmp_path, fresh_cache):
    subnet, _, _ = classifier_files
    main_head = hub.repos["alice/attentive-custom"].branches["main"]
    candidate = rule_weights(razorzoo.build_classifier(CUSTOM_SUBNET), salt="candidate/")
    path = write_checkpoint("attentive_a6", "mmrazor-subnet", tmp_path / "candidate.pth", candidate)
    push_to_hub("alice/attentive-custom", subnet=subnet, weights=path, base="attentive_a6", revision="candidate")
    repo = hub.repos["alice/attentive-custom"]
    assert repo.branches["main"] == main_head and repo.branches["candidate"] != main_head
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        got = flat_outputs(load_from_hub("hf-hub:alice/attentive-custom@candidate", "classification")(x))
    assert_same_outputs(got, local_outputs(lambda: razorzoo.build_classifier(CUSTOM_SUBNET), candidate, x))


def test_repushing_identical_files_makes_no_commit(hub, pushed_classifier, classifier_files):
    subnet, weights_path, _ = classifier_files
    before = [c.oid for c in hub.repos["alice/attentive-custom"].commits]
    url = push_to_hub("alice/attentive-custom", subnet=subnet, weights=weights_path, base="attentive_a6",
                      metrics={"top1": 77.7}, constraint="flops<=400M")
    assert url == pushed_classifier[0]
    assert [c.oid for c in hub.repos["alice/attentive-custom"].commits] == before


def test_downloads_go_through_the_hub_cache_and_work_offline(hub, pushed_classifier, fresh_cache, monkeypatch,
                                                               capsys):
    weights_url = "/alice/attentive-custom/resolve/"
    gets = lambda: [p for m, p in hub.requests if m == "GET" and p.startswith(weights_url)]  # noqa: E731
    before = len(gets())
    first = download_hub_model("hf-hub:alice/attentive-custom")
    assert first.is_relative_to(fresh_cache) and first.name == "model.safetensors"
    assert sorted(p.rsplit("/", 1)[1] for p in gets()[before:]) == ["config.json", "model.safetensors"]
    assert download_hub_model("hf-hub:alice/attentive-custom") == first
    assert len(gets()) == before + 2  # no second download
    commit = hub.repos["alice/attentive-custom"].branches["main"]
    assert first == fresh_cache / "alice" / "attentive-custom" / commit / "model.safetensors"
    assert cli_main(["cache", "ls"]) == 0 and cli_main(["cache", "verify"]) == 0
    listed = capsys.readouterr().out
    assert re.search(rf"^hub +alice/attentive-custom/model\.safetensors .* {re.escape(str(first))}$", listed, re.M)
    assert f"ok       {first}" in listed

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    requests_before = len(hub.requests)
    assert download_hub_model("hf-hub:alice/attentive-custom") == first
    assert len(hub.requests) == requests_before  # offline: no request at all
    with pytest.raises(OfflineError, match="not in the Hub cache"):
        download_hub_model("hf-hub:alice/pinned-never-downloaded")
    with pytest.raises(OfflineError, match="needs the network"):
        list_hub_models()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("RAZORZOO_OFFLINE", "1")  # razorzoo's own flag means the same
    assert download_hub_model("hf-hub:alice/attentive-custom") == first
    monkeypatch.delenv("RAZORZOO_OFFLINE")
    assert download_hub_model("hf-hub:alice/attentive-custom", offline=True) == first
    assert len(hub.requests) == requests_before


def test_private_repo_needs_the_token(hub, classifier_files, fresh_cache, monkeypatch):
    subnet, weights_path, _ = classifier_files
    push_to_hub("alice/secret", subnet=subnet, weights=weights_path, base="attentive_a6", private=True)
    assert hub.repos["alice/secret"].private
    assert "hf-hub:alice/secret" in [m["id"] for m in list_hub_models("alice")]

    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError, match="not found.*HF_TOKEN"):
        download_hub_model("hf-hub:alice/secret")
    assert "hf-hub:alice/secret" not in [m["id"] for m in list_hub_models("alice")]
    monkeypatch.setenv("HF_TOKEN", "hf_bob")  # a valid token of someone else
    with pytest.raises(HubError, match="not found"):
        download_hub_model("hf-hub:alice/secret")

    monkeypatch.setenv("HF_TOKEN", "hf_alice")
    assert download_hub_model("hf-hub:alice/secret").is_file()


def test_wrong_token_is_refused(hub, classifier_files, monkeypatch):
    subnet, weights_path, _ = classifier_files
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_token")
    with pytest.raises(HubError, match="refused the token"):
        push_to_hub("alice/wrong-token", subnet=subnet, weights=weights_path, base="attentive_a6")
    with pytest.raises(HubError, match="refused the token"):
        download_hub_model("hf-hub:alice/attentive-custom")
    assert "alice/wrong-token" not in hub.repos


def test_missing_token_is_refused_before_any_work(hub, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-login"))  # no saved token either
    requests_before = len(hub.requests)
    with pytest.raises(HubError, match="needs a Hub token"):
        push_to_hub("alice/x", subnet="missing.yaml", weights="missing.pth", base="attentive_a6")
    assert len(hub.requests) == requests_before


def test_name_taken_by_someone_else_is_refused(hub, pushed_classifier, classifier_files, monkeypatch):
    subnet, weights_path, _ = classifier_files
    before = list(hub.repos["alice/attentive-custom"].commits)
    with pytest.raises(HubError, match="belongs to someone else.*bob/attentive-custom"):
        push_to_hub("alice/attentive-custom", subnet=subnet, weights=weights_path, base="attentive_a6",
                    token="hf_bob")
    assert hub.repos["alice/attentive-custom"].commits == before


@pytest.mark.parametrize("metrics", [{"box_ap": None}, {"box_ap": ""}, ["box_ap="], ["box_ap"], {"top1": "high"}])
def test_metric_without_a_value_is_refused(hub, classifier_files, metrics):
    subnet, weights_path, _ = classifier_files
    requests_before = len(hub.requests)
    with pytest.raises(HubError, match="box_ap|top1"):
        push_to_hub("alice/no-value", subnet=subnet, weights=weights_path, base="attentive_a6", metrics=metrics)
    assert len(hub.requests) == requests_before


def test_invalid_pair_is_refused(hub, classifier_files, tmp_path):
    subnet, _, _ = classifier_files
    a6_weights = write_checkpoint("attentive_a6", "mmrazor-subnet", tmp_path / "a6.pth")  # weights of another subnet
    with pytest.raises(HubError, match="does not fit the subnet"):
        push_to_hub("alice/mismatch", subnet=subnet, weights=a6_weights, base="attentive_a6")
    assert "alice/mismatch" not in hub.repos


def test_a_razorzoo_file_is_pushed_as_it_describes_itself_and_a_subnet_that_differs_is_refused(
        hub, pushed_classifier, classifier_files, fresh_cache):
    """A converted file carries its subnet: ``subnet=`` may repeat it, never contradict it (the registry's A6 is
    another subnet of the same space)."""
    subnet, _, _ = classifier_files
    converted = download_hub_model("hf-hub:alice/attentive-custom")
    push_to_hub("alice/again", weights=converted, subnet=subnet)  # base: a built-in entry of its task and family
    from razorzoo.arch.subnet import load_subnet
    from razorzoo.zoo.registry import get_card

    pushed = hub.repos["alice/again"].commits[-1].files["subnet.yaml"].decode()
    assert load_subnet(pushed, family="attentive") == load_subnet(subnet.read_text(), family="attentive")
    base = get_card(load_hub_card("hf-hub:alice/again").meta["base"])
    assert (base.task, base.family) == ("classification", "attentive")
    a6 = get_card("attentive_a6").subnet_path.read_text()
    with pytest.raises(HubError) as info:
        push_to_hub("alice/contradicted", weights=converted, subnet=a6, base="attentive_a6")
    message = str(info.value)  # the path is quoted and bounded
    assert message.startswith("--subnet does not describe '") and message.endswith(
        "; leave it out: the file carries its own subnet")
    assert "alice/contradicted" not in hub.repos


def test_a_subnet_is_read_in_its_bases_search_space_and_a_supernet_base_is_refused(hub, classifier_files):
    """An SPOS YAML pushed as an AttentiveNAS subnet is refused by the AttentiveNAS space, before any upload."""
    _, weights_path, _ = classifier_files
    spos = (Path(__file__).parent / "data" / "spos_0.33M" / "subnet.yaml").read_text()
    with pytest.raises(SubnetError, match="missing key 'backbone.first_channels'"):
        push_to_hub("alice/other-space", subnet=spos, weights=weights_path, base="attentive_a6")
    with pytest.raises(HubError) as info:
        push_to_hub("alice/on-a-supernet", subnet=CUSTOM_SUBNET, weights=weights_path, base="attentive_supernet")
    assert str(info.value) == ("base 'attentive_supernet' is a supernet; pass a classification or detection entry "
                               "as base")
    assert "alice/other-space" not in hub.repos and "alice/on-a-supernet" not in hub.repos


def test_subnet_outside_the_search_space_is_refused(hub, classifier_files):
    _, weights_path, _ = classifier_files
    with pytest.raises(SubnetError, match="kernel_size"):
        push_to_hub("alice/bad-yaml", subnet=CUSTOM_SUBNET.replace("kernel_size: {chosen: 5}", "kernel_size: "
                                                                   "{chosen: 9}", 1),
                    weights=weights_path, base="attentive_a6")
    assert "alice/bad-yaml" not in hub.repos


def test_card_round_trips_through_model_card_and_the_registry(hub, pushed_classifier, monkeypatch, fresh_cache):
    from huggingface_hub import ModelCard, constants

    card = load_hub_card("hf-hub:alice/attentive-custom")  # razorzoo's registry parser
    assert (card.name, card.task, card.family, card.metrics) == ("attentive-custom", "classification", "attentive",
                                                                 {"top1": 77.7})
    assert razorzoo.load_subnet(card.subnet_path) == razorzoo.load_subnet(CUSTOM_SUBNET)
    weights_file = download_hub_model("hf-hub:alice/attentive-custom")
    assert card.weights.sha256 == hashlib.sha256(weights_file.read_bytes()).hexdigest()
    assert card.subnet.sha256 == hashlib.sha256(card.subnet_path.read_bytes()).hexdigest()

    hf_card = ModelCard.load(card.path)  # the same README.md, read by huggingface_hub
    assert hf_card.data.library_name == "razorzoo"
    assert "base:attentive_a6" in hf_card.data.tags
    [result] = hf_card.data.eval_results
    assert (result.metric_type, result.metric_value, result.dataset_type) == ("top1", 77.7, "imagenet-1k")
    block = hf_card.data.to_dict()["razorzoo"]
    assert (block["algorithm"], block["constraint"], block["base"]) == (
        "AttentiveNAS (BigNAS-style sandwich supernet)", "flops<=400M", "attentive_a6")
    built = razorzoo.build_classifier(CUSTOM_SUBNET)
    assert block["num_params"] == sum(p.numel() for p in built.parameters())
    assert 'razorzoo.load_classifier("hf-hub:alice/attentive-custom")' in hf_card.text

    monkeypatch.setattr(constants, "ENDPOINT", hub.url)  # ModelCard.validate posts to the module-level endpoint
    hf_card.validate()
    hf_card.data.base_model = "attentive_a6"  # the Hub wants a repo id here, which is why razorzoo.base exists
    with pytest.raises(ValueError, match="base_model"):
        hf_card.validate()



def test_list_hub_models_filters_by_library_and_author(hub, pushed_classifier):
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=hub.url, token="hf_bob")
    api.create_repo("bob/not-razorzoo")
    api.create_commit("bob/not-razorzoo", [CommitOperationAdd("README.md", b"---\nlibrary_name: timm\n---\n")],
                      commit_message="a timm model")
    ids = [m["id"] for m in list_hub_models()]
    assert "hf-hub:alice/attentive-custom" in ids and "hf-hub:bob/not-razorzoo" not in ids
    [entry] = [m for m in list_hub_models("alice") if m["id"] == "hf-hub:alice/attentive-custom"]
    assert (entry["task"], entry["family"], entry["base"], entry["private"]) == (
        "classification", "attentive", "attentive_a6", False)
    assert list_hub_models("bob") == []


def test_inconsistent_repo_is_detected(hub, pushed_classifier, fresh_cache):
    """config.json and the safetensors metadata must agree before anything is built."""
    files = pushed_files(hub)
    config = json.loads(files["config.json"])
    config["subnet"] = config["subnet"].replace("chosen: 1792", "chosen: 1984")
    commit_files(hub, "alice/inconsistent", {"model.safetensors": files["model.safetensors"],
                                             "config.json": json.dumps(config).encode()}, "hand-edited")
    with pytest.raises(HubError, match="different architecture"):
        download_hub_model("hf-hub:alice/inconsistent")


def test_cli_push(hub, classifier_files, capsys):
    subnet, weights_path, _ = classifier_files
    code = cli_main(["push", "alice/from-cli", "--subnet", str(subnet), "--weights", str(weights_path), "--base",
                     "attentive_a6", "--metric", "top1=76.5", "--constraint", "flops<=400M"])
    assert code == 0
    assert capsys.readouterr().out.strip() == f"{hub.url}/alice/from-cli"
    assert b"value: 76.5" in hub.repos["alice/from-cli"].commits[-1].files["README.md"]

    code = cli_main(["push", "alice/from-cli-2", "--subnet", str(subnet), "--weights", str(weights_path), "--base",
                     "attentive_a6", "--metric", "box_ap="])
    assert code == 2
    assert "metric 'box_ap' has no value" in capsys.readouterr().err
    assert "alice/from-cli-2" not in hub.repos


@pytest.mark.parametrize("given, message", [
    (["box_ap"], "metric 'box_ap' has no value: pass it as NAME=VALUE, e.g. box_ap=45.1"),
    (["box_ap=4=5"], "metric 'box_ap' must be a number, not '4=5'; expected e.g. box_ap=45.1"),  # the first '='
    ({"top1": " "}, "metric 'top1' has no value: pass it as NAME=VALUE, e.g. box_ap=45.1"),
])
def test_metric_arguments_split_at_the_first_equals_sign_and_name_what_is_wrong(given, message):
    from razorzoo.publish import parse_metrics

    assert parse_metrics([" top1 = 76.5 ", "box_ap=0"]) == {"top1": 76.5, "box_ap": 0.0}
    with pytest.raises(HubError) as info:
        parse_metrics(given)
    assert str(info.value) == message


@pytest.mark.parametrize("ref, repo_id, revision", [
    ("hf-hub:org/name", "org/name", None),
    ("hf-hub:org/name@v1.0", "org/name", "v1.0"),
    ("org/my.model-2@" + "a" * 40, "org/my.model-2", "a" * 40),
])
def test_parse_hub_ref(ref, repo_id, revision):
    parsed = parse_hub_ref(ref)
    assert (parsed.repo_id, parsed.revision) == (repo_id, revision)


@pytest.mark.parametrize("ref", ["hf-hub:name-only", "hf-hub:a/b/c", "hf-hub:org/name@", "hf-hub:"])
def test_parse_hub_ref_rejects_malformed_ids(ref):
    with pytest.raises(HubError, match="invalid Hub reference"):
        parse_hub_ref(ref)


def test_cli_lists_and_shows_hub_models(hub, pushed_classifier, capsys, fresh_cache):
    assert cli_main(["list", "--hub", "alice"]) == 0
    listing = capsys.readouterr().out
    assert "hf-hub:alice/attentive-custom" in listing and "attentive_a6" in listing
    assert cli_main(["show", "hf-hub:alice/attentive-custom"]) == 0
    shown = capsys.readouterr().out
    assert "attentive-custom" in shown and "77.7" in shown and "flops<=400M" in shown


def test_model_safetensors_is_uploaded_through_lfs(hub, pushed_classifier):
    """As on the real Hub: the weights go through the LFS batch API and a PUT, the commit names them by sha256."""
    assert ("POST", "/alice/attentive-custom.git/info/lfs/objects/batch") in hub.requests
    weights = pushed_files(hub)["model.safetensors"]
    assert ("PUT", f"/lfs-upload/{hashlib.sha256(weights).hexdigest()}") in hub.requests
    assert not any(m == "PUT" and "config" in p for m, p in hub.requests)  # small files stay regular


def _two_commits(hub, repo_id: str, classifier_files, tmp_path, **second_push) -> tuple[str, str]:
    """Push the fixture weights, then other weights of the same subnet; return both commit ids."""
    subnet, first_path, _ = classifier_files
    push_to_hub(repo_id, subnet=subnet, weights=first_path, base="attentive_a6", metrics={"top1": 77.7})
    first = hub.repos[repo_id].branches["main"]
    second = rule_weights(razorzoo.build_classifier(CUSTOM_SUBNET), salt="moved/")
    path = write_checkpoint("attentive_a6", "mmrazor-subnet", tmp_path / "moved.pth", second)
    push_to_hub(repo_id, subnet=subnet, weights=path, base="attentive_a6", **second_push)
    return first, hub.repos[repo_id].branches["main"]


def test_weights_come_from_the_commit_config_json_was_read_at(hub, classifier_files, tmp_path, fresh_cache):
    """A push lands between the download of config.json and that of model.safetensors: the weights still come
    from the commit config.json came from."""
    first, second = _two_commits(hub, "alice/moving", classifier_files, tmp_path)
    repo = hub.repos["alice/moving"]
    repo.branches["main"] = first

    def push_after_config(method: str, path: str) -> None:
        if path.endswith("/config.json"):
            repo.branches["main"] = second

    hub.on_request = push_after_config
    try:
        weights = download_hub_model("hf-hub:alice/moving")
    finally:
        hub.on_request = None
    assert repo.branches["main"] == second  # the push did happen in between
    assert weights.read_bytes() == repo.resolve(first).files["model.safetensors"]
    assert weights.read_bytes() != repo.resolve(second).files["model.safetensors"]


def test_load_hub_card_and_show_honour_the_revision(hub, classifier_files, tmp_path, fresh_cache, capsys):
    first, _ = _two_commits(hub, "alice/card-moves", classifier_files, tmp_path, metrics={"top1": 70.0})
    assert load_hub_card(f"hf-hub:alice/card-moves@{first}").metrics == {"top1": 77.7}
    assert load_hub_card("hf-hub:alice/card-moves").metrics == {"top1": 70.0}
    assert cli_main(["show", f"hf-hub:alice/card-moves@{first}"]) == 0
    out = capsys.readouterr().out
    assert "77.7" in out and "70.0" not in out


def test_load_hub_card_takes_the_cache_and_offline_flag_it_is_given(hub, pushed_classifier, fresh_cache, tmp_path):
    ref, elsewhere = "hf-hub:alice/attentive-custom", tmp_path / "elsewhere"
    with pytest.raises(OfflineError, match="not in the Hub cache"):
        load_hub_card(ref, cache_dir=elsewhere, offline=True)  # the argument wins over an online environment
    card = load_hub_card(ref, cache_dir=elsewhere)
    assert card.subnet_path.is_relative_to(elsewhere) and not fresh_cache.exists()
    assert load_hub_card(ref, cache_dir=elsewhere, offline=True).metrics == card.metrics == {"top1": 77.7}


def test_a_broken_hub_card_is_named_by_its_hub_reference(hub, fresh_cache):
    from razorzoo.errors import CardError

    commit_files(hub, "alice/broken-card", {"README.md": b"---\nlicense: mit\n---\n# nothing here\n",
                                            "subnet.yaml": CUSTOM_SUBNET.encode()}, "a card without a razorzoo block")
    with pytest.raises(CardError) as info:
        load_hub_card("hf-hub:alice/broken-card")
    assert str(info.value) == ("hf-hub:alice/broken-card: razorzoo: missing; the front matter needs a 'razorzoo:' "
                               "mapping")


def _metadata_only_safetensors(metadata: dict[str, str]) -> bytes:
    from safetensors.torch import save

    return save({"x": torch.zeros(1)}, metadata=metadata)


@pytest.mark.parametrize("config,weights,problem", [
    (b"not json", None, "config.json is not JSON; the repo was not written by razorzoo push"),
    (b"[1]", None, "config.json holds a list of 1 item, not an object; the repo was not written by razorzoo "
                        "push"),
    (None, b"garbage", "model.safetensors or config.json is not a razorzoo file (ValueError: 'model.safetensors is "
                       "not a safetensors file')"),
    (None, {}, "model.safetensors or config.json is not a razorzoo file (KeyError: \"'razorzoo_arch'\")"),
    (None, {"razorzoo_arch": "{"}, 'model.safetensors or config.json is not a razorzoo file (InputError: "the '
                                   'razorzoo_arch metadata is not JSON ('),
])
def test_a_repo_razorzoo_did_not_write_is_named_with_its_commit(hub, pushed_classifier, fresh_cache, config, weights,
                                                                problem):
    files = pushed_files(hub)
    if isinstance(weights, dict):
        weights = _metadata_only_safetensors(weights)
    repo = f"alice/foreign-{hashlib.sha256(repr((config, weights)).encode()).hexdigest()[:8]}"
    commit = commit_files(hub, repo, {"model.safetensors": weights or files["model.safetensors"],
                                      "config.json": config or files["config.json"]}, "not by razorzoo")
    with pytest.raises(HubError) as info:
        download_hub_model(f"hf-hub:{repo}")
    assert str(info.value).startswith(f"hf-hub:{repo} at {commit}: {problem}"), str(info.value)


def test_download_hub_model_takes_the_cache_it_is_given(hub, pushed_classifier, fresh_cache, tmp_path):
    path = download_hub_model("hf-hub:alice/attentive-custom", cache_dir=tmp_path / "elsewhere")
    assert path.is_relative_to(tmp_path / "elsewhere") and not fresh_cache.exists()


def test_processes_downloading_one_hub_model_fetch_each_file_once(hub, pushed_classifier, tmp_path):
    """The second process waits on the snapshot's lock and finds the files the first one finished."""
    ref, cache = "hf-hub:alice/attentive-custom", tmp_path / "shared-cache"
    script = "import sys; from razorzoo.storage.hub import download_hub_model; print(download_hub_model(sys.argv[1], cache_dir=sys.argv[2]))"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    gets = lambda: [p for m, p in hub.requests if m == "GET" and "/resolve/" in p]  # noqa: E731
    before = len(gets())
    hub.download_delay_s = 0.5  # both processes are past resolving the commit before the first download ends
    try:
        children = [subprocess.Popen([sys.executable, "-c", script, ref, str(cache)], stdout=subprocess.PIPE, env=env)
                    for _ in range(2)]
        paths = {child.communicate(timeout=120)[0].decode().strip() for child in children}
    finally:
        hub.download_delay_s = 0.0
    assert [child.returncode for child in children] == [0, 0] and len(paths) == 1
    assert sorted(p.rsplit("/", 1)[1] for p in gets()[before:]) == ["config.json", "model.safetensors"]


def test_a_cached_hub_file_that_lost_bytes_is_downloaded_again(hub, pushed_classifier, fresh_cache):
    path = download_hub_model("hf-hub:alice/attentive-custom")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert download_hub_model("hf-hub:alice/attentive-custom").read_bytes() == data


def test_offline_names_the_file_and_commit_that_are_not_cached(hub, pushed_classifier, fresh_cache):
    load_hub_card("hf-hub:alice/attentive-custom")  # remembers main's commit, caches README.md and subnet.yaml only
    commit = hub.repos["alice/attentive-custom"].branches["main"]
    with pytest.raises(OfflineError) as info:
        download_hub_model("hf-hub:alice/attentive-custom", offline=True)
    assert str(info.value) == (f"hf-hub:alice/attentive-custom: config.json at {commit} is not in the Hub cache "
                               f"({fresh_cache}) and offline mode is on; run once online (unset HF_HUB_OFFLINE / "
                               f"RAZORZOO_OFFLINE) to cache it")


def test_a_repo_without_weights_names_the_missing_file(hub, pushed_classifier, fresh_cache):
    commit_files(hub, "alice/no-weights", {"config.json": pushed_files(hub)["config.json"]}, "config only")
    with pytest.raises(HubError) as info:
        download_hub_model("hf-hub:alice/no-weights")
    assert str(info.value) == ("cannot download model.safetensors: hf-hub:alice/no-weights is not a razorzoo repo "
                               "(a file is missing)")


def test_a_hub_that_answers_another_commit_for_a_file_is_refused(hub, pushed_classifier, fresh_cache):
    commit = hub.repos["alice/attentive-custom"].branches["main"]

    def after(method: str, path: str) -> None:  # once config.json is read, the server starts lying about commits
        if method == "GET" and path.endswith("/config.json"):
            hub.file_headers["X-Repo-Commit"] = "d" * 40

    hub.on_request = after
    try:
        with pytest.raises(HubError) as info:
            download_hub_model("hf-hub:alice/attentive-custom")
    finally:
        hub.on_request = None
        hub.file_headers.clear()
    assert str(info.value) == (f"hf-hub:alice/attentive-custom: asked for model.safetensors at {commit}, the Hub "
                               f"answered commit {'d' * 40}")


def test_offline_remembers_every_revision_resolved_online(hub, pushed_classifier, fresh_cache):
    ref = "hf-hub:alice/attentive-custom"
    first = download_hub_model(ref)  # the default branch, then the same commit by name: two remembered revisions
    assert download_hub_model(f"{ref}@main") == first
    assert download_hub_model(ref, offline=True) == download_hub_model(f"{ref}@main", offline=True) == first


@pytest.mark.parametrize("ref, shown", [(None, "None"), (7, "7"), ("hf-hub:org/na/me", "'hf-hub:org/na/me'")])
def test_a_malformed_hub_reference_is_quoted_in_the_error(ref, shown):
    expected = "'hf-hub:org/name[@revision]'" if not isinstance(ref, str) else \
        "'hf-hub:org/name' or 'hf-hub:org/name@revision' (ASCII letters, digits and '_.-'; no '--' or '..', not " \
        "ending in '-' or '.')"
    with pytest.raises(HubError) as info:
        parse_hub_ref(ref)
    assert str(info.value) == f"invalid Hub reference {shown}: expected {expected}"


def test_download_hub_onnx_takes_the_cache_and_offline_flag_it_is_given(hub, pushed_classifier, fresh_cache, tmp_path):
    from razorzoo.storage.hub import download_hub_onnx

    files = pushed_files(hub)
    commit_files(hub, "alice/with-onnx", {"config.json": files["config.json"],
                                          "model.safetensors": files["model.safetensors"],
                                          "model.onnx": b"onnx bytes"}, "with an exported model")
    ref, elsewhere = "hf-hub:alice/with-onnx", tmp_path / "elsewhere"
    download_hub_model(ref, cache_dir=elsewhere)
    before = len(hub.requests)
    assert download_hub_onnx(ref, cache_dir=elsewhere, offline=True) is None  # never downloaded: none, offline
    assert len(hub.requests) == before
    path = download_hub_onnx(ref, cache_dir=elsewhere)
    assert path.read_bytes() == b"onnx bytes" and path.is_relative_to(elsewhere) and not fresh_cache.exists()
    assert download_hub_onnx(ref, cache_dir=elsewhere, offline=True) == path


def test_a_custom_base_card_gives_its_hub_id_and_the_families_defaults(hub, classifier_files, tmp_path, monkeypatch):
    """A user's own base card (RAZORZOO_CARDS) with a ``hub_id`` and no ``flops``, ``algorithm`` or
    ``search_space``: the pushed card names the base repo as ``base_model``, counts FLOPs at 224 px (the
    classifiers' ImageNet input) and names the family's search algorithm and space."""
    import yaml

    from custom_cards import card_text

    subnet, weights_path, _ = classifier_files
    (tmp_path / "my_base.yaml").write_text(CUSTOM_SUBNET)
    (tmp_path / "my_base.md").write_text(card_text("my_base", hub_id="bob/my-base"))
    monkeypatch.setenv("RAZORZOO_CARDS", str(tmp_path))
    push_to_hub("alice/from-custom", subnet=subnet, weights=weights_path, base="my_base")
    repo = hub.repos["alice/from-custom"]
    pushed = next(c for c in repo.commits if c.oid == repo.branches["main"])
    front = yaml.safe_load(pushed.files["README.md"].decode().split("---\n")[1])
    block = front["razorzoo"]
    assert front["base_model"] == "bob/my-base" and block["base"] == "my_base"
    assert (block["algorithm"], block["search_space"]) == ("AttentiveNAS", "AttentiveMobileNetV3")
    report = razorzoo.count_flops(razorzoo.build_classifier(CUSTOM_SUBNET), (1, 3, 224, 224))
    assert block["flops"] == {"value": report.flops, "unit": "MAC", "input": [1, 3, 224, 224]}
    assert block["num_params"] == report.params
