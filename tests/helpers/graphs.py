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


def tagged_relu(path: Path, metadata: dict[str, str], *, external: bool = False) -> Path:
    """A one-Relu ONNX graph with ``metadata`` as its metadata props, saved as ``path``: the smallest real file to
    read export metadata from. ``external``: plus a weight stored in a ``w.bin`` beside it (not written)."""
    import onnx
    from onnx import helper, numpy_helper

    x = helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, ["N", 3, 32, 32])
    y = helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 3, 32, 32])
    initializers = []
    if external:
        weight = numpy_helper.from_array(np.zeros((1024,), np.float32), "w")
        weight.data_location = onnx.TensorProto.EXTERNAL
        for key, value in {"location": "w.bin", "offset": "0", "length": "4096"}.items():
            weight.external_data.add(key=key, value=value)
        weight.ClearField("raw_data")
        initializers.append(weight)
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["images"], ["logits"])], "g", [x], [y],
                                                initializer=initializers),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    path.write_bytes(model.SerializeToString())
    return path
