"""The TFLite dialect of identity graph rewriting: op roles, what a file can carry, the writer.

Roles (see :class:`~serenity.rewrites.records.Role`) are read from the op type, the tensor
shapes and constant-ness in the graph, and the options, quantization and constants of the
file, parsed once. TFLite is NHWC, so the channel axis is the last one:

* ``CONCATENATION``: a concat along its ``axis``;
* ``CONV_2D`` whose filter ``(O, kh, kw, I)`` has ``I`` equal to the input's channels (one
  group): channel-wise splittable;
* per-channel ops, kernel-wise splittable: ``DEPTHWISE_CONV_2D`` (multiplier ``m``), the
  pools, element-wise activations, ``PRELU`` with a per-channel alpha, ``MUL``/``ADD``/``SUB``/
  ``DIV`` of one activation and a scalar or per-channel constant, and ``MEAN``/``SUM``/
  ``REDUCE_MAX`` over spatial axes (without ``keep_dims`` the channel axis moves).

Graphs :func:`~serenity.rewrites.apply.apply_all` produces hold ops the file never had. Their
options are found by output name: a branch ``Y/kw3`` or ``Y/cw3`` is a copy of the op that
wrote ``Y`` (recursively), a new ``CONCATENATION`` carries its axis as an attribute, and the
ADDs of a channel-wise split have no role (two activation inputs). In the IR a copy still reads
the whole constant (the file holds its slice), so shape checks on constants apply to the ops
of the file only.

Quantization (:meth:`TFLiteDialect.check`): a split is written only when every part has the
concatenation's exact scale and zero point (else the concat requantizes, and moving it would
change values). Kernel-wise splits are then bit-exact: each channel is computed alone. A
channel-wise split sums requantized partial convolutions, which rounds differently; it is
refused unless ``allow_requantize`` (see :func:`partial_quantization`). A concatenation with a
fused activation is refused (its parts are not what it outputs).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

from serenity.errors import ModelFormatError, VerificationError
from serenity.formats import Model
from serenity.formats.tflite_bytes import TFLiteSource
from serenity.formats.tflite_io import parse_tflite
from serenity.formats.tflite_split import NUMPY, TFLiteEditor
from serenity.ir import Graph, Op
from serenity.rewrites.apply import apply_rewrite, structure_difference
from serenity.rewrites.records import Rewrite, Role

UNARY = frozenset({
    "RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "LOGISTIC", "TANH", "HARD_SWISH", "LEAKY_RELU",
    "ELU", "ABS", "NEG", "SQRT", "RSQRT", "EXP", "MAX_POOL_2D", "AVERAGE_POOL_2D", "L2_POOL_2D",
})  # fmt: skip
BINARY = frozenset({"MUL", "ADD", "SUB", "DIV"})
REDUCE = frozenset({"MEAN", "SUM", "REDUCE_MAX"})
QUANTIZED = frozenset({"int8", "uint8", "int16"})
#: dtype -> (lowest, highest, zero-centred zero point) of its quantized values.
_RANGES = {"int8": (-128, 127, 0), "uint8": (0, 255, 128), "int16": (-32768, 32767, 0)}
_ACTIVATIONS = {v: k for k, v in vars(fb.ActivationFunctionType).items() if not k.startswith("_")}
#: Fused activations an ADD can carry (the last addition of a channel-wise split takes the conv's).
_ADD_ACTIVATIONS = frozenset({0, 1, 2, 3})
_COPY = re.compile(r"(.*)/(kw|cw|acc)\d+", re.S)


def partial_quantization(q: Any, dtype: str) -> Any:
    """The quantization of a channel-wise split's partial and running sums, from the output's.

    A partial sum ``p_i`` has no activation applied and either sign, so ``Y``'s own
    quantization clips it when ``Y`` has a one-sided range (a fused RELU puts the zero point at
    -128: every negative partial would become 0; measured on inception_block_int8 that costs
    up to 43 steps of ``Y``). Instead each ``p_i`` gets a zero-centred range as wide as the
    farthest end of ``Y``'s: scale ``M / 127`` with ``M = max(|lo|, |hi|)`` over ``Y``'s real
    range ``[lo, hi]`` (int8: zero point 0; uint8: 128; int16: ``M / 32767``, zero point 0).
    E.g. int8 ``Y`` with scale 0.01 and zero point -128 spans ``[0, 2.55]``; partials get
    scale ``2.55 / 127 = 0.0201`` and zero point 0.

    Args:
        q: ``Y``'s ``QuantizationParametersT`` (or ``None``: a float tensor).
        dtype: ``Y``'s element type (``"int8"``, ``"uint8"``, ``"int16"``; others unchanged).

    Returns:
        A new ``QuantizationParametersT``, or a copy of ``q`` when it is not quantized.

    >>> q = fb.QuantizationParametersT()
    >>> q.scale, q.zeroPoint = np.array([0.01], np.float32), np.array([-128])
    >>> p = partial_quantization(q, "int8")
    >>> round(float(p.scale[0]), 4), p.zeroPoint.tolist()
    (0.0201, [0])
    """
    q = copy.deepcopy(q)
    if q is None or q.scale is None or len(q.scale) == 0 or dtype not in _RANGES:
        return q
    qmin, qmax, center = _RANGES[dtype]
    scale = np.asarray(q.scale, np.float64)
    zero = np.asarray(q.zeroPoint if q.zeroPoint is not None else [0], np.float64)
    widest = np.maximum(zero - qmin, qmax - zero) * scale
    q.scale = (widest / (qmax - center)).astype(np.float32)
    q.zeroPoint = np.full(len(q.scale), center, np.int64)
    q.min = q.max = None
    return q


class TFLiteDialect:
    """:class:`~serenity.rewrites.records.Dialect` of ``.tflite`` models (subgraph 0).

    Args:
        model: A model from :func:`~serenity.formats.tflite_io.load_tflite`.
        allow_requantize: Accept channel-wise splits of quantized convolutions (they round
            differently: partial sums are requantized).

    Raises:
        ModelFormatError: ``model`` is not a ``.tflite`` model.
    """

    format = "tflite"
    concat_type = "CONCATENATION"
    add_type = "ADD"

    def __init__(self, model: Model, *, allow_requantize: bool = False) -> None:
        if model.format != "tflite" or not isinstance(model.source, TFLiteSource):
            raise ModelFormatError(f"{model.path}: not a .tflite model (format {model.format})")
        self.model, self.allow_requantize = model, allow_requantize
        self._mt = model.source.model_t()
        sg = self._mt.subgraphs[0]
        self._tensors = dict(zip(model.graph.tensors, sg.tensors, strict=True))
        #: output name -> (op type, options) of the file's operators.
        self._ops = {
            o: (op.type, sg.operators[op.index].builtinOptions)
            for op in model.graph.ops
            for o in op.outputs
            if o
        }

    # -- Dialect -------------------------------------------------------------------------------

    def role(self, graph: Graph, op: Op) -> Role | str:
        """The op's role (see the module docstring), or why it has none.

        Args:
            graph: The loaded graph or one :func:`~serenity.rewrites.apply.apply_all` made from it.
            op: An op of ``graph``.

        Returns:
            The :class:`Role`, or one line naming the op and why it cannot be split.
        """
        t = graph.tensors
        acts = [i for i, n in enumerate(op.inputs) if n and not t[n].constant]
        outs = [n for n in op.outputs if n]
        if not acts or not outs:
            return f"{op.type} '{op.name}' reads or writes no activation"
        x, y = t[op.inputs[acts[0]]], t[outs[0]]
        rank = len(x.shape)
        opts, is_copy = self._options(op)
        if op.type == "CONCATENATION":
            axis = int(opts.axis) if opts is not None else int(op.attributes.get("axis", 0))
            axis = axis + len(y.shape) if axis < 0 else axis
            return Role("concat", axis, axis)
        if rank == 0:
            return f"{op.type} '{op.name}' reads a scalar"
        if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            return self._conv_role(graph, op, is_copy)
        if len(acts) > 1:
            return f"{op.type} '{op.name}' reads {len(acts)} activations"
        if op.type in UNARY:
            return Role("channelwise", rank - 1, rank - 1, data_input=acts[0])
        if op.type in BINARY or op.type == "PRELU":
            if op.type == "PRELU" and acts[0] != 0:
                return f"PRELU '{op.name}' has an activation as its alpha"
            const = next((t[n] for i, n in enumerate(op.inputs) if n and i != acts[0]), None)
            if const is None or y.shape != x.shape:
                return f"{op.type} '{op.name}' broadcasts its activation (output {y.shape}, input {x.shape})"
            if not (is_copy or _per_channel(const.shape, x.shape)):
                return (
                    f"{op.type} '{op.name}' has a constant of shape {const.shape}, not scalar or per-channel"
                )
            return Role("channelwise", rank - 1, rank - 1, data_input=acts[0])
        if op.type in REDUCE:
            return self._reduce_role(op, opts, rank)
        return f"{op.type} '{op.name}' is neither a one-group convolution nor computed per channel"

    def check(self, graph: Graph, rewrite: Rewrite) -> str | None:
        """Why the file cannot carry ``rewrite``, or ``None`` when it can.

        Args:
            graph: The graph ``rewrite`` was matched on.
            rewrite: A rewrite :func:`~serenity.rewrites.match.make_rewrite` built.

        Returns:
            One line: a fused activation on the concatenation (or one ADD cannot carry), a
            part quantized unlike the concatenation's output, or a quantized channel-wise split
            without ``allow_requantize``; ``None`` otherwise.
        """
        c_op = graph.ops[graph.tensors[rewrite.concat].producer]  # type: ignore[index]
        c_opts, _ = self._options(c_op)
        act = int(getattr(c_opts, "fusedActivationFunction", 0) or 0)
        if act:
            return (
                f"CONCATENATION '{c_op.name}' has fused activation {_ACTIVATIONS.get(act, act)}: its parts "
                "are not what it outputs"
            )
        if rewrite.kind == "channel":
            r_op = graph.ops[graph.tensors[rewrite.reader].producer]  # type: ignore[index]
            r_act = int(getattr(self._options(r_op)[0], "fusedActivationFunction", 0) or 0)
            if r_act not in _ADD_ACTIVATIONS:
                name = _ACTIVATIONS.get(r_act, r_act)
                return f"CONV_2D '{r_op.name}' has fused activation {name}, which ADD cannot carry"
        if graph.tensors[rewrite.concat].dtype not in QUANTIZED:
            return None
        qx = self._quant(rewrite.concat)
        for p in rewrite.parts:
            qp = self._quant(p)
            if qp != qx:
                (sp, zp), (sx, zx) = qp or ((), ()), qx or ((), ())
                what, a, b = ("scale", _fmt(sp), _fmt(sx)) if sp != sx else ("zero point", _fmt(zp), _fmt(zx))
                return (
                    f"part '{p}' is quantized with {what} {a} but the concatenation's output with {b} "
                    "(the concatenation requantizes)"
                )
        if rewrite.kind == "channel" and not self.allow_requantize:
            return (
                "channel-wise partitioning moves int8 rounding (partial sums are requantized); "
                "pass --allow-requantize to accept"
            )
        return None

    def materialize(self, rewrites: Sequence[Rewrite]) -> Model:
        """The model with ``rewrites`` applied in sequence, written and parsed back.

        Args:
            rewrites: Rewrites matched on the loaded graph and on the graphs each one makes.

        Returns:
            A new :class:`Model` (same path, its source the new bytes) whose graph equals
            :func:`~serenity.rewrites.apply.apply_all` of ``rewrites``.

        Raises:
            GraphError: a rewrite does not match the graph it is applied to.
            UnsupportedError: a constant to slice is stored outside the flatbuffer.
            VerificationError: the written file does not parse back to the rewritten graph.
        """
        path = self.model.path or Path("model.tflite")
        editor = TFLiteEditor(copy.deepcopy(self._mt), list(self.model.graph.tensors), str(path))
        graph = self.model.graph
        for rw in rewrites:
            after = apply_rewrite(graph, rw, self)  # validates rw against the graph
            r_op = graph.ops[graph.tensors[rw.reader].producer]  # type: ignore[index]
            role = self.role(graph, r_op)
            assert not isinstance(role, str)
            if rw.kind == "channel":
                editor.split_channel(rw, partial_quantization)
            else:
                sliced = {"DEPTHWISE_CONV_2D": (1, 2), "PRELU": (1,)}.get(r_op.type, ())
                if r_op.type in BINARY:
                    sliced = (1 - role.data_input,)
                editor.split_kernel(rw, role.data_input, sliced)
            graph = after
        out = parse_tflite(editor.finish(), path)
        diff = structure_difference(out.graph, graph)
        if diff is not None:
            raise VerificationError(f"{path}: the rewritten file differs from the rewritten graph: {diff}")
        return out

    # -- internals -------------------------------------------------------------------------------

    def _options(self, op: Op) -> tuple[Any, bool]:
        """The file options ``op`` carries and whether it is a copy made by a split: the options
        of the file's op of the same type that wrote its output, or (for a branch ``Y/kw3``,
        ``Y/cw3``) of the op that wrote ``Y``."""
        name, is_copy = op.outputs[0] if op.outputs else "", False
        while True:
            found = self._ops.get(name)
            if found is not None and found[0] == op.type:
                return found[1], is_copy
            m = _COPY.fullmatch(name)
            if m is None or m.group(2) == "acc":
                return None, is_copy
            name, is_copy = m.group(1), True

    def _quant(self, name: str) -> tuple[tuple[float, ...], tuple[int, ...]] | None:
        """``(scales, zero points)`` of a tensor, ``None`` when it is not quantized."""
        q = self._qparams(name)
        if q is None or q.scale is None or len(q.scale) == 0:
            return None
        zeros = () if q.zeroPoint is None else tuple(int(z) for z in q.zeroPoint)
        return tuple(float(s) for s in q.scale), zeros

    def _qparams(self, name: str) -> Any:
        """A tensor's ``QuantizationParametersT``; a new one's as the editor writes it: a branch
        ``Y/kw3`` has ``Y``'s, a partial or running sum ``Y/cw3``, ``Y/acc3`` the partial
        quantization of ``Y``'s."""
        t = self._tensors.get(name)
        if t is not None:
            return t.quantization
        m = _COPY.fullmatch(name)
        if m is None:
            return None
        base = self._qparams(m.group(1))
        return base if m.group(2) == "kw" else partial_quantization(base, self._dtype(m.group(1)))

    def _dtype(self, name: str) -> str:
        """The element type of a tensor of the file or one a split made from it (the same)."""
        while name not in self._tensors and (m := _COPY.fullmatch(name)) is not None:
            name = m.group(1)
        t = self._tensors.get(name)
        return "" if t is None else np.dtype(NUMPY.get(t.type, np.void)).name

    def _conv_role(self, graph: Graph, op: Op, is_copy: bool) -> Role | str:
        """CONV_2D of one group (a copy made by a split reads the whole filter in the IR), or
        DEPTHWISE_CONV_2D with multiplier ``C_out / C_in``."""
        t = graph.tensors
        x = t[op.inputs[0]]
        w = t[op.inputs[1]] if len(op.inputs) > 1 and op.inputs[1] else None
        y = t[op.outputs[0]]
        if w is None or not w.constant:
            return f"{op.type} '{op.name}' has no constant filter"
        if len(x.shape) != 4 or len(w.shape) != 4 or len(y.shape) != 4:
            return f"{op.type} '{op.name}' is not 2-D (input {x.shape}, filter {w.shape})"
        c_in, c_out = x.shape[3], y.shape[3]
        if op.type == "DEPTHWISE_CONV_2D":
            if c_in == 0 or c_out % c_in:
                return f"DEPTHWISE_CONV_2D '{op.name}' has {c_out} outputs for {c_in} input channels"
            return Role("channelwise", 3, 3, multiplier=c_out // c_in)
        if w.shape[3] != c_in and not is_copy:
            groups = c_in // max(1, w.shape[3])
            return f"CONV_2D '{op.name}' has {groups} groups (filter {w.shape}, input {x.shape})"
        return Role("conv", 3, 3)

    def _reduce_role(self, op: Op, opts: Any, rank: int) -> Role | str:
        """A reduction over spatial axes (read from the file's constant) is per channel."""
        axes_name = op.inputs[1] if len(op.inputs) > 1 else ""
        const = self._tensors.get(axes_name)
        ints = {fb.TensorType.INT32: np.int32, fb.TensorType.INT64: np.int64}
        data = None
        if const is not None and const.type in ints and const.buffer < len(self._mt.buffers):
            data = self._mt.buffers[const.buffer].data
        if const is None or data is None:
            return f"{op.type} '{op.name}' has no constant axes"
        raw = np.frombuffer(np.asarray(data, np.uint8).tobytes(), ints[const.type])
        axes = sorted({int(a) % rank for a in raw})
        if 0 in axes or rank - 1 in axes:
            return f"{op.type} '{op.name}' reduces axes {axes}, which include the batch or channel axis"
        keep = bool(getattr(opts, "keepDims", False))
        return Role("channelwise", rank - 1, rank - 1 if keep else rank - 1 - len(axes))


def _per_channel(shape: tuple[int, ...], x: tuple[int, ...]) -> bool:
    """Whether a constant of ``shape`` broadcasts over ``x`` as a scalar or along its last axis."""
    return len(shape) <= len(x) and all(s == 1 for s in shape[:-1]) and shape[-1:] in ((), (1,), x[-1:])


def _fmt(values: tuple[float, ...] | tuple[int, ...]) -> str:
    return ", ".join(f"{v:g}" for v in values[:4]) + (" ..." if len(values) > 4 else "")


__all__ = ["BINARY", "QUANTIZED", "REDUCE", "UNARY", "TFLiteDialect", "partial_quantization"]
