"""The ONNX rewrite dialect: op roles, and written rewrites that compute what the model computed.

Every written model must (1) have the graph :func:`apply_all` predicts, (2) pass ``onnx.checker``
and (3) give onnxruntime's outputs of the original on seeded random inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from serenity import zoo
from serenity.errors import UnsupportedError
from serenity.formats import Model, load, save
from serenity.formats.onnx_io import from_proto
from serenity.formats.onnx_rewrite import OnnxDialect
from serenity.ir import Graph
from serenity.rewrites.apply import apply_all, apply_rewrite, structure_difference
from serenity.rewrites.match import matches
from serenity.rewrites.records import Rejection, Rewrite, Role
from serenity.runtime.onnxrt import random_inputs, run, session

OPSET = 18


def _init(rng: np.random.Generator, name: str, shape: Sequence[int], fan_in: int = 1) -> TensorProto:
    # Weights of scale 1/sqrt(fan_in) keep outputs near 1, so float32 reassociation stays in atol.
    return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32), name)


def _net(
    channels: Sequence[int],
    nodes: Sequence[onnx.NodeProto],
    inits: Sequence[TensorProto] = (),
    *,
    outputs: Sequence[str | onnx.ValueInfoProto] = ("y",),
    batch: int = 1,
    hw: int = 8,
    pre: str | None = None,
    opset: int = OPSET,
) -> onnx.ModelProto:
    """Inputs ``x{i}`` of ``channels[i]`` channels (through ``pre`` ops if given), concatenated
    into ``X`` by node ``concat``, then ``nodes``; shapes inferred, fully checked."""
    ins = [
        helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, [batch, c, hw, hw])
        for i, c in enumerate(channels)
    ]
    parts = [f"x{i}" for i in range(len(channels))]
    head = []
    if pre:
        head = [helper.make_node(pre, [p], [f"{p}p"], name=f"pre{i}") for i, p in enumerate(parts)]
        parts = [f"{p}p" for p in parts]
    head.append(helper.make_node("Concat", parts, ["X"], name="concat", axis=1))
    outs = [
        helper.make_tensor_value_info(o, TensorProto.FLOAT, None) if isinstance(o, str) else o
        for o in outputs
    ]
    graph = helper.make_graph([*head, *nodes], "t", ins, outs, list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="test")
    m.ir_version = 8
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    onnx.checker.check_model(m, full_check=True)
    return m


def _found(model: Model, graph: Graph | None = None) -> list[Rewrite]:
    """The rewrites :func:`matches` finds on ``graph`` (default: the model's)."""
    g = model.graph if graph is None else graph
    return [m for m in matches(g, OnnxDialect(model)) if isinstance(m, Rewrite)]


def _same_outputs(a: onnx.ModelProto, b: onnx.ModelProto, seed: int = 0, atol: float = 1e-6) -> None:
    sa, sb = a.SerializeToString(), b.SerializeToString()
    feeds = random_inputs(session(sa), seed=seed)
    for want, got in zip(run(sa, feeds), run(sb, feeds), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=atol)


def _verify(model: Model, rewrites: Sequence[Rewrite], seed: int = 0) -> Model:
    """Write ``rewrites``; check structure, checker and onnxruntime outputs; return the result."""
    dialect = OnnxDialect(model)
    out = dialect.materialize(rewrites)
    assert structure_difference(out.graph, apply_all(model.graph, rewrites, dialect)) is None
    onnx.checker.check_model(out.source, full_check=True)
    _same_outputs(model.source, out.source, seed)
    return out


def _types(model: Model) -> list[str]:
    return [op.type for op in model.graph.ops]


# -- channel-wise: Concat -> Conv ------------------------------------------------------------

CONVS: dict[str, dict[str, Any]] = {
    "3x3 stride 2, pads, bias": dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    "3x3 SAME_UPPER, no bias": dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER"),
    "3x3 dilation 2": dict(kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2]),
    "1x1 batch 2": dict(kernel_shape=[1, 1]),
    "5x3 stride (2, 1), uneven pads": dict(kernel_shape=[5, 3], strides=[2, 1], pads=[2, 0, 1, 1]),
}


@pytest.mark.parametrize("case", CONVS)
def test_conv_reading_a_concat_is_split_channel_wise(case: str) -> None:
    rng = np.random.default_rng(1)
    attrs = CONVS[case]
    k = attrs["kernel_shape"]
    channels, c_out = (3, 5, 8), 6
    bias = "no bias" not in case
    inits = [_init(rng, "W", [c_out, 16, *k], fan_in=16 * k[0] * k[1])]
    if bias:
        inits.append(_init(rng, "B", [c_out]))
    conv = helper.make_node("Conv", ["X", "W", *(["B"] if bias else [])], ["y"], name="conv", **attrs)
    model = from_proto(_net(channels, [conv], inits, batch=2 if "batch 2" in case else 1, hw=9))
    (rw,) = _found(model)
    assert (rw.kind, rw.channels, rw.parts) == ("channel", channels, ("x0", "x1", "x2"))
    out = _verify(model, [rw])
    assert _types(out) == ["Conv", "Conv", "Conv", "Add", "Add"]  # the concat is gone
    nodes = {n.name: n for n in out.source.graph.node}
    assert [len(nodes[f"conv/cw{i}"].input) for i in range(3)] == ([3, 2, 2] if bias else [2, 2, 2])
    # R's weight is gone, its slices are new initializers; the bias is shared, not copied.
    inits_out = {t.name: tuple(t.dims) for t in out.source.graph.initializer}
    assert "W" not in inits_out
    assert [inits_out[nodes[f"conv/cw{i}"].input[1]][1] for i in range(3)] == list(channels)


def test_conv_transpose_is_split_channel_wise() -> None:
    rng = np.random.default_rng(2)
    inits = [_init(rng, "W", [7, 4, 3, 3], fan_in=63), _init(rng, "B", [4])]
    node = helper.make_node(
        "ConvTranspose", ["X", "W", "B"], ["y"], name="deconv", strides=[2, 2], pads=[1, 1, 1, 1]
    )
    model = from_proto(_net((3, 4), [node], inits, hw=5))
    (rw,) = _found(model)
    assert rw.kind == "channel"
    _verify(model, [rw])


# -- kernel-wise: per-channel readers -----------------------------------------------------------


def _reader(
    kind: str, c: int, rng: np.random.Generator
) -> tuple[list[onnx.NodeProto], list[TensorProto], int]:
    """Nodes computing ``y`` from ``X`` (``c`` channels), their constants, and the multiplier."""
    n = helper.make_node
    if kind.startswith("depthwise"):
        m = int(kind[-1])
        inits = [_init(rng, "W", [c * m, 1, 3, 3], fan_in=9), _init(rng, "B", [c * m])]
        return (
            [n("Conv", ["X", "W", "B"], ["y"], name="dw", group=c, kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
            inits,
            m,
        )
    consts: dict[str, tuple[list[onnx.NodeProto], list[TensorProto]]] = {
        "MaxPool": ([n("MaxPool", ["X"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])], []),
        "AveragePool": ([n("AveragePool", ["X"], ["y"], kernel_shape=[2, 2], strides=[2, 2])], []),
        "GlobalAveragePool": ([n("GlobalAveragePool", ["X"], ["y"])], []),
        "Mul per channel": ([n("Mul", ["X", "k"], ["y"])], [_init(rng, "k", [c, 1, 1])]),
        "Sub from (1,C,1,1)": ([n("Sub", ["k", "X"], ["y"])], [_init(rng, "k", [1, c, 1, 1])]),
        "Div by (1,)": (
            [n("Div", ["X", "k"], ["y"])],
            [numpy_helper.from_array(np.array([2.0], np.float32), "k")],
        ),
        "Add scalar": (
            [n("Add", ["X", "k"], ["y"])],
            [numpy_helper.from_array(np.array(0.5, np.float32), "k")],
        ),
        "PRelu": ([n("PRelu", ["X", "k"], ["y"])], [_init(rng, "k", [c, 1, 1])]),
        "Clip": (
            [n("Clip", ["X", "lo", "hi"], ["y"])],
            [numpy_helper.from_array(np.array(v, np.float32), nm) for nm, v in (("lo", -0.5), ("hi", 0.7))],
        ),
        "LeakyRelu": ([n("LeakyRelu", ["X"], ["y"], alpha=0.3)], []),
        "InstanceNormalization": (
            [n("InstanceNormalization", ["X", "s", "b"], ["y"])],
            [_init(rng, "s", [c]), _init(rng, "b", [c])],
        ),
    }
    nodes, inits = consts[kind]
    return nodes, inits, 1


KERNEL_READERS = [
    "depthwise1", "depthwise2", "MaxPool", "AveragePool", "GlobalAveragePool", "Mul per channel",
    "Sub from (1,C,1,1)", "Div by (1,)", "Add scalar", "PRelu", "Clip", "LeakyRelu", "InstanceNormalization",
]  # fmt: skip


@pytest.mark.parametrize("kind", KERNEL_READERS)
def test_per_channel_reader_is_split_kernel_wise(kind: str) -> None:
    rng = np.random.default_rng(3)
    channels = (3, 5, 8)
    nodes, inits, m = _reader(kind, sum(channels), rng)
    model = from_proto(_net(channels, nodes, inits, pre="Sigmoid"))
    (rw,) = _found(model)
    assert (rw.kind, rw.multiplier) == ("kernel", m)
    out = _verify(model, [rw])
    assert _types(out).count("Concat") == 1 and _types(out)[-1] == "Concat"  # moved past the reader
    names = {t.name for t in out.source.graph.initializer}
    # Per-channel constants are sliced (the original goes), shared ones are kept as they were.
    for t in inits:
        sliced = len(t.dims) and max(t.dims) == sum(channels) * m
        assert (t.name in names) != bool(sliced), t.name


def test_reduction_with_axes_attribute_is_split_kernel_wise() -> None:
    # opset 17: ReduceMean's axes are an attribute, which the graph records.
    node = helper.make_node("ReduceMean", ["X"], ["y"], axes=[2, 3], keepdims=0)
    model = from_proto(_net((2, 3), [node], opset=17))
    (rw,) = _found(model)
    _verify(model, [rw])


def test_relu_batchnorm_conv_chain_takes_three_rewrites() -> None:
    rng = np.random.default_rng(4)
    c = 3 + 5 + 8
    nodes = [
        helper.make_node("Relu", ["X"], ["r"], name="relu"),
        helper.make_node("BatchNormalization", ["r", "s", "b", "mu", "var"], ["n"], name="bn", epsilon=1e-5),
        helper.make_node("Conv", ["n", "W"], ["y"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    ]
    inits = [_init(rng, nm, [c]) for nm in ("s", "b", "mu")]
    inits += [
        numpy_helper.from_array((1 + rng.random(c)).astype(np.float32), "var"),
        _init(rng, "W", [4, c, 3, 3], 9 * c),
    ]
    model = from_proto(_net((3, 5, 8), nodes, inits))
    dialect, g, seq = OnnxDialect(model), model.graph, []
    while found := _found(model, g):
        seq.append(found[0])
        g = apply_rewrite(g, found[0], dialect)
    assert [(rw.kind, rw.reader) for rw in seq] == [("kernel", "r"), ("kernel", "n"), ("channel", "y")]
    out = _verify(model, seq)
    assert "Concat" not in _types(out)
    assert sorted(_types(out)) == sorted(
        ["Relu"] * 3 + ["BatchNormalization"] * 3 + ["Conv"] * 3 + ["Add"] * 2
    )


@pytest.mark.parametrize("both", [True, False])
def test_a_concat_with_two_readers_goes_only_when_both_are_split(both: bool) -> None:
    nodes = [
        helper.make_node("Relu", ["X"], ["y"], name="relu"),
        helper.make_node("Sigmoid", ["X"], ["z"], name="sig"),
    ]
    model = from_proto(_net((2, 3), nodes, outputs=("y", "z")))
    found = _found(model)
    assert [rw.reader for rw in found] == ["y", "z"]
    seq = [
        found[0],
        *([_found(model, apply_rewrite(model.graph, found[0], OnnxDialect(model)))[0]] if both else []),
    ]
    out = _verify(model, seq)
    assert ("X" in out.graph.tensors) != both
    assert _types(out).count("Concat") == 2  # one per split reader, plus the original if it stays


def test_a_concat_that_is_a_graph_output_stays() -> None:
    model = from_proto(_net((2, 3), [helper.make_node("Relu", ["X"], ["y"])], outputs=("y", "X")))
    out = _verify(model, _found(model))
    assert "X" in out.graph.tensors and _types(out).count("Concat") == 2


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    channels=st.lists(st.integers(1, 8), min_size=2, max_size=5),
    depthwise=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_concats_into_convs_compute_the_same(channels: list[int], depthwise: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    c = sum(channels)
    if depthwise:
        inits = [_init(rng, "W", [c, 1, 3, 3], 9), _init(rng, "B", [c])]
        node = helper.make_node(
            "Conv", ["X", "W", "B"], ["y"], group=c, kernel_shape=[3, 3], pads=[1, 1, 1, 1]
        )
    else:
        inits = [_init(rng, "W", [3, c, 3, 3], 9 * c), _init(rng, "B", [3])]
        node = helper.make_node("Conv", ["X", "W", "B"], ["y"], kernel_shape=[3, 3], strides=[2, 2])
    model = from_proto(_net(channels, [node], inits, hw=6))
    (rw,) = _found(model)
    assert rw.kind == ("kernel" if depthwise else "channel") and rw.channels == tuple(channels)
    _verify(model, [rw], seed=seed)


# -- what is not split, and why ---------------------------------------------------------------

REJECTED = {
    "Conv with group 2": (
        lambda rng: (
            [helper.make_node("Conv", ["X", "W"], ["y"], group=2, kernel_shape=[1, 1])],
            [_init(rng, "W", [4, 4, 1, 1])],
        ),
        "group 2",
    ),
    "Softmax": (lambda rng: ([helper.make_node("Softmax", ["X"], ["y"], axis=1)], []), "Softmax"),
    "spatial Mul": (
        lambda rng: ([helper.make_node("Mul", ["X", "k"], ["y"])], [_init(rng, "k", [1, 8, 8])]),
        "axis 2",
    ),
    "Add of activations": (lambda rng: ([helper.make_node("Add", ["X", "X"], ["y"])], []), "2 activations"),
    "Flatten": (lambda rng: ([helper.make_node("Flatten", ["X"], ["y"])], []), "Flatten"),
    "ReduceMax, axes as a tensor": (
        lambda rng: (
            [helper.make_node("ReduceMax", ["X", "ax"], ["y"])],
            [numpy_helper.from_array(np.array([2, 3], np.int64), "ax")],
        ),
        "axes as a tensor",
    ),
}


@pytest.mark.parametrize("case", REJECTED)
def test_ops_that_are_not_split_say_why(case: str) -> None:
    build, words = REJECTED[case]
    nodes, inits = build(np.random.default_rng(5))
    model = from_proto(_net((3, 5), nodes, inits))
    dialect = OnnxDialect(model)
    role = dialect.role(model.graph, model.graph.ops[-1])
    assert isinstance(role, str) and words in role
    (rej,) = matches(model.graph, dialect)
    assert isinstance(rej, Rejection) and rej.reason == role and rej.reader == "y"


def test_maxpool_with_indices_is_not_split() -> None:
    node = helper.make_node("MaxPool", ["X"], ["y", "i"], kernel_shape=[2, 2])
    indices = helper.make_tensor_value_info("i", TensorProto.INT64, None)
    model = from_proto(_net((3, 5), [node], outputs=("y", indices)))
    assert OnnxDialect(model).role(model.graph, model.graph.ops[-1]) == "MaxPool writes its indices too"


def test_roles_of_a_concat_and_convs() -> None:
    rng = np.random.default_rng(6)
    nodes = [
        helper.make_node("Conv", ["X", "W"], ["a"], name="conv", kernel_shape=[1, 1]),
        helper.make_node("Conv", ["X", "D"], ["b"], name="dw", group=8, kernel_shape=[1, 1]),
    ]
    model = from_proto(
        _net(
            (3, 5), nodes, [_init(rng, "W", [2, 8, 1, 1]), _init(rng, "D", [24, 1, 1, 1])], outputs=("a", "b")
        )
    )
    dialect = OnnxDialect()
    concat, conv, dw = (dialect.role(model.graph, op) for op in model.graph.ops)
    assert concat == Role("concat", 1, 1)
    assert conv == Role("conv", 1, 1)
    assert dw == Role("channelwise", 1, 1, multiplier=3)


# -- constants: Constant nodes, external data, graph-only dialects --------------------------------


def test_constant_node_scale_is_sliced_when_the_model_is_at_hand() -> None:
    value = numpy_helper.from_array(np.arange(1, 6, dtype=np.float32).reshape(5, 1, 1), "v")
    nodes = [
        helper.make_node("Constant", [], ["k"], name="const", value=value),
        helper.make_node("Mul", ["X", "k"], ["y"]),
    ]
    model = from_proto(_net((2, 3), nodes))
    (rw,) = _found(model)
    out = _verify(model, [rw])
    assert "Constant" in _types(out)  # the IR keeps it too: it is an op
    # Without the model, the graph does not say the constant's shape.
    reason = OnnxDialect().role(model.graph, model.graph.ops[-1])
    assert isinstance(reason, str) and "'k'" in reason


def test_graph_only_dialect_judges_but_cannot_write() -> None:
    rng = np.random.default_rng(7)
    model = from_proto(
        _net(
            (2, 3),
            [helper.make_node("Conv", ["X", "W"], ["y"], kernel_shape=[1, 1])],
            [_init(rng, "W", [4, 5, 1, 1])],
        )
    )
    dialect = OnnxDialect()
    (rw,) = [m for m in matches(model.graph, dialect) if isinstance(m, Rewrite)]
    assert dialect.check(model.graph, rw) is None
    assert (
        structure_difference(
            apply_all(model.graph, [rw], dialect), apply_all(model.graph, [rw], OnnxDialect(model))
        )
        is None
    )
    with pytest.raises(UnsupportedError, match="graph alone"):
        dialect.materialize([rw])


def _external(tmp_path: Path, proto: onnx.ModelProto) -> Path:
    path = tmp_path / "src" / "m.onnx"
    path.parent.mkdir()
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)  # save_model moves the data out of the proto it is given
    onnx.save_model(copy, path, save_as_external_data=True, location="m.bin", size_threshold=0)
    return path


def test_external_data_is_sliced_and_saved_beside_the_new_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    nodes = [
        helper.make_node("Relu", ["X"], ["r"]),
        helper.make_node("Conv", ["r", "W", "B"], ["y"], kernel_shape=[1, 1]),
    ]
    proto = _net((2, 3), nodes, [_init(rng, "W", [4, 5, 1, 1]), _init(rng, "B", [4])])
    model = load(_external(tmp_path, proto))
    dialect = OnnxDialect(model)
    g, seq = model.graph, []
    while found := [m for m in matches(g, dialect) if isinstance(m, Rewrite)]:
        seq.append(found[0])
        g = apply_rewrite(g, found[0], dialect)
    out = dialect.materialize(seq)
    assert out.path == model.path and out.info["external_data"] == ["m.bin"]  # B still lives there
    dst = tmp_path / "out" / "r.onnx"
    dst.parent.mkdir()
    save(out, out.graph.listed_order, dst)
    assert (dst.parent / "m.bin").is_file()
    again = load(dst, require_data=True)
    feeds = random_inputs(session(proto.SerializeToString()))
    np.testing.assert_allclose(
        run(dst, feeds)[0], run(proto.SerializeToString(), feeds)[0], rtol=1e-5, atol=1e-6
    )
    assert structure_difference(again.graph, g) is None


def test_missing_external_data_refuses_slicing_but_not_sharing(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    nodes = [
        helper.make_node("Relu", ["X"], ["r"]),
        helper.make_node("Conv", ["r", "W"], ["y"], kernel_shape=[1, 1]),
    ]
    path = _external(tmp_path, _net((2, 3), nodes, [_init(rng, "W", [4, 5, 1, 1])]))
    (path.parent / "m.bin").unlink()
    model = load(path)
    dialect = OnnxDialect(model)
    (relu,) = _found(model)
    out = dialect.materialize([relu])  # Relu has no constant: nothing to read
    assert _types(out).count("Relu") == 2
    (rej,) = matches(out.graph, OnnxDialect(out))
    assert isinstance(rej, Rejection) and "external data 'm.bin'" in rej.reason and "missing" in rej.reason


# -- a zoo network ------------------------------------------------------------------------------


def test_every_rewrite_of_a_zoo_network_keeps_its_outputs() -> None:
    model = from_proto(zoo.build("swiftnet_cell_a"))
    original, steps = model, 0
    while found := _found(model):
        dialect = OnnxDialect(model)
        out = dialect.materialize(found[:1])
        assert structure_difference(out.graph, apply_rewrite(model.graph, found[0], dialect)) is None
        model, steps = out, steps + 1
    assert steps >= 5
    onnx.checker.check_model(model.source, full_check=True)
    # Channel-wise splits reassociate sums of 64+ terms that cancel to values near 0.01: float32
    # rounding is then ~eps * sum|terms| ~ 1e-6 absolute, beyond the hand-built cases' atol.
    _same_outputs(original.source, model.source, atol=1e-5)


def test_a_node_outside_the_default_domain_is_not_written() -> None:
    model = from_proto(_net((2, 3), [helper.make_node("Relu", ["X"], ["y"])]))
    model.source.graph.node[-1].domain = "com.example"  # the IR does not record domains
    (rej,) = matches(model.graph, OnnxDialect(model))
    assert isinstance(rej, Rejection) and "domain 'com.example'" in rej.reason
    assert isinstance(matches(model.graph, OnnxDialect())[0], Rewrite)  # a graph alone cannot tell


@pytest.mark.parametrize("reader", ["Conv", "Relu"])
def test_a_concatenation_inside_a_concatenation_is_split_twice(reader: str) -> None:
    # Concat(Concat(x0, x1, x2), x2): splitting the outer one gives a branch reading the inner one.
    rng = np.random.default_rng(10)
    inner = helper.make_node("Concat", ["X", "x2"], ["X2"], name="outer", axis=1)
    if reader == "Conv":
        node = helper.make_node(
            "Conv", ["X2", "W", "B"], ["y"], name="r", kernel_shape=[3, 3], pads=[1, 1, 1, 1]
        )
        inits = [_init(rng, "W", [4, 13, 3, 3], 117), _init(rng, "B", [4])]
    else:
        node, inits = helper.make_node("Relu", ["X2"], ["y"], name="r"), []
    model = from_proto(_net((2, 3, 4), [inner, node], inits))
    dialect, g, seq = OnnxDialect(model), model.graph, []
    while found := _found(model, g):
        seq.append(found[0])
        g = apply_rewrite(g, found[0], dialect)
    assert [rw.concat for rw in seq] == ["X2", "X"]
    out = _verify(model, seq)
    # Channel-wise leaves no concatenation; kernel-wise moves both past the Relus, still nested.
    assert _types(out).count(reader) == 4 and _types(out).count("Concat") == (0 if reader == "Conv" else 2)


def test_a_symbolic_batch_stays_symbolic() -> None:
    rng = np.random.default_rng(11)
    nodes = [
        helper.make_node("Relu", ["X"], ["r"]),
        helper.make_node("Conv", ["r", "W"], ["y"], kernel_shape=[1, 1]),
    ]
    proto = _net((2, 3), nodes, [_init(rng, "W", [4, 5, 1, 1])])
    for vi in proto.graph.input:
        vi.type.tensor_type.shape.dim[0].dim_param = "N"
    del proto.graph.value_info[:]
    for vi in proto.graph.output:
        vi.type.tensor_type.ClearField("shape")
    proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    model = from_proto(proto, dims={"N": 2})
    dialect, g, seq = OnnxDialect(model), model.graph, []
    while found := _found(model, g):
        seq.append(found[0])
        g = apply_rewrite(g, found[0], dialect)
    out = dialect.materialize(seq)
    assert structure_difference(out.graph, g) is None
    declared = {vi.name: vi.type.tensor_type.shape.dim[0].dim_param for vi in out.source.graph.value_info}
    assert declared["r/kw0"] == declared["y/cw1"] == "N"
    a, b = proto.SerializeToString(), out.source.SerializeToString()
    feeds = random_inputs(session(a), dims={"N": 3})  # not the batch it was loaded with
    np.testing.assert_allclose(run(b, feeds)[0], run(a, feeds)[0], rtol=1e-5, atol=1e-6)
