"""The razorzoo metadata of an exported ONNX file, and the optional packages deployment needs.

:func:`read_metadata` is the one reader of what :func:`razorzoo.deploy.export.export` writes into ``metadata_props``;
it refuses ONNX files razorzoo did not write, whose pre-processing and outputs are unknown.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

from razorzoo.bounded import load_json, safe_repr
from razorzoo.documents import Fields
from razorzoo.errors import RazorzooError

__all__ = ["FORMAT", "TASKS", "VARIANTS", "MIN_SIDE", "MAX_SIDE", "require", "require_deploy", "read_metadata",
           "is_openvino_ir"]

FORMAT = "razorzoo-onnx/1"  # metadata "razorzoo_format": files without it were not written by razorzoo
TASKS = ("detection", "classification", "backbone")
MIN_SIDE, MAX_SIDE = 32, 4096  # a graph's input height/width (MAX_SIDE: also what a free-size detector graph takes)


_RUNTIMES = ("onnxruntime", "openvino")  # both write telemetry ids under $HOME when imported


def require(module: str, extra: str) -> Any:
    """Import an optional dependency, or say which razorzoo extra installs it.

    The runtimes are imported with ``HOME`` and ``XDG_CACHE_HOME`` pointing into razorzoo's cache
    (``<cache>/runtimes``): onnxruntime and OpenVINO write telemetry ids (``~/.cache/Microsoft/...``,
    ``~/intel/...``) when imported, and razorzoo keeps them out of the user's home; onnxruntime's telemetry events
    are also turned off (``disable_telemetry_events``). docs/deploy.md says so.
    """
    import importlib
    import sys

    if sys.modules.get(module) is not None:  # imported already (None: an import that is to fail)
        return sys.modules[module]
    try:
        if module.split(".")[0] not in _RUNTIMES:
            return importlib.import_module(module)
        with _private_home():
            imported = importlib.import_module(module)
        if module == "onnxruntime":
            imported.disable_telemetry_events()
        return imported
    except ImportError:
        raise RazorzooError(f"this needs the {module} package, which is not installed: "
                            f"pip install 'razorzoo[{extra}]'") from None


def require_deploy(*, backend: str | None = None, export: bool = False) -> None:
    """Check, before any download, conversion or export, that everything a deploy step needs is installed: exporting
    needs onnx, onnxscript and (for the parity gate) onnxruntime; running needs the backend's runtime. The error
    names every missing package and the one extra that installs them all (``[openvino]`` for OpenVINO: it brings the
    ONNX packages too; ``[onnx]`` otherwise)."""
    import importlib.util

    modules = ["onnx", "onnxscript", "onnxruntime"] if export else []
    if backend is not None:
        modules.append(backend)
    missing = [m for m in dict.fromkeys(modules) if importlib.util.find_spec(m) is None]
    if missing:
        extra = "openvino" if backend == "openvino" else "onnx"
        doing = " and ".join(filter(None, ["exporting to ONNX" if export else "", f"running on {backend}" if backend
                                           else ""]))
        raise RazorzooError(f"{doing} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
                            f"installed: pip install 'razorzoo[{extra}]'")


@contextlib.contextmanager
def _private_home() -> Iterator[None]:
    from razorzoo import constants

    home = constants.cache_dir() / "runtimes"
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # a read-only cache: the runtimes then fail to write their ids, which is fine
    with constants.environment(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache")):
        yield


def is_openvino_ir(model: str | os.PathLike | bytes) -> bool:
    """Whether ``model`` names an OpenVINO IR (``.xml`` + ``.bin``: razorzoo's int8 exports), not an ONNX file."""
    return not isinstance(model, bytes) and os.fspath(model).lower().endswith(".xml")


def read_metadata(model: str | os.PathLike | bytes) -> dict[str, str]:
    """The razorzoo metadata of an ONNX file (or its bytes) or of an OpenVINO IR (int8 exports: in its
    ``rt_info``), checked field by field; refuses files that are not razorzoo exports, and metadata of the wrong
    type, size or range (class names must be printable: they reach the terminal)."""
    where = "the ONNX bytes" if isinstance(model, bytes) else str(model)
    if is_openvino_ir(model):
        metadata = _read_ir(os.fspath(model))
    else:
        onnx = require("onnx", "onnx")
        try:
            proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(os.fspath(model),
                                                                                            load_external_data=False)
        except FileNotFoundError:
            raise RazorzooError(f"{where} does not exist") from None
        except Exception as exc:  # protobuf's DecodeError and friends: truncated or not ONNX at all
            raise RazorzooError(f"{where} is not a readable ONNX file ({safe_repr(str(exc), 120)}); "
                                "export the model again with `razorzoo export`") from None
        metadata = {p.key: p.value for p in proto.metadata_props}
    if metadata.get("razorzoo_format") != FORMAT:
        kind = "an OpenVINO IR" if is_openvino_ir(model) else "an ONNX file"
        raise RazorzooError(f"{where} is {kind} razorzoo did not write (no {FORMAT} metadata), so its "
                            "pre-processing and outputs are unknown; export it with `razorzoo export NAME -o FILE`")
    _check(metadata, f"{where}: razorzoo metadata")
    return metadata


def _check(metadata: dict[str, str], what: str) -> None:
    """The metadata schema: each JSON value decoded (bounded) and checked by type and range."""
    fields: dict[str, Any] = {}
    for key in _JSON_KEYS:
        if key in metadata:
            if len(metadata[key]) > _MAX_VALUE:
                raise RazorzooError(f"{what}: {key} has {len(metadata[key])} characters, more than {_MAX_VALUE}")
            fields[key] = load_json(metadata[key], what=f"{what}: {key}", error=RazorzooError)
    for key in ("razorzoo_task", "razorzoo_variant", "razorzoo_precision"):
        fields[key] = metadata.get(key)
    doc = Fields(fields, what, error=RazorzooError)
    task = doc.text("razorzoo_task", choices=TASKS)
    doc.text("razorzoo_variant", choices=VARIANTS)
    doc.numbers("razorzoo_input_size", length=2, minimum=MIN_SIDE, maximum=MAX_SIDE)
    if not all(type(v) is int for v in fields["razorzoo_input_size"]):
        raise doc.fail("razorzoo_input_size", "two integer sides", fields["razorzoo_input_size"])
    _output_names(fields.get("razorzoo_outputs"), doc)
    doc.boolean("razorzoo_fp16", default=False)
    doc.int("razorzoo_size_divisor", minimum=1, maximum=MAX_SIDE, default=None)
    doc.text("razorzoo_precision", choices=("int8",), default=None)
    doc.object("razorzoo_calibration", default=None)
    doc.object("razorzoo_int8_cost", default=None)
    if task == "classification":
        doc.texts("razorzoo_class_names", max_items=_MAX_CLASSES, min_items=1, max_chars=256)
        doc.object("razorzoo_preprocessing")
    if task == "detection":
        doc.object("razorzoo_recipe").texts("class_names", max_items=_MAX_CLASSES, min_items=1, max_chars=256)


def _output_names(names: Any, doc: Fields, depth: int = 0) -> None:
    """A name, or a (nested, at most 3 deep) list of names, as :func:`razorzoo.deploy.export` writes them."""
    if isinstance(names, str) and 0 < len(names) <= 128 and names.isprintable():
        return
    if isinstance(names, list) and depth < 3 and 0 < len(names) <= 64:
        for name in names:
            _output_names(name, doc, depth + 1)
        return
    raise doc.fail("razorzoo_outputs", "output names (a list of at most 64 printable names, nested at most 3 deep)",
                   names)


_JSON_KEYS = ("razorzoo_outputs", "razorzoo_input_size", "razorzoo_class_names", "razorzoo_preprocessing",
              "razorzoo_recipe", "razorzoo_fp16", "razorzoo_size_divisor", "razorzoo_calibration",
              "razorzoo_int8_cost")
VARIANTS = ("raw", "decoded", "nms")
_MAX_VALUE = 4 << 20  # characters of one metadata value (class names of a 21k-class model fit)
_MAX_CLASSES = 100_000


def _read_ir(path: str) -> dict[str, str]:
    """The ``razorzoo_*`` entries of an OpenVINO IR's ``rt_info``."""
    ov = require("openvino", "openvino")
    if not os.path.isfile(path):
        raise RazorzooError(f"{path} does not exist")
    try:
        model = ov.Core().read_model(path)
    except Exception as exc:  # a truncated .xml, a missing or short .bin
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RazorzooError(f"{path} is not a readable OpenVINO IR ({safe_repr(first, 120)}); export the model "
                            "again with `razorzoo export`") from None
    return {key: model.get_rt_info(key).astype(str) for key in model.get_rt_info().keys()
            if key.startswith("razorzoo_")}
