"""Output that says what it means: counts in the right number, and close matches wherever a command takes a name."""
import pytest

from razorzoo.cli import main
from razorzoo.wording import close_matches, count, did_you_mean, first_few


def test_counts_read_in_the_right_number():
    assert [count(n, "image") for n in (0, 1, 2)] == ["0 images", "1 image", "2 images"]
    assert count(1, "entry") == "1 entry" and count(3, "entry") == "3 entries" and count(2, "class") == "2 classes"


def test_a_long_list_is_named_in_part_and_the_rest_counted():
    names = [f"img{i}.jpg" for i in range(7)]
    assert first_few(names) == "'img0.jpg', 'img1.jpg', 'img2.jpg', 'img3.jpg', 'img4.jpg' and 2 more"
    assert first_few(names[:5]) == "'img0.jpg', 'img1.jpg', 'img2.jpg', 'img3.jpg', 'img4.jpg'"  # 5: all named
    assert first_few(names[:6], str, limit=2) == "img0.jpg, img1.jpg and 4 more"
    hostile = first_few(["\x1b[2J" + "x" * 10_000] * 9)  # each name quoted (escapes shown) and cut by safe_repr
    assert hostile.startswith("'\\x1b[2J") and "\x1b" not in hostile and len(hostile) < 500
    assert hostile.endswith(" and 4 more") and first_few([]) == ""


def test_close_matches_catch_prefixes_parts_and_misspellings():
    names = ["yolov6s-attentive_a6", "yolov5s-spos_0.33M", "attentive_a6", "ofa_lat31"]
    assert close_matches("yolov6", names) == ["yolov6s-attentive_a6"]  # a prefix: too short for difflib alone
    assert close_matches("spos", names) == ["yolov5s-spos_0.33M"]  # a part of the name
    assert close_matches("atentive_a6", names)[0] == "attentive_a6"  # a misspelling
    assert close_matches("ab", names) == [] and did_you_mean("zzzzzz", names) == ""
    aliases = {"a6": "attentive_a6", "attentive_a6": "attentive_a6"}  # spellings -> names: each name once
    assert close_matches("attentive", aliases) == ["attentive_a6"]


@pytest.mark.parametrize("argv, expected", [
    (["show", "yolov6"], "did you mean 'yolov6s-attentive_a6'"),
    (["download", "rtmdet"], "did you mean 'rtmdet_tiny-ofa_lat31'"),
    (["predict", "yolov6", "x.png"], "did you mean 'yolov6s-attentive_a6'"),
    (["val", "yolov6", "--imagenet", "."], "did you mean 'yolov6s-attentive_a6'"),
    (["export", "ofa_lat3", "-o", "never.onnx"], "did you mean 'ofa_lat31'"),
    (["specialize", "ofa_super", "--flops", "1M", "--calib", ".", "--val", ".", "-o", "never"],
     "did you mean 'ofa_supernet'"),
    (["mirror", "never", "spos"], "did you mean 'spos_0.33M', 'yolov5s-spos_0.33M'"),
    (["demo", "attentive_a"], "did you mean 'attentive_a0', 'attentive_a1', 'attentive_a2'"),
    (["verify", "--subnet", "ATTENTIVE_SUBNET_A9.yaml", "--weights", "setup.cfg"],
     "did you mean 'ATTENTIVE_SUBNET_A6.yaml'"),
    (["convert", "setup.cfg", "--subnet", "SPOS_SUBNET.yaml", "--detector", "yolov5", "-o", "never.safetensors"],
     "did you mean 'yolov5_s', 'yolov5s-spos_0.33M'"),
    (["list", "--sort", "boxap"], "did you mean 'box_ap'"),
    (["list", "--where", "top_1>50"], "did you mean 'top1'"),
    (["cache", "rm", "yolov6"], "did you mean 'yolov6s-attentive_a6'"),
])
def test_every_command_that_takes_a_name_suggests_close_ones(argv, expected, capsys, tmp_path, monkeypatch):
    """Before any download, read or write: the mistyped name is the first thing that fails."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "setup.cfg").write_text("not a checkpoint")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("razorzoo: error: ") and expected in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["setup.cfg"]


def test_list_suggests_names_for_a_plain_word(capsys):
    assert main(["list", "yolov6"]) == 1
    assert capsys.readouterr().err == ("no models match 'yolov6'; did you mean 'yolov6s-attentive_a6'? (patterns take "
                                       "wildcards: 'yolov6*')\n")
