"""Run exported razorzoo models on ONNX Runtime or OpenVINO with the eager models' API.

:func:`open_exported` turns a razorzoo ``.onnx`` file (read alone: its metadata carries the recipe) into an
:class:`ExportedModel` (:func:`razorzoo.deploy.cached.load_exported` finds the file for a name): called on a
normalized batch it returns what the eager model returns; an :class:`ExportedDetector` adds ``preprocess``/``postprocess``/``predict``,
which are :class:`~razorzoo.models.detector.Detector`'s own methods, so results are the same ``Detections``.
"""
from __future__ import annotations

import json
import os
import re
import threading
from typing import Any, Sequence

import numpy as np
import torch

from razorzoo import constants
from razorzoo.arch.recipes import ClassifierPreprocess, Recipe, TestConfig
from razorzoo.bounded import load_json, safe_repr
from razorzoo.deploy.metadata import MAX_SIDE, read_metadata, require
from razorzoo.deploy.end2end import THRESHOLD_INPUTS, from_end_to_end, thresholds
from razorzoo.detection.coders import build_coder
from razorzoo.detection.results import Detections
from razorzoo.detection.transforms import ClassifierTransform, DetectionTransform, ImageMeta
from razorzoo.errors import RazorzooError
from razorzoo.models.classifier import ImageClassifier
from razorzoo.models.detector import Detector

__all__ = ["BACKENDS", "PRECISIONS", "ExportedModel", "ExportedClassifier", "ExportedDetector", "open_exported",
           "check_precision"]

BACKENDS = ("onnxruntime", "openvino")
PRECISIONS = {"onnxruntime": ("f32",), "openvino": ("f32", "bf16", "fp16")}  # and "int8": an int8 export
_OPENVINO_TYPES = {"f32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}  # int8: the float layers' hint
_OPENVINO_CAPABILITIES = {"bf16": "BF16", "fp16": "FP16"}  # ov.properties.device.capability names


class _OnnxRuntimeSession:
    def __init__(self, model: str | bytes, *, threads: int | None) -> None:
        ort = require("onnxruntime", "onnx")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: razorzoo raises them as one line, warnings are noise
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        size = self.session.get_inputs()[0].shape[0]
        self.batch_size = size if isinstance(size, int) else None

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run on a worker thread while this one waits: Ctrl-C (which Python delivers only between bytecodes of the
        main thread) sets ``RunOptions.terminate``, so even a graph with an endless ``Loop`` stops."""
        ort = require("onnxruntime", "onnx")
        options = ort.RunOptions()
        options.log_severity_level = 4  # a terminated run is logged as an error; the KeyboardInterrupt says it
        feeds = dict(zip(self.input_names, inputs, strict=True))
        outcome: dict[str, Any] = {}
        finished = threading.Event()  # not Thread.join: a join interrupted by Ctrl-C may report the thread gone

        def run() -> None:
            try:
                outcome["outputs"] = self.session.run(None, feeds, options)
            except Exception as exc:  # noqa: BLE001 - re-raised on the calling thread
                outcome["error"] = exc
            finally:
                finished.set()

        threading.Thread(target=run, name="razorzoo-onnxruntime", daemon=True).start()
        try:
            while not finished.wait(0.05):
                pass
        except KeyboardInterrupt:
            options.terminate = True
            finished.wait()  # the run stops at its next operator
            outcome.clear()
            raise
        error = outcome.pop("error", None)
        if error is not None:
            raise RazorzooError(f"onnxruntime failed to run the model: {runtime_reason(error)}") from None
        return outcome.pop("outputs")


class _OpenVinoSession:
    """An OpenVINO model on the CPU. A graph with free input sizes is compiled once per input shape it meets (a few
    at a time): OpenVINO's CPU plugin runs a static shape markedly faster than a dynamic one."""

    _SHAPES_KEPT = 8  # compiled shapes kept (val meets a handful of batch-shape canvases, predict one)

    def __init__(self, model: str, *, threads: int | None, precision: str, first_shape: tuple[int, ...]) -> None:
        ov = require("openvino", "openvino")
        self.core = core = ov.Core()
        # set explicitly: OpenVINO's CPU default is bf16 wherever the CPU has AMX, which changes the outputs (an
        # int8 model's float layers, its first and last convolutions, stay float32 too)
        self.config = {"INFERENCE_PRECISION_HINT": _OPENVINO_TYPES[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads is not None:
            self.config["INFERENCE_NUM_THREADS"] = threads
        self.model = core.read_model(model)
        self.input_names = [i.get_any_name() for i in self.model.inputs]
        shape = self.model.inputs[0].get_partial_shape()
        self.batch_size = None if shape[0].is_dynamic else shape[0].get_length()
        self.static = not shape.is_dynamic
        self.compiled: dict[tuple[int, ...], tuple[Any, Any]] = {}
        # compiled now, for one image of the graph's own size: errors show at load, and predict starts warm
        self._compiled(tuple(shape.to_shape()) if self.static else first_shape)

    def _compiled(self, shape: tuple[int, ...]) -> tuple[Any, Any]:
        if shape not in self.compiled:
            if len(self.compiled) >= self._SHAPES_KEPT:
                self.compiled.pop(next(iter(self.compiled)))
            model = self.model
            if not self.static:
                model = model.clone()
                model.reshape({self.input_names[0]: list(shape)})
            compiled = self.core.compile_model(model, "CPU", self.config)
            self.compiled[shape] = compiled, compiled.create_infer_request()
        return self.compiled[shape]

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Started asynchronously and waited for in short steps, so Ctrl-C cancels the request (OpenVINO stops
        between operations: one operation that never ends, such as an endless ``Loop``, cannot be cancelled)."""
        compiled, request = self._compiled(tuple(inputs[0].shape))
        try:
            request.start_async(dict(zip(self.input_names, inputs, strict=True)))
            while not request.wait_for(50):
                pass
        except KeyboardInterrupt:
            request.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - the runtime's own errors
            raise RazorzooError(f"openvino failed to run the model: {runtime_reason(exc)}") from None
        return [np.array(request.get_output_tensor(i).data) for i in range(len(compiled.outputs))]


def check_precision(backend: str, precision: str) -> None:
    """Refuse, in one line, a backend or precision that cannot run here (before minutes of export, not after)."""
    if backend not in BACKENDS:
        raise RazorzooError(f"unknown backend {safe_repr(backend)}; expected one of {', '.join(BACKENDS)}")
    if precision == "int8" and backend != "openvino":
        raise RazorzooError("int8 runs on OpenVINO (razorzoo quantizes with NNCF for it): use backend='openvino'")
    if precision not in (*PRECISIONS[backend], *(("int8",) if backend == "openvino" else ())):
        raise RazorzooError(f"backend {backend!r} does not run precision {safe_repr(precision)}; it runs "
                            f"{', '.join(PRECISIONS[backend])}" + (" and int8" if backend == "openvino" else ""))
    capability = {"int8": "INT8", **_OPENVINO_CAPABILITIES}.get(precision)
    if backend == "openvino" and capability is not None:
        capabilities = require("openvino", "openvino").Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if capability not in capabilities:
            raise RazorzooError(f"this CPU cannot run OpenVINO in {precision} (its capabilities: "
                                f"{', '.join(capabilities)}); use precision='f32'")


def _session(model: str | bytes, backend: str, precision: str, threads: int | None, int8: bool,
             first_shape: tuple[int, ...]) -> Any:
    if int8:
        if precision not in ("int8", "f32"):
            raise RazorzooError(f"{model} is an int8 export: its precision is int8, not {safe_repr(precision)}")
        precision = "int8"
    elif precision == "int8":
        raise RazorzooError("precision='int8' needs an int8 export: load a registry name, hf-hub: id or .safetensors "
                            "with precision='int8', calib=IMAGES, or export one (razorzoo export --int8 --calib DIR)")
    check_precision(backend, precision)
    if threads is not None:
        constants.check_threads(threads, "threads")
    if backend == "openvino" and isinstance(model, bytes):
        raise RazorzooError("the openvino backend reads files: save the export first")
    try:
        if backend == "onnxruntime":
            return _OnnxRuntimeSession(model, threads=threads)
        return _OpenVinoSession(model, threads=threads, precision=precision, first_shape=first_shape)
    except RazorzooError:
        raise
    except Exception as exc:  # the runtimes' own errors (unparsable graph, unsupported operator, ...)
        raise RazorzooError(f"{backend} cannot load the model: {runtime_reason(exc)}") from None


# lines of a runtime's message that say where in its source it failed, not why
_SOURCE_LOCATION = re.compile(r"(Exception from |Check '.*' failed at |\[ ?[A-Z_]+ ?\] *$)|.*\.(cpp|cc|h|hpp):\d+:?\s*$")


def runtime_reason(exc: BaseException) -> str:
    """The first line of a runtime's error that says why (OpenVINO puts ``Exception from src/...cpp:84:`` first),
    quoted and cut for a one-line message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reasons = [line for line in lines if not _SOURCE_LOCATION.match(line)]
    return safe_repr((reasons or lines or [type(exc).__name__])[0], 200)


class ExportedModel:
    """An exported model on a runtime: ``model(batch)`` returns what the eager model returns for that batch.

    Attributes: ``task``, ``backend``, ``precision``, ``metadata`` (the file's razorzoo metadata), ``source``.
    """

    def __init__(self, model: str | os.PathLike | bytes, *, backend: str = "onnxruntime", precision: str = "f32",
                 threads: int | None = None, metadata: dict[str, str] | None = None) -> None:
        model = model if isinstance(model, bytes) else os.fspath(model)
        self.metadata = read_metadata(model) if metadata is None else metadata
        self.task = self.metadata["razorzoo_task"]
        int8 = self.metadata.get("razorzoo_precision") == "int8"
        self.backend, self.precision = backend, "int8" if int8 else precision
        self.source = "<bytes>" if isinstance(model, bytes) else model
        self._names = json.loads(self.metadata["razorzoo_outputs"])
        self.variant = self.metadata["razorzoo_variant"]
        self.input_size = tuple(json.loads(self.metadata["razorzoo_input_size"]))  # (H, W) of the graph
        self._session = _session(model, backend, precision, threads, int8, (1, 3, *self.input_size))
        # free-size graphs take any height and width that are multiples of this (the letterbox detectors')
        self.size_divisor: int | None = json.loads(self.metadata.get("razorzoo_size_divisor", "null"))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.source!r}, backend={self.backend!r}, precision={self.precision!r}, "
                f"variant={self.variant!r})")

    @property
    def runtime(self) -> dict[str, str]:
        """What runs the model: ``backend``, ``precision`` and the export ``variant`` (the CLI's ``--json`` shows it)."""
        return {"backend": self.backend, "precision": self.precision, "variant": self.variant}

    def eval(self) -> "ExportedModel":
        """A no-op, for code written against ``nn.Module`` (an exported model is always in inference mode)."""
        return self

    def run(self, batch: torch.Tensor | np.ndarray, extra: Sequence[np.ndarray] = ()) -> list[np.ndarray]:
        """The graph's outputs for a float32 ``(N, 3, H, W)`` batch (and the graph's ``extra`` inputs), flat; a
        batch-1 graph runs image by image."""
        array = np.ascontiguousarray(batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else batch,
                                     dtype=np.float32)
        self._check_shape(array.shape)
        if self._session.batch_size in (None, len(array)):
            return self._session([array, *extra])
        per_image = [self._session([array[i:i + 1], *extra]) for i in range(len(array))]
        return [np.concatenate(outputs) for outputs in zip(*per_image)]

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        """Refuse a batch the graph cannot take, in one line (the runtimes' own errors are pages long)."""
        if len(shape) != 4 or shape[1] != 3 or shape[0] < 1:
            raise RazorzooError(f"{self.source}: expected a (N, 3, H, W) batch, got shape {tuple(shape)}")
        height, width = shape[2:]
        if self.size_divisor is None:
            if (height, width) != self.input_size:
                raise RazorzooError(f"{self.source}: the graph takes {self.input_size[0]} x {self.input_size[1]} "
                                    f"inputs, got {height} x {width}")
        elif height % self.size_divisor or width % self.size_divisor or max(height, width) > MAX_SIDE:
            raise RazorzooError(f"{self.source}: the graph takes heights and widths that are multiples of "
                                f"{self.size_divisor} up to {MAX_SIDE}, got {height} x {width}")

    def _extra_inputs(self) -> list[np.ndarray]:
        """The graph's inputs after the images (none but an ``nms`` detector's thresholds)."""
        return []

    def forward(self, batch: torch.Tensor | np.ndarray) -> Any:
        """Outputs as torch tensors, nested like the eager model's (a tensor, a tuple, or a tuple of lists)."""
        return self._nest(self.run(batch, self._extra_inputs()))

    def _nest(self, outputs: list[np.ndarray]) -> Any:
        flat = iter(torch.from_numpy(output) for output in outputs)

        def rebuild(names: Any, top: bool) -> Any:
            if isinstance(names, str):
                return next(flat)
            items = [rebuild(name, False) for name in names]
            return tuple(items) if top else items

        return rebuild(self._names, True)

    def __call__(self, batch: torch.Tensor | np.ndarray) -> Any:
        return self.forward(batch)


class ExportedClassifier(ExportedModel):
    """An exported classifier with the eager :class:`ImageClassifier`'s ``preprocess`` and ``predict`` (its test
    pipeline and class names are stored in the file), so ``predict``/``val --backend ...`` work as on the eager one."""

    preprocess = ImageClassifier.preprocess
    predict = ImageClassifier.predict
    classify = ImageClassifier.classify

    def __init__(self, model: str | os.PathLike | bytes, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        try:
            self.preprocessing = ClassifierPreprocess.from_dict(
                load_json(self.metadata["razorzoo_preprocessing"], what="the razorzoo_preprocessing"))
        except RazorzooError as exc:
            raise RazorzooError(f"{self.source}: the stored pre-processing is not valid ({exc}); export the model "
                                "again") from None
        self.transform = ClassifierTransform(self.preprocessing.at_crop(self.input_size[0]))  # at the graph's size
        self.class_names = tuple(json.loads(self.metadata["razorzoo_class_names"]))

    def _logits(self, batch: torch.Tensor) -> torch.Tensor:
        return self(batch)


class ExportedDetector(ExportedModel):
    """An exported detector with the eager :class:`Detector`'s typed parts, rebuilt from the recipe stored in the file
    (``recipe``, ``transform``, ``coder``, ``test_cfg``), and its ``preprocess``/``postprocess``/``detect``/
    ``predict``: a ``raw`` export's outputs are post-processed as eager ones; an ``nms`` export runs its graph with the
    thresholds asked for and only maps boxes back to image pixels."""

    preprocess = Detector.preprocess
    postprocess = Detector.postprocess
    detect = Detector.detect
    predict = Detector.predict
    class_names = Detector.class_names

    def __init__(self, model: str | os.PathLike | bytes, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        try:
            self.recipe = Recipe.from_dict(load_json(self.metadata["razorzoo_recipe"], what="the razorzoo_recipe"))
        except RazorzooError as exc:
            raise RazorzooError(f"{self.source}: the stored detector recipe is not valid ({exc}); export the model "
                                "again") from None
        self.transform = DetectionTransform(self.recipe.preprocess, self.recipe.normalize)
        self.coder = build_coder(self.recipe.coder)
        self.test_cfg = self.recipe.test_cfg
        if self.variant == "nms" and self._session.input_names[1:] != THRESHOLD_INPUTS:
            raise RazorzooError(f"{self.source}: this 'nms' export has its thresholds fixed in the graph (an earlier "
                                "razorzoo wrote it); export the model again")

    def _extra_inputs(self, test_cfg: TestConfig | None = None) -> list[np.ndarray]:
        return thresholds(test_cfg or self.test_cfg) if self.variant == "nms" else []

    def _forward(self, batch: torch.Tensor) -> Any:
        return self(batch)

    def _detect(self, batch: torch.Tensor, metas: Sequence[ImageMeta], test_cfg: TestConfig) -> list[Detections]:
        """The network and post-processing at ``test_cfg``; an ``nms`` graph is run with its thresholds."""
        if self.variant != "nms":
            return self._postprocess(self._forward(batch), metas, test_cfg)
        rows = self.test_cfg.max_per_img
        if test_cfg.max_per_img > rows:
            raise RazorzooError(f"this 'nms' export returns at most {rows} detections per image, asked for "
                                f"{test_cfg.max_per_img}; use max_det <= {rows} or the 'raw' variant")
        outputs = self._nest(self.run(batch, self._extra_inputs(test_cfg)))
        return from_end_to_end(outputs, metas, self.class_names, test_cfg.max_per_img)

    def _postprocess(self, outputs: Any, metas: Sequence[ImageMeta], test_cfg: TestConfig) -> list[Detections]:
        """Graph outputs -> one :class:`~razorzoo.Detections` per image, in original-image pixels."""
        if self.variant == "raw":
            return Detector._postprocess(self, outputs, metas, test_cfg)
        if self.variant == "decoded":
            raise RazorzooError("a 'decoded' export returns boxes and scores for every prior, for your own filtering; "
                                "export the 'raw' (or 'nms') variant to predict with it")
        if test_cfg != self.test_cfg:
            raise RazorzooError("an 'nms' export's outputs are post-processed in its graph, at the thresholds it ran "
                                "with; pass thresholds to predict() or detect(), which run the graph with them")
        return from_end_to_end(outputs, metas, self.class_names)


def open_exported(model: str | os.PathLike | bytes, *, backend: str = "onnxruntime", precision: str = "f32",
                  threads: int | None = None) -> ExportedModel:
    """An exported file (or its bytes) on ``backend``: an :class:`ExportedDetector` for detectors."""
    metadata = read_metadata(model if isinstance(model, bytes) else os.fspath(model))
    cls = {"detection": ExportedDetector, "classification": ExportedClassifier}.get(metadata["razorzoo_task"],
                                                                                  ExportedModel)
    return cls(model, backend=backend, precision=precision, threads=threads, metadata=metadata)
