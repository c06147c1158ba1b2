"""A small COCO-format dataset built from scikit-image's sample photos (public domain / CC0, see
skimage/data/_fetchers.py) plus generated images, for the evaluation and streaming tests."""
from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import skimage

from checkpoints import write_checkpoint
from fixture_rule import rule_state_dict
from helpers import CLASSIFIERS
from helpers.processes import python_module
from razorzoo.arch.recipes import COCO_CLASSES
from razorzoo.builder import resolve_spec
from razorzoo.cli import main
from razorzoo.detection.results import COCO_CATEGORY_IDS, Detections
from razorzoo.weights.convert import convert_checkpoint

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"

# file -> (width, height, BatchShapePolicy canvas (H, W) worked out by hand:
#   landscape: H = ceil(h / w * 640 / 32 + 0.5) * 32, W = ceil(20 + 0.5) * 32 = 672; portrait the transpose;
#   square: (672, 672))
PHOTOS = {
    "chelsea.png": (451, 300, (448, 672)),  # 300/451*20 + .5 = 13.80 -> 14
    "rocket.jpg": (640, 427, (448, 672)),  # 427/640*20 + .5 = 13.84 -> 14
    "astronaut.png": (512, 512, (672, 672)),  # square
}
GENERATED = {"portrait.png": (300, 500, (672, 416))}  # 300/500*20 + .5 = 12.5 -> 13 -> 416
SHAPES = {name: shape for name, (_, _, shape) in {**PHOTOS, **GENERATED}.items()}


def generated_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A BGR image with a few filled rectangles and circles on a gradient (something for the model to see)."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = np.linspace(40, 200, width, dtype=np.uint8)[None, :, None]
    for _ in range(4):
        x, y = int(rng.integers(0, width - 60)), int(rng.integers(0, height - 60))
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.rectangle(image, (x, y), (x + int(rng.integers(20, 60)), y + int(rng.integers(20, 60))), color, -1)
        cv2.circle(image, (int(rng.integers(0, width)), int(rng.integers(0, height))), 25, color[::-1], -1)
    return image


def write_images(folder: Path) -> dict[str, np.ndarray]:
    """The photos and the generated image as files in ``folder`` (PNG, or the original JPEG); name -> BGR array."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name in PHOTOS:
        data = (SKIMAGE_DATA / name).read_bytes()
        (folder / name).write_bytes(data)
        arrays[name] = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    for i, (name, (width, height, _)) in enumerate(GENERATED.items()):
        arrays[name] = generated_image(width, height, seed=i)
        cv2.imwrite(str(folder / name), arrays[name])
    return arrays


def coco_file(path: Path, boxes: dict[str, list[tuple[str, list[float]]]],
              images: list[tuple[str, int, int]] | None = None, ids: dict[str, int] | None = None) -> dict:
    """Write a COCO annotation file with the 80 COCO categories, ``images`` as ``(file, width, height)`` (default:
    the photos and generated images) and ``boxes[file] = [(class, xywh), ...]``; image ids are ``ids[file]``
    (default: the position in ``images``, from 1)."""
    if images is None:
        images = [(name, width, height) for name, (width, height, _) in (PHOTOS | GENERATED).items()]
    images = [{"id": i + 1 if ids is None else ids[name], "file_name": name, "width": width, "height": height}
              for i, (name, width, height) in enumerate(images)]
    annotations = []
    for image in images:
        for cls, (x, y, w, h) in boxes.get(image["file_name"], []):
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"], "iscrowd": 0,
                                "category_id": COCO_CATEGORY_IDS[COCO_CLASSES.index(cls)],
                                "bbox": [x, y, w, h], "area": w * h})
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": i, "name": n} for i, n in zip(COCO_CATEGORY_IDS, COCO_CLASSES)]}
    path.write_text(json.dumps(data))
    return data


def unmatched(found: Detections, expected: Detections) -> int:
    """Expected detections without a partner in ``found`` (same label, score within 1e-4, box within 1e-2 px),
    ignoring those within 1e-4 of the lowest kept score: which near-equal scores make the max_per_img cut depends
    on float summation order (batched vs single convolutions), the rest of the set does not."""
    keep = expected.scores > found.scores.min() + 1e-4
    used = np.zeros(len(found), dtype=bool)
    missing = 0
    for box, score, label in zip(expected.boxes[keep], expected.scores[keep], expected.labels[keep]):
        close = ((found.labels == label) & ((found.scores - score).abs() <= 1e-4)
                 & ((found.boxes - box).abs().amax(1) <= 1e-2)).numpy() & ~used
        if close.any():
            used[close.argmax()] = True
        else:
            missing += 1
    return missing


def converted_model(model: str, folder: Path) -> Path:
    """The fixture weights of ``model`` as a razorzoo .safetensors, which the CLI loads without a download."""
    checkpoint = write_checkpoint(model, "mmdet-publish", folder / "model.pth")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["convert", str(checkpoint), "--subnet", model, "--detector", model,
                     "-o", str(folder / "model.safetensors")]) == 0
    return folder / "model.safetensors"


def converted_classifier(folder: Path, scale: float = 1.0, fc_scale: float = 1.0) -> Path:
    """``folder/model.safetensors``: the SPOS classifier's fixture weights (floats times ``scale``, the classifier
    layer's weights times ``fc_scale`` too), converted: the cheapest converted classifier to export."""
    state = {k: v * scale * (fc_scale if k == "head.fc.weight" else 1) if v.is_floating_point() else v
             for k, v in rule_state_dict(CLASSIFIERS[0]).items()}
    checkpoint = write_checkpoint(CLASSIFIERS[0], "mmrazor-subnet", folder / "model.pth", state)
    return convert_checkpoint(checkpoint, resolve_spec(CLASSIFIERS[0], "classification"), folder / "model.safetensors")


def interrupt_cli(argv: list[str], progress_mark: bytes, ready_within: float = 300) -> tuple[int, bytes]:
    """Run ``razorzoo ARGV`` in a subprocess (with Python's SIGINT handler, whatever the test run ignores), send it a
    real SIGINT once its progress bar shows ``progress_mark`` (e.g. ``b"2/4"``), and return its exit code and
    stderr. The mark is the readiness signal: no fixed sleep, so a slow or loaded machine only waits longer."""
    env = {**os.environ, "RAZORZOO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(python_module("razorzoo", *argv), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            env=env)
    seen = bytearray()
    reader = threading.Thread(target=lambda: [seen.extend(c) for c in iter(lambda: proc.stderr.read1(), b"")])
    reader.start()
    deadline = time.monotonic() + ready_within
    while progress_mark not in seen and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    ready = progress_mark in seen
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=120)
    reader.join()
    assert ready, f"the child never showed {progress_mark!r} (exit code {code}): {bytes(seen[-2000:])!r}"
    return code, bytes(seen)
