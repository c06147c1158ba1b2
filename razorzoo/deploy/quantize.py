"""int8 post-training quantization of an export for OpenVINO, with NNCF (the ``[int8]`` extra), and its measured cost.

NNCF's recipe for detectors and CNNs: the ``MIXED`` preset (symmetric weights, asymmetric activations: SiLU and
sigmoid outputs are not centred), statistics from calibration images run through the model's own ``preprocess``,
fast bias correction, and an ignored scope that keeps the sensitive layers in float32 — the first convolution (it
sees raw pixels) and the head's last convolutions (their outputs are the logits and box deltas) — together with
everything that does not feed them (decoding, priors and NMS in the ``decoded``/``nms`` graphs). OpenVINO then runs the quantized layers
on int8 kernels (VNNI/AMX). The result is an OpenVINO IR (``.xml`` + ``.bin``) carrying razorzoo's metadata in
its ``rt_info``.

The cost is always measured: the int8 model against the float32 eager one on held-out images (those beyond the
calibration subset, else the calibration images), as matched detections (same class, IoU >= 0.5, one to one, both
ways) or top-1 agreement.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from razorzoo.bounded import check_number, safe_repr
from razorzoo.deploy.metadata import require
from razorzoo.detection.transforms import IMAGE_SUFFIXES, load_image
from razorzoo.errors import RazorzooError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["Calibration", "QuantizationCost", "calibration_items", "calibration_digest", "calibration_images",
           "model_inputs", "quantize_int8", "measure_cost", "save_int8",
           "HOLDOUT_IMAGES", "MATCH_IOU"]

HOLDOUT_IMAGES = 100  # images the cost is measured on, at most
MATCH_IOU = 0.5  # a float32 detection is kept by int8 when a detection of its class overlaps it this much


@dataclass(frozen=True)
class Calibration:
    """The calibration set: the decoded BGR images used, those held out for the cost, and the set's sha256 (of the
    files' bytes, or of an array's shape and pixels, in order)."""

    images: tuple[np.ndarray, ...]
    holdout: tuple[np.ndarray, ...]
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "images": len(self.images)}


@dataclass(frozen=True)
class QuantizationCost:
    """int8 against float32: ``matched``/``total`` detections (or top-1 labels) of each side found by the other."""

    what: str  # "detections" or "top-1 labels"
    images: int
    int8_kept: int  # float32's detections that int8 also reports
    float32_total: int
    float32_kept: int  # int8's detections that float32 also reports
    int8_total: int

    def __str__(self) -> str:
        if self.what == "top-1 labels":
            return f"int8 vs float32 on {self.images} held-out images: top-1 labels agreeing {self.int8_kept}/" \
                   f"{self.float32_total}"
        return (f"int8 vs float32 on {self.images} held-out images: {self.int8_kept}/{self.float32_total} of "
                f"float32's detections kept, {self.float32_kept}/{self.int8_total} of int8's are float32's (same "
                f"class, IoU >= {MATCH_IOU})")

    def to_dict(self) -> dict[str, Any]:
        return {"what": self.what, "images": self.images, "int8_kept": self.int8_kept,
                "float32_total": self.float32_total, "float32_kept": self.float32_kept, "int8_total": self.int8_total}


def calibration_items(calib: Any) -> list[Any]:
    """``calib`` as a list of images: a folder's image files (sorted by name), or the list given."""
    if calib is None:
        raise RazorzooError("int8 needs calibration images: pass calib=FOLDER or a list of images (razorzoo export "
                            "--int8 --calib DIR), a few hundred like the ones the model will see")
    if isinstance(calib, Calibration):
        return list(calib.images)
    if isinstance(calib, (str, os.PathLike)):
        folder = Path(calib)
        if not folder.is_dir():
            raise RazorzooError(f"calibration: {safe_repr(str(folder), 200)} is not a folder; pass a folder of "
                                "images or a list of image files")
        items: list[Any] = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not items:
            raise RazorzooError(f"calibration: no images in {safe_repr(str(folder), 200)} (looked for "
                                f"{', '.join(IMAGE_SUFFIXES)} files)")
        return items
    items = list(calib)
    if not items:
        raise RazorzooError("calibration: the list of images is empty")
    return items


def calibration_digest(items: Sequence[Any], calib_n: int) -> str:
    """sha256 of the first ``calib_n`` calibration images: a file's bytes (no decoding), an image's shape and
    pixels; what the cache keys an int8 export by and its metadata records."""
    check_number(calib_n, "calib_n", minimum=1, maximum=100_000, integer=True)
    digest = hashlib.sha256()
    for item in items[:calib_n]:
        if isinstance(item, (str, os.PathLike)):
            try:
                digest.update(Path(item).read_bytes())
            except OSError as exc:
                raise RazorzooError(f"calibration: cannot read {safe_repr(str(item), 200)} "
                                    f"({exc.strerror or type(exc).__name__})") from None
        else:
            image = load_image(item)
            digest.update(json.dumps(image.shape).encode())
            digest.update(image.tobytes())
    return digest.hexdigest()


def calibration_images(calib: Any, calib_n: int) -> Calibration:
    """``calib`` (a folder of images, a list of image files / arrays / PIL images, or a :class:`Calibration`) ->
    the first ``calib_n`` images decoded for calibration, up to :data:`HOLDOUT_IMAGES` more held out for the cost."""
    if isinstance(calib, Calibration):
        return calib
    items = calibration_items(calib)
    digest = calibration_digest(items, calib_n)
    decoded = [load_image(item) for item in items[:calib_n + HOLDOUT_IMAGES]]
    images = tuple(decoded[:calib_n])
    return Calibration(images, tuple(decoded[calib_n:]) or images[:HOLDOUT_IMAGES], digest)


def model_inputs(model: "nn.Module", task: str, input_size: tuple[int, int]) -> Callable[[np.ndarray], torch.Tensor]:
    """One image -> the normalized batch the export takes: a detector's ``preprocess``, a classifier's pipeline at the
    graph's input size (what the exported classifier's ``preprocess`` runs)."""
    if task == "detection":
        return lambda image: model.preprocess([image])[0]
    if task == "classification":
        from razorzoo.detection.transforms import ClassifierTransform

        return ClassifierTransform(model.preprocessing.at_crop(input_size[0]))
    raise RazorzooError("int8 is for detectors and classifiers (their pre-processing makes the calibration "
                        "inputs); export the detector or classifier instead of its backbone")


def quantize_int8(onnx_model: bytes, prepare: Callable[[np.ndarray], torch.Tensor], calibration: Calibration,
                  extra_inputs: Sequence[np.ndarray] = ()) -> Any:
    """The export ``onnx_model`` quantized to int8 by NNCF (an ``openvino.Model``), calibrated with ``prepare``'s
    batch of each calibration image (:func:`model_inputs`; ``extra_inputs`` follow the images, e.g. an ``nms``
    graph's thresholds)."""
    ov = require("openvino", "int8")
    nncf = require("nncf", "int8")
    nncf.set_log_level(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "model.onnx"
        source.write_bytes(onnx_model)
        graph = ov.Core().read_model(source)
    dataset = nncf.Dataset([[prepare(image).numpy(), *extra_inputs] for image in calibration.images])
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # progress bars
        return nncf.quantize(graph, dataset, preset=nncf.QuantizationPreset.MIXED,
                             subset_size=len(calibration.images),
                             ignored_scope=nncf.IgnoredScope(names=_kept_in_float(graph), validate=False))


def _kept_in_float(graph: Any) -> list[str]:
    """Friendly names of what NNCF must leave in float: the first convolutions (fed by the images), the last ones
    (no convolution after them) and every operation that does not feed the last ones — decoding, the priors made
    from the input's shape, NMS: the quantized part is the network proper, nothing of the post-processing."""
    ops = graph.get_ordered_ops()
    convolutions = [op for op in ops if op.get_type_name() == "Convolution"]
    feeds: dict[str, set[str]] = {}  # an operation -> every operation it (transitively) feeds
    for op in reversed(ops):  # consumers come later in topological order
        below: set[str] = set()
        for output in op.outputs():
            for target in output.get_target_inputs():
                child = target.get_node().get_friendly_name()
                below |= {child} | feeds.get(child, set())
        feeds[op.get_friendly_name()] = below
    conv_names = {op.get_friendly_name() for op in convolutions}
    last = {name for name in conv_names if not feeds[name] & conv_names}
    first = {op.get_friendly_name() for op in convolutions
             if op.input_value(0).get_node().get_type_name() == "Parameter"}
    network = {name for name, below in feeds.items() if below & last}
    return sorted(first | last | {op.get_friendly_name() for op in ops} - network)


def measure_cost(model: "nn.Module", quantized: Any, task: str, prepare: Callable[[np.ndarray], torch.Tensor],
                 calibration: Calibration) -> QuantizationCost:
    """Run eager ``model`` (float32) and the int8 ``quantized`` (an ExportedModel) on the held-out images."""
    from razorzoo.deploy.parity import match_by_overlap

    kept_by_int8 = total_f32 = kept_by_f32 = total_int8 = 0
    with torch.inference_mode():
        for image in calibration.holdout:
            if task == "classification":
                batch = prepare(image)
                same = int(model(batch).argmax(1) == quantized(batch).argmax(1))
                kept_by_int8, total_f32, kept_by_f32, total_int8 = (kept_by_int8 + same, total_f32 + 1,
                                                                    kept_by_f32 + same, total_int8 + 1)
                continue
            batch, metas = model.preprocess([image])
            [expected], [found] = model.detect(batch, metas), quantized.detect(batch, metas)
            kept_by_int8 += match_by_overlap(expected, found, MATCH_IOU)
            kept_by_f32 += match_by_overlap(found, expected, MATCH_IOU)
            total_f32, total_int8 = total_f32 + len(expected), total_int8 + len(found)
    what = "top-1 labels" if task == "classification" else "detections"
    return QuantizationCost(what, len(calibration.holdout), kept_by_int8, total_f32, kept_by_f32, total_int8)


def save_int8(onnx_model: bytes, model: "nn.Module", task: str, input_size: tuple[int, int], calibration: Calibration,
              extra_inputs: Sequence[np.ndarray], metadata: dict[str, str], path: Path) -> QuantizationCost:
    """Quantize ``onnx_model``, measure the cost, and write the IR to ``path`` (``.xml``; its ``.bin`` beside it)
    with ``metadata``, the precision, the calibration set and the cost in its ``rt_info``. Nothing is left at
    ``path`` unless all of it worked; the ``.bin`` is replaced before the ``.xml`` that names it."""
    from razorzoo.deploy.parity import ParityError
    from razorzoo.deploy.runtime import open_exported

    ov = require("openvino", "int8")
    prepare = model_inputs(model, task, input_size)
    quantized = quantize_int8(onnx_model, prepare, calibration, extra_inputs)
    info = {**metadata, "razorzoo_precision": "int8", "razorzoo_calibration": json.dumps(calibration.to_dict())}
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}.") as tmp:
        draft = Path(tmp) / "model.xml"
        _save(ov, quantized, info, draft)
        try:
            runtime = open_exported(draft, backend="openvino")
        except RazorzooError as exc:  # OpenVINO's int8 transformations fail on some decoding graphs (distance coder)
            verdict = f"OpenVINO cannot compile it in int8 ({exc})"
            raise ParityError(f"{path}: {verdict}; export the 'raw' variant in int8 instead", verdict) from None
        cost = measure_cost(model, runtime, task, prepare, calibration)
        info["razorzoo_int8_cost"] = json.dumps(cost.to_dict())
        final = Path(tmp) / path.name
        _save(ov, quantized, info, final)
        os.replace(final.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(final, path)
    return cost


def _save(ov: Any, model: Any, info: dict[str, str], path: Path) -> None:
    for key, value in info.items():
        model.set_rt_info(value, key)
    ov.save_model(model, path, compress_to_fp16=False)
