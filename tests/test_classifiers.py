"""ImageNet classifiers vs goldens recorded with the real MMRazor code (tests/data/<name>/goldens.*)."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import razorzoo
import razorzoo.builder
import razorzoo.zoo.registry
from checkpoints import write_checkpoint
from helpers import CLASSIFIER_PARAMS, CLASSIFIERS, DATA
from fixture_rule import manifest, rule_state_dict
from razorzoo.arch.recipes import ClassifierPreprocess
from razorzoo.arch.spec import ArchSpec
from razorzoo.arch.subnet import load_subnet
from razorzoo.builder import build_model
from razorzoo.models.classifier import imagenet_classes
from razorzoo.errors import CardError, CheckpointError
from razorzoo.weights.convert import convert_checkpoint, read_converted, read_spec
from razorzoo.zoo.registry import parse_card


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
    """MMRazor READMEs: A6 15.594M without the unused shortcut convs, OFA lat22 4.3M (docs/upstream.md §8)."""
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


# --- executable pre-processing and predict ---------------------------------------------------------------------------

# Real photos shipped with scikit-image (test extra); both CC0 / no copyright restrictions (skimage.data docstrings).
PHOTOS = Path(skimage.data.__file__).parent
IMAGENET_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
IMAGENET_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


def _by_hand(path: Path, backend: str, size: tuple[int, int], offset: tuple[int, int]) -> torch.Tensor:
    """mmcls test pipeline written out: cv2 decode (BGR), short side to 256 (bilinear, ``size`` = (w, h) worked out
    by hand: int(256 * long / short)), 224 centre crop at ``offset`` = (top, left), BGR->RGB, (x - mean) / std."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if backend == "pillow":
        resized = np.asarray(Image.fromarray(bgr).resize(size, Image.BILINEAR))
    else:
        resized = cv2.resize(bgr, size, interpolation=cv2.INTER_LINEAR)
    top, left = offset
    rgb = resized[top:top + 224, left:left + 224, ::-1].astype(np.float32)
    return torch.from_numpy(((rgb - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).copy())


@pytest.mark.parametrize("name,backend", [("spos_0.33M", "cv2"), ("attentive_a6", "pillow"), ("ofa_lat31", "pillow")])
@pytest.mark.parametrize("photo,size,offset", [
    ("chelsea.png", (384, 256), (16, 80)),  # 451 x 300: int(256 * 451 / 300) = 384; (384 - 224) / 2 = 80
    ("astronaut.png", (256, 256), (16, 16)),  # 512 x 512
])
def test_preprocess_equals_the_pipeline_written_by_hand(name, backend, photo, size, offset):
    classifier = razorzoo.build_classifier(name)  # the registry card's preprocessing block
    assert classifier.preprocessing.backend == backend
    batch = classifier.preprocess(PHOTOS / photo)
    assert batch.shape == (1, 3, 224, 224) and batch.dtype == torch.float32
    assert torch.equal(batch[0], _by_hand(PHOTOS / photo, backend, size, offset))


def test_pillow_and_cv2_backends_really_differ():
    """The backend is not a detail: Pillow antialiases when shrinking, cv2 does not."""
    spos, ofa = razorzoo.build_classifier("spos_0.33M"), razorzoo.build_classifier("ofa_lat31")
    assert not torch.equal(spos.preprocess(PHOTOS / "chelsea.png"), ofa.preprocess(PHOTOS / "chelsea.png"))


def test_imagenet_class_names():
    names = imagenet_classes()
    assert len(names) == 1000 and len(set(names)) == 998  # "crane" (bird, machine) and "maillot" appear twice
    assert (names[0], names[1], names[285], names[999]) == ("tench", "goldfish", "Egyptian cat", "toilet tissue")


def test_predict_returns_top_k_names_and_probabilities(loaded):
    name, model = loaded
    top = model.predict(PHOTOS / "chelsea.png", topk=5)
    logits = model(model.preprocess(PHOTOS / "chelsea.png"))[0]
    expected = logits.softmax(0).topk(5)
    assert top.indices == tuple(expected.indices.tolist())
    assert top.names == tuple(imagenet_classes()[i] for i in top.indices)
    assert torch.allclose(torch.tensor(top.probs), expected.values, atol=1e-6)
    assert list(top.probs) == sorted(top.probs, reverse=True) and 0 < sum(top.probs) <= 1 + 1e-6
    both = model.predict([PHOTOS / "chelsea.png", Image.open(PHOTOS / "astronaut.png")], topk=3)
    assert len(both) == 2 and both[0].indices == top.indices[:3]


def test_preprocessing_travels_with_a_converted_file(tmp_path):
    spec = razorzoo.builder.resolve_spec("attentive_a6", "classification")
    assert spec.preprocessing.backend == "pillow"
    path = write_checkpoint("attentive_a6", "mmrazor-subnet", tmp_path / "c.pth")
    out = convert_checkpoint(path, spec, tmp_path / "m.safetensors")
    assert read_spec(out) == spec and read_spec(out).preprocessing == spec.preprocessing
    custom = ArchSpec("classification", spec.subnet, preprocessing=ClassifierPreprocess(resize=288, crop=256))
    out = convert_checkpoint(path, custom, tmp_path / "custom.safetensors")
    loaded = razorzoo.load_classifier(out)
    assert loaded.preprocessing == custom.preprocessing
    assert loaded.preprocess(PHOTOS / "astronaut.png").shape == (1, 3, 256, 256)


@pytest.mark.parametrize("line,message", [
    ("    resize: .nan", "resize must be an integer"),
    ("    resize: 999999", "crop <= resize <= 4096"),
    ("    resize: true", "resize must be an integer"),
    ("    mean: [1, 2]", "mean and std need 3 values"),
    ("    mean: [.inf, 1, 2]", "mean must be a list of 3 numbers"),
    ("    backend: tensorflow", "backend must be one of cv2, pillow"),
    ("    interpolation: lanczos", "interpolation must be one of"),
    ("    std: [0, 1, 1]", "std positive"),
    ("    colour: RGB", "unknown keys 'colour'"),
])
def test_a_bad_preprocessing_block_is_a_card_error(line, message):
    text = (razorzoo.zoo.registry.CARDS_DIR / "attentive_a6.md").read_text()
    key = line.split(":")[0]
    lines = [row for row in text.splitlines() if row.split(":")[0] != key]
    at = lines.index(next(row for row in lines if row.startswith("  preprocessing:"))) + 1
    bad = "\n".join(lines[:at] + [line] + lines[at:]) + "\n"
    with pytest.raises(CardError, match=f"razorzoo.preprocessing: .*{message}"):
        parse_card(bad)


def test_corrupt_preprocessing_metadata_is_a_checkpoint_error(tmp_path):
    spec = razorzoo.builder.resolve_spec("ofa_lat31", "classification")
    out = convert_checkpoint(write_checkpoint("ofa_lat31", "mmrazor-subnet", tmp_path / "c.pth"), spec,
                             tmp_path / "m.safetensors")
    tensors, metadata = load_file(out), read_converted(out)[2]
    arch = json.loads(metadata["razorzoo_arch"])
    arch["preprocessing"]["crop"] = "224; rm -rf /"
    save_file(tensors, tmp_path / "bad.safetensors", metadata={**metadata, "razorzoo_arch": json.dumps(arch)})
    with pytest.raises(CheckpointError, match="metadata is corrupt .*crop must be an integer"):
        read_spec(tmp_path / "bad.safetensors")
