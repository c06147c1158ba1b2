"""``razorzoo val --imagenet``: top-1/top-5 against a hand computation from the logits (budget ~10 s)."""
from __future__ import annotations

import contextlib
import io
import json

import cv2
import numpy as np
import pytest
import torch

import razorzoo
from checkpoints import write_checkpoint
from fixture_rule import rule_state_dict
from helpers.feeding import FedBatches
from razorzoo.cli import main
from razorzoo.errors import DatasetError
from razorzoo.evaluation.imagenet import evaluate_imagenet, read_imagenet
from razorzoo.models.classifier import ImageClassifier
from val_data import write_images

MODEL = "spos_0.33M"  # its config resizes with OpenCV (mmcv's default backend)
# ResizeEdge(256, edge="short") then CenterCrop(224), worked out by hand: (resized w, h), crop (top, left)
HAND = {
    "chelsea.png": ((384, 256), (16, 80)),  # 451x300: int(256 * 451 / 300) = 384; (384 - 224) / 2 = 80
    "rocket.jpg": ((383, 256), (16, 80)),  # 640x427: int(383.7) = 383; round(79.5) = 80 (half to even)
    "astronaut.png": ((256, 256), (16, 16)),
    "portrait.png": ((256, 426), (101, 16)),  # 300x500: int(426.7) = 426; (426 - 224) / 2 = 101
}


@pytest.fixture(scope="module")
def classifier():
    model = razorzoo.build_classifier(MODEL)
    model.load_state_dict(rule_state_dict(MODEL), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("photos"))


def _hand_logits(classifier, image: np.ndarray, name: str) -> torch.Tensor:
    (w, h), (top, left) = HAND[name]
    crop = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)[top: top + 224, left: left + 224]
    rgb = torch.from_numpy(crop[..., ::-1].copy()).permute(2, 0, 1).float()
    mean, std = torch.tensor([123.675, 116.28, 103.53]), torch.tensor([58.395, 57.12, 57.375])
    x = (rgb - mean.view(3, 1, 1)) / std.view(3, 1, 1)
    with torch.no_grad():
        return classifier(x[None])[0]


@pytest.fixture(scope="module")
def labelled(classifier, photos):
    """Labels chosen from each image's hand-computed logits: a top-1 hit, a top-5-only hit (the second logit: not a
    top-1 hit), a miss (the sixth logit: not a top-5 hit), another top-1 hit -> top-1 2/4, top-5 3/4."""
    ranks = {"chelsea.png": 0, "rocket.jpg": 1, "astronaut.png": 5, "portrait.png": 0}
    return {name: int(_hand_logits(classifier, photos[name], name).argsort(descending=True)[rank])
            for name, rank in ranks.items()}


def test_folder_and_list_forms_equal_the_hand_computation(classifier, photos, labelled, tmp_path):
    root = tmp_path / "val"
    for label in range(1000):  # ImageFolder: label = index of the sorted class folder names
        (root / f"n{label:05d}").mkdir(parents=True)
    lines = []
    for name, label in labelled.items():
        cv2.imwrite(str(root / f"n{label:05d}" / f"{name}.png"), photos[name])
        lines.append(f"n{label:05d}/{name}.png {label}")
    (tmp_path / "val.txt").write_text("\n".join(lines) + "\n")
    folder = evaluate_imagenet(classifier, root, batch=3, workers=2, progress=False)
    listed = evaluate_imagenet(classifier, root, ann_file=tmp_path / "val.txt", progress=False)
    for result in (folder, listed):
        assert (result.top1, result.top5, result.num_images) == (0.5, 0.75, 4)


def test_folders_named_by_class_index_need_only_their_classes(classifier, photos, labelled, tmp_path):
    root = tmp_path / "val"
    for i, (name, label) in enumerate(labelled.items()):  # '812', '812_rocket': a bare index or index + name
        folder = root / (f"{label}_{name.split('.')[0]}" if i % 2 else str(label))
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{name}.png"), photos[name])
    samples, _ = read_imagenet(root)
    assert sorted((path.name, label) for path, label in samples) == sorted(
        (f"{name}.png", label) for name, label in labelled.items())
    result = evaluate_imagenet(classifier, root, progress=False)
    assert (result.top1, result.top5, result.num_images) == (0.5, 0.75, 4)


def test_other_folder_names_need_all_1000_classes(tmp_path):
    for name in ("281_tabby", "cats", "dogs"):
        (tmp_path / name).mkdir()
    with pytest.raises(DatasetError, match=r"'cats' is not named by a class index, and there are 3 class folders, "
                                           r"not 1000; each class folder must be named by its ImageNet class index"):
        read_imagenet(tmp_path)
    (tmp_path / "1000").mkdir()  # past the last class: not an index either
    with pytest.raises(DatasetError, match="'1000' is not named by a class index"):
        read_imagenet(tmp_path)


def test_cli_val_imagenet(classifier, photos, labelled, tmp_path, capsys):
    root = tmp_path / "val"
    root.mkdir()
    for name, label in labelled.items():
        cv2.imwrite(str(root / f"{name}.png"), photos[name])
    (tmp_path / "val.txt").write_text("".join(f"{name}.png {label}\n" for name, label in labelled.items()))
    checkpoint = write_checkpoint(MODEL, "mmrazor-subnet", tmp_path / "model.pth")
    converted = tmp_path / "model.safetensors"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["convert", str(checkpoint), "--subnet", MODEL, "-o", str(converted)]) == 0
    for batching, fed_as, threads in ((["--batch", "3", "--workers", "0"], [3, 1], False),
                                      (["--workers", "2"], [1, 1, 1, 1], True)):  # --batch 1 by default
        with FedBatches(ImageClassifier) as fed:
            assert main(["val", str(converted), "--imagenet", str(root), "--ann-file", str(tmp_path / "val.txt"),
                         "--json", *batching]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert (printed["top1"], printed["top5"], printed["images"]) == (0.5, 0.75, 4)
        assert fed.batches == fed_as and bool(fed.loaders) == threads  # images per pass; decoded on loader threads
    assert main(["val", str(converted), "--imagenet", str(root), "--ann-file", str(tmp_path / "val.txt")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert [line.split() for line in table[:3]] == [["metric", "razorzoo", "published"], ["top1", "50.00", "n/a"],
                                                    ["top5", "75.00", "n/a"]]  # a file: no published figure
    assert table[3].startswith("4 images, ")
    # a listed path outside the root is refused, and read with --allow-outside (chelsea again: a top-1 hit)
    (tmp_path / "elsewhere").mkdir()
    cv2.imwrite(str(tmp_path / "elsewhere" / "cat.png"), photos["chelsea.png"])
    listed = (tmp_path / "val.txt").read_text() + f"../elsewhere/cat.png {labelled['chelsea.png']}\n"
    (tmp_path / "out.txt").write_text(listed)
    argv = ["val", str(converted), "--imagenet", str(root), "--ann-file", str(tmp_path / "out.txt"), "--json"]
    assert main(argv) == 2 and "--allow-outside" in capsys.readouterr().err
    assert main([*argv, "--allow-outside"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["top1"], printed["top5"], printed["images"]) == (0.6, 0.8, 5)
    (tmp_path / "bad.txt").write_text("just-a-path\n")
    assert main(["val", str(converted), "--imagenet", str(root), "--ann-file", str(tmp_path / "bad.txt")]) == 2
    assert "line 1" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["val", str(converted), "--imagenet", str(tmp_path / "empty")]) == 2
    assert "no images found" in capsys.readouterr().err


def test_cli_limit_and_skip_missing_choose_the_images_scored(classifier, photos, labelled, tmp_path, capsys):
    """``--limit 3``: the first three listed images only (a top-1 hit, a top-5 hit, a miss: 1/3, 2/3);
    ``--skip-missing``: a listed file that is not there is left out and counted, not scored as a miss."""
    root = tmp_path / "val"
    root.mkdir()
    lines = []
    for name, label in labelled.items():  # chelsea (top-1), rocket (top-5), astronaut (miss), portrait (top-1)
        cv2.imwrite(str(root / f"{name}.png"), photos[name])
        lines.append(f"{name}.png {label}\n")
    lines.insert(1, "gone.png 7\n")
    (tmp_path / "val.txt").write_text("".join(lines))
    checkpoint = write_checkpoint(MODEL, "mmrazor-subnet", tmp_path / "model.pth")
    argv = ["val", MODEL, "--weights", str(checkpoint), "--imagenet", str(root), "--ann-file",
            str(tmp_path / "val.txt"), "--json"]
    assert main(argv) == 2
    assert "1 of 5 images listed" in capsys.readouterr().err
    assert main([*argv, "--skip-missing"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["top1"], printed["top5"], printed["images"], printed["skipped_images"]) == (0.5, 0.75, 4, 1)
    (tmp_path / "val.txt").write_text("".join(lines[:1] + lines[2:]))
    assert main([*argv, "--limit", "3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["top1"], printed["top5"], printed["images"]) == (pytest.approx(1 / 3), pytest.approx(2 / 3), 3)
    assert printed["published"] == {k: v / 100 for k, v in razorzoo.get_card(MODEL).metrics.items()}


def test_the_python_calls_options_each_do_what_they_say(classifier, photos, labelled, tmp_path, capsys):
    """``evaluate_imagenet``'s own defaults and pass-throughs: another pipeline with ``preprocessing=`` (needed by a
    model without ``preprocess``), a listed file outside the root refused unless ``allow_outside``, a missing file
    refused unless ``skip_missing``, a limit below 1 refused, the progress bar on stderr only when asked, and the
    per-image time within the call's own."""
    import time

    from razorzoo.bounded import InputError

    root = tmp_path / "val"
    root.mkdir()
    for name in labelled:
        cv2.imwrite(str(root / f"{name}.png"), photos[name])
    listed = tmp_path / "val.txt"
    listed.write_text("".join(f"{name}.png {label}\n" for name, label in labelled.items()))
    bare = torch.nn.Sequential(classifier)  # logits from a batch, no preprocess()
    with pytest.raises(DatasetError) as info:
        evaluate_imagenet(bare, root, ann_file=listed, progress=False)
    assert str(info.value) == "Sequential has no preprocess(); pass preprocessing= (the test pipeline)"
    start = time.perf_counter()
    result = evaluate_imagenet(bare, root, ann_file=listed, preprocessing=classifier.preprocessing, progress=True)
    wall = time.perf_counter() - start
    assert (result.top1, result.top5, result.num_images) == (0.5, 0.75, 4)
    assert 0 < result.seconds_per_image * 4 <= wall
    bar = capsys.readouterr().err
    assert "val: 100%" in bar and "4/4" in bar and "img/s" in bar, bar
    evaluate_imagenet(classifier, root, ann_file=listed, progress=False)
    assert capsys.readouterr().err == ""

    outside = tmp_path / "outside.png"
    cv2.imwrite(str(outside), photos["chelsea.png"])
    (tmp_path / "out.txt").write_text(f"../outside.png {labelled['chelsea.png']}\n")
    with pytest.raises(DatasetError, match="outside"):
        evaluate_imagenet(classifier, root, ann_file=tmp_path / "out.txt", progress=False)
    assert evaluate_imagenet(classifier, root, ann_file=tmp_path / "out.txt", allow_outside=True,
                             progress=False).top1 == 1.0
    (tmp_path / "gone.txt").write_text(f"gone.png 3\nchelsea.png.png {labelled['chelsea.png']}\n")
    with pytest.raises(DatasetError, match="1 of 2 images listed"):
        evaluate_imagenet(classifier, root, ann_file=tmp_path / "gone.txt", progress=False)
    assert evaluate_imagenet(classifier, root, ann_file=tmp_path / "gone.txt", skip_missing=True,
                             progress=False).skipped == (str(root / "gone.png"),)
    with pytest.raises(InputError, match="limit"):
        evaluate_imagenet(classifier, root, ann_file=listed, limit=0, progress=False)


def test_list_lines_are_split_at_the_last_space_and_labels_are_0_to_999(photos, tmp_path, monkeypatch):
    """``relative/path label``: a path may hold spaces (the label is after the last one); a label is 0-999 written
    in at most three digits; each bad line is one error naming the file and the line; images beside the class
    folders belong to no class."""
    from pathlib import Path

    monkeypatch.chdir(tmp_path)  # short relative paths: messages quote them whole
    here = Path(".")
    root = here / "val"
    (root / "my dir").mkdir(parents=True)
    cv2.imwrite(str(root / "my dir" / "a cat.png"), photos["chelsea.png"])
    listed = here / "val.txt"
    listed.write_text("my dir/a cat.png 999\n")
    assert read_imagenet(root, listed) == ([(root / "my dir" / "a cat.png", 999)], ())
    for line in ("my dir/a cat.png 1000", "my dir/a cat.png 0999", "my dir/a cat.png -1", "my dir/a cat.png x",
                 " 7", "my dir/a cat.png"):
        listed.write_text(f"my dir/a cat.png 1\n{line}\n")
        with pytest.raises(DatasetError) as info:
            read_imagenet(root, listed)
        assert str(info.value) == (f"the image list {str(listed)!r} line 2 is {line.strip()!r}, not "
                                   "'relative/path label' with a label 0-999"), line
    listed.write_text("../elsewhere.png 1\n")
    with pytest.raises(DatasetError) as info:
        read_imagenet(root, listed)
    assert str(info.value).startswith(f"the image list {str(listed)!r} line 1: ")
    with pytest.raises(DatasetError) as info:
        read_imagenet(here / "nowhere")
    assert str(info.value) == f"ImageNet folder not found: {str(here / 'nowhere')!r}"
    by_folder = here / "by_folder"
    (by_folder / "281").mkdir(parents=True)
    cv2.imwrite(str(by_folder / "281" / "cat.png"), photos["chelsea.png"])
    cv2.imwrite(str(by_folder / "stray.png"), photos["rocket.jpg"])  # in no class folder
    assert read_imagenet(by_folder) == ([(by_folder / "281" / "cat.png", 281)], ())
