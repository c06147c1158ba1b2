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

__all__ = ["FORMAT", "TASKS", "require", "read_metadata"]

FORMAT = "razorzoo-onnx/1"  # metadata "razorzoo_format": files without it were not written by razorzoo
TASKS = ("detection", "classification", "backbone")


def require(module: str, extra: str) -> Any:
    """Import an optional dependency, or say which razorzoo extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise RazorzooError(f"this needs the {module} package, which is not installed: "
                            f"pip install 'razorzoo[{extra}]'") from None


def read_metadata(model: str | os.PathLike | bytes) -> dict[str, str]:
    """The razorzoo metadata of an ONNX file (or its bytes); refuses files that are not razorzoo exports."""
    onnx = require("onnx", "onnx")
    where = "the ONNX bytes" if isinstance(model, bytes) else str(model)
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
