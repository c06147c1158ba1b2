"""Supernet -> subnet extraction (razorzoo.weights.extract), against the export rules of docs/upstream.md §2.3."""
import pytest
import torch

from fixture_rule import DATA, manifest
from helpers import max_abs
from helpers.slicing import SLICED, mmrazor_slice, slice_mismatches, supernet_manifest, supernet_state_dict
from razorzoo.errors import CheckpointError
from razorzoo.models.classifier import build_classifier_from_subnet
from razorzoo.weights.extract import extract_subnet, max_subnet, ofa_transform_kernel, supernet_state_dict_shapes
from razorzoo.arch.subnet import load_subnet

SUBNETS = DATA.parent.parent / "cards" / "subnets"
FAMILY = {"spos_0.33M": "spos", "attentive_a6": "attentive", "ofa_lat31": "ofa"}


def _supernet(family: str, prefix: str = "architecture.") -> dict:
    """A supernet state dict (MMRazor's keys and shapes) filled by the fixture rule; OFA transformation matrices
    are random, not identity."""
    return dict(supernet_state_dict(family, prefix))


@pytest.mark.parametrize("name", SLICED)
def test_slicing_equals_mmrazor(name):
    """The same supernet sliced by MMRazor (``sub_model(..., init_weight_from_supernet=True)``) and by us: same keys,
    shapes and values, and the classifier built from our slice gives MMRazor's logits."""
    expected = mmrazor_slice(name)
    subnet = load_subnet(SUBNETS / expected["subnet_yaml"])
    sub = extract_subnet(_supernet(expected["family"]), subnet)
    assert slice_mismatches(sub, name) == []
    model = build_classifier_from_subnet(subnet).eval()
    model.load_state_dict(sub, strict=True)
    with torch.no_grad():
        logits = model(expected["input"])
    # measured max difference ~1e-6 on logits of magnitude ~0.5; x100
    assert max_abs(logits, torch.tensor(expected["logits"])) <= 1e-4


@pytest.mark.parametrize("family", ["attentive", "ofa"])
def test_max_subnet_is_the_mmrazor_supernet(family):
    """Our largest subnet has exactly the keys and shapes of MMRazor's supernet, minus OFA's kernel matrices."""
    model = build_classifier_from_subnet(max_subnet(family))
    ours = [(k, tuple(v.shape), str(v.dtype)) for k, v in model.state_dict().items()]
    assert ours == [entry for entry in supernet_manifest(family) if "trans_matrix" not in entry[0]]


@pytest.mark.parametrize("family", ["attentive", "ofa"])
def test_supernet_state_dict_shapes_are_the_mmrazor_supernet(family):
    """The keys and shapes search/specialize.py recognises a supernet checkpoint by: exactly MMRazor's, in its order,
    OFA's kernel transformation matrices included."""
    expected = [(key, shape) for key, shape, _ in supernet_manifest(family)]
    assert list(supernet_state_dict_shapes(family).items()) == expected
    # docs/upstream.md §2.3: supernet backbones have 802 (AttentiveNAS) / 475 (OFA) keys; + head.fc.weight/bias
    assert len(expected) == {"attentive": 802, "ofa": 475}[family] + 2


def test_supernet_state_dict_shapes_known_entries():
    """Hand-known shapes: SPOS candidates (no MMRazor dump of that supernet) and OFA matrices (k*k squared)."""
    spos = supernet_state_dict_shapes("spos")
    assert spos["backbone.layers.0.0._candidates.shuffle_xception.branch2.0.depthwise_conv.conv.weight"] == (
        16, 1, 3, 3)
    assert spos["backbone.layers.0.0._candidates.shuffle_7x7.branch1.0.conv.weight"] == (16, 1, 7, 7)
    assert {key.split(".")[5] for key in spos if "._candidates." in key} == {
        "shuffle_3x3", "shuffle_5x5", "shuffle_7x7", "shuffle_xception"}
    ofa = supernet_state_dict_shapes("ofa")
    assert ofa["backbone.layer2.0.depthwise_conv.conv.trans_matrix_7to5"] == (25, 25)
    assert ofa["backbone.layer2.0.depthwise_conv.conv.trans_matrix_5to3"] == (9, 9)
    assert not any(k.startswith("backbone.layer1.") and "trans_matrix" in k for k in ofa)  # kernel list {3}


@pytest.mark.parametrize("family", ["attentive", "ofa"])
def test_max_subnet_round_trip_is_identity(family):
    supernet = _supernet(family, prefix="")
    sub = extract_subnet(supernet, max_subnet(family))
    for key, value in sub.items():
        if key.endswith("num_batches_tracked"):
            assert value.item() == 0
        elif key.endswith("mask"):
            assert torch.equal(value, torch.ones_like(value))
        else:
            assert torch.equal(value, supernet[key]), key
    assert set(supernet) - set(sub) == {k for k in supernet if "trans_matrix" in k}


@pytest.mark.parametrize(("family", "subnet", "counter"), [
    ("attentive", SUBNETS / "ATTENTIVE_SUBNET_A6.yaml", 0),
    ("ofa", SUBNETS / "OFA_SUBNET_NOTE8_LAT31.yaml", 0),
    ("spos", DATA / "spos_0.33M" / "subnet.yaml", 7),
])
def test_bn_counters_restart_only_where_a_dynamic_op_is_made_static(family, subnet, counter):
    """AttentiveNAS/OFA slices turn dynamic BNs into new static ones whose ``num_batches_tracked`` starts at 0
    (docs/upstream.md §2.3); SPOS keeps the chosen candidate whole, counter included. The supernet's counters are 7
    here, so either rule broken shows."""
    supernet = {key: torch.full_like(value, 7) if key.endswith("num_batches_tracked") else value
                for key, value in _supernet(family).items()}
    sub = extract_subnet(supernet, load_subnet(subnet))
    counters = [value.item() for key, value in sub.items() if key.endswith("num_batches_tracked")]
    assert counters and set(counters) == {counter}


@pytest.mark.parametrize("name", FAMILY)
def test_extracted_keys_shapes_and_order_equal_the_manifest(name):
    sub = extract_subnet(_supernet(FAMILY[name]), load_subnet(DATA / name / "subnet.yaml"))
    expected = [tuple(entry) for entry in manifest(name)["state_dict"]]
    assert [(k, list(v.shape), str(v.dtype)) for k, v in sub.items()] == expected


def test_attentive_a6_hand_derived_slices():
    supernet = _supernet("attentive", prefix="")
    sub = extract_subnet(supernet, load_subnet(SUBNETS / "ATTENTIVE_SUBNET_A6.yaml"))
    W = supernet  # noqa: N806
    # layer3.0: 32 in, e 6 -> 192 mid, SE 48, k3 cropped from the supernet's 5x5 centre (rows/cols 1..3)
    assert torch.equal(sub["backbone.layer3.0.depthwise_conv.conv.weight"],
                       W["backbone.layer3.0.depthwise_conv.conv.weight"][:192, :, 1:4, 1:4])
    assert torch.equal(sub["backbone.layer3.0.se.conv1.conv.weight"],
                       W["backbone.layer3.0.se.conv1.conv.weight"][:48, :192])
    assert torch.equal(sub["backbone.layer3.0.se.conv2.conv.bias"], W["backbone.layer3.0.se.conv2.conv.bias"][:192])
    # layer6.0 keeps its 5x5 kernel: 128 in * 6 = 768
    assert torch.equal(sub["backbone.layer6.0.depthwise_conv.conv.weight"],
                       W["backbone.layer6.0.depthwise_conv.conv.weight"][:768])
    assert torch.equal(sub["backbone.layer4.1.linear_conv.bn.running_var"],
                       W["backbone.layer4.1.linear_conv.bn.running_var"][:72])
    assert torch.equal(sub["head.fc.weight"], W["head.fc.weight"][:, :1984])
    assert "backbone.layer4.4.linear_conv.conv.weight" not in sub  # depth 4
    assert sub["backbone.first_mutable_channels.mask"].tolist() == [1.0] * 16 + [0.0] * 8


def test_head_takes_the_first_columns_of_a_narrower_last_layer():
    """MMRazor's sliced subnets all keep AttentiveNAS's widest last layer; A0 (1792 of 1984 channels) shows that
    the head keeps the first input columns (mutable channels keep ``mask[:N]``), like every other tensor."""
    supernet = _supernet("attentive", prefix="")
    sub = extract_subnet(supernet, load_subnet(SUBNETS / "ATTENTIVE_SUBNET_A0.yaml"))
    assert torch.equal(sub["head.fc.weight"], supernet["head.fc.weight"][:, :1792])
    key = "backbone.last_conv.feature_mix_layer.conv.weight"
    assert len(sub[key]) == 1792 and torch.equal(sub[key], supernet[key][:1792, : sub[key].shape[1]])


def _direct_ofa_kernel(w: torch.Tensor, k: int, m75: torch.Tensor, m53: torch.Tensor) -> torch.Tensor:
    """Re-derivation with explicit sums: out[t] = sum_s M[t, s] * centre[s] over row-major flattened windows."""
    steps = [(7, 5, m75), (5, 3, m53)]
    for src, tar, m in steps:
        if src <= k:
            break
        off = (src - tar) // 2
        new = torch.zeros(w.shape[0], w.shape[1], tar, tar, dtype=torch.float64)
        for c in range(w.shape[0]):
            for t in range(tar * tar):
                total = 0.0
                for s in range(tar * tar):
                    total += m[t, s].item() * w[c, 0, off + s // tar, off + s % tar].item()
                new[c, 0, t // tar, t % tar] = total
        w = new
    return w


@pytest.mark.parametrize("kernel_size", [7, 5, 3])
def test_ofa_kernel_transform_on_a_tiny_example(kernel_size):
    g = torch.Generator().manual_seed(7)
    w = torch.randn(2, 1, 7, 7, generator=g, dtype=torch.float64)
    m75 = torch.randn(25, 25, generator=g, dtype=torch.float64)
    m53 = torch.randn(9, 9, generator=g, dtype=torch.float64)
    got = ofa_transform_kernel(w, kernel_size, {(7, 5): m75, (5, 3): m53})
    torch.testing.assert_close(got, _direct_ofa_kernel(w, kernel_size, m75, m53))


def test_ofa_extraction_applies_the_transformation_matrices():
    supernet = _supernet("ofa")
    sub = extract_subnet(supernet, load_subnet(SUBNETS / "OFA_SUBNET_NOTE8_LAT31.yaml"))
    # lat31 layer2.0: k5 (one step 7 -> 5), 16 in * 3 = 48; layer4.0: k3 (7 -> 5 -> 3), 40 in * 4 = 160
    for block, kernel, mid in [("layer2.0", 5, 48), ("layer4.0", 3, 160)]:
        p = f"architecture.backbone.{block}.depthwise_conv.conv."
        got = sub[f"backbone.{block}.depthwise_conv.conv.weight"]
        assert got.shape == (mid, 1, kernel, kernel)
        expected = _direct_ofa_kernel(supernet[p + "weight"][:8].double(), kernel,
                                      supernet[p + "trans_matrix_7to5"].double(),
                                      supernet[p + "trans_matrix_5to3"].double())
        torch.testing.assert_close(got[:8].double(), expected)
        # not a crop: the random matrices change the values
        start = (7 - kernel) // 2
        assert not torch.allclose(got, supernet[p + "weight"][:mid, :, start:start + kernel, start:start + kernel])


def test_spos_keeps_the_chosen_candidate():
    supernet = _supernet("spos", prefix="")
    sub = extract_subnet(supernet, load_subnet(SUBNETS / "SPOS_SUBNET.yaml"))
    assert not any("shuffle_5x5" in k for k in sub if k.startswith("backbone.layers.0.0."))
    key = "backbone.layers.0.0._candidates.shuffle_7x7.branch1.0.conv.weight"
    assert torch.equal(sub[key], supernet[key])
    assert len(sub) == len(manifest("spos_0.33M")["state_dict"])


def test_outputs_are_independent_copies():
    supernet = _supernet("ofa", prefix="")
    sub = extract_subnet(supernet, max_subnet("ofa"))
    sub["backbone.first_conv.conv.weight"].zero_()
    assert supernet["backbone.first_conv.conv.weight"].abs().sum() > 0


def test_backbone_only_supernet_gives_backbone_only_subnet():
    supernet = {k: v for k, v in _supernet("attentive").items() if ".head." not in k}
    sub = extract_subnet(supernet, load_subnet(SUBNETS / "ATTENTIVE_SUBNET_A0.yaml"))
    assert sub and all(k.startswith("backbone.") for k in sub)


def test_errors_name_the_tensor():
    supernet = _supernet("ofa")
    subnet = load_subnet(SUBNETS / "OFA_SUBNET_NOTE8_LAT31.yaml")
    missing = dict(supernet)
    del missing["architecture.backbone.layer4.2.expand_conv.conv.weight"]
    with pytest.raises(CheckpointError, match=r"no 'backbone\.layer4\.2\.expand_conv\.conv\.weight'"):
        extract_subnet(missing, subnet)
    no_matrix = {k: v for k, v in supernet.items() if not k.endswith("layer2.0.depthwise_conv.conv.trans_matrix_7to5")}
    with pytest.raises(CheckpointError, match="trans_matrix_7to5"):
        extract_subnet(no_matrix, subnet)
    small = dict(supernet)
    small["architecture.backbone.layer6.0.linear_conv.conv.weight"] = torch.zeros(100, 960, 1, 1)
    with pytest.raises(CheckpointError, match=r"\(100, 960, 1, 1\), too small for the subnet's \(160, 672, 1, 1\)"):
        extract_subnet(small, subnet)
    with pytest.raises(CheckpointError, match="no 'backbone"):
        extract_subnet({"neck.x": torch.zeros(1)}, subnet)


def test_subnet_may_be_given_as_a_yaml_path_or_text():
    supernet = _supernet("attentive")
    path = SUBNETS / "ATTENTIVE_SUBNET_A3.yaml"
    from_object = extract_subnet(supernet, load_subnet(path))
    for source in (path, str(path), path.read_text()):
        from_source = extract_subnet(supernet, source)
        assert from_source.keys() == from_object.keys()
        assert all(torch.equal(from_source[k], from_object[k]) for k in from_object)
