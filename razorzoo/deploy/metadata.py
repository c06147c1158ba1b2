"""The razorzoo metadata of an exported ONNX file, and the optional packages deployment needs.

:func:`read_metadata` is the one reader of what :func:`razorzoo.deploy.export.export` writes into ``metadata_props``;
it refuses ONNX files razorzoo did not write, whose pre-processing and outputs are unknown.
"""
from __future__ import annotations

import json
import os
from typing import Any

from razorzoo.bounded import safe_repr
from razorzoo.errors import RazorzooError

__all__ = ["FORMAT", "TASKS", "MAX_SIDE", "require", "read_metadata", "is_openvino_ir"]

FORMAT = "razorzoo-onnx/1"  # metadata "razorzoo_format": files without it were not written by razorzoo
TASKS = ("detection", "classification", "backbone")
MAX_SIDE = 4096  # the largest height/width a free-size detector graph takes


def require(module: str, extra: str) -> Any:
    """Import an optional dependency, or say which razorzoo extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise RazorzooError(f"this needs the {module} package, which is not installed: "
                            f"pip install 'razorzoo[{extra}]'") from None


def is_openvino_ir(model: str | os.PathLike | bytes) -> bool:
    """Whether ``model`` names an OpenVINO IR (``.xml`` + ``.bin``: razorzoo's int8 exports), not an ONNX file."""
    return not isinstance(model, bytes) and os.fspath(model).lower().endswith(".xml")


def read_metadata(model: str | os.PathLike | bytes) -> dict[str, str]:
    """The razorzoo metadata of an ONNX file (or its bytes) or of an OpenVINO IR (int8 exports: in its
    ``rt_info``); refuses files that are not razorzoo exports."""
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
        raise RazorzooError(f"{where} is an ONNX file razorzoo did not write (no {FORMAT} metadata), so its "
                            "pre-processing and outputs are unknown; export it with `razorzoo export NAME -o FILE`")
    required = {"razorzoo_outputs", "razorzoo_input_size", "razorzoo_variant"}
    required |= {"detection": {"razorzoo_recipe"}, "classification": {"razorzoo_preprocessing", "razorzoo_class_names"}}.get(
        metadata.get("razorzoo_task"), set())
    try:
        complete = metadata.get("razorzoo_task") in TASKS and required <= metadata.keys() and all(
            json.loads(metadata[key]) is not None for key in required - {"razorzoo_variant"})
    except ValueError:
        complete = False
    if not complete:
        raise RazorzooError(f"{where}: the razorzoo metadata is incomplete or corrupt; export the model again")
    return metadata


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
