"""The TFLite adapter of patch-based execution: windows read from the file, tiled files that
parse back to ``tiled_graph`` and run bit for bit as the original in TFLite Micro (int8, float).

Models: the MobileNetV2 stem (shared corpus, else ``examples/stem``) and seeded random stacks of
convolutions (kernel 1-5, stride 1-2, dilation, SAME/VALID), depthwise convolutions
(multiplier 1-2), pools, residual adds, channel concatenations and activations, built through
the schema's object API and quantized to int8 here (per-channel filters, int32 biases, every
activation its own scale and zero point).
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

from serenity.formats import Model, load
from serenity.formats.tflite_bytes import permute_operators
from serenity.formats.tflite_io import parse_tflite
from serenity.formats.tflite_plan import embed_plan, pack_model, read_offline_plan
from serenity.formats.tflite_tiling import TfliteSpatialDialect, write_tiled_tflite
from serenity.memory import simulate
from serenity.planning import PLANNERS, check_plan
from serenity.planning.target import target_buffers
from serenity.rewrites.apply import structure_difference
from serenity.rewrites.tiling import Box, TilePlan, TilingError, plan_tiles, split_candidates, tiled_graph
from serenity.runtime import tflm
from serenity.schedulers import schedule
from tflite_graphs import TFLiteBuilder

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "models" / "stem"
STEM_DIR = _SHARED if _SHARED.is_dir() else Path(__file__).resolve().parents[1] / "examples" / "stem"


def stem_path(kind: str) -> Path:
    return STEM_DIR / f"mobilenet_v2_035_96_{kind}.tflite"


@cache
def stem(kind: str) -> Model:
    return load(stem_path(kind))


@cache
def stem_reference(kind: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Seeded inputs and the original file's outputs in TFLM (one child per model)."""
    path = stem_path(kind)
    inputs = tflm.random_inputs(path, seed=3)
    return inputs, tflm.run(path, inputs)


def assert_identical(expected: list[np.ndarray], got: list[np.ndarray]) -> None:
    assert len(expected) == len(got)
    for a, b in zip(expected, got, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes(), f"max |diff| {np.max(np.abs(a.astype(float) - b.astype(float)))}"


def tile(model: Model, split: str, grid: tuple[int, int]) -> tuple[TilePlan, bytes, Model]:
    """Plan, write and parse back; the written IR must be the tiled graph, op for op."""
    dialect = TfliteSpatialDialect(model)
    plan = plan_tiles(model.graph, dialect, split, grid)
    data = write_tiled_tflite(model, plan)
    written = parse_tflite(data, Path("tiled.tflite"))
    target = tiled_graph(model.graph, plan, dialect)
    assert structure_difference(written.graph, target) is None
    acts = {n for n, t in target.tensors.items() if t.is_activation}
    assert [(op.type, tuple(n for n in op.inputs if n in acts), op.outputs) for op in written.graph.ops] == [
        (op.type, tuple(n for n in op.inputs if n in acts), op.outputs) for op in target.ops
    ]
    return plan, data, written


# -- windows ----------------------------------------------------------------------------------


def test_stem_windows_follow_the_file_options() -> None:
    m = stem("int8")
    d = TfliteSpatialDialect(m)
    g = m.graph
    first = d.window(g, g.ops[0])  # 3x3 stride 2 SAME, 96 -> 48: total 1, all after
    assert not isinstance(first, str)
    assert (first.kind, first.kernel, first.stride, first.pads, first.groups) == (
        "conv", (3, 3), (2, 2), (0, 0, 1, 1), 1,
    )  # fmt: skip
    dw = d.window(g, g.ops[1])  # depthwise 3x3 stride 1 SAME: one each side
    assert not isinstance(dw, str)
    assert (dw.kind, dw.pads, dw.groups) == ("conv", (1, 1, 1, 1), 16)
    add = d.window(g, g.ops[9])  # residual ADD of two activations
    assert not isinstance(add, str) and (add.kind, add.data_inputs) == ("pointwise", (0, 1))
    for k in (62, 63):  # MEAN, FULLY_CONNECTED
        why = d.window(g, g.ops[k])
        assert isinstance(why, str) and g.ops[k].type in why and g.ops[k].name in why


@pytest.mark.parametrize("seed", range(4))
def test_same_padding_is_tflites(seed: int) -> None:
    """Random sizes, kernels, strides and dilations: the window's pads are TFLite's SAME
    padding, and the window over the whole output reads exactly the padded image."""
    rng = np.random.default_rng(seed)
    b = TFLiteBuilder(seed)
    x = b.input("x", (1, int(rng.integers(5, 20)), int(rng.integers(5, 20)), 2))
    cases = []
    for i in range(6):
        k, s = int(rng.integers(1, 6)), int(rng.integers(1, 4))
        d = int(rng.integers(1, 3)) if s == 1 else 1
        cases.append((b.conv(x, 2, f"c{i}", k=k, stride=s, dilation=d, padding="SAME"), k, s, d))
    for i, (k, s) in enumerate(((2, 2), (3, 2), (3, 1))):
        cases.append((b.pool("MAX_POOL_2D", x, f"p{i}", k=k, stride=s, padding="SAME"), k, s, 1))
    for name, *_ in cases:
        b.output(name)
    m = parse_tflite(b.build(), Path("same.tflite"))
    dialect = TfliteSpatialDialect(m)
    h, w = m.graph.tensors[x].shape[1:3]
    for name, k, s, d in cases:
        op = m.graph.ops[m.graph.tensors[name].producer]  # type: ignore[index]
        win = dialect.window(m.graph, op)
        assert not isinstance(win, str)
        oh, ow = m.graph.tensors[name].shape[1:3]
        assert (oh, ow) == (math.ceil(h / s), math.ceil(w / s))
        expect = []
        for n_in, n_out in ((h, oh), (w, ow)):
            total = max((n_out - 1) * s + (k - 1) * d + 1 - n_in, 0)
            expect.append((total // 2, total - total // 2))
        assert win.pads == (expect[0][0], expect[1][0], expect[0][1], expect[1][1])
        need = win.need(Box(0, oh, 0, ow))
        assert (need.r0, need.c0) == (-win.pads[0], -win.pads[1])
        assert need.r1 <= h + win.pads[2] and need.c1 <= w + win.pads[3]


# -- the stem model ---------------------------------------------------------------------------

STEM_CASES = [
    ("int8", 2, (2, 2)),
    ("int8", 5, (3, 2)),
    ("int8", 9, (4, 4)),
    ("int8", 12, (2, 3)),
    ("float", 4, (2, 2)),
    ("float", 9, (3, 2)),
    ("float", 12, (4, 4)),
]


@pytest.mark.parametrize(("kind", "op", "grid"), STEM_CASES)
def test_stem_tiles_run_bit_identical(kind: str, op: int, grid: tuple[int, int]) -> None:
    m = stem(kind)
    split = m.graph.ops[op].outputs[0]
    plan, data, written = tile(m, split, grid)
    assert plan.macs_after > plan.macs_before > 0
    assert (written.graph.inputs, written.graph.outputs) == (m.graph.inputs, m.graph.outputs)
    inputs, expected = stem_reference(kind)
    assert_identical(expected, tflm.run(data, inputs))


def quant(t: Any) -> tuple[tuple[float, ...], tuple[int, ...], int]:
    q = t.quantization
    if q is None or q.scale is None:
        return ((), (), 0)
    zeros = () if q.zeroPoint is None else tuple(int(z) for z in q.zeroPoint)
    return tuple(float(s) for s in q.scale), zeros, int(q.quantizedDimension)


def test_stem_quantization_copied_to_every_new_tensor() -> None:
    m = stem("int8")
    split = m.graph.ops[12].outputs[0]
    _, data, _ = tile(m, split, (3, 3))
    before = {t.name.decode(): t for t in m.source.model_t().subgraphs[0].tensors}
    after = fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0)).subgraphs[0]
    new = 0
    for t in after.tensors:
        name = t.name.decode()
        base = name.split("@")[0]
        if "@" in name and not name.endswith(("/begin", "/end", "/strides", "/paddings")):
            new += 1
            assert t.type == before[base].type == fb.TensorType.INT8
            assert quant(t) == quant(before[base]) and quant(t)[0], name
    assert new > 9 * 12
    # PAD pads int8 with its output's zero point: the same as its input's, the conv's zero.
    codes = fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0)).operatorCodes
    pads = [op for op in after.operators if codes[op.opcodeIndex].builtinCode == fb.BuiltinOperator.PAD]
    assert pads
    for op in pads:
        assert quant(after.tensors[op.inputs[0]]) == quant(after.tensors[op.outputs[0]])


def test_stem_keeps_io_and_signature_and_drops_a_stale_plan() -> None:
    m = stem("int8")
    g = m.graph
    res = schedule(g, "greedy")
    offsets = target_buffers(g, res.order, fmt="tflite", alignment=16)
    plan = PLANNERS["tflm-greedy"](list(offsets.buffers))
    planned = parse_tflite(embed_plan(m, res.order, offsets.tensor_offsets(plan.offsets)), m.path)  # type: ignore[arg-type]
    assert read_offline_plan(planned.source.data) is not None
    _, data, _ = tile(planned, g.ops[5].outputs[0], (2, 2))
    assert read_offline_plan(data) is None
    mt = fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0))
    sig = mt.signatureDefs[0]
    names = [t.name.decode() for t in mt.subgraphs[0].tensors]
    assert [names[s.tensorIndex] for s in sig.inputs] == list(g.inputs)
    assert [names[s.tensorIndex] for s in sig.outputs] == list(g.outputs)
    inputs, expected = stem_reference("int8")
    assert_identical(expected, tflm.run(data, inputs))


def test_stem_scheduled_tiles_run_in_the_arena_of_their_plan() -> None:
    """Schedule the tiled graph, write the file in that order with an exact arena plan: TFLM's
    arena is the plan, at or below half the listed order's, with the same outputs."""
    m = stem("int8")
    dialect = TfliteSpatialDialect(m)
    plan = plan_tiles(m.graph, dialect, m.graph.ops[12].outputs[0], (4, 4))
    res = schedule(tiled_graph(m.graph, plan, dialect), "optimal", time_limit=10)
    written = parse_tflite(write_tiled_tflite(m, plan), m.path)  # type: ignore[arg-type]
    assert simulate(written.graph, res.order).peak == res.peak
    bufs = target_buffers(written.graph, res.order, fmt="tflite", alignment=16)
    arena = PLANNERS["exact"](list(bufs.buffers), time_limit=20)
    check_plan(list(bufs.buffers), arena.offsets)
    data = embed_plan(written, res.order, bufs.tensor_offsets(arena.offsets))
    inputs, expected = stem_reference("int8")
    run = tflm.execute_planned(data, inputs)
    assert run.honoured and run.measured == arena.arena
    assert 2 * run.measured <= tflm.arena_bytes(stem_path("int8"))
    assert_identical(expected, list(run.result.outputs))
    unplanned = permute_operators(written.source, res.order)
    assert_identical(expected, tflm.run(unplanned, inputs))


def test_stem_prefixes_that_cannot_be_tiled_say_why() -> None:
    m = stem("int8")
    g = m.graph
    d = TfliteSpatialDialect(m)
    reasons = dict(split_candidates(g, d))
    read_after = g.ops[7].outputs[0]  # block 2: the residual input is read by the ADD after it
    why = reasons[read_after]
    assert why is not None and "9:ADD" in why
    with pytest.raises(TilingError, match="9:ADD"):
        plan_tiles(g, d, read_after, (2, 2))
    with pytest.raises(TilingError, match="rank 2"):
        plan_tiles(g, d, g.ops[62].outputs[0], (2, 2))  # MEAN output
    assert reasons[g.ops[12].outputs[0]] is None


# -- random stacks, float and int8 ------------------------------------------------------------


def random_stack(seed: int) -> tuple[TFLiteBuilder, str]:
    """A seeded stack of 3-6 spatial layers on a small image; returns the builder and the last
    tensor of the stack (the split), which one more 1x1 convolution reads."""
    rng = np.random.default_rng(seed)
    b = TFLiteBuilder(seed)
    x = b.input("x", (1, int(rng.integers(13, 21)), int(rng.integers(13, 21)), int(rng.integers(2, 5))))
    kinds = ["conv", "depthwise", "maxpool", "avgpool", "residual", "branch", "unary", "addconst"]
    for i in range(int(rng.integers(3, 7))):
        h, w, c = b.shapes[x][1:]
        kind = str(rng.choice(kinds))
        small = min(h, w) < 8
        name = f"l{i}"
        if kind == "conv":
            s = 1 if small else int(rng.integers(1, 3))
            k = int(rng.choice([1, 3, 5]))
            dil = int(rng.integers(1, 3)) if s == 1 and k == 3 and not small else 1
            pad = "VALID" if rng.random() < 0.3 and min(h, w) > (k - 1) * dil + 4 else "SAME"
            x = b.conv(x, int(rng.integers(2, 6)), name, k=k, stride=s, dilation=dil, padding=pad,
                       act=str(rng.choice(["NONE", "RELU", "RELU6"])))  # fmt: skip
        elif kind == "depthwise":
            s = 1 if small else int(rng.integers(1, 3))
            x = b.depthwise(x, name, multiplier=int(rng.integers(1, 3)), k=3, stride=s,
                            act=str(rng.choice(["NONE", "RELU6"])))  # fmt: skip
        elif kind == "maxpool":
            k, s = (2, 2) if rng.random() < 0.5 else (3, 1 if small else 2)
            x = b.pool("MAX_POOL_2D", x, name, k=k, stride=s, padding=str(rng.choice(["SAME", "VALID"])))
        elif kind == "avgpool":  # TFLM divides SAME-padded windows by their in-image count: VALID only
            x = b.pool("AVERAGE_POOL_2D", x, name, k=2, stride=1 if small else 2, padding="VALID")
        elif kind == "residual":
            y = b.conv(x, c, f"{name}/conv", k=3, act="RELU")
            b.op("ADD", [x, y], [b.tensor(name, b.shapes[x])])
            x = name
        elif kind == "branch":
            a = b.conv(x, int(rng.integers(1, 4)), f"{name}/a", k=1)
            d = b.depthwise(x, f"{name}/b", k=3)
            x = b.concat([a, d], name)
        elif kind == "unary":
            x = b.unary(str(rng.choice(["RELU", "RELU6", "LOGISTIC"])), x, name)
        else:  # an ADD or MUL with a per-channel constant: not a data input
            const = b.random(f"{name}/const", (1, 1, 1, c))
            b.op(str(rng.choice(["ADD", "MUL"])), [x, const], [b.tensor(name, b.shapes[x])])
            x = name
    split = x
    b.output(b.conv(split, 3, "head", k=1))
    return b, split


def quantize(b: TFLiteBuilder, seed: int) -> bytes:
    """The builder's float model as int8: every activation its own scale and zero point (pools
    and concatenations share their input's, as TFLM requires; LOGISTIC outputs 1/256, -128),
    per-channel int8 filters, int32 biases."""
    rng = np.random.default_rng(seed + 1000)
    mt, sg = b.model, b.sg
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}

    def data(i: int) -> np.ndarray | None:
        buf = mt.buffers[sg.tensors[i].buffer].data
        if buf is None or len(buf) == 0:
            return None
        return np.frombuffer(np.asarray(buf, np.uint8).tobytes(), np.float32).reshape(sg.tensors[i].shape)

    def set_q(i: int, scale: Any, zero: Any, axis: int = 0) -> None:
        q = fb.QuantizationParametersT()
        q.scale = np.atleast_1d(np.asarray(scale, np.float32))
        q.zeroPoint = np.atleast_1d(np.asarray(zero, np.int64))
        q.quantizedDimension = axis
        sg.tensors[i].quantization = q

    def store(i: int, values: np.ndarray, ttype: int) -> None:
        buf = fb.BufferT()
        buf.data = np.frombuffer(values.tobytes(), np.uint8).copy()
        mt.buffers.append(buf)
        sg.tensors[i].buffer, sg.tensors[i].type = len(mt.buffers) - 1, ttype

    acts = [i for i in range(len(sg.tensors)) if data(i) is None]
    for i in acts:
        set_q(i, rng.uniform(0.02, 0.06), rng.integers(-20, 21))
    for op in sg.operators:  # in order: an output that must share its input's quantization
        kind = names[mt.operatorCodes[op.opcodeIndex].builtinCode]
        out = op.outputs[0]
        if kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            sg.tensors[out].quantization = sg.tensors[op.inputs[0]].quantization
        elif kind == "LOGISTIC":
            set_q(out, 1 / 256, -128)
    for op in sg.operators:  # concatenation inputs take the output's quantization
        if names[mt.operatorCodes[op.opcodeIndex].builtinCode] == "CONCATENATION":
            for i in op.inputs:
                sg.tensors[i].quantization = sg.tensors[op.outputs[0]].quantization
    for op in sg.operators:
        kind = names[mt.operatorCodes[op.opcodeIndex].builtinCode]
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            x, f, bias = op.inputs[0], op.inputs[1], op.inputs[2]
            w = data(f)
            assert w is not None
            axis = 0 if kind == "CONV_2D" else 3
            other = tuple(a for a in range(4) if a != axis)
            w_scale = np.maximum(np.abs(w).max(axis=other), 1e-6) / 127
            shape = [1, 1, 1, 1]
            shape[axis] = -1
            store(
                f,
                np.clip(np.round(w / w_scale.reshape(shape)), -127, 127).astype(np.int8),
                fb.TensorType.INT8,
            )
            set_q(f, w_scale, np.zeros(len(w_scale)), axis)
            if bias >= 0:
                bv = data(bias)
                assert bv is not None
                b_scale = float(sg.tensors[x].quantization.scale[0]) * w_scale
                store(bias, np.round(bv / b_scale).astype(np.int32), fb.TensorType.INT32)
                set_q(bias, b_scale, np.zeros(len(b_scale)))
        elif kind in ("ADD", "MUL"):
            for i in op.inputs:
                v = data(i)
                if v is not None:
                    scale = max(float(np.abs(v).max()), 1e-6) / 127
                    store(i, np.round(v / scale).astype(np.int8), fb.TensorType.INT8)
                    set_q(i, scale, 0)
    for i in acts:
        sg.tensors[i].type = fb.TensorType.INT8
    return pack_model(mt)


def random_model(seed: int, dtype: str) -> tuple[bytes, str]:
    b, split = random_stack(seed)
    return (b.build() if dtype == "float32" else quantize(b, seed)), split


@pytest.mark.parametrize("dtype", ["float32", "int8"])
@pytest.mark.parametrize("seed", range(6))
def test_random_stacks_run_bit_identical(seed: int, dtype: str) -> None:
    data, split = random_model(seed, dtype)
    m = parse_tflite(data, Path(f"stack{seed}.tflite"))
    rng = np.random.default_rng(seed)
    h, w = m.graph.tensors[split].shape[1:3]
    grid = (1, 1)
    while grid == (1, 1):
        grid = (int(rng.integers(1, min(h, 4) + 1)), int(rng.integers(1, min(w, 4) + 1)))
    _, tiled, _ = tile(m, split, grid)
    inputs = tflm.random_inputs(data, seed=seed)
    expected = tflm.run(data, inputs)
    assert len(np.unique(expected[0])) > 10  # not saturated: the comparison can fail
    assert_identical(expected, tflm.run(tiled, inputs))


def test_max_pool_pads_with_the_lowest_value() -> None:
    """A SAME max pool over a ReLU'd (all >= 0) tensor and over negative values: PADV2 with the
    dtype's lowest value, never the zero (point) a PAD would hold."""
    for dtype in ("float32", "int8"):
        b = TFLiteBuilder(7)
        x = b.input("x", (1, 9, 9, 2))
        y = b.pool("MAX_POOL_2D", x, "pool", k=3, stride=2, padding="SAME")
        b.output(b.conv(y, 2, "head", k=1))
        data = b.build() if dtype == "float32" else quantize(b, 7)
        m = parse_tflite(data, Path("pool.tflite"))
        _, tiled, written = tile(m, y, (2, 2))
        assert {op.type for op in written.graph.ops} >= {"PADV2", "STRIDED_SLICE", "CONCATENATION"}
        assert "PAD" not in {op.type for op in written.graph.ops}
        mt = fb.ModelT.InitFromObj(fb.Model.GetRootAs(tiled, 0))
        lows = {
            np.frombuffer(np.asarray(mt.buffers[t.buffer].data, np.uint8).tobytes(), np.dtype(dtype))[0]
            for t in mt.subgraphs[0].tensors
            if t.name.endswith(b"/lowest")
        }
        assert lows == {np.finfo(np.float32).min if dtype == "float32" else -128}
        inputs = [x - 3 if dtype == "float32" else x for x in tflm.random_inputs(data, seed=1)]
        assert_identical(tflm.run(data, inputs), tflm.run(tiled, inputs))


def test_ops_without_a_window_are_rejected_with_their_reason() -> None:
    b = TFLiteBuilder(1)
    x = b.input("x", (1, 8, 8, 2))
    y = b.conv(x, 2, "c", k=3)
    shape = b.const("shape", [1, 8, 16, 1], "int32")
    r = b.tensor("r", (1, 8, 16, 1))
    b.op("RESHAPE", [y, shape], [r])
    z = b.conv(r, 2, "after", k=1)
    b.output(z)
    m = parse_tflite(b.build(), Path("reshape.tflite"))
    with pytest.raises(TilingError, match="RESHAPE '1:RESHAPE' is not computed window by window"):
        plan_tiles(m.graph, TfliteSpatialDialect(m), z, (2, 2))


def test_constants_that_vary_over_the_image_are_rejected() -> None:
    """An ADD of a per-channel constant is pointwise; of an H x W constant it is not (the
    constant would need slicing per tile)."""
    b = TFLiteBuilder(2)
    x = b.input("x", (1, 8, 8, 2))
    y = b.conv(x, 2, "c", k=3)
    bias = b.random("bias", (1, 1, 1, 2))
    big = b.const("big", np.ones((1, 8, 8, 2), np.float32))
    s, t = b.tensor("s", (1, 8, 8, 2)), b.tensor("t", (1, 8, 8, 2))
    b.op("ADD", [y, bias], [s])
    b.op("ADD", [s, big], [t])
    b.output(t)
    m = parse_tflite(b.build(), Path("const.tflite"))
    d = TfliteSpatialDialect(m)
    ok = d.window(m.graph, m.graph.ops[1])
    assert not isinstance(ok, str) and (ok.kind, ok.data_inputs) == ("pointwise", (0,))
    why = d.window(m.graph, m.graph.ops[2])
    assert isinstance(why, str) and "'big'" in why and "H or W" in why
    with pytest.raises(TilingError, match="'big'"):
        plan_tiles(m.graph, d, t, (2, 2))
    _, tiled, _ = tile(m, s, (2, 2))
    inputs = tflm.random_inputs(b.build(), seed=0)
    assert_identical(tflm.run(b.build(), inputs), tflm.run(tiled, inputs))


def test_serenity_verify_reports_the_tiled_file_identical(tmp_path: Path) -> None:
    """``serenity verify`` (structure, order, TFLM outputs, embedded plan) accepts the tiled
    file as a rewritten graph with identical outputs and a smaller, honoured arena."""
    from serenity.verify import verify

    m = stem("float")
    dialect = TfliteSpatialDialect(m)
    plan = plan_tiles(m.graph, dialect, m.graph.ops[5].outputs[0], (3, 3))
    res = schedule(tiled_graph(m.graph, plan, dialect), "optimal", time_limit=10)
    written = parse_tflite(write_tiled_tflite(m, plan), m.path)  # type: ignore[arg-type]
    bufs = target_buffers(written.graph, res.order, fmt="tflite", alignment=16)
    arena = PLANNERS["tflm-greedy"](list(bufs.buffers))
    out = tmp_path / "tiled.tflite"
    out.write_bytes(embed_plan(written, res.order, bufs.tensor_offsets(arena.offsets)))
    report = verify(stem_path("float"), out)
    assert report.ok and report.relation == "rewritten" and report.outputs_identical
    assert report.max_abs_diff == 0.0 and report.plan_honoured
    assert report.arena_original is not None and report.arena_reordered is not None
    assert 2 * report.arena_reordered < report.arena_original
