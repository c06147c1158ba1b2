"""ImageNet classifiers vs goldens recorded with the real MMRazor code (tests/data/<name>/goldens.*)."""
import json

import pytest
import torch
from safetensors.torch import load_file

from helpers import CLASSIFIER_PARAMS, CLASSIFIERS, DATA
from fixture_rule import manifest, rule_state_dict
from razorzoo.builder import build_model
from razorzoo.arch.spec import ArchSpec
from razorzoo.arch.subnet import load_subnet


def _classifier(name: str) -> torch.nn.Module:
    return build_model(ArchSpec("classification", load_subnet(DATA / name / "subnet.yaml")))


@pytest.fixture(scope="module", params=CLASSIFIERS)
def loaded(request):
    name = request.param
    model = _classifier(name)
    model.load_state_dict(rule_state_dict(name), strict=True)
    return name, model.eval()


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_state_dict_equals_the_upstream_manifest(name):
    expected = {key: (tuple(shape), dtype) for key, shape, dtype in manifest(name)["state_dict"]}
    ours = {key: (tuple(t.shape), str(t.dtype)) for key, t in _classifier(name).state_dict().items()}
    assert ours == expected
    assert len(ours) == manifest(name)["num_state_dict_entries"]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_parameter_count(name):
    assert sum(p.numel() for p in _classifier(name).parameters()) == CLASSIFIER_PARAMS[name]


def test_goldens(loaded):
    name, model = loaded
    goldens = load_file(DATA / name / "goldens.safetensors")
    stages = json.loads((DATA / name / "goldens.json").read_text())["backbone_stages"]
    x = goldens["input"]
    checked = []
    with torch.no_grad():
        resized = model.resize_input(x)
        if "input_resized" in goldens:
            torch.testing.assert_close(resized, goldens["input_resized"], rtol=0, atol=1e-4)
            checked.append("input_resized")
        # the same weights in a backbone returning every stage (upstream ran out_indices=range(n_stages))
        backbone = build_model(ArchSpec("backbone", load_subnet(DATA / name / "subnet.yaml"),
                                        out_indices=tuple(range(stages["n_stages"]))))
        backbone.load_state_dict(model.backbone.state_dict(), strict=True)
        for i, out in enumerate(backbone.eval()(resized)):
            if f"backbone.stage{i}" in goldens:
                torch.testing.assert_close(out, goldens[f"backbone.stage{i}"], rtol=0, atol=1e-4)
                checked.append(f"backbone.stage{i}")
        torch.testing.assert_close(model.forward_features(x), goldens["neck"], rtol=0, atol=1e-4)
        torch.testing.assert_close(model(x), goldens["logits"], rtol=0, atol=1e-4)
        torch.testing.assert_close(model.backbone(resized)[-1], goldens[stages["stored"][-1]], rtol=0, atol=1e-4)
    assert sorted(checked + ["input", "neck", "logits"]) == sorted(goldens)


def test_batched_and_other_sizes_match_single_images(loaded):
    """Unseen inputs: a batch of 3 at another size gives each image's own logits (no cross-talk in the batch)."""
    _, model = loaded
    x = torch.randn(3, 3, 97, 131, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        batched = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
    assert batched.shape == (3, 1000)
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-4)


@pytest.mark.parametrize("yaml_name, size", [("ATTENTIVE_SUBNET_A0.yaml", 192), ("OFA_SUBNET_NOTE8_LAT22.yaml", 140)])
def test_other_upstream_subnets_build_as_classifiers(yaml_name, size):
    model = build_model(ArchSpec("classification", load_subnet(DATA.parent.parent / "cards" / "subnets" / yaml_name)))
    assert model.input_shape == (size, size)
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)


def test_published_parameter_counts():
    """MMRazor READMEs: A6 15.594M without the unused shortcut convs, OFA lat22 4.3M (UPSTREAM.md §8)."""
    root = DATA.parent.parent / "cards" / "subnets"
    a6 = build_model(ArchSpec("classification", load_subnet(root / "ATTENTIVE_SUBNET_A6.yaml")))
    unused = sum(m.conv.weight.numel() for m in a6.modules()
                 if type(m).__name__ == "ShortcutLayer" and m.conv.in_channels == m.conv.out_channels)
    assert round((sum(p.numel() for p in a6.parameters()) - unused) / 1e6, 3) == 15.594
    lat22 = build_model(ArchSpec("classification", load_subnet(root / "OFA_SUBNET_NOTE8_LAT22.yaml")))
    assert round(sum(p.numel() for p in lat22.parameters()) / 1e6, 1) == 4.3


def test_public_names_build_the_registry_models():
    import razorzoo

    for name in CLASSIFIERS:
        model = razorzoo.build_classifier(name)
        assert sum(p.numel() for p in model.parameters()) == CLASSIFIER_PARAMS[name]
        model.load_state_dict(rule_state_dict(name), strict=True)
    backbone = razorzoo.build_backbone("yolov6s-attentive_a6")  # the detector's out_indices
    assert (backbone.out_indices, backbone.out_channels) == ((2, 4, 6), (40, 128, 224))
    backbone = razorzoo.build_backbone("ofa_lat31", out_indices=(0, 6))
    assert backbone.out_channels == (16, 1280)
    assert set(backbone.state_dict()) == {k.removeprefix("backbone.") for k, _, _ in manifest("ofa_lat31")["state_dict"]
                                          if k.startswith("backbone.")}
