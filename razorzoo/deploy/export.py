"""Export a razorzoo model to one self-describing ONNX file (torch's dynamo exporter).

The file's ``metadata_props`` carry everything a runtime needs besides the graph: the task, the output layout, the
detector recipe (pre-processing, box decoding, ``test_cfg``, strides, class names), the architecture spec and where
the weights came from. :func:`razorzoo.deploy.runtime.open_exported` reads a file back alone: no card, no cache,
no network. Pre- and post-processing stay outside the graph and are razorzoo's own code, so ``predict`` on a runtime
is eager ``predict`` with the network swapped.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

from razorzoo.version import __version__
from razorzoo.bounded import check_number, safe_repr
from razorzoo.deploy.metadata import FORMAT, MAX_SIDE, MIN_SIDE, TASKS, VARIANTS, require, require_deploy
from razorzoo.errors import RazorzooError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from razorzoo.deploy.parity import ParityReport
    from razorzoo.deploy.quantize import QuantizationCost

__all__ = ["export", "Exported", "VARIANTS", "end_to_end_or_raw"]

T = TypeVar("T")

_DETECTION_GROUPS = ("cls_scores", "bbox_preds", "objectnesses")  # Detector.forward's tuple, in order
_MAX_BATCH = 1024


@dataclass(frozen=True)
class Exported:
    """What :func:`export` wrote: the file and, with ``check=True``, the parity gate's report."""

    path: Path
    parity: "ParityReport | None"
    int8_cost: "QuantizationCost | None" = None  # int8 exports: what quantization cost, measured on held-out images


def export(model_or_file: "nn.Module | str | os.PathLike", path: str | os.PathLike, *, task: str | None = None,
           variant: str = "raw", opset: int | None = None, dynamic_batch: bool = True, fp16: bool = False,
           check: bool = True, simplify: bool = False, input_size: int | tuple[int, int] | None = None,
           images: Sequence[Any] | None = None, min_agreement: float = 1.0, int8: bool = False, calib: Any = None,
           calib_n: int = 300) -> Exported:
    """Export a model to ``path`` (ONNX), with its recipe in the file's metadata, after an optional parity gate.

    Args:
        model_or_file: a razorzoo model (detector, classifier, backbone) or a converted ``.safetensors`` file
            (a registry name's or an ``hf-hub:`` id's: :func:`razorzoo.loading.converted_file`; ``razorzoo export``
            takes names).
        task: for files: ``"detection"``, ``"classification"`` or ``"backbone"`` (the backbone of a
            detector or classifier); default: the model's own task.
        variant: ``"raw"``: the head outputs per level, exactly ``Detector.forward`` (NMS stays outside the graph,
            so ``predict`` on a runtime reproduces eager ``predict``). ``"decoded"`` (detectors): ``boxes (N, P, 4)``
            in input-canvas pixels and ``scores (N, P, C)`` for all priors, for your own filtering (no ``predict``;
            the gate compares them with eager decoding). ``"nms"`` (detectors): decoding and NMS in
            the graph (:mod:`razorzoo.deploy.end2end`), outputs ``num_dets, boxes, scores, labels``; its gate
            compares detections only, and needs ``min_agreement`` of them (docs/deploy.md has the measured
            differences).
        opset: ONNX opset (default: torch's). dynamic_batch: a free batch dimension (else batch 1).
        fp16: store float16 weights; inputs and outputs stay float32 (casts at the graph's ends).
        check: run the ONNX checker and the parity gate (:func:`razorzoo.deploy.check_parity` on ONNX Runtime);
            a failed gate raises :class:`~razorzoo.deploy.parity.ParityError` and writes nothing.
        simplify: run onnxscript's graph optimizer once more after export (constant folding, dead code removal).
        input_size: ``(H, W)`` (or one int) of the graph's input for classifiers and backbones (default: the
            classifier's pre-processing crop, else 224); detectors always take their recipe's test size, which their
            pre-processing produces.
        images: extra images for the gate's detection check (it always uses synthetic ones too).
        min_agreement: share of eager's detections the gate requires (default: all).
        int8: quantize the (gated, float32) export to int8 with NNCF for OpenVINO (:mod:`razorzoo.deploy.quantize`,
            the ``[int8]`` extra): ``path`` is then an OpenVINO IR ``.xml`` (beside its ``.bin``), and the cost is
            measured against the float32 eager model on held-out images (``Exported.int8_cost``).
        calib: int8's calibration images: a folder or a list of images; the first ``calib_n`` are used.

    Returns:
        :class:`Exported`: the written path, the gate's report (``None`` without ``check``), int8's cost.
    """
    import torch

    from razorzoo.files import check_output_file, write_bytes_atomic

    if variant not in VARIANTS:
        raise RazorzooError(f"unknown export variant {safe_repr(variant)}; expected one of {', '.join(VARIANTS)}")
    check_number(min_agreement, "min_agreement", minimum=0, maximum=1)
    require_deploy(export=check)  # the parity gate runs ONNX Runtime: checked now, not after the export
    require("onnxscript", "onnx")
    onnx = require("onnx", "onnx")
    path = Path(path)
    suffix = ".xml" if int8 else ".onnx"
    if path.suffix != suffix:
        raise RazorzooError(f"the export path must end in {suffix}" + (" (int8 exports are OpenVINO IR)" if int8 else "")
                            + f", got {safe_repr(str(path))}")
    calibration = None
    if int8:  # the CPU and the calibration images are checked before the export's minutes, not after
        from razorzoo.deploy.quantize import calibration_images
        from razorzoo.deploy.runtime import check_precision

        require("nncf", "int8")
        check_precision("openvino", "int8")
        if task == "backbone" or (task is None and not hasattr(model_or_file, "preprocess")
                                  and hasattr(model_or_file, "out_channels")):
            raise RazorzooError("int8 is for detectors and classifiers (their pre-processing makes the calibration "
                                "inputs); export the detector or classifier instead of its backbone")
        calibration = calibration_images(calib, calib_n)
    elif calib is not None:
        raise RazorzooError("calib= is for int8 exports: pass int8=True (razorzoo export --int8 --calib DIR)")
    check_output_file(path, what="the export path", inputs=(
        [model_or_file] if isinstance(model_or_file, (str, os.PathLike)) else []))  # before minutes of export
    model, metadata = _resolve(model_or_file, task)
    model = model.float().eval()
    task = metadata["razorzoo_task"]
    if variant != "raw" and task != "detection":
        raise RazorzooError(f"the {variant!r} variant is for detectors; export classifiers and backbones as 'raw'")
    size = _input_size(model, task, input_size)
    example = (torch.zeros(2 if dynamic_batch else 1, 3, *size),)
    divisor = _size_divisor(model, task)
    graph, translations, input_names = model, None, ["images"]
    if variant == "nms":
        from razorzoo.deploy.end2end import OUTPUTS, THRESHOLD_INPUTS, TRANSLATIONS, EndToEnd, thresholds

        graph, translations, names = EndToEnd(model).eval(), TRANSLATIONS, OUTPUTS
        example += tuple(torch.from_numpy(t) for t in thresholds(model.test_cfg))
        input_names += THRESHOLD_INPUTS
    elif variant == "decoded":
        from razorzoo.deploy.end2end import DECODED_OUTPUTS, Decoded

        graph, names = Decoded(model).eval(), DECODED_OUTPUTS
    else:
        with torch.no_grad():
            names = _output_names(model(example[0][:1]), task)
    metadata.update(razorzoo_format=FORMAT, razorzoo_version=__version__, razorzoo_variant=variant,
                    razorzoo_outputs=json.dumps(names), razorzoo_input_size=json.dumps(size),
                    razorzoo_fp16=json.dumps(fp16), razorzoo_size_divisor=json.dumps(divisor))
    proto = _to_onnx(graph, example, input_names, _flatten(names), opset=opset, dynamic_batch=dynamic_batch,
                     size_divisor=divisor, fp16=fp16, simplify=simplify, translations=translations)
    del proto.metadata_props[:]
    for key, value in sorted(metadata.items()):
        proto.metadata_props.add(key=key, value=value)
    data = proto.SerializeToString()
    report = None
    if check:
        onnx.checker.check_model(proto)
        from razorzoo.deploy.parity import check_parity

        report = check_parity(model, data, images=images, min_agreement=min_agreement)
        report.raise_for_failure(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    if calibration is not None:
        from razorzoo.deploy.quantize import save_int8

        extra = [t.numpy() for t in example[1:]]  # an nms graph's thresholds: the recipe's
        cost = save_int8(data, model, task, size, calibration, extra, metadata, path)
        return Exported(path, report, cost)
    return Exported(write_bytes_atomic(path, data), report)


_noticed: set[str] = set()  # sources whose refused end-to-end export was reported in this process


def end_to_end_or_raw(export_variant: Callable[[str], T], source: str) -> T:
    """``export_variant("nms")``: a detector's end-to-end export, the fast one; when its parity gate refuses it,
    ``export_variant("raw")`` instead, saying why once per process and ``source`` (on stderr)."""
    from razorzoo.deploy.parity import ParityError

    try:
        return export_variant("nms")
    except ParityError as exc:
        if source not in _noticed:
            _noticed.add(source)
            print(f"razorzoo: notice: the end-to-end ('nms') export does not reproduce eager predict ({exc.verdict}); "
                  "using the 'raw' export, whose NMS runs in Python", file=sys.stderr)
    return export_variant("raw")


def _resolve(source: Any, task: str | None) -> tuple["nn.Module", dict[str, str]]:
    """The eager model to export and the metadata describing it (task, recipe, architecture, source)."""
    from torch import nn

    from razorzoo.weights.convert import as_task, load_weights, read_converted

    if isinstance(source, nn.Module):
        if task is not None:
            raise RazorzooError("task= is for files; pass the module you want to export (e.g. .backbone)")
        return source, _describe(source, _task_of(source), arch=None, source="")
    file = Path(os.fspath(source)).expanduser()
    if file.suffix != ".safetensors" or not file.is_file():
        raise RazorzooError(f"{safe_repr(str(file), 200)} is not a converted .safetensors file; export a model, a "
                            "converted file, or a registry model's (razorzoo.download(NAME))")
    spec, state_dict, metadata = read_converted(file)
    task = task or spec.task
    if task not in TASKS:
        raise RazorzooError(f"unknown task {safe_repr(task)}; expected one of {', '.join(TASKS)}")
    spec, state_dict = as_task(spec, state_dict, task, None, file)
    model = load_weights(spec, state_dict, source=file)
    return model, _describe(model, task, arch=metadata["razorzoo_arch"], source=str(file))


def _task_of(model: "nn.Module") -> str:
    from razorzoo.models.classifier import ImageClassifier
    from razorzoo.models.detector import Detector

    if isinstance(model, Detector):
        return "detection"
    if isinstance(model, ImageClassifier):
        return "classification"
    if hasattr(model, "out_channels"):  # razorzoo backbones record their stage widths
        return "backbone"
    raise RazorzooError(f"cannot export a {type(model).__name__}: pass a razorzoo detector, classifier or backbone")


def _describe(model: "nn.Module", task: str, *, arch: str | None, source: str) -> dict[str, str]:
    """Metadata (all strings, as ONNX wants) that lets a runtime use the file without razorzoo's registry."""
    metadata = {"razorzoo_task": task, "razorzoo_source": source}
    if arch is not None:
        metadata["razorzoo_arch"] = arch
    if task == "detection":
        metadata["razorzoo_recipe"] = json.dumps(model.recipe.to_dict())
    elif task == "classification":
        metadata.update(razorzoo_preprocessing=json.dumps(model.preprocessing.to_dict()),
                        razorzoo_class_names=json.dumps(list(model.class_names)))
    return metadata


def _input_size(model: "nn.Module", task: str, requested: int | tuple[int, int] | None) -> tuple[int, int]:
    """The graph's spatial size: a detector's test size; else ``requested``, the classifier's crop, 224."""
    if task == "detection":
        if requested is not None:
            raise RazorzooError("input_size= is for classifiers and backbones; a detector's input is its test size")
        size = model.recipe.preprocess.size
        return size, size
    if requested is None:
        crop = getattr(getattr(model, "preprocessing", None), "crop", 224)  # what the classifier's preprocess makes
        return crop, crop
    if isinstance(requested, int):
        size = (requested, requested)
    else:  # anything but an int or a pair is refused below, in one line
        size = tuple(requested) if isinstance(requested, (tuple, list)) else ()
    if len(size) != 2 or not all(type(v) is int and MIN_SIDE <= v <= MAX_SIDE for v in size):
        raise RazorzooError(f"input_size must be an int or (H, W) between {MIN_SIDE} and {MAX_SIDE}, got "
                            f"{safe_repr(requested)}")
    if task == "classification" and size[0] != size[1]:
        raise RazorzooError(f"a classifier's input is square (its pipeline centre-crops one), got {safe_repr(requested)}")
    return size


def _size_divisor(model: "nn.Module", task: str) -> int | None:
    """The graph's free height/width step, or ``None`` for a fixed input size. Letterbox detectors get free sizes
    (multiples of their largest stride): MMYOLO evaluates them on per-image batch-shape canvases, so ``val`` on a
    runtime needs them; everything else always sees one size."""
    from razorzoo.arch.recipes import Letterbox

    if task == "detection" and isinstance(model.recipe.preprocess, Letterbox):
        return max(model.recipe.strides)
    return None


def _output_names(outputs: Any, task: str) -> Any:
    """Names for the graph outputs, nested like the eager model's output (the runtime rebuilds that nesting)."""
    if task == "classification":
        return "logits"
    if task == "backbone":
        return [f"features.{i}" for i in range(len(outputs))]
    return [[f"{group}.{i}" for i in range(len(levels))] for group, levels in zip(_DETECTION_GROUPS, outputs)]


def _flatten(names: Any) -> list[str]:
    return [names] if isinstance(names, str) else [leaf for item in names for leaf in _flatten(item)]


def _half_precision(model: "nn.Module") -> "nn.Module":
    """``model`` with float16 weights behind float32 inputs and outputs."""
    import copy

    import torch
    from torch import nn
    from torch.utils._pytree import tree_map

    class Half(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner.half()

        def forward(self, x: torch.Tensor, *thresholds: torch.Tensor) -> Any:  # an nms graph's stay float32
            return tree_map(lambda t: t.float() if t.is_floating_point() else t, self.inner(x.half(), *thresholds))

    return Half(copy.deepcopy(model)).eval()


def _to_onnx(model: "nn.Module", example: tuple["torch.Tensor", ...], input_names: list[str], output_names: list[str],
             *, opset: int | None, dynamic_batch: bool, size_divisor: int | None, fp16: bool, simplify: bool,
             translations: dict | None = None) -> Any:
    """The dynamo exporter's ``ModelProto`` (single file: razorzoo models are far below protobuf's 2 GB). The
    images' batch is free with ``dynamic_batch``, their height and width (multiples of ``size_divisor``, up to
    4096) with a ``size_divisor``; any further inputs have fixed shapes."""
    import torch

    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)  # "no torchvision"
    # "Attribute type is ambiguous ... Defaulted to INTS": the exporter's own empty attributes, right as defaulted
    logging.getLogger("onnx_ir._convenience").setLevel(logging.ERROR)
    Dim = torch.export.Dim
    image_dims: dict[int, Any] = {0: Dim("batch", min=1, max=_MAX_BATCH)} if dynamic_batch else {}
    if size_divisor is not None:
        steps = MAX_SIDE // size_divisor
        image_dims.update({2: size_divisor * Dim("height", min=1, max=steps),
                           3: size_divisor * Dim("width", min=1, max=steps)})
    dynamic_shapes = (image_dims or None, *([None] * (len(example) - 1)))
    try:
        with warnings.catch_warnings():  # the exporter's FutureWarnings are about torch's API, not the user's model
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            program = torch.onnx.export(_half_precision(model) if fp16 else model, example, dynamo=True,
                                        input_names=input_names, output_names=output_names, opset_version=opset,
                                        dynamic_shapes=dynamic_shapes, custom_translation_table=translations,
                                        verbose=False, optimize=True)
    except Exception as exc:  # the exporter's errors are long multi-part reports
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RazorzooError(f"torch.onnx.export failed: {safe_repr(first, 300)}") from exc
    if simplify:
        program.optimize()
    return program.model_proto
