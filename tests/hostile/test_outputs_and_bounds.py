"""Outputs that would land on inputs or special files, refused before any model loads; counts and resources that
would run for ever or crash, bounded; runtimes that must stop on Ctrl-C, say why they failed and keep out of $HOME.

Every refusal is one line, exit 2, before the first image runs (the model names below are never downloaded: the
check comes first, and offline mode with an empty cache would say otherwise).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from razorzoo.cli import main
from razorzoo.errors import RazorzooError

PHOTO = Path(skimage.data.__file__).parent / "astronaut.png"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def empty_offline_cache(tmp_path, monkeypatch):
    """Nothing can be downloaded: an error that is not the output check would be an OfflineError."""
    monkeypatch.setenv("RAZORZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RAZORZOO_OFFLINE", "1")
    monkeypatch.setenv("RAZORZOO_PROGRESS", "0")


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("cat.png", "dog.png"):
        (folder / name).write_bytes(PHOTO.read_bytes())
    return folder


def _refused(capsys, argv: list[str], *words: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("razorzoo: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert "offline" not in err, f"the output was not checked first: {err}"
    for word in words:
        assert word in err, err
    return err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("argv, words", [
    (["predict", "rtmdet_tiny-ofa_lat31", "{photos}", "--save-dir", "{photos}"], ["is the input folder"]),
    (["predict", "rtmdet_tiny-ofa_lat31", "{photos}/cat.png", "--out", "{photos}"], ["is the input", "cat.png'"]),
    (["predict", "rtmdet_tiny-ofa_lat31", "{photos}/cat.png", "--out", "."], ["is the input"]),
    (["predict", "rtmdet_tiny-ofa_lat31", "{photos}", "--save-json", "{photos}/cat.png"], ["is the input"]),
    (["predict", "rtmdet_tiny-ofa_lat31", "{photos}/*.png", "--save-csv", "{photos}/dog.png"], ["is the input"]),
    (["predict", "rtmdet_tiny-ofa_lat31", "{photos}", "--save-json", "{photos}"], ["is a directory"]),
    (["predict", "rtmdet_tiny-ofa_lat31", "{photos}", "--save-json", "{photos}/cat.png/x.json"], ["cannot"]),
    (["predict", "rtmdet_tiny-ofa_lat31", "{photos}", "--save-json", "{fifo}"], ["not a regular file"]),
    (["predict", "rtmdet_tiny-ofa_lat31", "{photos}", "--save-dir", "{photos}/cat.png"], ["not a folder"]),
    (["predict", "rtmdet_tiny-ofa_lat31", "{photos}", "--save-json", ""], ["is empty"]),
    (["val", "rtmdet_tiny-ofa_lat31", "--coco-ann", "{ann}", "--images", "{photos}", "--save-json", "{ann}"],
     ["is the input"]),
    (["val", "rtmdet_tiny-ofa_lat31", "--coco-ann", "{ann}", "--images", "{photos}", "--save-json",
      "{photos}/dog.png"], ["is the input"]),
    (["val", "rtmdet_tiny-ofa_lat31", "--coco-ann", "{ann}", "--images", "{photos}", "--save-json", "{fifo}"],
     ["not a regular file"]),
    (["export", "rtmdet_tiny-ofa_lat31", "-o", "{fifo_onnx}"], ["not a regular file"]),
    (["export", "{photos}/model.onnx", "-o", "{photos}/model.onnx"], ["is the input"]),
    (["specialize", "ofa_supernet", "--flops", "100M", "--calib", "{photos}", "--val", "{photos}", "-o", "{user}"],
     ["did not write", "--force"]),
    (["specialize", "ofa_supernet", "--flops", "100M", "--calib", "{photos}", "--val", "{photos}", "-o", "{photos}",
      "--force"], ["is the input folder"]),
    (["specialize", "ofa_supernet", "--flops", "100M", "--calib", "{photos}", "--val", "{photos}", "-o", "{user}",
      "--profile", "{photos}"], ["did not write"]),
], ids=lambda value: " ".join(value)[:60] if isinstance(value, list) else None)
def test_outputs_never_land_on_inputs_or_special_files(argv, words, photos, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(photos)
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "dog.png", "width": 512, "height": 512}],
                               "categories": [{"id": 1, "name": "person"}], "annotations": []}))
    os.mkfifo(tmp_path / "fifo")
    os.mkfifo(tmp_path / "fifo.onnx")
    (photos / "model.onnx").write_bytes(b"not really onnx")
    user = tmp_path / "mine"
    user.mkdir()
    (user / "README.md").write_text("my notes")
    (user / "subnet.yaml").write_text("mine")
    values = {"photos": str(photos), "ann": str(ann), "fifo": str(tmp_path / "fifo"),
              "fifo_onnx": str(tmp_path / "fifo.onnx"), "user": str(user)}
    before = _snapshot(tmp_path)
    _refused(capsys, [a.format(**values) for a in argv], *words)
    assert _snapshot(tmp_path) == before  # nothing written, nothing replaced


def test_specialize_accepts_its_own_earlier_output_and_force(photos, tmp_path, capsys):
    from razorzoo.files import check_run_dir, mark_run_dir

    user = tmp_path / "mine"
    user.mkdir()
    (user / "README.md").write_text("my notes")
    with pytest.raises(RazorzooError, match="did not write"):
        check_run_dir(user, command="specialize")
    assert check_run_dir(user, command="specialize", force=True) == user
    ours = tmp_path / "ours"
    ours.mkdir()
    mark_run_dir(ours, "specialize")
    (ours / "README.md").write_text("written by the run")
    assert check_run_dir(ours, command="specialize") == ours
    with pytest.raises(RazorzooError, match="`razorzoo train` did not write"):  # another command's output
        check_run_dir(ours, command="train")
    # past the output check, the next problem is a download the offline cache cannot serve
    assert main(["specialize", "ofa_supernet", "--flops", "100M", "--calib", str(photos), "--val", str(photos),
                 "-o", str(user), "--force"]) == 2
    assert "offline" in capsys.readouterr().err
    assert (user / "README.md").read_text() == "my notes"


@pytest.mark.parametrize("argv, words", [
    (["specialize", "ofa_supernet", "--flops", "1M", "--calib", ".", "--val", ".", "-o", "o", "--threads", "100000"],
     ["--threads must be"]),
    (["specialize", "ofa_supernet", "--flops", "1M", "--calib", ".", "--val", ".", "-o", "o", "--population",
      "1000000000"], ["--population must be"]),
    (["specialize", "ofa_supernet", "--flops", "1M", "--calib", ".", "--val", ".", "-o", "o", "--generations",
      "1000000000"], ["--generations must be"]),
    (["specialize", "ofa_supernet", "--flops", "1M", "--calib", ".", "--val", ".", "-o", "o", "--resolution",
      "100000"], ["--resolution must be"]),
    (["specialize", "ofa_supernet", "--flops", "1M", "--calib", ".", "--val", ".", "-o", "o", "--calib-images",
      "1000000000"], ["--calib-images must be"]),
    (["predict", "rtmdet_tiny-ofa_lat31", "{photo}", "--workers", "100000"], ["--workers must be"]),
    (["predict", "rtmdet_tiny-ofa_lat31", "{photo}", "--batch", "100000"], ["--batch must be"]),
    (["val", "rtmdet_tiny-ofa_lat31", "--coco-ann", "a.json", "--images", ".", "--workers", "100000"],
     ["--workers must be"]),
    (["val", "spos_0.33M", "--imagenet", ".", "--batch", "100000"], ["--batch must be"]),
])
def test_counts_are_bounded_before_any_work(argv, words, capsys):
    start = time.monotonic()
    _refused(capsys, [a.format(photo=str(PHOTO)) for a in argv], *words)
    assert time.monotonic() - start < 10


def test_library_thread_counts_are_bounded():
    import torch

    from razorzoo.constants import max_threads
    from razorzoo.search.latency import DeviceProfile, threads_limit

    saved = torch.get_num_threads()
    for threads in (0, -1, 100_000, max_threads() + 1, 2.5, True):
        with pytest.raises(RazorzooError, match="threads"):
            with threads_limit(threads):
                pass
    assert torch.get_num_threads() == saved
    with pytest.raises(RazorzooError, match="repeats"):
        DeviceProfile(repeats=10**12)


def test_recursive_globs_do_not_follow_symlinked_folders(photos, tmp_path):
    from razorzoo.evaluation.sources import iter_source

    (photos / "sub").mkdir()
    (photos / "sub" / "bird.png").write_bytes(b"x")
    (photos / "sub" / "up").symlink_to(photos)  # a loop: glob.glob('**') would walk photos/sub/up/sub/up/...
    start = time.monotonic()
    items, count = iter_source(str(photos / "**" / "*.png"))
    assert time.monotonic() - start < 5
    assert sorted(Path(p).relative_to(photos).as_posix() for p in items) == ["cat.png", "dog.png", "sub/bird.png"]


def test_every_video_frame_is_under_the_pixel_cap(tmp_path, monkeypatch):
    import razorzoo.detection.transforms as transforms
    from razorzoo.errors import DatasetError
    from razorzoo.evaluation.sources import read_video

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for i in range(3):
        writer.write(np.full((48, 64, 3), i * 40, np.uint8))
    writer.release()
    assert len(list(read_video(video))) == 3
    monkeypatch.setattr(transforms, "MAX_IMAGE_PIXELS", 64 * 48 - 1)  # this clip's frames are now "bombs"
    with pytest.raises(DatasetError, match="frames of 3072 pixels, more than the 3071"):
        read_video(video)


def _endless_loop_onnx(path: Path) -> Path:
    """A real ONNX graph whose Loop runs 2^62 times (the trip count is an input of the graph's own making)."""
    import onnx
    import onnx.helper as oh

    body = oh.make_graph(
        [oh.make_node("Identity", ["cond_in"], ["cond_out"]), oh.make_node("Add", ["x_in", "one"], ["x_out"])],
        "body", [oh.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
                 oh.make_tensor_value_info("cond_in", onnx.TensorProto.BOOL, []),
                 oh.make_tensor_value_info("x_in", onnx.TensorProto.FLOAT, [1])],
        [oh.make_tensor_value_info("cond_out", onnx.TensorProto.BOOL, []),
         oh.make_tensor_value_info("x_out", onnx.TensorProto.FLOAT, [1])],
        [oh.make_tensor("one", onnx.TensorProto.FLOAT, [1], [1.0])])
    graph = oh.make_graph(
        [oh.make_node("ReduceSum", ["images"], ["start"], keepdims=0, noop_with_empty_axes=0),
         oh.make_node("Reshape", ["start", "shape"], ["x0"]),
         oh.make_node("Loop", ["trips", "cond", "x0"], ["out"], body=body)],
        "g", [oh.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, 3, 32, 32])],
        [oh.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [1])],
        [oh.make_tensor("trips", onnx.TensorProto.INT64, [], [1 << 62]),
         oh.make_tensor("cond", onnx.TensorProto.BOOL, [], [True]),
         oh.make_tensor("shape", onnx.TensorProto.INT64, [1], [1])])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_an_endless_onnx_graph_stops_on_ctrl_c(tmp_path):
    """onnxruntime: Ctrl-C sets RunOptions.terminate (regression: a razorzoo-tagged endless Loop ignored it).
    OpenVINO cancels between operations only, which docs/deploy.md says."""
    model = _endless_loop_onnx(tmp_path / "loop.onnx")
    script = (
        "import sys, numpy as np\n"
        "from razorzoo.deploy.runtime import ExportedModel\n"
        "def run():\n"
        f"    m = ExportedModel({str(model)!r}, metadata={{'razorzoo_task': 'backbone', 'razorzoo_variant': 'raw', "
        "'razorzoo_outputs': '[\"out\"]', 'razorzoo_input_size': '[32, 32]'})\n"
        "    print('running', flush=True)\n"
        "    m.run(np.zeros((1, 3, 32, 32), np.float32))\n"
        "code = 0\n"
        "try:\n    run()\n"
        "except KeyboardInterrupt:\n    code = 130\n"
        "sys.exit(code)\n")  # as razorzoo.cli.main: the interrupted frames are gone before the interpreter ends
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAZORZOO_CACHE": str(tmp_path / "cache")}
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler))
    try:
        assert child.stdout.readline() == b"running\n"
        time.sleep(1.0)  # well inside the loop
        child.send_signal(signal.SIGINT)
        code = child.wait(timeout=15)
    finally:
        child.kill()
        child.wait()
    err = child.stderr.read().decode()
    assert code == 130 and err == "", err[-2000:]  # stopped, and no runtime log line on stderr


def test_runtimes_keep_their_telemetry_out_of_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    model = _endless_loop_onnx(tmp_path / "loop.onnx")
    script = ("from razorzoo.deploy.metadata import require\n"
              "ort = require('onnxruntime', 'onnx'); ov = require('openvino', 'openvino')\n"
              f"ort.InferenceSession({str(model)!r}, providers=['CPUExecutionProvider'])\n"
              f"ov.Core().read_model({str(model)!r})\n")
    env = {k: v for k, v in os.environ.items() if k != "XDG_CACHE_HOME"}
    env.update(HOME=str(home), PYTHONPATH=str(REPO), RAZORZOO_CACHE=str(tmp_path / "cache"))
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120)
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []


def test_openvino_errors_keep_the_reason_not_the_source_location(tmp_path):
    from razorzoo.deploy.metadata import require
    from razorzoo.deploy.runtime import runtime_reason

    broken = tmp_path / "broken.xml"
    broken.write_text("<net><layers><layer id='0' type='NoSuchOp'/></layers></net>")
    with pytest.raises(Exception) as info:
        require("openvino", "openvino").Core().read_model(str(broken))
    assert str(info.value).lstrip().startswith("Exception from src")  # what the runtime says first
    reason = runtime_reason(info.value)
    assert "Exception from" not in reason and ".cpp" not in reason and len(reason) > 10, reason


def test_openvino_ir_files_are_named_as_such(tmp_path, capsys):
    """``.xml`` is an OpenVINO IR (razorzoo writes its int8 exports so): run on a backend, never called an OpenMMLab
    checkpoint; a broken one is named as a broken IR."""
    import razorzoo

    ir = tmp_path / "model.xml"
    ir.write_text("<net/>")
    for load in (razorzoo.load_detector, razorzoo.load_classifier):
        with pytest.raises(RazorzooError, match="is an exported model: run it with backend=") as info:
            load(str(ir))
        assert "OpenMMLab" not in str(info.value)
    pytest.importorskip("openvino", reason="needs the openvino extra")
    with pytest.raises(RazorzooError, match="is not a readable OpenVINO IR") as info:
        razorzoo.load_detector(str(ir), backend="openvino")
    assert "\n" not in str(info.value)


def test_ffmpeg_log_lines_stay_off_stderr(tmp_path):
    """A broken video is one razorzoo error; FFmpeg's own 'moov atom not found' never reaches the user (regression)."""
    broken = tmp_path / "clip.mp4"
    broken.write_bytes(b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom" + os.urandom(50_000))
    script = ("from razorzoo.evaluation.sources import read_video\n"
              "from razorzoo.errors import DatasetError\n"
              f"try:\n    read_video({str(broken)!r})\nexcept DatasetError:\n    print('refused')\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.stdout == "refused\n" and run.stderr == "", run.stderr
