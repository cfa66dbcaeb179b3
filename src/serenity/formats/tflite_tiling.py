"""The TFLite adapter of patch-based execution: windows read from the file, tiled files written.

:class:`TfliteSpatialDialect` tells :func:`serenity.rewrites.tiling.plan_tiles` how each op of
subgraph 0 maps spatial positions (NHWC: H is axis 1, W axis 2), from the builtin options the
IR does not carry: ``CONV_2D`` (groups = input channels / filter channels),
``DEPTHWISE_CONV_2D`` (groups = input channels), ``MAX_POOL_2D`` and ``AVERAGE_POOL_2D`` with
their strides, dilations and ``SAME``/``VALID`` padding as TFLite computes it
(``ComputePaddingHeightWidth``)::

    total = max((out - 1) * s + (k - 1) * d + 1 - in, 0),  before = total // 2,  after = total - before

and element-wise ops as ``"pointwise"``: ``ADD``/``MUL``/``SUB`` of same-HW activations (a
constant operand must broadcast over H and W and is not a data input), the unary activations,
``QUANTIZE``/``DEQUANTIZE`` and ``CONCATENATION`` on the channel axis.

:func:`write_tiled_tflite` writes a :class:`~serenity.rewrites.tiling.TilePlan` into the file
through the schema's object API (the editor of :mod:`serenity.formats.tflite_split`), tile by
tile: a ``STRIDED_SLICE`` where a tile reads part of its source, a ``PAD`` where it reads past
the image border (``PADV2`` with the dtype's lowest value before a max pool), the op's copy with
padding ``VALID`` and its own options, fused activation and constants, and the
``CONCATENATION`` ops that rebuild the split tensor. Every new activation copies the type and
quantization of the tensor it is a part of, so int8 stays exact:

* TFLM's ``PAD`` pads int8 with its output's zero point (``kernels/pad.cc``), here the padded
  tensor's own, and its int8 convolutions skip out-of-image taps, which is adding
  ``(zp - zp) * w = 0``: a ``VALID`` convolution over a zero-point-padded tile is the ``SAME``
  one bit for bit. Float pads with ``0.0`` and adds ``0 * w`` to an accumulator that starts at
  ``+0.0``: exact as well.
* TFLM's max pool starts its maximum from the dtype's lowest value and visits in-image taps
  only; padding with that value changes no maximum.

The file lists its operators in the order of :func:`~serenity.rewrites.tiling.tiled_graph`, so
an order of that graph (what a scheduler returns) is an order of the file.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

from serenity.errors import ModelFormatError, UnsupportedError, VerificationError
from serenity.formats import Model
from serenity.formats.tflite_bytes import TFLiteSource
from serenity.formats.tflite_io import parse_tflite
from serenity.formats.tflite_split import NUMPY, TFLiteEditor
from serenity.ir import Graph, Op, Tensor
from serenity.rewrites.apply import structure_difference
from serenity.rewrites.tiling import Box, Layout, TileInput, TilePlan, Window, tiled_graph

#: Element-wise ops of one activation: output pixel (r, c) reads input pixel (r, c) only.
UNARY = frozenset({
    "RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "LEAKY_RELU", "LOGISTIC", "TANH", "HARD_SWISH",
    "ELU", "ABS", "NEG", "QUANTIZE", "DEQUANTIZE",
})  # fmt: skip
#: Element-wise ops of two operands, each an activation of the output's H and W or a constant
#: that broadcasts over H and W.
BINARY = frozenset({"ADD", "MUL", "SUB"})
_POINTWISE = UNARY | BINARY | {"CONCATENATION"}
_CONVS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D"})
_POOLS = {"MAX_POOL_2D": "maxpool", "AVERAGE_POOL_2D": "avgpool"}
_SAME, _VALID = fb.Padding.SAME, fb.Padding.VALID
#: The value PADV2 pads a max pool's input with: the lowest of the dtype, which TFLM's max
#: pool starts its maximum from.
_LOWEST = {
    fb.TensorType.FLOAT32: float(np.finfo(np.float32).min), fb.TensorType.INT8: -128,
    fb.TensorType.UINT8: 0, fb.TensorType.INT16: -32768,
}  # fmt: skip
#: NHWC axis of a concatenation along the spatial axis ``0`` (H) or ``1`` (W) of a plan.
_AXIS = {0: 1, 1: 2}


class TfliteSpatialDialect:
    """:class:`~serenity.rewrites.tiling.SpatialDialect` of ``.tflite`` models (subgraph 0).

    The options of each op are read from the file, found by the op's outputs, so ``window``
    answers for the ops of the loaded graph.

    Args:
        model: A model from :func:`~serenity.formats.tflite_io.load_tflite`.

    Raises:
        ModelFormatError: ``model`` is not a ``.tflite`` model.
    """

    layout: Layout = "NHWC"
    #: Op types of the ops tiling adds; ``pad_lowest`` pads a max pool's input (PADV2).
    op_types: Mapping[str, str] = MappingProxyType(
        {"slice": "STRIDED_SLICE", "pad": "PAD", "pad_lowest": "PADV2", "concat": "CONCATENATION"}
    )

    def __init__(self, model: Model) -> None:
        if model.format != "tflite" or not isinstance(model.source, TFLiteSource):
            raise ModelFormatError(f"{model.path}: not a .tflite model (format {model.format})")
        self.model = model
        #: The file's object API, kept for the writer (buffers and options).
        self.model_t = model.source.model_t()
        sg = self.model_t.subgraphs[0]
        #: outputs -> (op type, the file's OperatorT) of subgraph 0.
        self._operators = {op.outputs: (op.type, sg.operators[op.index]) for op in model.graph.ops}
        self._label = str(model.path or "<model>")

    def operator(self, op: Op) -> Any:
        """The file's ``OperatorT`` of ``op`` (an op of the loaded graph).

        Raises:
            ModelFormatError: the file has no operator of ``op``'s type writing its outputs.
        """
        found = self._operators.get(op.outputs)
        if found is None or found[0] != op.type:
            raise ModelFormatError(f"{self._label}: no {op.type} operator writes {list(op.outputs)}")
        return found[1]

    def window(self, graph: Graph, op: Op) -> Window | str:
        """How ``op`` maps (H, W) positions of its data inputs to its output, or why it cannot
        be tiled.

        Args:
            graph: The loaded graph.
            op: One of its ops.

        Returns:
            The :class:`Window`, or one line naming the op and the reason.

        Example:
            >>> from serenity.formats import load
            >>> m = load(_example("mobilenet_v2_035_96_int8"))
            >>> d = TfliteSpatialDialect(m)
            >>> w = d.window(m.graph, m.graph.ops[0])  # 3x3 stride 2 SAME on 96 -> 48
            >>> w.kind, w.kernel, w.stride, w.pads
            ('conv', (3, 3), (2, 2), (0, 0, 1, 1))
            >>> d.window(m.graph, m.graph.ops[-1])  # doctest: +ELLIPSIS
            "FULLY_CONNECTED '63:FULLY_CONNECTED' is not computed window by window ..."
        """
        found = self._operators.get(op.outputs)
        if found is None or found[0] != op.type:
            return f"{op.type} '{op.name}' is not an operator of {self._label}"
        if op.type not in _CONVS and op.type not in _POOLS and op.type not in _POINTWISE:
            return (
                f"{op.type} '{op.name}' is not computed window by window (only convolutions, pools "
                "and element-wise ops are)"
            )
        opts = found[1].builtinOptions
        t = graph.tensors
        outs = [n for n in op.outputs if n]
        if len(outs) != 1:
            return f"{op.type} '{op.name}' writes {len(outs)} tensors, not one"
        y = t[outs[0]]
        if len(y.shape) != 4:
            return f"{op.type} '{op.name}' writes {y.shape}, not an NHWC image"
        if op.type in _CONVS:
            return self._conv(op, opts, t)
        if op.type in _POOLS:
            return self._pool(op, opts, t)
        return self._pointwise(op, opts, t, y)

    # -- windows -------------------------------------------------------------------------------

    def _conv(self, op: Op, opts: Any, t: Mapping[str, Tensor]) -> Window | str:
        x = t.get(op.inputs[0]) if op.inputs else None
        w = t.get(op.inputs[1]) if len(op.inputs) > 1 else None
        y = t[op.outputs[0]]
        if x is None or x.constant or len(x.shape) != 4:
            return f"{op.type} '{op.name}' does not read an NHWC activation"
        if w is None or not w.constant or len(w.shape) != 4:
            return f"{op.type} '{op.name}' has no constant 4-D filter"
        if any(n and not t[n].constant for n in op.inputs[2:]):
            return f"{op.type} '{op.name}' reads a bias that is not a constant"
        c_in = x.shape[3]
        if op.type == "DEPTHWISE_CONV_2D":
            groups = c_in
        else:
            if w.shape[3] == 0 or c_in % w.shape[3]:
                return f"CONV_2D '{op.name}' has filter {w.shape} for {c_in} input channels"
            groups = c_in // w.shape[3]
        kernel = (int(w.shape[1]), int(w.shape[2]))
        stride = (int(opts.strideH), int(opts.strideW))
        dilation = (int(opts.dilationHFactor), int(opts.dilationWFactor))
        pads = _pads(op, int(opts.padding), x.shape, y.shape, kernel, stride, dilation)
        if isinstance(pads, str):
            return pads
        return Window("conv", kernel, stride, dilation, pads, groups, (0,))

    def _pool(self, op: Op, opts: Any, t: Mapping[str, Tensor]) -> Window | str:
        x = t.get(op.inputs[0]) if op.inputs else None
        y = t[op.outputs[0]]
        if x is None or x.constant or len(x.shape) != 4:
            return f"{op.type} '{op.name}' does not read an NHWC activation"
        kernel = (int(opts.filterHeight), int(opts.filterWidth))
        stride = (int(opts.strideH), int(opts.strideW))
        pads = _pads(op, int(opts.padding), x.shape, y.shape, kernel, stride, (1, 1))
        if isinstance(pads, str):
            return pads
        kind = _POOLS[op.type]
        return Window(kind, kernel, stride, (1, 1), pads, 1, (0,))  # type: ignore[arg-type]

    def _pointwise(self, op: Op, opts: Any, t: Mapping[str, Tensor], y: Tensor) -> Window | str:
        data: list[int] = []
        for i, n in enumerate(op.inputs):
            if not n:
                continue
            x = t[n]
            if not x.constant:
                if len(x.shape) != 4 or x.shape[:3] != y.shape[:3]:
                    return (
                        f"{op.type} '{op.name}' reads '{n}' of shape {x.shape}, not the output's "
                        f"batch, height and width {y.shape[:3]}"
                    )
                data.append(i)
            elif op.type == "CONCATENATION":
                return f"CONCATENATION '{op.name}' concatenates constant '{n}'"
            elif len(x.shape) > 4 or any(s != 1 for s in x.shape[-3:-1]):
                return (
                    f"{op.type} '{op.name}' has constant '{n}' of shape {x.shape}, which varies over H or W"
                )
        if not data:
            return f"{op.type} '{op.name}' reads no activation"
        if op.type == "CONCATENATION":
            axis = int(opts.axis) if opts is not None else 0
            if axis % 4 != 3:
                return f"CONCATENATION '{op.name}' joins along axis {axis}, not the channel axis"
        if op.type in UNARY and len(data) != 1:
            return f"{op.type} '{op.name}' reads {len(data)} activations"
        return Window("pointwise", data_inputs=tuple(data))


def _pads(
    op: Op,
    padding: int,
    x: tuple[int, ...],
    y: tuple[int, ...],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int, int, int] | str:
    """``(top, left, bottom, right)`` of TFLite's ``SAME``/``VALID`` padding, or why the shapes
    are not what TFLite computes."""
    before, after = [], []
    for axis, k, s, d in ((1, kernel[0], stride[0], dilation[0]), (2, kernel[1], stride[1], dilation[1])):
        n_in, n_out, eff = x[axis], y[axis], (k - 1) * d + 1
        if min(k, s, d) < 1:
            return f"{op.type} '{op.name}' has kernel {kernel}, stride {stride}, dilation {dilation}"
        if padding == _VALID:
            expected, total = (n_in - eff) // s + 1, 0
        elif padding == _SAME:
            expected = -(-n_in // s)
            total = max((n_out - 1) * s + eff - n_in, 0)
        else:
            return f"{op.type} '{op.name}' has padding {padding}, neither SAME nor VALID"
        if n_out != expected:
            return (
                f"{op.type} '{op.name}' has output {y} for input {x}, kernel {kernel}, stride "
                f"{stride}: not what TFLite computes"
            )
        before.append(total // 2)
        after.append(total - total // 2)
    return (before[0], before[1], after[0], after[1])


# -- the writer -----------------------------------------------------------------------------------


class _TileEditor(TFLiteEditor):
    """The editor of :mod:`~serenity.formats.tflite_split` with the ops tiling needs."""

    def part(self, like: str, name: str, box: Box) -> int:
        """A new activation named ``name``: tensor ``like`` restricted to ``box`` (H, W)."""
        t = self.sg.tensors[self.index[like]]
        shape = [int(t.shape[0]), box.r1 - box.r0, box.c1 - box.c0, int(t.shape[3])]
        i = self._activation(t, name, shape, None)
        new = self.sg.tensors[i]
        sig = t.shapeSignature
        new.shapeSignature = None if sig is None or len(sig) != 4 else [int(sig[0]), *shape[1:]]
        return i

    def constant(self, name: str, data: np.ndarray, ttype: int, like: Any = None) -> int:
        """A new constant tensor holding ``data`` (``like``: a tensor whose quantization it takes)."""
        t = fb.TensorT()
        t.name, t.shape, t.type = name, list(data.shape), ttype
        t.buffer = self._new_buffer(data)
        if like is not None and like.quantization is not None:
            t.quantization = copy.deepcopy(like.quantization)
        return self._add(t)

    def new_op(self, code: int, inputs: list[int], output: int, kind: int, options: Any) -> Any:
        """A new operator of builtin ``code`` (its OperatorCode added when missing)."""
        return self._new_op(code, inputs, output, kind, options)


def write_tiled_tflite(model: Model, plan: TilePlan) -> bytes:
    """The ``.tflite`` file of ``model`` with ``plan``'s prefix executed tile by tile.

    Per :class:`~serenity.rewrites.tiling.TileStep`: a ``STRIDED_SLICE`` (constant int32 begin,
    end, strides) for each sliced input, a ``PAD`` (``PADV2`` with the dtype's lowest value
    before a max pool) for each padded one, and the op's copy with padding ``VALID`` and its
    own options and constants; then the plan's ``CONCATENATION`` ops (H is axis 1, W axis 2).
    New activations take the type and quantization of the tensor they are a part of. Tensors
    get the names of :func:`~serenity.rewrites.tiling.tiled_graph` and the operators are listed
    in its order; the graph inputs, outputs and signature defs stay; an
    ``OfflineMemoryAllocation`` plan (made for the old tensors) is dropped; buffers are 16-byte
    aligned.

    Args:
        model: A model from :func:`~serenity.formats.tflite_io.load_tflite`.
        plan: A plan :func:`~serenity.rewrites.tiling.plan_tiles` made for ``model.graph`` with
            :class:`TfliteSpatialDialect`.

    Returns:
        The new file's bytes; it parses back to ``tiled_graph(model.graph, plan, dialect)``.

    Raises:
        ModelFormatError: ``model`` is not a ``.tflite`` model.
        UnsupportedError: the file stores buffers after the flatbuffer, or a max pool reads a
            dtype without a lowest value to pad with.
        VerificationError: the written file does not parse back to the tiled graph.

    Example:
        >>> from serenity.formats import load
        >>> from serenity.rewrites.tiling import plan_tiles
        >>> m = load(_example("mobilenet_v2_035_96_int8"))
        >>> split = m.graph.ops[2].outputs[0]
        >>> plan = plan_tiles(m.graph, TfliteSpatialDialect(m), split, (2, 2))
        >>> f"{plan.overhead():.1%} more MACs"
        '5.2% more MACs'
        >>> from serenity.formats.tflite_io import parse_tflite
        >>> tiled = parse_tflite(write_tiled_tflite(m, plan), m.path)
        >>> [op.type for op in tiled.graph.ops[:5]]  # tile (0, 0): the depthwise pads top, left
        ['STRIDED_SLICE', 'CONV_2D', 'PAD', 'DEPTHWISE_CONV_2D', 'CONV_2D']
        >>> len(m.graph.ops), len(tiled.graph.ops)
        (64, 87)
    """
    dialect = TfliteSpatialDialect(model)
    graph = model.graph
    target = tiled_graph(graph, plan, dialect)
    path = model.path or Path("model.tflite")
    editor = _TileEditor(copy.deepcopy(dialect.model_t), list(graph.tensors), str(path))
    sg = editor.sg
    # 1. The ops outside the prefix keep their operators; each is found by its outputs.
    prefix = set(plan.prefix)
    by_output: dict[tuple[str, ...], Any] = {
        op.outputs: sg.operators[op.index] for op in graph.ops if op.index not in prefix
    }
    # 2. Per step: slice, pad (each made once: readers wanting the same region share it), and
    #    the op's copy.
    for step in plan.steps:
        op = graph.ops[step.op]
        operator = dialect.operator(op)
        inputs = list(operator.inputs)
        for inp in step.inputs:
            inputs[inp.position] = _read(editor, by_output, inp, graph.tensors[inp.tensor])
        copy_op = copy.deepcopy(operator)
        copy_op.inputs = inputs
        copy_op.outputs = [editor.part(op.outputs[0], step.output, step.out_box)]
        if hasattr(copy_op.builtinOptions, "padding"):
            copy_op.builtinOptions.padding = _VALID
        by_output[(step.output,)] = copy_op
    # 3. The concatenations, the last one writing the split tensor itself.
    boxes = {step.output: step.out_box for step in plan.steps}
    for out, parts, axis in plan.concats:
        box = _joined([boxes[p] for p in parts], axis)
        boxes[out] = box
        index = editor.index[out] if out == plan.split else editor.part(plan.split, out, box)
        opts = fb.ConcatenationOptionsT()
        opts.axis = _AXIS[axis]
        by_output[(out,)] = editor.new_op(
            fb.BuiltinOperator.CONCATENATION,
            [editor.index[p] for p in parts],
            index,
            fb.BuiltinOptions.ConcatenationOptions,
            opts,
        )
    # 4. The operators in the tiled graph's order.
    try:
        sg.operators = [by_output[op.outputs] for op in target.ops]
    except KeyError as e:
        raise VerificationError(
            f"{path}: the tiled graph has an op writing {e}, which the plan does not make"
        ) from e
    data = editor.finish()
    written = parse_tflite(data, path)
    diff = structure_difference(written.graph, target)
    if diff is not None:
        raise VerificationError(f"{path}: the tiled file differs from the tiled graph: {diff}")
    return data


def _read(editor: _TileEditor, by_output: dict[tuple[str, ...], Any], inp: TileInput, tensor: Tensor) -> int:
    """The file index of what a step reads for ``inp``: its source, sliced and padded as the
    plan says; a slice or pad another reader already made is shared."""
    index = editor.index[inp.source]
    inside, src = inp.inside, inp.source_box
    if inp.sliced is not None and inp.sliced in editor.index:
        index = editor.index[inp.sliced]
    elif inp.sliced is not None:
        n, c = int(tensor.shape[0]), int(tensor.shape[3])
        begin = np.array([0, inside.r0 - src.r0, inside.c0 - src.c0, 0], np.int32)
        end = np.array([n, inside.r1 - src.r0, inside.c1 - src.c0, c], np.int32)
        ins = [
            index,
            editor.constant(f"{inp.sliced}/begin", begin, fb.TensorType.INT32),
            editor.constant(f"{inp.sliced}/end", end, fb.TensorType.INT32),
            editor.constant(f"{inp.sliced}/strides", np.ones(4, np.int32), fb.TensorType.INT32),
        ]
        index = editor.part(inp.tensor, inp.sliced, inside)
        by_output[(inp.sliced,)] = editor.new_op(
            fb.BuiltinOperator.STRIDED_SLICE, ins, index, fb.BuiltinOptions.StridedSliceOptions,
            fb.StridedSliceOptionsT(),
        )  # fmt: skip
    if inp.padded is not None and inp.padded in editor.index:
        index = editor.index[inp.padded]
    elif inp.padded is not None:
        top, left, bottom, right = inp.pads
        paddings = np.array([[0, 0], [top, bottom], [left, right], [0, 0]], np.int32)
        like = editor.sg.tensors[editor.index[inp.tensor]]
        ins = [index, editor.constant(f"{inp.padded}/paddings", paddings, fb.TensorType.INT32)]
        if inp.fill == "lowest":
            if like.type not in _LOWEST:
                raise UnsupportedError(
                    f"{editor.label}: cannot pad max pool input '{inp.tensor}' of type {tensor.dtype} "
                    "with its lowest value"
                )
            value = np.array(_LOWEST[like.type], NUMPY[like.type])
            ins.append(editor.constant(f"{inp.padded}/lowest", value, like.type, like))
            code, kind, opts = fb.BuiltinOperator.PADV2, fb.BuiltinOptions.PadV2Options, fb.PadV2OptionsT()
        else:
            code, kind, opts = fb.BuiltinOperator.PAD, fb.BuiltinOptions.PadOptions, fb.PadOptionsT()
        index = editor.part(inp.tensor, inp.padded, inp.need)
        by_output[(inp.padded,)] = editor.new_op(code, ins, index, kind, opts)
    return index


def _joined(boxes: Sequence[Box], axis: int) -> Box:
    """The box of a concatenation of ``boxes`` along spatial axis ``axis`` (0: H, 1: W)."""
    r0, c0 = min(b.r0 for b in boxes), min(b.c0 for b in boxes)
    r1, c1 = max(b.r1 for b in boxes), max(b.c1 for b in boxes)
    rows = sum(b.r1 - b.r0 for b in boxes) if axis == 0 else r1 - r0
    cols = sum(b.c1 - b.c0 for b in boxes) if axis == 1 else c1 - c0
    return Box(r0, r0 + rows, c0, c0 + cols)


def _example(name: str) -> Path:
    """A stem model for the doctests: the shared corpus, else the repository's examples."""
    here = Path(__file__).resolve()
    for root in (here.parents[4] / "shared" / "models", here.parents[3] / "examples"):
        path = root / "stem" / f"{name}.tflite"
        if path.is_file():
            return path
    return path


__all__ = ["BINARY", "UNARY", "TfliteSpatialDialect", "write_tiled_tflite"]
