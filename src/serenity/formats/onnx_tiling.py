"""ONNX adapter of patch-based execution: what ONNX ops mean spatially, and the writer.

The rewrite itself is format-free (:mod:`serenity.rewrites.tiling`); this module reads ONNX ops
as windows (NCHW) and writes a plan into a copy of the model:

* ``Slice`` with constant ``starts``/``ends``/``axes`` (H, W) where a tile reads part of a
  tensor;
* ``Pad`` (mode ``constant``) where the need leaves the image: value 0 for convolutions (the
  default, so no value input), ``-inf`` (the type's minimum for integers) for ``MaxPool``;
* the op's copy with ``pads`` zero and ``auto_pad`` removed (NOTSET), its constants shared with
  the original;
* ``Concat`` along W per tile row, then along H into the split tensor.

New nodes and tensors have exactly the names :func:`~serenity.rewrites.tiling.tiled_graph`
gives them and take the prefix's place in the node list; every new tensor gets a
``value_info``; the prefix's nodes and their tensors' ``value_info`` go. Everything else
(initializers, other nodes, opset, metadata) is left as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import onnx
from onnx import helper, numpy_helper

from serenity.errors import GraphError, UnsupportedError
from serenity.formats import Model
from serenity.formats.onnx_rewrite_roles import UNARY, const_shape
from serenity.ir import Graph, Op
from serenity.rewrites.apply import structure_difference
from serenity.rewrites.tiling import Layout, TileInput, TilePlan, TileStep, Window, tiled_graph

#: Element-wise ops whose every input broadcasts against the others (constants allowed where
#: they do not vary over H and W).
ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where"})
#: Element-wise ops of one data input whose other inputs are scalars or per-channel constants.
POINTWISE = UNARY | {
    "Clip",
    "Dropout",
    "BatchNormalization",
    "LeakyRelu",
    "QuantizeLinear",
    "DequantizeLinear",
}
#: Why common ops are not tiled.
WHY_NOT = {
    "Resize": "it resizes the image by interpolation, not by a window of fixed stride",
    "Upsample": "it resizes the image by interpolation, not by a window of fixed stride",
    "GlobalAveragePool": "it reads the whole image for every output",
    "GlobalMaxPool": "it reads the whole image for every output",
    "GlobalLpPool": "it reads the whole image for every output",
    "Flatten": "it flattens the image into a vector",
    "Reshape": "it reshapes the image",
    "Transpose": "it moves the image axes",
    "Gemm": "it is a fully connected layer over the whole input",
    "MatMul": "it is a matrix product over the whole input",
    "Softmax": "it normalises across an axis",
    "LRN": "it mixes neighbouring channels (not tiled)",
    "ConvTranspose": "a transposed convolution scatters each input pixel (not tiled)",
    "QLinearConv": "its padding is the input's zero point (not tiled)",
    "ConvInteger": "its padding is the input's zero point (not tiled)",
    "LpPool": "Lp pooling is not tiled",
}


#: The window kind of each windowed op.
KINDS: Mapping[str, Literal["conv", "maxpool", "avgpool"]] = {
    "Conv": "conv",
    "MaxPool": "maxpool",
    "AveragePool": "avgpool",
}


def _pair(attrs: Mapping[str, Any], key: str, default: int) -> tuple[int, int] | None:
    """A 2-D attribute (``strides``, ``dilations``...) as ``(h, w)``; ``None`` if not 2-D."""
    v = attrs.get(key)
    if v is None:
        return (default, default)
    seq = [int(x) for x in v]
    return (seq[0], seq[1]) if len(seq) == 2 else None


class OnnxSpatialDialect:
    """The ONNX :class:`~serenity.rewrites.tiling.SpatialDialect` (NCHW).

    ``Conv`` (depthwise too, through ``group``), ``MaxPool`` and ``AveragePool`` (2-D, any
    strides, dilations, ``pads`` or ``auto_pad``) are windows; batch norm, element-wise
    activations, ``Clip``, ``Add``/``Mul``/``Sub``/``Div`` of same-size tensors (constants
    allowed when they do not vary over H and W), ``Concat`` on the channel axis and
    ``Identity`` are pointwise. Everything else is refused with a reason.

    Args:
        model: The ONNX model, for the shapes of ``Constant`` nodes' tensors (the IR does not
            record them); without one, an op reading such a constant of unknown shape is
            refused.

    Example:
        >>> from serenity import zoo
        >>> from serenity.formats.onnx_io import from_proto
        >>> from serenity.rewrites.tiling import plan_tiles
        >>> model = from_proto(zoo.build("resnet18"))
        >>> d = OnnxSpatialDialect(model)
        >>> w = d.window(model.graph, model.graph.ops[0])
        >>> w.kind, w.kernel, w.stride, w.pads
        ('conv', (7, 7), (2, 2), (3, 3, 3, 3))
        >>> plan = plan_tiles(model.graph, d, model.graph.ops[2].outputs[0], (2, 2))
        >>> len(plan.prefix), len(plan.steps), round(plan.overhead(), 3)
        (3, 12, 0.018)
    """

    layout: Layout = "NCHW"
    op_types: Mapping[str, str] = {"slice": "Slice", "pad": "Pad", "concat": "Concat"}

    def __init__(self, model: Model | None = None) -> None:
        self._const_shapes: dict[str, tuple[int, ...]] = {}
        self._domains: dict[str, str] = {}
        if model is not None:
            for node in model.source.graph.node:
                for o in node.output:
                    self._domains[o] = node.domain
                if node.op_type == "Constant":
                    for a in node.attribute:
                        if a.name == "value":
                            self._const_shapes[node.output[0]] = tuple(a.t.dims)

    def window(self, graph: Graph, op: Op) -> Window | str:
        """The op's window, or why it cannot be tiled."""
        domain = self._domains.get(op.outputs[0] if op.outputs else "", "")
        if domain not in ("", "ai.onnx"):
            return f"it is in domain '{domain}', not the default ONNX domain"
        if op.type in KINDS:
            return self._windowed(graph, op)
        if op.type in POINTWISE or op.type == "Identity":
            if op.type == "BatchNormalization" and int(op.attributes.get("training_mode", 0)):
                return "BatchNormalization in training mode normalises over the image"
            if op.type in ("QuantizeLinear", "DequantizeLinear") and len(op.inputs) > 1:
                scale = const_shape(graph, op.inputs[1], self._const_shapes) if op.inputs[1] else ()
                if scale and int(op.attributes.get("axis", 1)) % 4 != 1:
                    return f"it quantizes per axis {op.attributes.get('axis')}, not per channel"
            return Window("pointwise")
        if op.type in ELEMENTWISE:
            return self._elementwise(graph, op)
        if op.type == "Concat":
            rank = len(graph.tensors[op.outputs[0]].shape)
            if int(op.attributes.get("axis", 0)) % max(rank, 1) != 1:
                return f"it concatenates along axis {op.attributes.get('axis')}, not the channel axis"
            return Window("pointwise", data_inputs=tuple(p for p, n in enumerate(op.inputs) if n))
        return WHY_NOT.get(op.type, f"{op.type} is not an op the tiler maps spatially")

    def _windowed(self, graph: Graph, op: Op) -> Window | str:
        a = op.attributes
        x = graph.tensors[op.inputs[0]]
        if len(x.shape) != 4:
            return f"{op.type} of a rank-{len(x.shape)} input (only 2-D images are tiled)"
        if op.type == "Conv":
            if len(op.inputs) < 2 or not op.inputs[1] or not graph.tensors[op.inputs[1]].constant:
                return "its weight is computed at run time"
            wshape = const_shape(graph, op.inputs[1], self._const_shapes)
            if "kernel_shape" in a:
                kernel = _pair(a, "kernel_shape", 0)
            elif wshape is not None and len(wshape) == 4:
                kernel = (wshape[2], wshape[3])
            else:
                return "its weight's shape is unknown"
        else:
            kernel = _pair(a, "kernel_shape", 0)
        stride, dilation = _pair(a, "strides", 1), _pair(a, "dilations", 1)
        if kernel is None or stride is None or dilation is None:
            return f"{op.type} with kernel, strides or dilations of the wrong rank"
        pads = self._pads(a, x.shape[2:], kernel, stride, dilation)
        if isinstance(pads, str):
            return pads
        groups = int(a.get("group", 1)) if op.type == "Conv" else 1
        return Window(KINDS[op.type], kernel, stride, dilation, pads, groups)

    @staticmethod
    def _pads(
        a: Mapping[str, Any],
        hw: tuple[int, ...],
        kernel: tuple[int, int],
        stride: tuple[int, int],
        dilation: tuple[int, int],
    ) -> tuple[int, int, int, int] | str:
        """``(top, left, bottom, right)`` from ``pads`` or ``auto_pad`` (ONNX's SAME rule:
        output ``ceil(in / s)``, the odd pixel at the end for SAME_UPPER, the start for LOWER)."""
        auto = str(a.get("auto_pad", "NOTSET"))
        if auto in ("NOTSET", ""):
            p = [int(v) for v in a.get("pads", [0, 0, 0, 0])]
            return (p[0], p[1], p[2], p[3]) if len(p) == 4 else "pads of the wrong rank"
        if auto == "VALID":
            return (0, 0, 0, 0)
        if auto not in ("SAME_UPPER", "SAME_LOWER"):
            return f"auto_pad {auto!r}"
        before, after = [], []
        for n, k, s, d in zip(hw, kernel, stride, dilation, strict=True):
            out = -(-n // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
            small = total // 2
            before.append(small if auto == "SAME_UPPER" else total - small)
            after.append(total - before[-1])
        return (before[0], before[1], after[0], after[1])

    def _elementwise(self, graph: Graph, op: Op) -> Window | str:
        out = graph.tensors[op.outputs[0]]
        data = []
        for p, name in enumerate(op.inputs):
            if not name:
                continue
            t = graph.tensors[name]
            if not t.constant:
                if len(t.shape) == len(out.shape) == 4 and t.shape[2:] == out.shape[2:]:
                    data.append(p)
                continue
            shape = const_shape(graph, name, self._const_shapes)
            if shape is None:
                return f"the shape of its constant '{name}' is unknown"
            # Broadcasting aligns shapes on the right: H and W are the last two axes.
            if len(shape) > len(out.shape) or any(s != 1 for s in tuple(shape)[-2:]):
                return f"its constant '{name}' of shape {tuple(shape)} varies over the image"
        return Window("pointwise", data_inputs=tuple(data))


# -- the writer ------------------------------------------------------------------------------


class _Names:
    """Fresh names for the constants the writer adds."""

    def __init__(self, g: onnx.GraphProto, extra: set[str]) -> None:
        self.taken = {t.name for t in g.initializer} | {i.name for i in g.input} | set(extra)
        self.taken |= {o for n in g.node for o in (*n.input, *n.output)} | {v.name for v in g.value_info}

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}#{k}", k + 1
        self.taken.add(name)
        return name


def _lowest(elem_type: int) -> np.ndarray:
    dtype = helper.tensor_dtype_to_np_dtype(elem_type)
    if np.issubdtype(dtype, np.floating):
        return np.array(-np.inf, dtype=dtype)
    return np.array(np.iinfo(dtype).min, dtype=dtype)


def write_tiled_onnx(model: Model, plan: TilePlan) -> Model:
    """A copy of ``model`` with ``plan`` written in (see the module docstring).

    The result is imported afresh (``onnx.checker``, shape inference) and its graph is
    :func:`~serenity.rewrites.tiling.tiled_graph` of the same plan (up to constant and op names).

    Raises:
        UnsupportedError: not an ONNX model, or an opset before 11 (``Pad`` takes its pads as an
            input from opset 11).
        TilingError: the plan does not match the model's graph.
        GraphError: the written model is not the tiled graph (a writer bug).
    """
    from serenity.formats.onnx_rewrite import _dims, _import

    if model.format != "onnx":
        raise UnsupportedError(f"{model.path or 'model'}: a {model.format} model is not written as ONNX")
    opset = next((o.version for o in model.source.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 11:
        raise UnsupportedError(
            f"{model.path or 'model'}: opset {opset}; tiling writes Pad of opset 11 or later"
        )
    graph = model.graph
    dialect = OnnxSpatialDialect(model)
    tiled = tiled_graph(graph, plan, dialect)
    work = onnx.ModelProto()
    work.CopyFrom(model.source)
    g = work.graph
    names = _Names(g, set(tiled.tensors))
    nodes = list(model.source.graph.node)
    # What each new op of the tiled graph is, by name.
    steps: dict[str, TileStep] = {f"{graph.ops[s.op].name}@{s.tile[0]}_{s.tile[1]}": s for s in plan.steps}
    inputs: dict[str, TileInput] = {}
    for s in plan.steps:
        for ti in s.inputs:
            for name in (ti.sliced, ti.padded):
                if name:
                    inputs.setdefault(name, ti)
    concats = {
        (f"{out}/concat" if out == plan.split else out): (out, ins, ax) for out, ins, ax in plan.concats
    }
    kept = {op.name: op.index for op in graph.ops}
    elem = {vi.name: vi.type.tensor_type.elem_type for vi in (*g.input, *g.value_info, *g.output)}
    axes = names.fresh("tile:axes_hw")
    g.initializer.append(numpy_helper.from_array(np.array([2, 3], dtype=np.int64), axes))
    lowest: dict[int, str] = {}
    new_nodes: list[onnx.NodeProto] = []
    for op in tiled.ops:
        if op.name in steps:
            s = steps[op.name]
            node = onnx.NodeProto()
            node.CopyFrom(nodes[s.op])
            node.name = op.name
            del node.input[:]
            node.input.extend(op.inputs)
            del node.output[:]
            node.output.append(s.output)
            if node.op_type in ("Conv", "MaxPool", "AveragePool"):
                keep = [at for at in node.attribute if at.name not in ("pads", "auto_pad")]
                del node.attribute[:]
                node.attribute.extend(keep)
                node.attribute.append(helper.make_attribute("pads", [0, 0, 0, 0]))
            new_nodes.append(node)
        elif op.name in inputs and op.type == "Slice":
            b = op.attributes
            starts, ends = names.fresh(f"{op.name}:starts"), names.fresh(f"{op.name}:ends")
            g.initializer.append(numpy_helper.from_array(np.array(b["starts"], dtype=np.int64), starts))
            g.initializer.append(numpy_helper.from_array(np.array(b["ends"], dtype=np.int64), ends))
            new_nodes.append(
                helper.make_node("Slice", [op.inputs[0], starts, ends, axes], [op.name], name=op.name)
            )
        elif op.name in inputs:
            ti = inputs[op.name]
            top, left, bottom, right = ti.pads
            pads = names.fresh(f"{op.name}:pads")
            g.initializer.append(
                numpy_helper.from_array(
                    np.array([0, 0, top, left, 0, 0, bottom, right], dtype=np.int64), pads
                )
            )
            args = [op.inputs[0], pads]
            if ti.fill == "lowest":
                et = _elem_type(tiled, ti.tensor, elem)
                if et not in lowest:
                    lowest[et] = names.fresh(f"tile:lowest_{helper.tensor_dtype_to_np_dtype(et).name}")
                    g.initializer.append(numpy_helper.from_array(_lowest(et), lowest[et]))
                args.append(lowest[et])
            new_nodes.append(helper.make_node("Pad", args, [op.name], name=op.name, mode="constant"))
        elif op.name in concats:
            joined, ins, ax = concats[op.name]
            new_nodes.append(helper.make_node("Concat", list(ins), [joined], name=op.name, axis=2 + ax))
        else:
            new_nodes.append(nodes[kept[op.name]])
    del g.node[:]
    g.node.extend(new_nodes)
    # value_info: the prefix's tensors go, every new tensor comes.
    gone = set(graph.tensors) - set(tiled.tensors)
    infos = [vi for vi in g.value_info if vi.name not in gone]
    del g.value_info[:]
    g.value_info.extend(infos)
    outputs = {o.name for o in g.output}
    for name, t in tiled.tensors.items():
        if name not in graph.tensors and name not in outputs:
            g.value_info.append(
                helper.make_tensor_value_info(name, _elem_type(tiled, name, elem), list(t.shape))
            )
    out = _import(work, model, _dims(model))
    diff = structure_difference(out.graph, tiled)
    if diff:
        raise GraphError(f"the written ONNX model is not the tiled graph: {diff}")
    return Model(out.graph, "onnx", model.path, work, {**model.info, **out.info})


def _elem_type(graph: Graph, name: str, known: Mapping[str, int]) -> int:
    """The ONNX element type of ``name`` (a new tensor: its dtype name in the IR)."""
    if name in known:
        return known[name]
    return int(helper.np_dtype_to_tensor_dtype(np.dtype(graph.tensors[name].dtype)))


__all__ = ["OnnxSpatialDialect", "write_tiled_onnx"]
