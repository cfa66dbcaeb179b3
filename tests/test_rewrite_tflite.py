"""The TFLite dialect of identity graph rewriting: roles, checks, and files that TFLite Micro
runs to the same outputs (float: to rounding; int8 kernel-wise: bit for bit; int8 channel-wise
with ``allow_requantize``: within a few quantization steps).

Every rewritten file must parse back to the graph :func:`apply_all` makes (``structure_difference``
is ``None``), and matching on that file must find what matching on the rewritten IR finds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

from serenity.errors import GraphError, ModelFormatError
from serenity.formats import Model, load
from serenity.formats.tflite_io import parse_tflite
from serenity.formats.tflite_plan import embed_plan, pack_model, read_offline_plan
from serenity.formats.tflite_rewrite import TFLiteDialect, partial_quantization
from serenity.ir import Graph
from serenity.rewrites.apply import apply_all, structure_difference
from serenity.rewrites.match import matches
from serenity.rewrites.records import Rejection, Rewrite, Role
from serenity.runtime import tflm
from tflite_graphs import TFLiteBuilder

# The corpus bundled with the repository (the same files as ../shared/models), so no test skips.
MODELS = Path(__file__).resolve().parents[1] / "examples"
REQUANTIZE = "channel-wise partitioning moves int8 rounding"


def split_all(model: Model, dialect: TFLiteDialect) -> tuple[list[Rewrite], list[Rejection], Graph]:
    """Apply the first rewrite ``matches`` finds, re-match, repeat; return what was applied,
    the rejections left at the end, and the rewritten IR."""
    graph, applied = model.graph, list[Rewrite]()
    while True:
        found = matches(graph, dialect)
        todo = [r for r in found if isinstance(r, Rewrite)]
        if not todo:
            return applied, [r for r in found if isinstance(r, Rejection)], graph
        applied.append(todo[0])
        graph = apply_all(graph, [todo[0]], dialect)


def key(found: list[Rewrite | Rejection]) -> list[object]:
    """Matches without the op names (which differ between a file and the IR)."""
    return [r if isinstance(r, Rewrite) else (r.concat, r.reader) for r in found]


def rewrite_and_compare(
    model: Model, dialect: TFLiteDialect, *, seeds: int = 1
) -> tuple[Model, list[Rewrite], float]:
    """Split everything, write the file, check its structure, run both in TFLM.

    Returns:
        The rewritten model, the rewrites, and the largest absolute output difference.
    """
    applied, _, graph = split_all(model, dialect)
    out = dialect.materialize(applied)
    assert structure_difference(out.graph, graph) is None
    assert key(matches(out.graph, TFLiteDialect(out, allow_requantize=dialect.allow_requantize))) == key(
        matches(graph, dialect)
    )
    worst = 0.0
    for seed in range(seeds):
        data = model.source.data
        inputs = tflm.random_inputs(data, seed)
        for a, b in zip(tflm.run(data, inputs), tflm.run(out.source.data, inputs), strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype
            if a.dtype == np.float32:
                np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
            worst = max(worst, float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()))
    return out, applied, worst


def parsed(b: TFLiteBuilder, name: str = "synthetic") -> Model:
    return parse_tflite(b.build(), Path(f"{name}.tflite"))


def three_parts(
    b: TFLiteBuilder, shape: tuple[int, ...] = (1, 10, 10, 4), channels: tuple[int, ...] = (3, 5, 8)
) -> str:
    """An input, one 1x1 conv per part (uneven channels), their concatenation 'X'."""
    x = b.input("x", shape)
    parts = [b.conv(x, c, f"part{i}", k=1, act="RELU") for i, c in enumerate(channels)]
    return b.concat(parts, "X")


# -- real models ----------------------------------------------------------------------------------


def test_nas_cells_float_every_match() -> None:
    model = load(MODELS / "nas_cells_float.tflite")
    dialect = TFLiteDialect(model)
    out, applied, _ = rewrite_and_compare(model, dialect)
    kinds = {(r.kind, r.reader) for r in applied}
    # CONCATENATION -> RELU -> two CONV_2D: kernel-wise on the RELU, channel-wise on both convs.
    relu = "nas_cells_1/re_lu_12_1/Relu"
    assert ("kernel", relu) in kinds
    assert {r.reader for r in applied if r.kind == "channel" and r.concat == relu} == {
        "nas_cells_1/re_lu_14_1/Relu;nas_cells_1/conv2d_14_1/convolution",
        "nas_cells_1/conv2d_13_1/convolution1",
    }
    g = out.graph
    assert relu not in g.tensors and "nas_cells_1/concatenate_1_1/concat" not in g.tensors
    # Only the concat the MEAN's split leaves at the graph output remains.
    concats = [op for op in g.ops if op.type == "CONCATENATION"]
    assert [op.outputs for op in concats] == [g.outputs]
    assert sorted(r.kind for r in applied) == ["channel"] * 3 + ["kernel"] * 3
    # role() reads every intermediate graph as it reads the file written for it.
    for k in range(1, len(applied)):
        mid = dialect.materialize(applied[:k])
        ir = apply_all(model.graph, applied[:k], dialect)
        assert key(matches(mid.graph, TFLiteDialect(mid))) == key(matches(ir, dialect))


@pytest.mark.parametrize("name", ["nas_cells_int8", "fan_concat_int8", "inception_block_int8"])
def test_int8_kernel_wise_is_bit_exact(name: str) -> None:
    model = load(MODELS / f"{name}.tflite")
    dialect = TFLiteDialect(model)
    _, applied, worst = rewrite_and_compare(model, dialect)
    assert worst == 0.0
    assert all(r.kind == "kernel" for r in applied)
    _, rejected, graph = split_all(model, dialect)
    convs = [r for r in rejected if graph.ops[graph.tensors[r.reader].producer or 0].type == "CONV_2D"]
    assert convs and all(r.reason.startswith(REQUANTIZE) and "--allow-requantize" in r.reason for r in convs)


@pytest.mark.parametrize("name", ["nas_cells_int8", "fan_concat_int8", "inception_block_int8"])
def test_int8_channel_wise_with_requantize(name: str, record_property: Callable[[str, object], None]) -> None:
    model = load(MODELS / f"{name}.tflite")
    dialect = TFLiteDialect(model, allow_requantize=True)
    out, applied, worst = rewrite_and_compare(model, dialect, seeds=2)
    assert any(r.kind == "channel" for r in applied)
    record_property("max_abs_int8_steps", worst)
    print(f"{name}: {len(applied)} rewrites, max |difference| {worst:g} int8 steps")
    assert worst <= 4  # measured: 2 (fan_concat), 3 (inception_block), 1 (nas_cells)
    # The partial sums are zero-centred and as wide as the output's range.
    sg = fb.ModelT.InitFromObj(fb.Model.GetRootAs(out.source.data, 0)).subgraphs[0]
    cw = next(t for t in sg.tensors if t.name.decode().endswith("/cw0"))
    assert list(cw.quantization.zeroPoint) == [0]


def test_partial_quantization_widens_one_sided_ranges() -> None:
    q = fb.QuantizationParametersT()
    q.scale, q.zeroPoint = np.array([0.01], np.float32), np.array([-128])
    p = partial_quantization(q, "int8")
    assert p.zeroPoint.tolist() == [0] and p.scale[0] == pytest.approx(2.55 / 127)
    assert q.zeroPoint.tolist() == [-128]  # the input is not changed
    assert partial_quantization(None, "float32") is None


# -- synthetic float models -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "batch"),
    [(2, "SAME", 1, 1), (1, "VALID", 1, 1), (2, "VALID", 1, 1), (1, "SAME", 2, 1), (1, "SAME", 1, 2)],
)
def test_conv_channel_wise(stride: int, padding: str, dilation: int, batch: int) -> None:
    b = TFLiteBuilder(seed=stride * 10 + dilation + batch)
    x = three_parts(b, (batch, 11, 11, 4))
    b.output(b.conv(x, 6, "Y", stride=stride, padding=padding, dilation=dilation, act="RELU6"))
    model = parsed(b)
    out, applied, _ = rewrite_and_compare(model, TFLiteDialect(model))
    assert [(r.kind, r.channels) for r in applied] == [("channel", (3, 5, 8))]
    types = [op.type for op in out.graph.ops]
    assert types.count("ADD") == 2 and "CONCATENATION" not in types


def test_conv_without_bias_and_two_parts() -> None:
    b = TFLiteBuilder(seed=3)
    x = three_parts(b, channels=(2, 7))
    b.output(b.conv(x, 5, "Y", k=1, bias=False))
    model = parsed(b)
    _, applied, _ = rewrite_and_compare(model, TFLiteDialect(model))
    assert [r.kind for r in applied] == ["channel"]


@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_kernel_wise(multiplier: int) -> None:
    b = TFLiteBuilder(seed=multiplier)
    x = three_parts(b)
    b.output(b.depthwise(x, "Y", multiplier=multiplier, act="RELU"))
    model = parsed(b)
    out, applied, _ = rewrite_and_compare(model, TFLiteDialect(model))
    assert [(r.kind, r.multiplier) for r in applied] == [("kernel", multiplier)]
    assert [t.shape[3] for n, t in out.graph.tensors.items() if "/kw" in n and not t.constant] == [
        3 * multiplier, 5 * multiplier, 8 * multiplier,
    ]  # fmt: skip


@pytest.mark.parametrize("opcode", ["MAX_POOL_2D", "AVERAGE_POOL_2D"])
def test_pool_then_conv(opcode: str) -> None:
    b = TFLiteBuilder(seed=7)
    x = three_parts(b)
    b.output(b.conv(b.pool(opcode, x, "P"), 4, "Y", k=1))
    model = parsed(b)
    out, applied, _ = rewrite_and_compare(model, TFLiteDialect(model))
    assert [(r.kind, r.reader) for r in applied] == [("kernel", "P"), ("channel", "Y")]
    assert "X" not in out.graph.tensors and "P" not in out.graph.tensors


def test_mean_without_keep_dims_moves_the_channel_axis() -> None:
    b = TFLiteBuilder(seed=8)
    x = three_parts(b)
    b.output(b.reduce("MEAN", x, "Y", axes=[1, 2]))
    model = parsed(b)
    out, applied, _ = rewrite_and_compare(model, TFLiteDialect(model))
    assert [(r.kind, r.out_axis) for r in applied] == [("kernel", 1)]
    assert out.graph.tensors["Y/kw1"].shape == (1, 5)


def test_per_channel_mul_and_leaky_relu() -> None:
    b = TFLiteBuilder(seed=9)
    x = three_parts(b)
    scale = b.const("scale", np.linspace(-2, 2, 16))
    b.op("MUL", [x, scale], [b.tensor("M", (1, 10, 10, 16))])
    b.op("LEAKY_RELU", ["M"], [b.tensor("Y", (1, 10, 10, 16))])
    b.sg.operators[-1].builtinOptionsType = fb.BuiltinOptions.LeakyReluOptions
    b.sg.operators[-1].builtinOptions = fb.LeakyReluOptionsT()
    b.sg.operators[-1].builtinOptions.alpha = 0.2
    b.output("Y")
    model = parsed(b)
    out, applied, _ = rewrite_and_compare(model, TFLiteDialect(model))
    assert [(r.kind, r.reader) for r in applied] == [("kernel", "M"), ("kernel", "Y")]
    assert [op.type for op in out.graph.ops].count("CONCATENATION") == 1


def test_concat_read_by_two_readers() -> None:
    b = TFLiteBuilder(seed=10)
    x = three_parts(b)
    b.output(b.conv(x, 4, "Y1", k=1))
    b.output(b.pool("MAX_POOL_2D", x, "Y2"))
    model = parsed(b)
    dialect = TFLiteDialect(model)
    first = [r for r in matches(model.graph, dialect) if isinstance(r, Rewrite)]
    assert [r.reader for r in first] == ["Y1", "Y2"]
    half = dialect.materialize(first[:1])
    assert "X" in half.graph.tensors  # still read by the pool
    assert structure_difference(half.graph, apply_all(model.graph, first[:1], dialect)) is None
    out, applied, _ = rewrite_and_compare(model, dialect)
    assert len(applied) == 2 and "X" not in out.graph.tensors


def test_nested_concats_split_twice() -> None:
    """A part that is itself a concatenation: the copies of the split op are split again, and
    their constants (already sliced in the file) are sliced once more."""
    b = TFLiteBuilder(seed=11)
    x = b.input("x", (1, 8, 8, 4))
    a = b.concat([b.conv(x, 3, "a0", k=1), b.conv(x, 5, "a1", k=1)], "A")
    c = b.concat([a, b.conv(x, 6, "c1", k=1)], "C")
    b.output(b.conv(b.depthwise(c, "D", multiplier=2), 3, "Y", k=1))
    model = parsed(b)
    out, applied, _ = rewrite_and_compare(model, TFLiteDialect(model))
    assert [(r.kind, r.reader) for r in applied] == [
        ("kernel", "D"), ("kernel", "D/kw0"), ("channel", "Y"), ("channel", "Y/cw0"),
    ]  # fmt: skip
    assert not [op for op in out.graph.ops if op.type == "CONCATENATION"]


# -- roles, checks, errors ------------------------------------------------------------------------


def test_roles_name_what_cannot_be_split() -> None:
    b = TFLiteBuilder(seed=12)
    x = three_parts(b, channels=(4, 4))
    w = b.random("fc/w", (3, 8))
    b.op("RESHAPE", [x], [b.tensor("flat", (100, 8))])
    b.op("FULLY_CONNECTED", ["flat", w, None], [b.tensor("fc", (100, 3))])
    b.output("fc")
    b.output(b.reduce("MEAN", x, "chan_mean", axes=[3], keep_dims=True))
    g = b.random("grouped/filter", (4, 1, 1, 4))  # 8 input channels, filter reads 4: two groups
    b.op("CONV_2D", [x, g, None], [b.tensor("grouped", (1, 10, 10, 4))], padding=0, strideH=1, strideW=1)
    b.output("grouped")
    model = parsed(b)
    dialect = TFLiteDialect(model)
    reasons = {r.reader: r.reason for r in matches(model.graph, dialect) if isinstance(r, Rejection)}
    assert (
        "RESHAPE" in reasons["flat"]
        and "neither a one-group convolution nor computed per channel" in reasons["flat"]
    )
    assert "include the batch or channel axis" in reasons["chan_mean"]
    assert "2 groups" in reasons["grouped"]
    by_type = {op.type: dialect.role(model.graph, op) for op in model.graph.ops}
    fc, concat = by_type["FULLY_CONNECTED"], by_type["CONCATENATION"]
    assert isinstance(fc, str) and fc.endswith("is neither a one-group convolution nor computed per channel")
    assert concat == Role("concat", 3, 3)


def test_concat_on_another_axis_or_with_activation_is_rejected() -> None:
    b = TFLiteBuilder(seed=13)
    x = b.input("x", (1, 6, 6, 4))
    p = [b.conv(x, 4, f"p{i}", k=1) for i in range(2)]
    b.output(b.pool("MAX_POOL_2D", b.concat(p, "H", axis=1), "Y1"))
    b.concat(p, "R")
    b.sg.operators[-1].builtinOptions.fusedActivationFunction = fb.ActivationFunctionType.RELU
    b.output(b.pool("MAX_POOL_2D", "R", "Y2"))
    model = parsed(b)
    found = {r.reader: r for r in matches(model.graph, TFLiteDialect(model))}
    assert isinstance(found["Y1"], Rejection) and "joins axis 1" in found["Y1"].reason
    assert isinstance(found["Y2"], Rejection) and "fused activation RELU" in found["Y2"].reason


def test_requantizing_concat_is_rejected() -> None:
    model = load(MODELS / "fan_concat_int8.tflite")
    mt = model.source.model_t()
    part = mt.subgraphs[0].operators[8].inputs[1]
    q = mt.subgraphs[0].tensors[part].quantization
    q.scale = q.scale * 2
    changed = parse_tflite(pack_model(mt), Path("fan_concat_requant.tflite"))
    (found,) = matches(changed.graph, TFLiteDialect(changed, allow_requantize=True))
    assert isinstance(found, Rejection)
    assert found.reason.startswith(
        "part 'fan_concat_1/conv2d_2_2/convolution1' is quantized with scale 0.0178"
    )
    assert "(the concatenation requantizes)" in found.reason


def test_materialize_refuses_a_stale_rewrite() -> None:
    b = TFLiteBuilder(seed=14)
    b.output(b.pool("MAX_POOL_2D", three_parts(b), "Y"))
    model = parsed(b)
    dialect = TFLiteDialect(model)
    (rw,) = matches(model.graph, dialect)
    assert isinstance(rw, Rewrite)
    with pytest.raises(GraphError, match="does not read 'X'"):
        dialect.materialize([rw, rw])  # after the first, a CONCATENATION writes 'Y'


def test_dialect_needs_a_tflite_model() -> None:
    model = Model(graph=Graph("g", [], [], [], []), format="onnx", path=Path("m.onnx"), source=None)
    with pytest.raises(ModelFormatError, match=r"not a \.tflite model"):
        TFLiteDialect(model)


def test_materialize_drops_an_offline_plan_and_keeps_signatures() -> None:
    model = load(MODELS / "fan_concat_float.tflite")
    planned = parse_tflite(embed_plan(model, model.graph.listed_order, {}), Path("planned.tflite"))
    assert read_offline_plan(planned.source.data) is not None
    dialect = TFLiteDialect(planned)
    applied, _, _ = split_all(planned, dialect)
    out = dialect.materialize(applied)
    assert read_offline_plan(out.source.data) is None
    mt = out.source.model_t()
    sig = mt.signatureDefs[0]
    sg = mt.subgraphs[0]
    assert [sg.tensors[m.tensorIndex].name.decode() for m in sig.outputs] == list(out.graph.outputs)
    assert [sg.tensors[m.tensorIndex].name.decode() for m in sig.inputs] == list(out.graph.inputs)
