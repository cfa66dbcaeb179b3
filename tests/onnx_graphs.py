"""Small ONNX models built in the tests: branches, multi-output ops, repeated inputs, Constant."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 18
IR_VERSION = 8


def _model(nodes, inputs, outputs, inits=(), name="g", value_info=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes), name, list(inputs), list(outputs), list(inits), value_info=list(value_info)
    )
    m = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="serenity-tests"
    )
    m.ir_version = IR_VERSION
    onnx.checker.check_model(m, full_check=True)
    return m


def branchy(seed: int = 0, channels: int = 4, hw: int = 8) -> onnx.ModelProto:
    """x -> conv -> {relu, sigmoid, split(2)} ; concat of everything ; a Constant added in."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((channels, channels, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal((channels,)).astype(np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Sigmoid", ["c"], ["s"], name="sig"),
        helper.make_node("Split", ["c"], ["s1", "s2"], name="split", axis=1, num_outputs=2),
        helper.make_node("Mul", ["s1", "s1"], ["m"], name="square"),  # one tensor read twice
        helper.make_node(
            "Constant",
            [],
            ["k"],
            name="const",
            value=numpy_helper.from_array(np.array(0.5, dtype=np.float32)),
        ),
        helper.make_node("Add", ["m", "k"], ["a"], name="addk"),
        helper.make_node("Concat", ["r", "s", "a", "s2"], ["y"], name="concat", axis=1),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, hw, hw])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3 * channels, hw, hw])
    return _model(nodes, [x], [y], [w, b], name="branchy")


def symbolic() -> onnx.ModelProto:
    """Relu on an input with a symbolic batch dimension 'N'."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    return _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [x], [y], name="symbolic")


def strings() -> onnx.ModelProto:
    """Identity on a string tensor: an unsupported activation type."""
    x = helper.make_tensor_value_info("x", TensorProto.STRING, [2])
    y = helper.make_tensor_value_info("y", TensorProto.STRING, [2])
    return _model([helper.make_node("Identity", ["x"], ["y"], name="id")], [x], [y], name="strings")


def wide(width: int = 6, seed: int = 0) -> onnx.ModelProto:
    """A fan-out/fan-in block where order matters: x -> width convs of growing size -> concat."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    outs = []
    for i in range(width):
        c = 2 + i
        w = numpy_helper.from_array(rng.standard_normal((c, 2, 1, 1)).astype(np.float32), f"w{i}")
        inits.append(w)
        nodes.append(helper.make_node("Conv", ["x", f"w{i}"], [f"c{i}"], name=f"conv{i}"))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        outs.append(f"r{i}")
    nodes.append(helper.make_node("Concat", outs, ["y"], name="concat", axis=1))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])
    total = sum(2 + i for i in range(width))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, total, 6, 6])
    return _model(nodes, [x], [y], inits, name="wide")


def point_weights_at(proto: onnx.ModelProto, location: str) -> onnx.ModelProto:
    """Make every initializer claim its data lives in external file ``location`` (in place)."""
    for t in proto.graph.initializer:
        t.ClearField("float_data")
        t.raw_data = b""
        t.data_location = TensorProto.EXTERNAL
        t.external_data.add(key="location", value=location)
    return proto
