"""razorzoo.weights.checkpoint: every real OpenMMLab layout reads to the same weights; pickled payloads never run."""
from __future__ import annotations

import builtins
import os
import subprocess
from collections import OrderedDict

import pytest
import torch
from safetensors.torch import save_file

from checkpoints import LAYOUTS, HistoryBuffer, _mmengine_stub, has_ema, malicious_payload, raw_state_dict, \
    write_checkpoint, write_pickle
from helpers import DATA
from fixture_rule import rule_state_dict
from razorzoo.weights.checkpoint import Placeholder, read_checkpoint
from razorzoo.errors import CheckpointError, UnsafeCheckpointError

MODELS = ("spos_0.33M", "rtmdet_tiny-ofa_lat31")  # a classifier, and the EMA detector with tied head convs
EXPECTED_LAYOUT = {"runner": "runner", "mmdet-publish": "mmdet-publish", "mmrazor-subnet": "mmrazor-subnet",
                   "mmyolo-publish": "mmyolo-publish", "state-dict": "state-dict"}


def assert_same(state_dict, reference):
    assert list(state_dict) == list(reference)
    for key, value in reference.items():
        assert state_dict[key].dtype == value.dtype and torch.equal(state_dict[key], value), key


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_reads_to_the_same_state_dict(tmp_path, model, layout):
    path = write_checkpoint(model, layout, tmp_path / "epoch_1.pth")
    checkpoint = read_checkpoint(path)
    assert_same(checkpoint.state_dict, rule_state_dict(model))
    assert checkpoint.path == path
    # mmrazor's publish tool writes the same file as mmdet's when there is no ema_state_dict to keep
    expected = "mmrazor-publish" if has_ema(model) else "mmdet-publish"
    assert checkpoint.layout == EXPECTED_LAYOUT.get(layout, expected)
    assert checkpoint.ema_state_dict is None
    if layout in ("runner", "mmdet-publish", "mmrazor-publish", "mmyolo-publish"):
        assert len(checkpoint.meta["classes"]) in (80, 1000)
        assert checkpoint.meta["config"].startswith("_")  # the config's pretty text
        assert checkpoint.meta["mmengine_version"] == "0.10.7"
    if layout == "mmrazor-subnet":
        assert checkpoint.normalization == (f"stripped the 'architecture.' prefix from {len(rule_state_dict(model))} "
                                            "keys",)
    else:
        assert checkpoint.normalization == ()


def test_legacy_and_zip_formats_are_what_the_tools_write(tmp_path):
    import zipfile

    assert zipfile.is_zipfile(write_checkpoint("spos_0.33M", "runner", tmp_path / "a.pth"))
    assert not zipfile.is_zipfile(write_checkpoint("spos_0.33M", "mmdet-publish", tmp_path / "b.pth"))


def test_ema_state_dict_only_when_asked_and_it_holds_the_raw_weights(tmp_path):
    model = "rtmdet_tiny-ofa_lat31"
    path = write_checkpoint(model, "runner", tmp_path / "epoch_1.pth")
    checkpoint = read_checkpoint(path, ema=True)
    assert_same(checkpoint.state_dict, rule_state_dict(model))  # state_dict = EMA weights (docs/upstream.md §4): used for inference
    assert_same(checkpoint.ema_state_dict, raw_state_dict(model))  # 'module.' stripped, 'steps' dropped


def test_real_runner_extras_read_without_mmengine():
    """The real mmengine pickle: HistoryBuffers and numpy arrays become inert placeholders, plain data survives."""
    from razorzoo.weights.checkpoint import _unpickle

    extras = _unpickle(DATA / "layouts" / "rtmdet_tiny-ofa_lat31" / "runner_extras.pth")
    assert list(extras) == ["meta", "message_hub", "optimizer", "param_schedulers"]
    buffer = extras["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(buffer, Placeholder)
    assert buffer.global_name == "mmengine.logging.history_buffer.HistoryBuffer"
    assert buffer.state["max_length"] == 1000000
    assert isinstance(extras["meta"]["cfg"], str) and "OFA" in extras["meta"]["cfg"]
    assert extras["meta"]["dataset_meta"]["classes"][0] == "person"
    assert len(extras["optimizer"]["param_groups"]) == 308


def test_safetensors_file_reads_as_a_bare_state_dict(tmp_path):
    reference = rule_state_dict("spos_0.33M")
    save_file(dict(reference), tmp_path / "w.safetensors", metadata={"format": "pt"})
    checkpoint = read_checkpoint(tmp_path / "w.safetensors")
    assert checkpoint.layout == "safetensors" and checkpoint.meta == {"format": "pt"}
    assert_same(OrderedDict((k, checkpoint.state_dict[k]) for k in reference), reference)
    assert len(checkpoint.state_dict) == len(reference)


def test_architecture_prefix_keeps_only_the_model_keys_and_says_so(tmp_path):
    sd = OrderedDict([("architecture.backbone.w", torch.ones(2)), ("data_preprocessor.mean", torch.zeros(3))])
    checkpoint = read_checkpoint(write_pickle({"state_dict": sd, "meta": {}}, tmp_path / "c.pth"))
    assert list(checkpoint.state_dict) == ["backbone.w"]
    assert "dropped 1 key outside it (e.g. 'data_preprocessor.mean')" in checkpoint.normalization[0]


# --- malicious pickles: each would create `marker` if any of its payload ran ---------------------------------------

def _runner_with(tmp_path, where, payload, *, legacy=False):
    ck = {"meta": {"cfg": "x = 1"}, "state_dict": rule_state_dict("spos_0.33M"), "message_hub": {}}
    if where == "state_dict":
        ck["state_dict"]["backbone.conv1.conv.weight"] = payload
    elif where == "state_dict._metadata":
        ck["state_dict"]._metadata = OrderedDict([("", payload)])
    elif where == "meta":
        ck["meta"]["seed"] = payload
    elif where == "history_buffer":  # nested inside a real-looking mmengine object in a discarded part
        buffer = HistoryBuffer()
        buffer._log_history = payload
        ck["message_hub"] = {"log_scalars": OrderedDict([("train/loss", buffer)])}
    with _mmengine_stub():
        return write_pickle(ck, tmp_path / "evil.pth", legacy=legacy)


def _payloads(marker):
    return {
        "os.system": malicious_payload(marker),
        "eval": _Reduce(builtins.eval, f"open({str(marker)!r}, 'w')"),
        "subprocess": _Reduce(subprocess.call, ["touch", str(marker)]),
    }


class _Reduce:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("kind", ["os.system", "eval", "subprocess"])
def test_payload_in_state_dict_is_refused_and_never_runs(tmp_path, kind, legacy):
    marker = tmp_path / "pwned"
    path = _runner_with(tmp_path, "state_dict", _payloads(marker)[kind], legacy=legacy)
    with pytest.raises(UnsafeCheckpointError) as info:
        read_checkpoint(path)
    global_name = {"os.system": os.system.__module__ + ".system", "eval": "builtins.eval",
                   "subprocess": "subprocess.call"}[kind]
    assert global_name in str(info.value)
    assert "state_dict['backbone.conv1.conv.weight']" in str(info.value)
    assert not marker.exists()


def test_payload_in_state_dict_metadata_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(UnsafeCheckpointError, match=r"state_dict\.__dict__\['_metadata'\]"):
        read_checkpoint(_runner_with(tmp_path, "state_dict._metadata", malicious_payload(marker)))
    assert not marker.exists()


@pytest.mark.parametrize("where", ["meta", "history_buffer"])
@pytest.mark.parametrize("kind", ["os.system", "eval", "subprocess"])
def test_payload_in_discarded_parts_is_inert(tmp_path, where, kind):
    marker = tmp_path / "pwned"
    checkpoint = read_checkpoint(_runner_with(tmp_path, where, _payloads(marker)[kind]))
    assert not marker.exists()
    assert_same(checkpoint.state_dict, rule_state_dict("spos_0.33M"))
    assert "seed" not in checkpoint.meta  # a placeholder is not plain data


def test_payload_as_the_whole_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(UnsafeCheckpointError):
        read_checkpoint(write_pickle(malicious_payload(marker), tmp_path / "evil.pth"))
    assert not marker.exists()


def test_non_tensor_in_state_dict_and_garbage_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match=r"state_dict\['a'\] is a str, not a tensor"):
        read_checkpoint(write_pickle({"state_dict": {"a": "text"}}, tmp_path / "s.pth"))
    with pytest.raises(CheckpointError, match=r"state_dict is a list, not a mapping of tensors"):
        read_checkpoint(write_pickle({"state_dict": [1], "meta": {}, "message_hub": {}}, tmp_path / "l.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pth")


def test_ema_state_dict_is_checked_only_when_it_is_read(tmp_path):
    marker = tmp_path / "pwned"
    ck = {"meta": {}, "state_dict": rule_state_dict("spos_0.33M"), "message_hub": {},
          "ema_state_dict": OrderedDict([("backbone.w", malicious_payload(marker))])}
    path = write_pickle(ck, tmp_path / "ema.pth")
    assert_same(read_checkpoint(path).state_dict, rule_state_dict("spos_0.33M"))  # ema=False: never looked at
    with pytest.raises(UnsafeCheckpointError, match=r"^ema_state_dict\['backbone\.w'\] references"):
        read_checkpoint(path, ema=True)
    ck["ema_state_dict"] = OrderedDict([("backbone.w", "text")])
    with pytest.raises(CheckpointError, match=r"^ema_state_dict\['backbone\.w'\] is a str, not a tensor"):
        read_checkpoint(write_pickle(ck, tmp_path / "ema_text.pth"), ema=True)
    assert not marker.exists()


def test_whole_file_payload_is_named_as_the_checkpoint(tmp_path):
    with pytest.raises(UnsafeCheckpointError, match="^the checkpoint references"):
        read_checkpoint(write_pickle(malicious_payload(tmp_path / "pwned"), tmp_path / "evil.pth"))


def test_runner_file_of_an_mmrazor_algorithm_reads_as_a_subnet(tmp_path):
    """A Runner checkpoint whose model is an MMRazor algorithm: ``architecture.`` keys, like the published subnets."""
    sd = OrderedDict(("architecture." + k, v) for k, v in rule_state_dict("spos_0.33M").items())
    checkpoint = read_checkpoint(write_pickle({"meta": {}, "state_dict": sd, "message_hub": {}, "optimizer": {}},
                                              tmp_path / "epoch_1.pth"))
    assert checkpoint.layout == "mmrazor-subnet"
    assert_same(checkpoint.state_dict, rule_state_dict("spos_0.33M"))
