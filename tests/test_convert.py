"""razorzoo.weights.convert: round trip to the same outputs, metadata, tied tensors, determinism, atomic writes."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import razorzoo
from checkpoints import SUPERNET, raw_state_dict, write_checkpoint
from helpers import DATA, flat_outputs
from fixture_rule import effective_state_dict, manifest, rule_state_dict, rule_tensor
from razorzoo import __version__
from razorzoo.builder import build_model, resolve_spec
from razorzoo.weights.convert import convert_checkpoint, read_converted
from razorzoo.errors import CheckpointError, PairMismatchError

RTMDET = "rtmdet_tiny-ofa_lat31"


def load_file(path, task: str):
    """A converted file through the public loader of its task."""
    loaders = {"classification": razorzoo.load_classifier, "backbone": razorzoo.load_backbone,
               "detection": razorzoo.load_detector}
    return loaders[task](path)


def spec_of(model: str, task: str):
    return resolve_spec(DATA / model / "subnet.yaml", task,
                        detector={"rtmdet_tiny-ofa_lat31": "rtmdet_tiny", "yolov5s-spos_0.33M": "yolov5_s"}.get(model))


def reference_model(spec, model: str):
    """The architecture loaded straight from the fixture weights (what the upstream loader ends up with)."""
    state_dict = rule_state_dict(model)
    if spec.task == "backbone":
        state_dict = {k.removeprefix("backbone."): v for k, v in state_dict.items() if k.startswith("backbone.")}
    net = build_model(spec)
    net.load_state_dict(state_dict, strict=True)
    if hasattr(net, "tie_weights"):
        net.tie_weights()
    return net.eval()


def outputs(net, x):
    """Every output tensor (nested tuples/lists of them for detectors), flattened into one."""
    with torch.no_grad():
        return flat_outputs(net(x))


@pytest.mark.parametrize("model,task,layout", [
    ("spos_0.33M", "classification", "mmrazor-subnet"),
    ("attentive_a6", "classification", "runner"),
    ("ofa_lat31", "backbone", "mmdet-publish"),
    (RTMDET, "detection", "runner"),
    ("yolov5s-spos_0.33M", "detection", "mmdet-publish"),
])
def test_round_trip_gives_the_original_outputs(tmp_path, model, task, layout):
    spec = spec_of(model, task)
    path = write_checkpoint(model, layout, tmp_path / "ckpt.pth")
    out = convert_checkpoint(path, spec, tmp_path / "model.safetensors", name=model, source_url="https://x/y.pth",
                             source_sha256="ab" * 32)
    converted = load_file(out, spec.task)
    assert not converted.training
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    diff = (outputs(converted, x) - outputs(reference_model(spec, model), x)).abs().max().item()
    assert diff == 0.0
    read_spec, state_dict, metadata = read_converted(out)
    assert read_spec == spec
    assert metadata["razorzoo_name"] == model and metadata["source_sha256"] == "ab" * 32
    assert metadata["source_url"] == "https://x/y.pth" and metadata["razorzoo_version"] == __version__
    assert metadata["format"] == "pt" and json.loads(metadata["razorzoo_arch"]) == spec.to_dict()
    assert metadata["razorzoo_subnet_yaml"] == spec.subnet.to_yaml()


def test_converted_tensors_are_the_checkpoint_tensors_in_model_order(tmp_path):
    out = convert_checkpoint(write_checkpoint("ofa_lat31", "runner", tmp_path / "c.pth"),
                             spec_of("ofa_lat31", "classification"), tmp_path / "m.safetensors")
    reference = rule_state_dict("ofa_lat31")
    with safe_open(str(out), framework="pt") as f:
        assert sorted(f.keys()) == sorted(reference)
        for key in reference:
            assert torch.equal(f.get_tensor(key), reference[key]), key
    header = json.loads(out.read_bytes()[8:8 + int.from_bytes(out.read_bytes()[:8], "little")])
    offsets = [header[k]["data_offsets"][0] for k in reference]
    assert offsets == sorted(offsets)  # data laid out in the model's order


def test_backbone_from_a_detector_checkpoint_keeps_only_backbone_keys(tmp_path):
    out = convert_checkpoint(write_checkpoint(RTMDET, "mmdet-publish", tmp_path / "c.pth"), spec_of(RTMDET, "backbone"),
                             tmp_path / "m.safetensors")
    _, state_dict, _ = read_converted(out)
    expected = {k.removeprefix("backbone."): v for k, v in rule_state_dict(RTMDET).items() if k.startswith("backbone.")}
    assert state_dict.keys() == expected.keys() and all(torch.equal(state_dict[k], v) for k, v in expected.items())


def test_tied_head_convs_are_stored_once_with_the_last_aliases_value(tmp_path):
    groups = [g["names"] for g in manifest(RTMDET)["tied_groups"]]
    out = convert_checkpoint(write_checkpoint(RTMDET, "runner", tmp_path / "c.pth"), spec_of(RTMDET, "detection"),
                             tmp_path / "m.safetensors")
    with safe_open(str(out), framework="pt") as f:
        stored = set(f.keys())
        assert json.loads(f.metadata()["razorzoo_tied"]) == groups
        for names in groups:
            assert names[0] in stored and not stored & set(names[1:])
            # loading the checkpoint makes the last alias effective (manifest tied_groups); the file keeps that value
            assert torch.equal(f.get_tensor(names[0]), rule_tensor(names[-1], f.get_tensor(names[0]).shape))
    _, state_dict, _ = read_converted(out)
    effective = effective_state_dict(RTMDET)
    assert state_dict.keys() == effective.keys()
    assert all(torch.equal(state_dict[k], v) for k, v in effective.items())
    model = load_file(out, "detection")
    head = model.bbox_head.head_module
    assert head.cls_convs[0][0].conv.weight is head.cls_convs[2][0].conv.weight  # re-tied after loading
    assert len(list(model.parameters())) < len(model.state_dict())


def test_same_input_same_bytes(tmp_path):
    spec = spec_of(RTMDET, "detection")
    path = write_checkpoint(RTMDET, "mmrazor-publish", tmp_path / "c.pth")
    first = convert_checkpoint(path, spec, tmp_path / "a.safetensors", name=RTMDET)
    second = convert_checkpoint(write_checkpoint(RTMDET, "runner", tmp_path / "d.pth"), spec,
                                tmp_path / "b.safetensors", name=RTMDET)
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()


def test_keep_ema_stores_the_raw_weights_apart(tmp_path):
    spec = spec_of(RTMDET, "detection")
    out = convert_checkpoint(write_checkpoint(RTMDET, "runner", tmp_path / "c.pth"), spec, tmp_path / "m.safetensors",
                             keep_ema=True)
    raw = raw_state_dict(RTMDET)
    with safe_open(str(out), framework="pt") as f:
        assert torch.equal(f.get_tensor("ema_state_dict.neck.out_layers.0.conv.weight"),
                           raw["neck.out_layers.0.conv.weight"])
    _, state_dict, _ = read_converted(out)  # the model's weights stay the EMA ones
    assert not any(k.startswith("ema_state_dict.") for k in state_dict)
    assert torch.equal(state_dict["neck.out_layers.0.conv.weight"], rule_state_dict(RTMDET)["neck.out_layers.0.conv.weight"])


def test_supernet_checkpoint_is_extracted(tmp_path):
    # SPOS extraction keeps the chosen candidates' tensors as they are, and the rule gives each key its own value:
    # the subnet cut from the supernet therefore equals the subnet's own fixture weights
    spec = spec_of("spos_0.33M", "classification")
    out = convert_checkpoint(write_checkpoint("spos_0.33M", SUPERNET, tmp_path / "s.pth"), spec,
                             tmp_path / "m.safetensors")
    _, state_dict, _ = read_converted(out)
    reference = rule_state_dict("spos_0.33M")
    assert state_dict.keys() == reference.keys()
    assert all(torch.equal(state_dict[k], v) for k, v in reference.items())


def test_mismatched_pair_raises_and_writes_nothing(tmp_path):
    spec = spec_of("spos_0.33M", "classification")
    state_dict = rule_state_dict("attentive_a6")
    with pytest.raises(PairMismatchError, match="AttentiveNAS"):
        convert_checkpoint(write_checkpoint("attentive_a6", "state-dict", tmp_path / "c.pth", state_dict), spec,
                           tmp_path / "out" / "m.safetensors")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_disk_full_leaves_no_file(tmp_path):
    """A real failing write: RLIMIT_FSIZE makes the kernel refuse bytes past 1 MB (EFBIG), like a full disk."""
    ckpt = write_checkpoint("ofa_lat31", "mmrazor-subnet", tmp_path / "c.pth")
    script = textwrap.dedent(f"""
        import resource, signal, sys
        sys.path.insert(0, {str(DATA.parent)!r})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get the OSError instead of being killed
        from razorzoo.builder import resolve_spec
        from razorzoo.weights.convert import convert_checkpoint
        spec = resolve_spec({str(DATA / "ofa_lat31" / "subnet.yaml")!r}, "classification")
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        try:
            convert_checkpoint({str(ckpt)!r}, spec, {str(tmp_path / "out" / "model.safetensors")!r})
        except OSError as exc:
            print("write failed:", exc)
            sys.exit(3)
    """)
    (tmp_path / "out").mkdir()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 3, result.stderr
    assert "File too large" in result.stdout
    assert list((tmp_path / "out").iterdir()) == []  # neither the output nor the temporary file


def test_read_converted_refuses_foreign_safetensors(tmp_path):
    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a razorzoo model file .*razorzoo_arch"):
        read_converted(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_converted(tmp_path / "junk.safetensors")


# --- command line ---------------------------------------------------------------------------------------------------

def test_cli_convert_then_verify(tmp_path, capsys):
    from razorzoo.cli import main

    ckpt = write_checkpoint(RTMDET, "runner", tmp_path / "epoch_1.pth")
    yaml_path = DATA / RTMDET / "subnet.yaml"
    out = tmp_path / "model.safetensors"
    assert main(["convert", str(ckpt), "--subnet", str(yaml_path), "--detector", "rtmdet_tiny", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    _, _, metadata = read_converted(out)
    assert metadata["razorzoo_subnet_yaml"] == yaml_path.read_text()  # the YAML text as given
    assert metadata["source_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert main(["verify", "--subnet", str(yaml_path), "--weights", str(ckpt), "--detector", "rtmdet_tiny"]) == 0
    assert capsys.readouterr().out.startswith("OK")


def test_cli_detects_detector_weights_without_the_detector_option(tmp_path, capsys):
    """A detector checkpoint with a bare YAML: the head says which detector; verify and convert say so."""
    from razorzoo.cli import main

    ckpt = write_checkpoint(RTMDET, "runner", tmp_path / "epoch_1.pth")
    yaml_path = DATA / RTMDET / "subnet.yaml"
    assert main(["verify", "--subnet", str(yaml_path), "--weights", str(ckpt)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("OK") and "holds a rtmdet_tiny detector head" in captured.err
    out = tmp_path / "model.safetensors"
    assert main(["convert", str(ckpt), "--subnet", str(yaml_path), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "(detection, ofa subnet, recipe rtmdet_tiny)" in captured.out and "rtmdet_tiny" in captured.err
    assert read_converted(out)[0] == spec_of(RTMDET, "detection")
    # an explicit task still wins: the backbone of the detector checkpoint
    assert main(["verify", "--subnet", str(yaml_path), "--weights", str(ckpt), "--task", "backbone"]) == 0
    assert "detector head" not in capsys.readouterr().err


def test_cli_verify_mismatch_exits_1_with_the_yaml_terms(tmp_path, capsys):
    from razorzoo.cli import main

    data = (DATA / "spos_0.33M" / "subnet.yaml").read_text()
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(data.replace("backbone.layers.2.5:\n  chosen: shuffle_xception",
                                  "backbone.layers.2.5:\n  chosen: shuffle_3x3"))
    ckpt = write_checkpoint("spos_0.33M", "mmrazor-subnet", tmp_path / "c.pth")
    assert main(["verify", "--subnet", str(wrong), "--weights", str(ckpt)]) == 1
    assert ("backbone.layers.2.5 chose shuffle_3x3 but the checkpoint holds shuffle_xception weights"
            in capsys.readouterr().err)
    assert main(["convert", str(ckpt), "--subnet", str(wrong), "-o", str(tmp_path / "m.safetensors")]) == 2
    assert "chose shuffle_3x3" in capsys.readouterr().err and not (tmp_path / "m.safetensors").exists()


def test_cli_module_does_not_import_torch():
    code = "import sys, razorzoo.cli.convert; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_cli_keep_ema_flag(tmp_path):
    from razorzoo.cli import main as cli_main

    checkpoint = write_checkpoint(RTMDET, "runner", tmp_path / "c.pth")
    key = "ema_state_dict.neck.out_layers.0.conv.weight"
    for flags, kept in (([], False), (["--keep-ema"], True)):
        out = tmp_path / f"m{len(flags)}.safetensors"
        assert cli_main(["convert", str(checkpoint), "--subnet", RTMDET, "--detector", RTMDET, "-o", str(out),
                         *flags]) == 0
        with safe_open(str(out), framework="pt") as f:
            assert (key in f.keys()) == kept
            if kept:
                assert torch.equal(f.get_tensor(key), raw_state_dict(RTMDET)["neck.out_layers.0.conv.weight"])
