"""Rewiring an exported ONNX file's outputs: a real runtime session whose outputs are wrong in one known way, for
testing what the parity gate sees (no mocks: ONNX Runtime and OpenVINO run the rewired graph)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np


def rewired(source: Path, target: Path, output: str, build: Callable[[Any, str], None]) -> Path:
    """``source`` with graph output ``output`` replaced by what ``build(graph, old_name)`` computes (it appends
    nodes producing a value named ``output`` from the original one, renamed ``old_name``), saved as ``target``."""
    import onnx

    model = onnx.load(source)
    old = f"{output}__before"
    for node in model.graph.node:
        node.output[:] = [old if name == output else name for name in node.output]
        node.input[:] = [old if name == output else name for name in node.input]
    build(model.graph, old)
    onnx.save(model, target)
    return target


def offset(value: float) -> Callable[[Any, str], None]:
    """A :func:`rewired` builder: the output plus ``value`` everywhere."""

    def build(graph: Any, old: str) -> None:
        from onnx import helper, numpy_helper

        name = old.removesuffix("__before")
        graph.initializer.append(numpy_helper.from_array(np.array(value, dtype=np.float32), f"{name}__offset"))
        graph.node.append(helper.make_node("Add", [old, f"{name}__offset"], [name]))

    return build
