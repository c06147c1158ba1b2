"""``razorzoo train`` as a user runs it: learning on a small dataset, fine-tuning on other classes, the run folder,
Ctrl-C and ``--resume``, two processes, the custom-subnet start, pushing the result, and refusals.

Runs use 64- and 96-pixel canvases (``--img-size``) and a short warm-up so that a few hundred CPU iterations learn; the
recipes are otherwise the upstream ones.
"""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import razorzoo
from checkpoints import write_checkpoint
from fixture_rule import rule_state_dict
from helpers.processes import python_module
from razorzoo.builder import resolve_spec
from razorzoo.errors import RazorzooError
from razorzoo.training.state import StateError, load_state
from razorzoo.training.trainer import TrainingError, train

ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"red box": (0, 0, 255), "green box": (0, 255, 0)}  # BGR


def write_boxes(root: Path, count: int, *, boxes_per_image: int = 2, textured: bool = False) -> tuple[Path, Path]:
    """``count`` 128 x 96 images of red and green boxes, and their COCO annotations. Plain: solid boxes on flat grey.
    Textured: tinted boxes on blurred noise, natural-like statistics (on a flat image BatchNorm channels have almost
    no variance, where float noise is amplified)."""
    rng = np.random.default_rng(1 if textured else 0)
    (width_range, height_range), prefix = (((30, 50), (26, 40)), "texture") if textured else (((24, 44), (24, 44)),
                                                                                             "shape")
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        canvas = (cv2.GaussianBlur(rng.integers(0, 256, (96, 128, 3)).astype(np.uint8), (5, 5), 0) if textured
                  else np.full((96, 128, 3), 50, np.uint8))
        for k in range(boxes_per_image):
            category = 1 + k % 2
            w, h = int(rng.integers(*width_range)), int(rng.integers(*height_range))
            x, y = int(rng.integers(0, 128 - w)), int(rng.integers(0, 96 - h))
            colour = np.array(list(COLOURS.values())[category - 1], np.uint8)
            canvas[y:y + h, x:x + w] = canvas[y:y + h, x:x + w] // 4 + colour * 3 // 4 if textured else colour
            annotations.append({"id": len(annotations) + 1, "image_id": 100 + i, "category_id": category,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        cv2.imwrite(str(images_dir / f"{prefix}_{i:03d}.png"), canvas)
        images.append({"id": 100 + i, "file_name": f"{prefix}_{i:03d}.png", "width": 128, "height": 96})
    ann = root / "instances.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": [{"id": 1, "name": "red box"}, {"id": 2, "name": "green box"}]}))
    return ann, images_dir


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> tuple[Path, Path]:
    return write_boxes(tmp_path_factory.mktemp("shapes"), 16)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Each detector's fixture weights as a converted file, the way a registry download leaves them."""
    root = tmp_path_factory.mktemp("models")

    def make(model: str) -> Path:
        path = root / f"{model}.safetensors"
        if not path.exists():
            checkpoint = write_checkpoint(model, "mmdet-publish", root / f"{model}.pth")
            razorzoo.convert_checkpoint(checkpoint, resolve_spec(model, "detection"), path)
        return path

    return make


def log_records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory, shapes, converted):
    ann, images = shapes
    run = tmp_path_factory.mktemp("runs") / "overfit"
    torch.manual_seed(0)
    result = train(converted("rtmdet_tiny-ofa_lat31"), coco_ann=ann, images=images, output=run, val_ann=ann,
                   val_images=images, epochs=80, batch=8, workers=0, img_size=96, warmup_iters=20, val_interval=20,
                   log_interval=10, tensorboard=True, progress=False)
    return result


@pytest.mark.slow
def test_a_few_hundred_cpu_steps_learn_a_small_dataset(overfit_run, shapes):
    """The issue's learning proof: trained on 16 images of coloured boxes, the best weights find them again
    (AP50 >= 0.9 on the training images, scored by pycocotools like `razorzoo val`)."""
    ann, images = shapes
    assert overfit_run.best == overfit_run.run_dir / "best.safetensors"
    detector = razorzoo.load_detector(overfit_run.best)
    assert detector.class_names == ("red box", "green box")
    assert detector.recipe.preprocess.size == 96  # it predicts at the size it was trained at
    result = razorzoo.evaluate_coco(detector, ann, images, progress=False)
    assert result.stats["AP50"] >= 0.9, result.stats
    assert overfit_run.best_ap == pytest.approx(result.stats["AP"], abs=1e-6)  # the run's own validation
    records = log_records(overfit_run.run_dir)
    losses = [r["loss"] for r in records if r["type"] == "epoch"]
    assert len(losses) == 80 and losses[-1] < 0.7 * losses[0]
    vals = [r for r in records if r["type"] == "val"]
    # every 20 epochs, then every epoch from the stage-2 switch (80 - 20) on, as the config's dynamic_intervals
    assert [r["epoch"] for r in vals] == [20, 40] + list(range(59, 81))


def test_the_run_folder_holds_what_the_docs_promise(overfit_run):
    run = overfit_run.run_dir
    assert sorted(p.name for p in run.iterdir()) == ["best.safetensors", "last.safetensors", "log.jsonl",
                                                      "settings.json", "state.safetensors", "tensorboard"]
    settings = json.loads((run / "settings.json").read_text())
    assert settings["recipe"] == "rtmdet_tiny" and settings["epochs"] == 80 and settings["img_size"] == 96
    assert settings["class_names"] == ["red box", "green box"]
    state = load_state(run / "state.safetensors")
    assert (state.progress.epoch, state.progress.batch, state.progress.iteration) == (80, 0, 160)
    # last = the EMA weights after the last epoch, which the state holds too
    last = razorzoo.load_detector(overfit_run.last)
    for key, value in last.state_dict().items():
        assert torch.equal(value, state.ema[key]), key
    metadata_run = json.loads(__import__("safetensors").safe_open(str(overfit_run.best), "pt").metadata()[
        "razorzoo_training"])
    assert metadata_run["settings"]["coco_ann"] == settings["coco_ann"]


def test_tensorboard_gets_the_logs_numbers(overfit_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(overfit_run.run_dir / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "epoch/loss_cls", "epoch/loss_bbox", "val/AP", "val/AP50"} <= set(scalars)
    records = log_records(overfit_run.run_dir)
    val_ap = [(r["iteration"], r["AP"]) for r in records if r["type"] == "val"]
    # TensorBoard stores float32: the log's float64 numbers, rounded to float32, exactly
    assert [(e.step, e.value) for e in events.Scalars("val/AP")] == [(i, float(np.float32(ap))) for i, ap in val_ap]


def test_tensorboard_without_the_extra_is_refused_before_training(tmp_path, converted, monkeypatch):
    ann, images = write_boxes(tmp_path / "data", 4)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what an install without the extra gives
    with pytest.raises(RazorzooError, match=r"--tensorboard needs TensorBoard: pip install 'razorzoo\[tensorboard\]'"):
        train(converted("rtmdet_tiny-ofa_lat31"), coco_ann=ann, images=images, output=tmp_path / "run", epochs=1,
              batch=2, workers=0, img_size=64, tensorboard=True, progress=False)
    assert not (tmp_path / "run").exists()


def test_push_publishes_a_trained_run_with_its_classes_and_training_card(overfit_run, tmp_path, monkeypatch):
    from hub_server import HubServer

    from razorzoo.publish import push_to_hub

    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", "hf_alice")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.setenv("RAZORZOO_CACHE", str(tmp_path / "cache"))
        push_to_hub("alice/shapes-rtmdet", weights=overfit_run.best)
        files = hub.repos["alice/shapes-rtmdet"].commits[-1].files
        readme = files["README.md"].decode()
        assert "## Training" in readme and "rtmdet_tiny" in readme and "red box, green box" in readme
        assert f"{100 * overfit_run.best_ap:.2f}" in readme
        loaded = razorzoo.load_detector("hf-hub:alice/shapes-rtmdet")
    assert loaded.class_names == ("red box", "green box")
    local = razorzoo.load_detector(overfit_run.best)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), local.state_dict().values()))


def _pushed_card_rows(weights: Path, monkeypatch, repo: str = "alice/run") -> tuple[str, dict[str, str] | None]:
    """Push ``weights`` to a Hub on loopback: the card, and its training table as ``{setting: value}`` (or None)."""
    from hub_server import HubServer

    from razorzoo.publish import push_to_hub

    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", "hf_alice")
        push_to_hub(repo, weights=weights)
        readme = hub.repos[repo].commits[-1].files["README.md"].decode()
    if "## Training" not in readme:
        return readme, None
    lines = readme.split("## Training", 1)[1].splitlines()
    cells = [line.strip("|").split(" | ", 1) for line in lines if line.startswith("| ") and " | " in line[2:]]
    return readme, {key.strip(): value.strip(" |") for key, value in cells[1:]}  # after the header row


@pytest.mark.parametrize("validated, classes", [(False, 20), (False, 21), (True, 22)])
def test_a_pushed_runs_card_quotes_its_settings_and_validation(tmp_path, converted, validated, classes, monkeypatch):
    """The card's training section from a short run's own record: the data file and its hash, the settings as
    given, up to 20 class names then the count (the cell cut at 400 characters), a ``|`` or backtick in a class name
    that cannot break the table; without validation data the AP row says so instead of a number."""
    import hashlib

    from razorzoo.bounded import safe_repr

    ann, images = write_boxes(tmp_path / "data", 4)
    document = json.loads(ann.read_text())
    extra = "extra class with a long name" if classes > 21 else "extra"  # 22: the cell's 400 characters are cut
    names = ["red | box", "green `box`"] + [f"{extra} {i:02d}" for i in range(classes - 2)]
    document["categories"] = [{"id": i + 1, "name": name} for i, name in enumerate(names)]
    ann.write_text(json.dumps(document))
    validation = dict(val_ann=ann, val_images=images, val_interval=1) if validated else {}
    result = train(converted("rtmdet_tiny-ofa_lat31"), coco_ann=ann, images=images, output=tmp_path / "run", epochs=1,
                   batch=4, workers=0, img_size=64, lr=0.003, progress=False, **validation)
    readme, rows = _pushed_card_rows(result.best if validated else result.last, monkeypatch)
    digest = hashlib.sha256(ann.read_bytes()).hexdigest()
    # each value is quoted and bounded (80 characters): a long path is cut, the hash is whole
    assert rows["annotations"].startswith(repr(str(ann))[:60]) and rows["annotations"].endswith(f"(sha256 {digest!r})")
    listed = ", ".join(names[:20]) + (f", ... ({classes} in all)" if classes > 20 else "")
    assert rows["classes"] == safe_repr(listed, 400).replace("|", "/").replace("`", "'")
    assert ("chars)" in rows["classes"]) == (classes == 22)  # only the long list is cut
    assert rows["epochs"] == "1 (weights after epoch 1)"
    assert rows["batch, lr, canvas"] == "4 x 1 processes, 0.003, 64 px"
    assert "datasets:\n- instances.json" in readme  # the user's data is named, not COCO
    if validated:
        assert result.best_ap is not None
        assert rows["best validation AP"] == f"{100 * result.best_ap:.2f} (epoch 1)"
        assert f"box_ap | {round(100 * result.best_ap, 2):g} |" in readme
    else:
        assert result.best is None and rows["best validation AP"] == "not validated"
        assert "| (none reported) | |" in readme


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, converted):
    ann, images = write_boxes(tmp_path_factory.mktemp("short"), 4)
    return train(converted("rtmdet_tiny-ofa_lat31"), coco_ann=ann, images=images,
                 output=tmp_path_factory.mktemp("short") / "run", epochs=1, batch=4, workers=0, img_size=64,
                 progress=False).last


def _with_training_record(weights: Path, record: str, path: Path) -> Path:
    """``weights`` with its ``razorzoo_training`` metadata replaced: a file someone edited."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(weights, "pt") as handle:
        metadata = {**handle.metadata(), "razorzoo_training": record}
    save_file(load_file(weights), path, metadata=metadata)
    return path


@pytest.mark.parametrize("record", ["not json", "[1, 2]", '{"settings": [1]}', ""])
def test_an_unreadable_training_record_publishes_no_training_section(tmp_path, short_run, record, monkeypatch):
    """A file whose training record was edited into something else is still publishable: as a plain file."""
    edited = _with_training_record(short_run, record, tmp_path / "edited.safetensors")
    readme, rows = _pushed_card_rows(edited, monkeypatch)
    assert rows is None and "datasets:\n- coco" in readme
    assert razorzoo.load_detector(edited).class_names == ("red box", "green box")


def test_an_edited_training_records_values_are_shown_bounded(tmp_path, short_run, monkeypatch):
    """Every value of the record reaches the card quoted and cut to its cell's bound, whatever its size."""
    from razorzoo.bounded import safe_repr

    huge = "9" * 300
    record = {"epoch": huge, "best_epoch": huge, "best_ap": 0.4567,
              "settings": {"coco_ann": "a" * 1000 + ".json", "coco_ann_sha256": "b" * 1000, "epochs": huge,
                           "batch": huge, "world_size": 2, "lr": 0.01, "img_size": 320}}
    edited = _with_training_record(short_run, json.dumps(record), tmp_path / "edited.safetensors")
    readme, rows = _pushed_card_rows(edited, monkeypatch)
    assert rows["annotations"] == f"{safe_repr('a' * 1000 + '.json', 80)} (sha256 {safe_repr('b' * 1000, 80)})"
    assert rows["epochs"] == f"{safe_repr(huge, 80)} (weights after epoch {safe_repr(huge, 12)})"
    assert rows["batch, lr, canvas"] == f"{safe_repr(huge, 80)} x 2 processes, 0.01, 320 px"
    assert rows["best validation AP"] == f"45.67 (epoch {safe_repr(huge, 12)})"
    assert "box_ap | 45.67 |" in readme and max(len(line) for line in readme.splitlines()) < 500
    assert f"datasets:\n- {'a' * 100}\n" in readme  # the annotation file's name, cut at 100 characters


@pytest.mark.parametrize("settings, dataset", [({"coco_ann": "/data/shapes/train.json"}, "train.json"),
                                               ({"coco_ann": "/"}, "custom"), ({}, "custom")])
def test_the_card_names_the_dataset_by_the_annotation_files_name(tmp_path, short_run, settings, dataset, monkeypatch):
    record = json.dumps({"epoch": 1, "best_ap": None, "settings": settings})
    readme, rows = _pushed_card_rows(_with_training_record(short_run, record, tmp_path / "e.safetensors"), monkeypatch)
    assert f"datasets:\n- {dataset}\n" in readme and rows["best validation AP"] == "not validated"


def test_fine_tune_from_a_registry_detector_with_two_classes(tmp_path, shapes, monkeypatch):
    """`razorzoo train NAME --num-classes 2`: the published weights download through a mirror, the head takes the
    dataset's two classes, and a class count that does not match the data is one line."""
    from http_server import FileServer, build_mirror

    ann, images = shapes
    www, cards = build_mirror(["yolov5s-spos_0.33M"], tmp_path / "mirror")
    with FileServer(www) as server:
        monkeypatch.setenv("RAZORZOO_MIRROR", server.url)
        monkeypatch.setenv("RAZORZOO_CARDS", str(cards))
        base = [sys.executable, "-m", "razorzoo", "train", "yolov5s-spos_0.33M", "--coco-ann", str(ann), "--images",
                str(images), "--epochs", "1", "--batch", "8", "--workers", "0", "--img-size", "64", "--quiet"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        wrong = subprocess.run(base + ["--num-classes", "3", "-o", str(tmp_path / "wrong")], capture_output=True,
                               text=True, env=env, timeout=600)
        assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
        assert "--num-classes 3 but" in wrong.stderr and "has 2 categories (red box, green box)" in wrong.stderr
        done = subprocess.run(base + ["--num-classes", "2", "-o", str(tmp_path / "run")], capture_output=True,
                              text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    detector = razorzoo.load_detector(tmp_path / "run" / "last.safetensors")
    assert detector.num_classes == 2 and detector.class_names == ("red box", "green box")
    published = rule_state_dict("yolov5s-spos_0.33M")
    moved = [k for k, v in detector.state_dict().items() if k.startswith("backbone.") and v.is_floating_point()
             and not torch.equal(v, published[k])]
    assert moved  # trained: the backbone kept its shapes and learned
    assert detector.bbox_head.head_module.convs_pred[0].out_channels == 3 * (5 + 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_command(model: Path, ann: Path, images: Path, run: Path, *extra: str) -> list[str]:
    """``python -m razorzoo train ...`` with Python's SIGINT handler in the child (helpers.processes)."""
    return python_module("razorzoo", "train", str(model), "--coco-ann", str(ann), "--images", str(images),
                         "-o", str(run), "--epochs", "2", "--batch", "2", "--workers", "0", "--img-size", "64",
                         "--warmup-iters", "3", "--log-interval", "1", "--quiet", *extra)


@pytest.mark.slow
def test_ctrl_c_then_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, shapes, converted):
    ann, images = shapes
    model = converted("yolov5s-spos_0.33M")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    straight = subprocess.run(_train_command(model, ann, images, tmp_path / "straight"), env=env, timeout=900,
                              capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr

    run = tmp_path / "interrupted"
    process = subprocess.Popen(_train_command(model, ann, images, run), env=env, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 600
    ready = False
    while not ready and process.poll() is None and time.monotonic() < deadline:  # a few iterations of epoch 1 done
        log = run / "log.jsonl"
        ready = log.exists() and sum(1 for line in log.read_text().splitlines() if '"train"' in line) >= 3
        time.sleep(0.05)
    assert ready, f"the run never logged 3 iterations (exit code {process.poll()})"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 130, stderr
    assert "interrupted at epoch" in stderr and "--resume" in stderr and "Traceback" not in stderr
    stopped = load_state(run / "state.safetensors").progress
    assert 3 <= stopped.iteration < 16 and (stopped.epoch, stopped.batch) != (2, 0)

    resumed = subprocess.run(_train_command(model, ann, images, run, "--resume"), env=env, timeout=900,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    for name in ("last.safetensors", "state.safetensors"):
        a, b = load_file(tmp_path / "straight" / name), load_file(run / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith("rng.")), name


@pytest.mark.slow
def test_two_processes_train_like_one_process_with_the_combined_batch(tmp_path, converted):
    """torchrun on CPU (gloo, synchronised BatchNorm): 2 processes x batch 2 take the steps of 1 process x batch 4.

    RTMDet normalises its losses over all processes (reduce_mean), so the gradients are equal in arithmetic (its
    stage-2 pipeline, in a run shorter than 20 epochs, has no per-worker caches). Two iterations are compared: the
    averaged gradients (AdamW's first moment) and the weights. Float noise is not zero here: the second iteration's
    label assignment sorts costs with near-ties, so a few tensors' gradients move by up to ~1.5% (the median by
    ~2e-4); and AdamW moves every element by about ±lr whatever its gradient's size, so elements whose gradient is
    at noise level may step either way. A real difference (unsynchronised BatchNorm, another batch, a parameter left
    out of the optimizer) moves most gradients and most weights by far more.
    """
    ann, images = write_boxes(tmp_path / "data", 8, boxes_per_image=6, textured=True)
    model = converted("rtmdet_tiny-ofa_lat31")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = ["--coco-ann", str(ann), "--images", str(images), "--epochs", "1", "--workers", "0", "--img-size", "64",
            "--warmup-iters", "2", "--quiet"]
    one = subprocess.run([sys.executable, "-m", "razorzoo", "train", str(model), "-o", str(tmp_path / "one"),
                          "--batch", "4", *args], env=env, capture_output=True, text=True, timeout=900)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--master-port", str(_free_port()), "-m", "razorzoo", "train", str(model), "-o",
                          str(tmp_path / "two"), "--batch", "2", *args], env=env, capture_output=True, text=True,
                         timeout=900)
    assert two.returncode == 0, two.stderr
    assert json.loads((tmp_path / "two" / "settings.json").read_text())["world_size"] == 2
    single = load_file(tmp_path / "one" / "state.safetensors")
    double = load_file(tmp_path / "two" / "state.safetensors")
    assert load_state(tmp_path / "one" / "state.safetensors").progress.iteration == 2
    assert load_state(tmp_path / "two" / "state.safetensors").progress.iteration == 2
    moments = [k for k in single if k.endswith(".exp_avg")]
    assert moments and all(k in double for k in moments)
    total = math.sqrt(sum(float(single[k].pow(2).sum()) for k in moments))
    relative = sorted(float((single[k] - double[k]).norm()) / max(float(single[k].norm()), 1e-3 * total)
                      for k in moments)
    assert relative[len(relative) // 2] <= 1e-3 and relative[-1] <= 5e-2, relative[-5:]
    weights = [k for k in single if k.startswith("model.") and single[k].is_floating_point() and "running" not in k]
    diff = torch.cat([(single[k] - double[k]).abs().flatten() for k in weights])
    lr = 0.004
    assert float(diff.max()) <= 2 * lr * 1.01  # at most two opposite AdamW steps
    # the noise-level elements are a minority: AdamW's first steps move a weight whose gradient is rounding noise by
    # about lr either way, and which gradients are noise depends on the CPU's kernels (AVX-512: < 1%, AVX2: 3.7%)
    assert float((diff > 1e-5).float().mean()) < 0.1
    moved = torch.cat([(single[k] - rule_state_dict("rtmdet_tiny-ofa_lat31")[k[6:]]).abs().flatten()
                       for k in weights if "rtm_cls" not in k])
    assert float((moved > 1e-5).float().mean()) > 0.5  # the runs did train


def test_custom_subnet_start_slices_the_supernet_and_initialises_like_upstream(tmp_path, shapes):
    """The seed workflow's start: a searched AttentiveNAS subnet, its weights sliced from the supernet, in the
    YOLOv6 recipe; residual blocks' linear BatchNorms start at zero (upstream's zero_init_residual)."""
    ann, images = shapes
    subnet = ROOT / "cards" / "subnets" / "ATTENTIVE_SUBNET_A0.yaml"
    supernet = write_checkpoint("attentive_a6", "supernet", tmp_path / "supernet.pth")
    result = train(None, subnet=subnet, detector="yolov6_l_d12", backbone_weights=supernet, coco_ann=ann,
                   images=images, output=tmp_path / "run", epochs=1, batch=16, workers=0, img_size=64,
                   progress=False)
    state = load_state(result.run_dir / "state.safetensors")
    sliced = razorzoo.load_backbone(supernet, subnet=subnet).state_dict()
    # one iteration at warm-up's first learning rate: 0 for weights (biases start at 0.1), so weights are as loaded
    zeroed = [k for k in sliced if k.endswith("linear_conv.bn.weight")]
    assert zeroed and all(float(state.model[f"backbone.{k}"].abs().max()) == 0 for k in zeroed)
    convs = [k for k in sliced if k.endswith("conv.weight") and "linear_conv.bn" not in k]
    assert all(torch.equal(state.model[f"backbone.{k}"], sliced[k]) for k in convs)
    assert state.progress.iteration == 1
    assert razorzoo.load_detector(result.last).class_names == ("red box", "green box")


@pytest.mark.parametrize("model,case,message", [
    ("yolov5s-spos_0.33M", "no boxes", "training images hold no box to train on"),  # YOLO recipes keep box-less images
    ("rtmdet_tiny-ofa_lat31", "no boxes", "no image is left to train on"),  # RTMDet's filter_empty_gt drops them
    ("rtmdet_tiny-ofa_lat31", "missing image", "shape_001.png"),
    ("rtmdet_tiny-ofa_lat31", "folder with other files", "exists and is not an empty folder"),
    ("rtmdet_tiny-ofa_lat31", "resume without a run", "holds no training run"),
    ("rtmdet_tiny-ofa_lat31", "output is the images folder", "is the input folder"),
])
def test_bad_starts_are_one_line_and_write_nothing(tmp_path, converted, model, case, message):
    ann, images = write_boxes(tmp_path / "data", 4)
    run = tmp_path / "run"
    resume = False
    if case == "no boxes":
        data = json.loads(ann.read_text())
        ann.write_text(json.dumps({**data, "annotations": []}))
    elif case == "missing image":
        (images / "shape_001.png").unlink()
    elif case == "folder with other files":
        run.mkdir()
        (run / "notes.txt").write_text("mine")
    elif case == "output is the images folder":
        run = images
    else:
        resume = True
    before = sorted(p.name for p in run.iterdir()) if run.exists() else None
    with pytest.raises(RazorzooError) as info:
        train(converted(model), coco_ann=ann, images=images, output=run, epochs=1, batch=2, workers=0, img_size=64,
              resume=resume, progress=False)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert (sorted(p.name for p in run.iterdir()) if run.exists() else None) == before


def test_force_writes_a_new_run_beside_the_files_already_there(tmp_path, converted):
    ann, images = write_boxes(tmp_path / "data", 4)
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    train(converted("rtmdet_tiny-ofa_lat31"), coco_ann=ann, images=images, output=run, epochs=1, batch=4,
          workers=0, img_size=64, force=True, progress=False)
    assert (run / "notes.txt").read_text() == "mine" and (run / "last.safetensors").is_file()


def test_a_run_is_not_resumed_from_another_runs_state_nor_overwritten(tmp_path, converted):
    ann, images = write_boxes(tmp_path / "data", 4)
    common = dict(coco_ann=ann, images=images, workers=0, img_size=64, progress=False, batch=2)
    first = train(converted("rtmdet_tiny-ofa_lat31"), output=tmp_path / "a", epochs=1, **common)
    with pytest.raises(RazorzooError, match="already holds a training run: pass --resume"):
        train(converted("rtmdet_tiny-ofa_lat31"), output=first.run_dir, epochs=1, **common)
    second = train(converted("rtmdet_tiny-ofa_lat31"), output=tmp_path / "b", epochs=2, **common)
    (second.run_dir / "state.safetensors").write_bytes((first.run_dir / "state.safetensors").read_bytes())
    with pytest.raises(StateError, match="was written by another run .settings differ: epochs"):
        train(None, output=second.run_dir, resume=True, progress=False)
    with pytest.raises(TrainingError, match="started with epochs=2, not 3"):
        train(None, output=second.run_dir, resume=True, epochs=3, progress=False)


def test_an_image_that_breaks_mid_run_stops_with_its_name_and_the_run_resumes_once_fixed(tmp_path, converted):
    ann, images = write_boxes(tmp_path / "data", 6)
    good = (images / "shape_004.png").read_bytes()
    (images / "shape_004.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"broken" * 10)  # exists, does not decode
    settings = dict(coco_ann=ann, images=images, output=tmp_path / "run", epochs=1, batch=2, workers=0, img_size=64,
                    progress=False)
    with pytest.raises(RazorzooError) as info:
        train(converted("rtmdet_tiny-ofa_lat31"), **settings)
    text = str(info.value)
    assert "shape_004.png" in text and "fix the data and continue with --resume" in text and "\n" not in text
    stopped = load_state(tmp_path / "run" / "state.safetensors").progress
    assert stopped.epoch == 0 and stopped.batch < 3
    (images / "shape_004.png").write_bytes(good)
    result = train(converted("rtmdet_tiny-ofa_lat31"), resume=True, **settings)
    assert load_state(result.run_dir / "state.safetensors").progress.iteration == 3


def test_a_non_finite_loss_stops_with_the_step_and_images_and_keeps_the_last_good_state(tmp_path, converted):
    ann, images = write_boxes(tmp_path / "data", 4)
    spec = resolve_spec("rtmdet_tiny-ofa_lat31", "detection")
    weights = rule_state_dict("rtmdet_tiny-ofa_lat31")
    weights["backbone.first_conv.bn.bias"][0] = math.nan  # a broken checkpoint
    broken = tmp_path / "broken.safetensors"
    razorzoo.convert_checkpoint(write_checkpoint("rtmdet_tiny-ofa_lat31", "state-dict", tmp_path / "b.pth", weights),
                                spec, broken)
    with pytest.raises(TrainingError) as info:
        train(broken, coco_ann=ann, images=images, output=tmp_path / "run", epochs=1, batch=2, workers=0,
              img_size=64, progress=False)
    text = str(info.value)
    assert "the loss became nan at epoch 1, iteration 1 (images " in text and "state of the last good" in text
    state = load_state(tmp_path / "run" / "state.safetensors")
    assert state.progress.iteration == 0
    assert math.isnan(float(state.model["backbone.first_conv.bn.bias"][0]))  # untouched, as loaded
