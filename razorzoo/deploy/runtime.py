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
from razorzoo.deploy.metadata import read_metadata, require
from razorzoo.deploy.end2end import from_end_to_end
from razorzoo.detection.coders import build_coder
from razorzoo.detection.results import Detections
from razorzoo.detection.transforms import ClassifierTransform, DetectionTransform, ImageMeta
from razorzoo.errors import RazorzooError
from razorzoo.models.classifier import ImageClassifier
from razorzoo.models.detector import Detector

__all__ = ["BACKENDS", "PRECISIONS", "ExportedModel", "ExportedClassifier", "ExportedDetector", "open_exported"]

BACKENDS = ("onnxruntime", "openvino")
PRECISIONS = {"onnxruntime": ("f32",), "openvino": ("f32", "bf16", "fp16")}
_OPENVINO_TYPES = {"f32": "f32", "bf16": "bf16", "fp16": "f16"}
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
        self.input = self.session.get_inputs()[0]

    @property
    def batch_size(self) -> int | None:
        size = self.input.shape[0]
        return size if isinstance(size, int) else None

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run on a worker thread while this one waits: Ctrl-C (which Python delivers only between bytecodes of the
        main thread) sets ``RunOptions.terminate``, so even a graph with an endless ``Loop`` stops."""
        ort = require("onnxruntime", "onnx")
        options = ort.RunOptions()
        options.log_severity_level = 4  # a terminated run is logged as an error; the KeyboardInterrupt says it
        outcome: dict[str, Any] = {}
        finished = threading.Event()  # not Thread.join: a join interrupted by Ctrl-C may report the thread gone

        def run() -> None:
            try:
                outcome["outputs"] = self.session.run(None, {self.input.name: batch}, options)
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
    def __init__(self, model: str, *, threads: int | None, precision: str) -> None:
        ov = require("openvino", "openvino")
        core = ov.Core()
        if precision != "f32":
            capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            if _OPENVINO_CAPABILITIES[precision] not in capabilities:
                raise RazorzooError(f"this CPU cannot run OpenVINO in {precision} (its capabilities: "
                                    f"{', '.join(capabilities)}); use precision='f32'")
        # set explicitly: OpenVINO's CPU default is bf16 wherever the CPU has AMX, which changes the outputs
        config = {"INFERENCE_PRECISION_HINT": _OPENVINO_TYPES[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(core.read_model(model), "CPU", config)
        self.request = self.compiled.create_infer_request()
        shape = self.compiled.inputs[0].get_partial_shape()[0]
        self.batch_size = None if shape.is_dynamic else shape.get_length()

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        """Started asynchronously and waited for in short steps, so Ctrl-C cancels the request (OpenVINO stops
        between operations: one operation that never ends, such as an endless ``Loop``, cannot be cancelled)."""
        try:
            self.request.start_async([batch])
            while not self.request.wait_for(50):
                pass
        except KeyboardInterrupt:
            self.request.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - the runtime's own errors
            raise RazorzooError(f"openvino failed to run the model: {runtime_reason(exc)}") from None
        return [np.array(self.request.get_output_tensor(i).data) for i in range(len(self.compiled.outputs))]


def _session(model: str | bytes, backend: str, precision: str, threads: int | None) -> Any:
    if backend not in BACKENDS:
        raise RazorzooError(f"unknown backend {safe_repr(backend)}; expected one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS[backend]:
        raise RazorzooError(f"backend {backend!r} does not run precision {safe_repr(precision)}; it runs "
                            f"{', '.join(PRECISIONS[backend])}")
    if threads is not None:
        constants.check_threads(threads, "threads")
    if backend == "openvino" and isinstance(model, bytes):
        raise RazorzooError("the openvino backend reads files: save the export first")
    try:
        if backend == "onnxruntime":
            return _OnnxRuntimeSession(model, threads=threads)
        return _OpenVinoSession(model, threads=threads, precision=precision)
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
        self.backend, self.precision = backend, precision
        self.source = "<bytes>" if isinstance(model, bytes) else model
        self._session = _session(model, backend, precision, threads)
        self._names = json.loads(self.metadata["razorzoo_outputs"])
        self.input_size = tuple(json.loads(self.metadata["razorzoo_input_size"]))  # (H, W) of the graph

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source!r}, backend={self.backend!r}, precision={self.precision!r})"

    def eval(self) -> "ExportedModel":
        """A no-op, for code written against ``nn.Module`` (an exported model is always in inference mode)."""
        return self

    def run(self, batch: torch.Tensor | np.ndarray) -> list[np.ndarray]:
        """The graph's outputs for a float32 ``(N, 3, H, W)`` batch, flat; a batch-1 graph runs image by image."""
        array = np.ascontiguousarray(batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else batch,
                                     dtype=np.float32)
        if self._session.batch_size in (None, len(array)):
            return self._session(array)
        per_image = [self._session(array[i:i + 1]) for i in range(len(array))]
        return [np.concatenate(outputs) for outputs in zip(*per_image)]

    def forward(self, batch: torch.Tensor | np.ndarray) -> Any:
        """Outputs as torch tensors, nested like the eager model's (a tensor, a tuple, or a tuple of lists)."""
        flat = iter(torch.from_numpy(output) for output in self.run(batch))

        def rebuild(names: Any, top: bool) -> Any:
            if isinstance(names, str):
                return next(flat)
            items = [rebuild(name, False) for name in names]
            return tuple(items) if top else items

        return rebuild(self._names, True)

    __call__ = forward


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
    (``recipe``, ``transform``, ``coder``, ``test_cfg``), and its ``preprocess``/``postprocess``/``predict``: a
    ``raw`` export's outputs are post-processed as eager ones; an ``nms`` export's only need mapping back to image
    pixels."""

    preprocess = Detector.preprocess
    postprocess = Detector.postprocess
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

    def _forward(self, batch: torch.Tensor) -> Any:
        return self(batch)

    def _postprocess(self, outputs: Any, metas: Sequence[ImageMeta], test_cfg: TestConfig) -> list[Detections]:
        """Graph outputs -> one :class:`~razorzoo.Detections` per image, in original-image pixels."""
        variant = self.metadata["razorzoo_variant"]
        if variant == "raw":
            return Detector._postprocess(self, outputs, metas, test_cfg)
        if variant == "decoded":
            raise RazorzooError("a 'decoded' export returns boxes and scores for every prior, for your own filtering; "
                                "export the 'raw' (or 'nms') variant to predict with it")
        if test_cfg != self.test_cfg:
            raise RazorzooError("an 'nms' export has its thresholds built into the graph; export it again with "
                                "other ones, or use the 'raw' variant")
        return from_end_to_end(outputs, metas, self.class_names)


def open_exported(model: str | os.PathLike | bytes, *, backend: str = "onnxruntime", precision: str = "f32",
                  threads: int | None = None) -> ExportedModel:
    """An exported file (or its bytes) on ``backend``: an :class:`ExportedDetector` for detectors."""
    metadata = read_metadata(model if isinstance(model, bytes) else os.fspath(model))
    cls = {"detection": ExportedDetector, "classification": ExportedClassifier}.get(metadata["razorzoo_task"],
                                                                                  ExportedModel)
    return cls(model, backend=backend, precision=precision, threads=threads, metadata=metadata)
