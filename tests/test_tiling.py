"""Patch-based execution (serenity.rewrites.tiling, serenity.formats.onnx_tiling).

Properties: the boxes a plan computes contain every pixel the tile's output depends on (brute
force over pixel sets) and are no larger than the bounding boxes of what the windows touch; the
written model passes the full ONNX check, runs in onnxruntime with the original's outputs, and
is the graph the scheduler judged; a prefix that cannot be tiled is refused with its reason;
the zoo's MobileNetV2 and ResNet-18 reach the issue's target (peak 2.5x lower, <= 20 % MACs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from serenity import zoo
from serenity.formats.onnx_io import from_proto
from serenity.formats.onnx_tiling import OnnxSpatialDialect, write_tiled_onnx
from serenity.ir import Graph
from serenity.rewrites.apply import structure_difference
from serenity.rewrites.tiling import (
    Box,
    TilePlan,
    TilingError,
    Window,
    plan_tiles,
    split_candidates,
    tiled_graph,
)
from serenity.runtime.onnxrt import run
from serenity.schedulers import schedule

SETTINGS = settings(
    max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
Pixel = tuple[int, int]

# -- random conv/pool stacks ------------------------------------------------------------------


@dataclass
class Net:
    """A random ONNX model and, per op output, the window the test built it with (the truth
    the plan is checked against, independent of the dialect)."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: list[onnx.TensorProto] = field(default_factory=list)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: output -> (inputs, kernel, stride, dilation, (top, left)); pointwise: kernel (1, 1) etc.
    truth: dict[str, tuple[tuple[str, ...], Pixel, Pixel, Pixel, Pixel]] = field(default_factory=dict)
    dilated: bool = False
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    def name(self, kind: str) -> str:
        return f"{kind}{len(self.nodes)}"

    def const(self, array: np.ndarray) -> str:
        name = f"w{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], shape: tuple[int, ...], **attrs: Any) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        self.shapes[out] = shape
        return out

    def window(
        self,
        op: str,
        x: str,
        cout: int,
        k: Pixel,
        s: Pixel,
        d: Pixel,
        pads: tuple[int, int, int, int],
        group: int = 1,
        auto: str = "",
    ) -> str | None:
        _, cin, h, w = self.shapes[x]
        ext = ((k[0] - 1) * d[0] + 1, (k[1] - 1) * d[1] + 1)
        if auto:
            oh, ow = -(-h // s[0]), -(-w // s[1])
            tot = [
                max((o - 1) * st_ + e - n, 0) for o, st_, e, n in zip((oh, ow), s, ext, (h, w), strict=True)
            ]
            # ONNX: the odd pixel at the end for SAME_UPPER, at the start for SAME_LOWER.
            top, left = (t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in tot)
            pads = (top, left, tot[0] - top, tot[1] - left)
        oh = (h + pads[0] + pads[2] - ext[0]) // s[0] + 1
        ow = (w + pads[1] + pads[3] - ext[1]) // s[1] + 1
        if min(oh, ow) < 1 or min(h + pads[0] + pads[2] - ext[0], w + pads[1] + pads[3] - ext[1]) < 0:
            return None
        attrs: dict[str, object] = {"kernel_shape": list(k), "strides": list(s)}
        attrs.update({"auto_pad": auto} if auto else {"pads": list(pads)})
        if d != (1, 1):
            attrs["dilations"] = list(d)
            self.dilated = True
        inputs = [x]
        if op == "Conv":
            wt = self.rng.standard_normal((cout, cin // group, *k)) / np.sqrt(cin // group * k[0] * k[1])
            inputs += [self.const(wt), self.const(self.rng.standard_normal(cout) * 0.1)]
            attrs["group"] = group
        else:
            cout = cin
        out = self.node(op, inputs, (1, cout, oh, ow), **attrs)
        self.truth[out] = ((x,), k, s, d, (pads[0], pads[1]))
        return out

    def pointwise(self, op: str, inputs: list[str], shape: tuple[int, ...], **attrs: Any) -> str:
        out = self.node(op, inputs, shape, **attrs)
        self.truth[out] = (tuple(i for i in inputs if i in self.shapes), (1, 1), (1, 1), (1, 1), (0, 0))
        return out

    def model(self, outputs: list[str]) -> onnx.ModelProto:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(self.shapes["x"]))
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        g = helper.make_graph(self.nodes, "random", [x], outs, self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="test_tiling")
        m.ir_version = 8
        m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
        onnx.checker.check_model(m, full_check=True)
        return m


LAYERS = ("conv", "dwconv", "maxpool", "avgpool", "relu", "clip", "bn", "residual", "branch")


@st.composite
def nets(draw: st.DrawFn) -> tuple[Net, onnx.ModelProto]:
    """A chain of random layers (convolutions, pools with random kernels, strides, dilations,
    paddings; residual adds; two-branch channel concats), then maybe a head that cannot be tiled."""
    net = Net(rng=np.random.default_rng(draw(st.integers(0, 2**16))))
    c0 = draw(st.integers(1, 3))
    net.shapes["x"] = (1, c0, draw(st.integers(5, 18)), draw(st.integers(5, 18)))
    x = "x"
    for kind in draw(st.lists(st.sampled_from(LAYERS), min_size=2, max_size=7)):
        _, c, h, w = net.shapes[x]
        if min(h, w) < 2:
            break
        small = st.integers(1, 3)
        k = (draw(small), draw(small))
        s = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        d = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if kind != "avgpool" else (1, 1)
        if kind in ("conv", "dwconv"):
            pads = tuple(draw(st.integers(0, (k[a % 2] - 1) * d[a % 2])) for a in range(4))
            # onnxruntime runs SAME padding only without dilation.
            auto = draw(st.sampled_from(["", "", "SAME_UPPER", "SAME_LOWER"])) if d == (1, 1) else ""
            cout, group = (c, c) if kind == "dwconv" else (draw(st.integers(1, 4)), 1)
            y = net.window("Conv", x, cout, k, s, d, pads, group, auto)  # type: ignore[arg-type]
        elif kind == "maxpool":
            pads = tuple(draw(st.integers(0, k[a % 2] - 1)) for a in range(4))
            y = net.window("MaxPool", x, c, k, s, d, pads)  # type: ignore[arg-type]
        elif kind == "avgpool":
            y = net.window("AveragePool", x, c, k, s, (1, 1), (0, 0, 0, 0))
        elif kind == "relu":
            y = net.pointwise("Relu", [x], net.shapes[x])
        elif kind == "clip":
            y = net.pointwise(
                "Clip", [x, net.const(np.asarray(0.0)), net.const(np.asarray(0.5))], net.shapes[x]
            )
        elif kind == "bn":
            p = [net.const(net.rng.uniform(0.5, 1.5, c)) for _ in range(4)]
            y = net.pointwise("BatchNormalization", [x, *p], net.shapes[x])
        elif kind == "residual":  # y = conv_same(x) + x, the conv dilated or not
            dd = draw(st.integers(1, 2))
            b = net.window("Conv", x, c, (3, 3), (1, 1), (dd, dd), (dd, dd, dd, dd))
            y = net.pointwise("Add", [b, x], net.shapes[x]) if b else None
        else:  # a 3x3 branch and a 1x1 branch (which reads a slice of the shared input), concatenated
            a = net.window("Conv", x, draw(st.integers(1, 3)), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1))
            b = net.window("Conv", x, draw(st.integers(1, 3)), (1, 1), (1, 1), (1, 1), (0, 0, 0, 0))
            assert a and b
            shape = (1, net.shapes[a][1] + net.shapes[b][1], h, w)
            y = net.pointwise("Concat", [a, b], shape, axis=1)
        x = y or x
    if x == "x":
        x = net.pointwise("Relu", [x], net.shapes[x])
    if draw(st.booleans()):  # a head the tiler must stop before
        n, c, _, _ = net.shapes[x]
        out = net.node("GlobalAveragePool", [x], (n, c, 1, 1))
        return net, net.model([out])
    return net, net.model([x])


def _plan(
    net: Net, model: onnx.ModelProto, data: st.DataObject
) -> tuple[Graph, OnnxSpatialDialect, TilePlan]:
    g = from_proto(model).graph
    d = OnnxSpatialDialect(from_proto(model))
    cands = split_candidates(g, d)
    assert cands[0][1] is None, "the first op of every random stack can be tiled"
    ok = [t for t, why in cands if why is None and net.shapes[t][2] * net.shapes[t][3] > 1]
    assume(ok)
    split = data.draw(st.sampled_from(ok[::-1]), label="split")  # deep prefixes first
    _, _, h, w = net.shapes[split]
    grid = data.draw(st.tuples(st.integers(1, min(h, 4)), st.integers(1, min(w, 4))), label="grid")
    if grid == (1, 1):
        with pytest.raises(TilingError, match="at least two tiles"):
            plan_tiles(g, d, split, grid)
        grid = (2, 1) if h > 1 else (1, 2)
    try:
        plan = plan_tiles(g, d, split, grid)
    except TilingError as e:
        # The only refusal of a valid prefix: a tile that would read nothing but padding.
        assert "only padding" in str(e)
        assume(False)
        raise
    types = {g.ops[i].type for i in plan.prefix}
    event(f"prefix of {min(len(plan.prefix), 5)}{'+' if len(plan.prefix) > 5 else ''} ops")
    event(f"residual/branch in the prefix: {bool(types & {'Add', 'Concat'})}")
    event(f"padded inputs: {any(ti.padded for s in plan.steps for ti in s.inputs)}")
    inner = any(ti.sliced and ti.source != "x" for s in plan.steps for ti in s.inputs)
    event(f"sliced inputs of computed tensors: {inner}")
    return g, d, plan


# -- halo arithmetic against brute force -----------------------------------------------------


def _reads(net: Net, out: str, pixels: set[Pixel]) -> dict[str, set[Pixel]]:
    """Every input position (padding included) each output pixel's window touches."""
    ins, k, s, d, (top, left) = net.truth[out]
    touched = {
        (r * s[0] - top + a * d[0], c * s[1] - left + b * d[1])
        for r, c in pixels
        for a in range(k[0])
        for b in range(k[1])
    }
    return dict.fromkeys(ins, touched)


def _inside(pixels: set[Pixel], shape: tuple[int, ...]) -> set[Pixel]:
    return {(r, c) for r, c in pixels if 0 <= r < shape[2] and 0 <= c < shape[3]}


def _bbox(pixels: set[Pixel]) -> Box:
    rows, cols = [r for r, _ in pixels], [c for _, c in pixels]
    return Box(min(rows), max(rows) + 1, min(cols), max(cols) + 1)


def _box_pixels(b: Box) -> set[Pixel]:
    return {(r, c) for r in range(b.r0, b.r1) for c in range(b.c0, b.c1)}


@SETTINGS
@given(nets(), st.data())
def test_boxes_against_brute_force(case: tuple[Net, onnx.ModelProto], data: st.DataObject) -> None:
    net, model = case
    g, _, plan = _plan(net, model, data)
    order = [n.output[0] for n in net.nodes]
    prefix = {g.ops[i].outputs[0] for i in plan.prefix}
    for tile, boxes in plan.boxes.items():
        block = boxes[plan.split]
        # 1. Exact dependence: every pixel the tile's block depends on, pixel by pixel.
        exact: dict[str, set[Pixel]] = {plan.split: _box_pixels(block)}
        for out in reversed(order):
            if out in exact and out in net.truth:
                for t, px in _reads(net, out, exact[out]).items():
                    exact[t] = exact.get(t, set()) | _inside(px, net.shapes[t])
        assert set(exact) - {"x"} == prefix  # the prefix is exactly what the block depends on
        for t, px in exact.items():
            assert _box_pixels(boxes[t]) >= px, (tile, t)
            if not net.dilated:  # without holes in the windows the boxes are tight
                assert boxes[t] == _bbox(px), (tile, t)
        # 2. Each copy reads exactly the bounding box of what its window touches over its box.
        for step in plan.tile_steps(tile):
            out = g.ops[step.op].outputs[0]
            assert step.out_box == boxes[out]
            touched = _reads(net, out, _box_pixels(step.out_box))
            for ti in step.inputs:
                shape = net.shapes[ti.tensor]
                assert ti.need == _bbox(touched[ti.tensor])
                assert ti.pads == (
                    max(0, -ti.need.r0),
                    max(0, -ti.need.c0),
                    max(0, ti.need.r1 - shape[2]),
                    max(0, ti.need.c1 - shape[3]),
                )
                assert _box_pixels(ti.source_box) >= _box_pixels(ti.inside)
                assert (ti.sliced is None) == (ti.inside == ti.source_box)
                assert (ti.padded is None) == (not any(ti.pads))
    # 3. The tile blocks partition the split.
    covered = [px for b in plan.boxes.values() for px in _box_pixels(b[plan.split])]
    _, _, h, w = net.shapes[plan.split]
    assert sorted(covered) == sorted(_box_pixels(Box(0, h, 0, w)))


# -- the written model in onnxruntime --------------------------------------------------------


def _equal_in_onnxruntime(original: onnx.ModelProto, written: onnx.ModelProto, seed: int = 0) -> float:
    """The largest output difference relative to the output's magnitude (asserted <= 1e-6)."""
    shape = [d.dim_value for d in original.graph.input[0].type.tensor_type.shape.dim]
    feeds = {
        original.graph.input[0].name: np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    }
    worst = 0.0
    for a, b in zip(
        run(original.SerializeToString(), feeds), run(written.SerializeToString(), feeds), strict=True
    ):
        assert a.shape == b.shape
        rel = float(np.abs(a - b).max()) / max(float(np.abs(a).max()), 1e-30)
        assert rel <= 1e-6
        worst = max(worst, rel)
    return worst


@settings(SETTINGS, max_examples=100)
@given(nets(), st.data())
def test_written_model_runs_like_the_original(case: tuple[Net, onnx.ModelProto], data: st.DataObject) -> None:
    net, model = case
    g, d, plan = _plan(net, model, data)
    written = write_tiled_onnx(from_proto(model), plan)
    onnx.checker.check_model(written.source, full_check=True)
    tiled = tiled_graph(g, plan, d)
    assert structure_difference(written.graph, tiled) is None
    assert tiled.listed_problem is None
    _equal_in_onnxruntime(model, written.source)
    # The new tensors are sized as the tiled graph says, from their boxes.
    for s in plan.steps:
        out = tiled.tensors[s.output]
        assert out.shape[2:] == (s.out_box.rows, s.out_box.cols)
        assert out.nbytes == 4 * int(np.prod(out.shape))


# -- hand-built graphs -----------------------------------------------------------------------


def _chain(*layers: tuple[str, dict[str, object]], hw: int = 8, head: bool = False) -> onnx.ModelProto:
    net = Net()
    net.shapes["x"] = (1, 2, hw, hw)
    x = "x"
    for op, attrs in layers:
        if op == "Conv":
            x = net.window("Conv", x, 2, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)) or x
        elif op in ("MaxPool", "AveragePool"):
            p = int(attrs.get("pad", 0))  # type: ignore[call-overload]
            x = net.window(op, x, 2, (3, 3), (1, 1), (1, 1), (p, p, p, p)) or x
        elif op == "Resize":
            _, c, h, w = net.shapes[x]
            scales = net.const(np.asarray([1.0, 1.0, 2.0, 2.0]))
            x = net.node("Resize", [x, "", scales], (1, c, 2 * h, 2 * w), mode="nearest")
        else:
            x = net.pointwise(op, [x], net.shapes[x])
    outs = [x]
    if head:
        n, c, _, _ = net.shapes[x]
        gap = net.node("GlobalAveragePool", [x], (n, c, 1, 1))
        flat = net.node("Flatten", [gap], (n, c), axis=1)
        fc = net.node("Gemm", [flat, net.const(np.ones((3, c))), net.const(np.zeros(3))], (n, 3), transB=1)
        outs = [fc]
    return net.model(outs)


def _load(model: onnx.ModelProto) -> tuple[Graph, OnnxSpatialDialect]:
    m = from_proto(model)
    return m.graph, OnnxSpatialDialect(m)


def test_concats_per_grid_shape() -> None:
    g, d = _load(_chain(("Conv", {}), ("Relu", {})))
    split = g.ops[-1].outputs[0]
    assert plan_tiles(g, d, split, (2, 3)).concats == (
        (f"{split}@row0", (f"{split}@0_0", f"{split}@0_1", f"{split}@0_2"), 1),
        (f"{split}@row1", (f"{split}@1_0", f"{split}@1_1", f"{split}@1_2"), 1),
        (split, (f"{split}@row0", f"{split}@row1"), 0),
    )
    assert plan_tiles(g, d, split, (1, 2)).concats == ((split, (f"{split}@0_0", f"{split}@0_1"), 1),)
    assert plan_tiles(g, d, split, (3, 1)).concats == ((split, tuple(f"{split}@{i}_0" for i in range(3)), 0),)
    # Rows 8 = 3 + 3 + 2: remainders go to the first tiles.
    assert [plan_tiles(g, d, split, (3, 1)).boxes[i, 0][split] for i in range(3)] == [
        Box(0, 3, 0, 8),
        Box(3, 6, 0, 8),
        Box(6, 8, 0, 8),
    ]


def test_two_by_two_conv_relu_plan_by_hand() -> None:
    """x (8x8) -> 3x3 conv, pad 1 -> relu; tile (0, 1) of 2x2 computes relu rows 0..3, cols 4..7:
    the conv reads x rows -1..4 and cols 3..8: one row of padding on top, one column on the right."""
    g, d = _load(_chain(("Conv", {}), ("Relu", {})))
    conv, relu = g.ops
    plan = plan_tiles(g, d, relu.outputs[0], (2, 2))
    s_conv, s_relu = plan.tile_steps((0, 1))
    assert s_conv.out_box == s_relu.out_box == Box(0, 4, 4, 8)
    (ti,) = s_conv.inputs
    assert (ti.source, ti.source_box, ti.need, ti.pads) == (
        "x",
        Box(0, 8, 0, 8),
        Box(-1, 5, 3, 9),
        (1, 0, 0, 1),
    )
    assert ti.sliced == "x@0_1[0:5,3:8]" and ti.padded == "x@0_1[-1:5,3:9]/pad" and ti.fill == "zero"
    assert s_relu.inputs[0].read == f"{conv.outputs[0]}@0_1"
    assert (plan.macs_before, plan.macs_after, plan.overhead()) == (2 * 2 * 9 * 64, 2 * 2 * 9 * 64, 0.0)
    tiled = tiled_graph(g, plan, d)
    assert [op.type for op in tiled.ops][:4] == ["Slice", "Pad", "Conv", "Relu"]
    assert tiled.tensors["x@0_1[-1:5,3:9]/pad"].shape == (1, 2, 6, 6)


def test_maxpool_pads_with_the_lowest_value() -> None:
    """All-negative inputs: zero padding would win every border max; -inf never does."""
    model = _chain(("MaxPool", {"pad": 1}), ("MaxPool", {"pad": 1}), hw=9)
    g, d = _load(model)
    plan = plan_tiles(g, d, g.ops[-1].outputs[0], (3, 2))
    assert {ti.fill for s in plan.steps for ti in s.inputs} == {"lowest"}
    written = write_tiled_onnx(from_proto(model), plan)
    feeds = {"x": -1.0 - np.random.default_rng(0).random((1, 2, 9, 9)).astype(np.float32)}
    (a,), (b,) = run(model.SerializeToString(), feeds), run(written.source.SerializeToString(), feeds)
    assert np.array_equal(a, b) and a.max() < 0


def test_int8_maxpool_pads_with_the_type_minimum() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.INT8, [1, 1, 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.INT8, [1, 1, 6, 6])
    node = helper.make_node("MaxPool", ["x"], ["y"], name="mp", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    m = helper.make_model(
        helper.make_graph([node], "q", [x], [y]), opset_imports=[helper.make_opsetid("", 17)]
    )
    m.ir_version = 8
    g, d = _load(m)
    written = write_tiled_onnx(from_proto(m), plan_tiles(g, d, "y", (2, 2)))
    onnx.checker.check_model(written.source, full_check=True)
    feeds = {"x": np.random.default_rng(1).integers(-128, -100, (1, 1, 6, 6)).astype(np.int8)}
    (a,), (b,) = run(m.SerializeToString(), feeds), run(written.source.SerializeToString(), feeds)
    assert np.array_equal(a, b)


@pytest.mark.parametrize(
    ("layers", "split_at", "reason"),
    [
        ((("AveragePool", {"pad": 1}),), -1, "average pooling with padding"),
        ((("Conv", {}), ("Resize", {}), ("Conv", {})), -1, "Resize.*interpolation"),
        ((("Conv", {}),), -1, None),  # control: tileable
    ],
)
def test_untileable_ops_are_refused_with_their_reason(
    layers: tuple[tuple[str, dict[str, object]], ...], split_at: int, reason: str | None
) -> None:
    g, d = _load(_chain(*layers))
    split = g.ops[split_at].outputs[0]
    if reason is None:
        assert plan_tiles(g, d, split, (2, 2)).grid == (2, 2)
        return
    with pytest.raises(TilingError, match=reason):
        plan_tiles(g, d, split, (2, 2))


def test_head_ops_are_refused() -> None:
    g, d = _load(_chain(("Conv", {}), head=True))
    why = dict(split_candidates(g, d))
    conv, gap, flat, fc = g.ops
    assert why[conv.outputs[0]] is None
    assert "GlobalAveragePool" in str(why[gap.outputs[0]]) and "whole image" in str(why[gap.outputs[0]])
    assert "rank 2" in str(why[fc.outputs[0]])  # no image to tile
    assert "flattens" in str(d.window(g, flat)) and "fully connected" in str(d.window(g, fc))
    with pytest.raises(TilingError, match="rank 2"):
        plan_tiles(g, d, flat.outputs[0], (2, 2))


def test_a_prefix_tensor_read_after_the_split_is_refused() -> None:
    """x -> conv a -> conv b -> add(b, a): splitting at b leaves a read by the add."""
    net = Net()
    net.shapes["x"] = (1, 2, 8, 8)
    a = net.window("Conv", "x", 2, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1))
    b = net.window("Conv", a or "", 2, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1))
    y = net.pointwise("Add", [b or "", a or ""], (1, 2, 8, 8))
    g, d = _load(net.model([y]))
    with pytest.raises(TilingError, match=f"'{a}' of the prefix is also read by op '{y}'"):
        plan_tiles(g, d, b or "", (2, 2))
    assert plan_tiles(g, d, y, (2, 2)).prefix == (0, 1, 2)  # the residual inside the prefix


def test_grids_that_do_not_fit_are_refused() -> None:
    g, d = _load(_chain(("Conv", {}), hw=4))
    split = g.ops[0].outputs[0]
    with pytest.raises(TilingError, match="at least two tiles"):
        plan_tiles(g, d, split, (1, 1))
    with pytest.raises(TilingError, match="more tiles"):
        plan_tiles(g, d, split, (5, 1))
    with pytest.raises(TilingError, match="graph input"):
        plan_tiles(g, d, "x", (2, 2))


def test_window_reads_onnx_auto_pad() -> None:
    """SAME_UPPER puts the odd padding pixel at the end, SAME_LOWER at the start."""
    net = Net()
    net.shapes["x"] = (1, 1, 8, 8)
    up = net.window("Conv", "x", 1, (4, 4), (2, 2), (1, 1), (0, 0, 0, 0), auto="SAME_UPPER")
    low = net.window("Conv", "x", 1, (4, 4), (2, 2), (1, 1), (0, 0, 0, 0), auto="SAME_LOWER")
    g, d = _load(net.model([up or "", low or ""]))
    assert d.window(g, g.ops[0]) == Window("conv", (4, 4), (2, 2), (1, 1), (1, 1, 1, 1))
    assert d.window(g, g.ops[1]) == Window("conv", (4, 4), (2, 2), (1, 1), (1, 1, 1, 1))
    net2 = Net()
    net2.shapes["x"] = (1, 1, 7, 7)
    up2 = net2.window("Conv", "x", 1, (2, 2), (1, 1), (1, 1), (0, 0, 0, 0), auto="SAME_UPPER")
    low2 = net2.window("Conv", "x", 1, (2, 2), (1, 1), (1, 1), (0, 0, 0, 0), auto="SAME_LOWER")
    g2, d2 = _load(net2.model([up2 or "", low2 or ""]))
    assert d2.window(g2, g2.ops[0]).pads == (0, 0, 1, 1)  # type: ignore[union-attr]
    assert d2.window(g2, g2.ops[1]).pads == (1, 1, 0, 0)  # type: ignore[union-attr]


# -- the zoo: the target -------------------------------------------------------------

#: (network, split, grid, untiled optimum, tiled optimum): peaks in bytes (float32).
ZOO_TARGETS = [
    ("resnet18", "stem/maxpool:0", (2, 2), 6_422_528, 2_408_448),
    ("mobilenet_v2", "block3/conv#2:0", (2, 2), 9_633_792, 3_169_980),
    ("mobilenet_v2", "block3/conv#2:0", (3, 3), 9_633_792, 1_940_352),
]


@pytest.mark.parametrize(("name", "split", "grid", "before", "after"), ZOO_TARGETS)
def test_zoo_peak_drops_at_least_2_5x_within_20_percent_macs(
    name: str, split: str, grid: tuple[int, int], before: int, after: int
) -> None:
    proto = zoo.build(name)
    model = from_proto(proto)
    d = OnnxSpatialDialect(model)
    plan = plan_tiles(model.graph, d, split, grid)
    tiled = tiled_graph(model.graph, plan, d)
    base, r = schedule(model.graph, "optimal"), schedule(tiled, "optimal")
    assert base.proven_optimal and r.proven_optimal
    assert (base.peak, r.peak) == (before, after)
    assert r.peak * 2.5 <= base.peak
    assert plan.overhead() <= 0.20
    written = write_tiled_onnx(model, plan)
    onnx.checker.check_model(written.source, full_check=True)
    assert structure_difference(written.graph, tiled) is None
    _equal_in_onnxruntime(proto, written.source)


def test_split_candidates_say_what_plan_tiles_says() -> None:
    model = from_proto(zoo.build("resnet18"))
    g, d = model.graph, OnnxSpatialDialect(model)
    cands = split_candidates(g, d)
    assert [t for t, _ in cands] == [op.outputs[0] for op in g.ops]
    why = dict(cands)
    assert why["stem/maxpool:0"] is None and why["block0/add:0"] is None
    assert "'stem/maxpool:0' of the prefix is also read by op 'block0/add'" in str(why["block0/conv:0"])
    assert "GlobalAveragePool" in str(why["head/globalaveragepool:0"])
    for t, reason in cands:
        if reason is None:
            assert plan_tiles(g, d, t, (2, 2)).split == t
        else:
            with pytest.raises(TilingError) as e:
                plan_tiles(g, d, t, (2, 2))
            assert str(e.value) == reason
