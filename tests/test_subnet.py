"""Subnet YAML parsing and validation (razorzoo.arch.subnet), against the upstream YAML forms of docs/upstream.md §1.4/docs/upstream.md §2."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from razorzoo.errors import SubnetError
from razorzoo.arch.subnet import SEARCH_SPACES, Block, MobileNetSubnet, SposSubnet, load_subnet, se_channels

ROOT = Path(__file__).parent.parent
SUBNETS = ROOT / "cards" / "subnets"
DATA = Path(__file__).parent / "data"


def _raw(name: str) -> dict:
    return yaml.safe_load((SUBNETS / name).read_text())


@pytest.mark.parametrize("path", sorted(SUBNETS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_yaml_parses_and_round_trips(path):
    subnet = load_subnet(path)
    assert subnet.family == {"SPOS": "spos", "ATTENTIVE": "attentive", "OFA": "ofa"}[path.name.split("_")[0]]
    text = subnet.to_yaml()
    assert load_subnet(text) == subnet
    assert text == load_subnet(text).to_yaml()  # canonical


def test_spos_choices_match_the_upstream_table():
    subnet = load_subnet(DATA / "spos_0.33M" / "subnet.yaml")
    assert isinstance(subnet, SposSubnet)
    assert subnet.choices == (
        ("shuffle_7x7", "shuffle_3x3", "shuffle_7x7", "shuffle_3x3"),
        ("shuffle_xception", "shuffle_5x5", "shuffle_5x5", "shuffle_3x3"),
        ("shuffle_3x3", "shuffle_5x5", "shuffle_3x3", "shuffle_5x5", "shuffle_3x3", "shuffle_xception",
         "shuffle_5x5", "shuffle_7x7"),
        ("shuffle_7x7", "shuffle_3x3", "shuffle_5x5", "shuffle_xception"),
    )


def test_attentive_a6_values_match_the_upstream_table():
    subnet = load_subnet(DATA / "attentive_a6" / "subnet.yaml")
    assert isinstance(subnet, MobileNetSubnet)
    assert (subnet.first_channels, subnet.last_channels, subnet.input_shape) == (16, 1984, (288, 288))
    # (k, d, e, C) per stage, docs/upstream.md §2.2
    table = [(3, 1, 1, 24), (3, 3, 4, 32), (3, 3, 6, 40), (3, 4, 5, 72), (3, 4, 4, 128), (5, 6, 6, 216), (3, 1, 6, 224)]
    for stage, (k, d, e, c) in zip(subnet.stages, table):
        assert (stage.depth, stage.out_channels) == (d, c)
        assert set(stage.blocks) == {Block(k, e, e)}
    assert [len(s.blocks) for s in subnet.stages] == [2, 5, 6, 6, 8, 8, 2]  # one per supernet block


def test_ofa_lat31_per_block_values():
    subnet = load_subnet(DATA / "ofa_lat31" / "subnet.yaml")
    assert [s.depth for s in subnet.stages] == [1, 2, 2, 3, 3, 4]
    assert subnet.stages[4].blocks[2] == Block(7, 4, 4)  # layer5.2: k7, 112*4 = 448 mid channels
    assert subnet.stages[5].blocks[0] == Block(3, 6, 6)


def test_prefix_forms_and_bare_values_are_equivalent():
    reference = load_subnet(DATA / "spos_0.33M" / "subnet.yaml")
    raw = yaml.safe_load((DATA / "spos_0.33M" / "subnet.yaml").read_text())
    rooted = {"architecture." + k: v for k, v in raw.items()}  # the detector's _subnet_cfg_v3 form (docs/upstream.md §1.4)
    bare = {k: v["chosen"] for k, v in raw.items()}
    assert load_subnet(rooted) == reference
    assert load_subnet(bare) == reference
    assert load_subnet(yaml.safe_dump(rooted)) == reference


def test_json_file_and_text(tmp_path):
    raw = _raw("OFA_SUBNET_NOTE8_LAT31.yaml")
    path = tmp_path / "subnet.json"
    path.write_text(json.dumps(raw, indent=1))
    assert load_subnet(path) == load_subnet(str(path)) == load_subnet(SUBNETS / "OFA_SUBNET_NOTE8_LAT31.yaml")


def test_feb_2023_attentive_expand_ratio_se_keys():
    raw = _raw("ATTENTIVE_SUBNET_A6.yaml")
    with_se = dict(raw)
    for i in (3, 5, 6, 7):
        with_se[f"backbone.layers.{i}.expand_ratio_se"] = raw[f"backbone.layers.{i}.expand_ratio"]
    assert load_subnet(with_se) == load_subnet(raw)
    with_se["backbone.layers.3.expand_ratio_se"] = {"chosen": 4}  # expand_ratio is 6
    with pytest.raises(SubnetError, match=r"backbone\.layers\.3\.expand_ratio_se.*must equal"):
        load_subnet(with_se)


def test_ofa_without_expand_ratio_se_keys_uses_expand_ratio():
    raw = {k: v for k, v in _raw("OFA_SUBNET_NOTE8_LAT31.yaml").items() if not k.endswith("expand_ratio_se")}
    assert load_subnet(raw) == load_subnet(SUBNETS / "OFA_SUBNET_NOTE8_LAT31.yaml")


def test_ofa_expand_ratio_se_must_give_the_expand_ratio_se_width():
    # lat22 layer3.0 has expand_ratio 3 and expand_ratio_se 4: both give 24 SE channels for 24 inputs
    assert se_channels(24, 3) == se_channels(24, 4) == 24
    lat22 = load_subnet(SUBNETS / "OFA_SUBNET_NOTE8_LAT22.yaml")
    assert lat22.stages[2].blocks[0] == Block(5, 3, 4)
    raw = _raw("OFA_SUBNET_NOTE8_LAT22.yaml")
    raw["backbone.layers.6.0.expand_ratio_se"] = {"chosen": 3}  # 112*3//4 = 84 -> 88, but e=6 gives 168
    with pytest.raises(SubnetError, match=r"backbone\.layers\.6\.0\.expand_ratio_se.*88.*168"):
        load_subnet(raw)
    # beyond depth (layer6 depth 2), the value is ignored as upstream ignores the block
    assert raw["backbone.layers.6.2.expand_ratio_se"] != raw["backbone.layers.6.2.expand_ratio"]


@pytest.mark.parametrize(
    "name, edit, pattern",
    [
        ("SPOS_SUBNET.yaml", lambda d: d.pop("backbone.layers.2.7"),
         r"missing key 'backbone\.layers\.2\.7'.*shuffle_3x3, shuffle_5x5, shuffle_7x7, shuffle_xception"),
        ("SPOS_SUBNET.yaml", lambda d: d.update({"backbone.layers.0.0": {"chosen": "shuffle_9x9"}}),
         r"'backbone\.layers\.0\.0' = 'shuffle_9x9' is outside the search space; allowed: shuffle_3x3"),
        ("SPOS_SUBNET.yaml", lambda d: d.update({"backbone.layers.3.4": {"chosen": "shuffle_3x3"}}),
         r"unknown key\(s\) for the spos search space: 'backbone\.layers\.3\.4'"),
        ("ATTENTIVE_SUBNET_A6.yaml", lambda d: d.pop("backbone.layers.4.depth"),
         r"missing key 'backbone\.layers\.4\.depth' \(allowed values: 3, 4, 5, 6\)"),
        ("ATTENTIVE_SUBNET_A6.yaml", lambda d: d.update({"backbone.layers.6.out_channels": {"chosen": 220}}),
         r"'backbone\.layers\.6\.out_channels' = 220 is outside the search space; allowed: 192, 200, 208, 216"),
        ("ATTENTIVE_SUBNET_A6.yaml", lambda d: d.update({"backbone.layers.2.kernel_size": {"chosen": 7}}),
         r"'backbone\.layers\.2\.kernel_size' = 7 .*allowed: 3, 5"),
        ("ATTENTIVE_SUBNET_A6.yaml", lambda d: d.update({"backbone.layers.8.depth": {"chosen": 1}}),
         r"unknown key\(s\) for the attentive search space: 'backbone\.layers\.8\.depth'"),
        ("ATTENTIVE_SUBNET_A6.yaml", lambda d: d.update({"input_shape": {"chosen": [288]}}),
         r"'input_shape' = a list of 1 item must be two integers \[height, width\], each from 32 to 4096"),
        ("OFA_SUBNET_NOTE8_LAT31.yaml", lambda d: d.pop("backbone.layers.3.3.kernel_size"),
         r"missing key 'backbone\.layers\.3\.3\.kernel_size' \(allowed values: 3, 5, 7\)"),
        ("OFA_SUBNET_NOTE8_LAT31.yaml", lambda d: d.update({"backbone.last_channels": {"chosen": 1984}}),
         r"'backbone\.last_channels' = 1984 .*allowed: 1024, 1280"),
        ("OFA_SUBNET_NOTE8_LAT31.yaml", lambda d: d.update({"backbone.layers.2.1.expand_ratio": {"chosen": True}}),
         r"'backbone\.layers\.2\.1\.expand_ratio' = True \(a bool\) is outside.*allowed: 3, 4, 5, 6"),
        ("OFA_SUBNET_NOTE8_LAT31.yaml", lambda d: d.update({"neck.depth": {"chosen": 1}}),
         r"unexpected key 'neck\.depth'"),
    ],
)
def test_invalid_subnets_name_key_value_and_allowed(name, edit, pattern):
    raw = _raw(name)
    edit(raw)
    with pytest.raises(SubnetError, match=pattern):
        load_subnet(raw)


def test_wrong_formats(tmp_path):
    with pytest.raises(SubnetError, match="must be a mapping.*got list"):
        load_subnet("- a\n- b\n")
    with pytest.raises(SubnetError, match="is not valid YAML"):
        load_subnet("backbone.first_channels: {chosen: [16\n")
    with pytest.raises(SubnetError, match="does not exist"):
        load_subnet(tmp_path / "missing.yaml")
    with pytest.raises(SubnetError, match="cannot tell the search space"):
        load_subnet({"backbone.something": {"chosen": 1}})
    with pytest.raises(SubnetError, match=r"must be a bare value or \{chosen: <value>\}"):
        load_subnet({"backbone.layers.0.0": {"choice": "shuffle_3x3"}})
    with pytest.raises(SubnetError, match="unknown subnet family 'mobilenet'"):
        load_subnet(SUBNETS / "SPOS_SUBNET.yaml", family="mobilenet")


def test_yaml_is_parsed_safely():
    with pytest.raises(SubnetError, match="is not valid YAML"):
        load_subnet("backbone.first_channels: !!python/object/apply:os.system ['true']\n")


def test_family_can_be_forced():
    # A6 read as an OFA subnet: its last_channels is outside the OFA space
    with pytest.raises(SubnetError, match=r"'backbone\.last_channels' = 1984 .*allowed: 1024, 1280"):
        load_subnet(SUBNETS / "ATTENTIVE_SUBNET_A6.yaml", family="ofa")


def test_canonical_yaml_form():
    text = load_subnet(SUBNETS / "ATTENTIVE_SUBNET_A0.yaml").to_yaml()
    data = yaml.safe_load(text)
    assert list(data) == sorted(data)
    assert all(set(v) == {"chosen"} for v in data.values())
    assert data["input_shape"] == {"chosen": [192, 192]}
    assert data["backbone.last_channels"] == {"chosen": 1792}


def test_search_spaces_hold_the_upstream_settings():
    ofa = SEARCH_SPACES["ofa"]
    assert [s.stride for s in ofa.stages] == [1, 2, 2, 2, 1, 2]
    assert ofa.stages[3].out_channels == (40, 48, 56, 64, 72, 80)
    assert ofa.stages[1].expand_ratios == (3, 4, 5, 6)
    att = SEARCH_SPACES["attentive"]
    assert [s.depths for s in att.stages][4] == (3, 4, 5, 6, 7, 8)
    assert att.last_channels == (1792, 1984)
    assert [s.with_se for s in att.stages] == [False, False, True, False, True, True, True]


def test_subnet_module_and_package_do_not_import_torch():
    code = "import sys, razorzoo, razorzoo.arch.subnet; razorzoo.load_subnet; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
