"""Which ONNX ops a concatenation's split can pass, read from the IR alone (NCHW: channels on 1).

Ahn et al. ("Ordering Chaos", MLSys 2020, section 4) split an op ``Y = f(X)`` reading a
concatenation when ``f`` computes channel ``c`` of ``Y`` from channel ``c`` of ``X`` alone
(kernel-wise) or is a group-1 convolution (channel-wise). This module decides which ONNX ops are
which from the op type, its attributes (``Op.attributes``) and the shapes the graph records, so
the optimizer can judge rewrites of a graph whose weights it never loads. For every constant
input it also says along which axis the constant varies per channel, so that the writer
(:mod:`serenity.formats.onnx_rewrite`) knows what to slice; a constant equal for every channel
(a scalar, a ``(1, 1, 1)`` bias) is shared by the branches instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from serenity.ir import Graph, Op, Tensor
from serenity.rewrites.records import Role

#: Element-wise ops of one input: element ``i`` of the output depends on element ``i`` only.
UNARY = frozenset({
    "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "Cast", "Ceil", "Celu", "Cos", "Cosh",
    "Elu", "Erf", "Exp", "Floor", "Gelu", "HardSigmoid", "HardSwish", "Identity", "IsInf", "IsNaN",
    "LeakyRelu", "Log", "Mish", "Neg", "Not", "Reciprocal", "Relu", "Round", "Selu", "Shrink",
    "Sigmoid", "Sign", "Sin", "Sinh", "Softplus", "Softsign", "Sqrt", "Tan", "Tanh",
    "ThresholdedRelu",
})  # fmt: skip
#: Element-wise ops whose optional extra inputs are scalars by the spec (Clip's bounds, Dropout's
#: ratio and training flag): every branch shares them.
SCALAR_EXTRAS = frozenset({"Clip", "Dropout"})
#: Element-wise ops of two inputs; split when one is an activation and the other a constant equal
#: along every axis but the channel axis.
BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Pow"})
#: Pooling: each output channel pools its own input channel.
POOLS = frozenset({"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"})
#: Reductions: per channel when their axes leave the batch and channel axes alone.
REDUCES = frozenset({
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
    "ReduceProd", "ReduceSum", "ReduceSumSquare",
})  # fmt: skip
#: Normalizations with one ``(C,)`` parameter per channel in each input after the first.
NORMS = {"BatchNormalization": 5, "InstanceNormalization": 3}
#: Why common ops that are not split are not, for ``--explain``.
WHY_NOT = {
    "Softmax": "Softmax is not split: it may normalize across channels",
    "LogSoftmax": "LogSoftmax is not split: it may normalize across channels",
    "Hardmax": "Hardmax is not split: it may compare across channels",
    "LRN": "LRN mixes neighbouring channels",
    "LpNormalization": "LpNormalization may normalize across channels",
    "MatMul": "MatMul is not per-channel",
    "Gemm": "Gemm is not per-channel",
    "Constant": "Constant has no input to split",
}


@dataclass(frozen=True, slots=True)
class Plan:
    """How to split one op.

    Attributes:
        role: The op's role (what :meth:`Dialect.role` answers).
        sliced: Input position -> axis of that constant along which it varies per channel (for a
            ``conv`` role: the weight's input-channel axis). Constant inputs not listed are shared
            by every branch, except a convolution's bias, which only the first branch adds.
        depthwise: The op is a depthwise ``Conv``: a branch's ``group`` is its part's channels.
    """

    role: Role
    sliced: Mapping[int, int] = field(default_factory=dict)
    depthwise: bool = False


def const_shape(graph: Graph, name: str, extra: Mapping[str, tuple[int, ...]]) -> tuple[int, ...] | None:
    """The shape of constant ``name``, or ``None`` when the graph does not record it.

    An initializer's shape is in the graph. A ``Constant`` op's is not (the importer declares its
    output with dtype ``"const"``): it is read from the op's ``value_float(s)``/``value_int(s)``
    attribute, else from ``extra`` (shapes of ``value`` tensors, when a model is at hand).
    """
    t = graph.tensors[name]
    if t.dtype != "const":
        return t.shape
    if name in extra:
        return extra[name]
    if t.producer is not None:
        attrs = graph.ops[t.producer].attributes
        for key in ("value_float", "value_int"):
            if key in attrs:
                return ()
        for key in ("value_floats", "value_ints"):
            if key in attrs:
                return (len(attrs[key]),)
    return None


def _channel_axis_of(shape: tuple[int, ...], x: Tensor) -> int | str | None:
    """Along which axis of a constant of ``shape``, broadcast against activation ``x``, the
    constant varies per channel: ``None`` when it is the same for every channel, a reason when it
    varies along another axis or would broadcast ``x`` to a larger shape."""
    r = len(x.shape)
    if len(shape) > r:
        return f"its constant of shape {shape} has a higher rank than the activation"
    padded = (1,) * (r - len(shape)) + tuple(shape)
    for a, (s, n) in enumerate(zip(padded, x.shape, strict=True)):
        if a != 1 and s != 1:
            return f"its constant of shape {tuple(shape)} varies along axis {a}, not only along channels"
        if a == 1 and s not in (1, n):
            return f"its constant of shape {tuple(shape)} does not broadcast to {n} channels"
    if padded[1] == 1:
        return None
    return 1 - (r - len(shape))


def _constants(graph: Graph, op: Op, positions: range) -> str | None:
    """Why an input of ``op`` at ``positions`` is not a constant (absent inputs are fine)."""
    for j in positions:
        if j < len(op.inputs) and op.inputs[j] and not graph.tensors[op.inputs[j]].constant:
            return f"{op.type} input {j} ('{op.inputs[j]}') is computed at run time, not a constant"
    return None


def _conv(graph: Graph, op: Op, x: Tensor, y: Tensor) -> Plan | str:
    if len(op.inputs) < 2 or len(x.shape) < 3:
        return f"{op.type} of a rank-{len(x.shape)} input"
    bad = _constants(graph, op, range(1, 3))
    if bad:
        return bad
    group = int(op.attributes.get("group", 1))
    c_in, c_out = x.shape[1], y.shape[1]
    if group == 1:
        # The weight's input channels: axis 1 of Conv's (M, C, k..), axis 0 of ConvTranspose's.
        return Plan(Role("conv", 1, 1), {1: 1 if op.type == "Conv" else 0})
    if op.type == "Conv" and group == c_in and c_out % c_in == 0:
        sliced = {1: 0, 2: 0} if len(op.inputs) > 2 and op.inputs[2] else {1: 0}
        return Plan(Role("channelwise", 1, 1, multiplier=c_out // c_in), sliced, depthwise=True)
    return f"{op.type} with group {group} of {c_in} channels (neither 1 nor depthwise)"


def _binary(graph: Graph, op: Op, extra: Mapping[str, tuple[int, ...]]) -> Plan | str:
    acts = [j for j, n in enumerate(op.inputs) if n and not graph.tensors[n].constant]
    if len(acts) != 1 or len(op.inputs) != 2:
        return f"{op.type} of {len(acts)} activations is not per-channel with a constant"
    d = acts[0]
    x = graph.tensors[op.inputs[d]]
    return _with_constant(graph, op, x, d, 1 - d, extra)


def _with_constant(
    graph: Graph, op: Op, x: Tensor, d: int, k: int, extra: Mapping[str, tuple[int, ...]]
) -> Plan | str:
    """Activation ``x`` at input ``d``, a broadcast constant at input ``k``."""
    shape = const_shape(graph, op.inputs[k], extra)
    if shape is None:
        return f"{op.type}'s constant '{op.inputs[k]}' has a shape the graph does not record"
    axis = _channel_axis_of(shape, x)
    if isinstance(axis, str):
        return f"{op.type} is not per-channel: {axis}"
    return Plan(Role("channelwise", 1, 1, data_input=d), {} if axis is None else {k: axis})


def _reduce(op: Op, rank: int) -> Plan | str:
    if len(op.inputs) > 1 and op.inputs[1]:
        return f"{op.type} takes its axes as a tensor, whose values the graph does not record"
    axes = op.attributes.get("axes")
    if not axes:
        return f"{op.type} without axes reduces every axis"
    if any(not -rank <= a < rank or a % rank < 2 for a in axes):
        return f"{op.type} over axes {list(axes)} reduces the batch or channel axis"
    return Plan(Role("channelwise", 1, 1))


def _norm(graph: Graph, op: Op, x: Tensor, extra: Mapping[str, tuple[int, ...]]) -> Plan | str:
    n = NORMS[op.type]
    if len(op.inputs) != n or not all(op.inputs):
        return f"{op.type} with {len(op.inputs)} inputs"
    if int(op.attributes.get("training_mode", 0)):
        return f"{op.type} in training mode"
    bad = _constants(graph, op, range(1, n))
    if bad:
        return bad
    for j in range(1, n):
        shape = const_shape(graph, op.inputs[j], extra)
        if shape is not None and shape != (x.shape[1],):
            return f"{op.type} parameter '{op.inputs[j]}' has shape {shape}, not ({x.shape[1]},)"
    return Plan(Role("channelwise", 1, 1), dict.fromkeys(range(1, n), 0))


def _by_type(graph: Graph, op: Op, x: Tensor, y: Tensor, extra: Mapping[str, tuple[int, ...]]) -> Plan | str:
    t = op.type
    per_channel = Plan(Role("channelwise", 1, 1))
    if t in ("Conv", "ConvTranspose"):
        return _conv(graph, op, x, y)
    if t in UNARY:
        return per_channel if len(op.inputs) == 1 else f"{t} with {len(op.inputs)} inputs"
    if t in SCALAR_EXTRAS:
        return _constants(graph, op, range(1, len(op.inputs))) or per_channel
    if t in BINARY:
        return _binary(graph, op, extra)
    if t == "PRelu":
        return _constants(graph, op, range(1, 2)) or _with_constant(graph, op, x, 0, 1, extra)
    if t in POOLS:
        return per_channel if len(x.shape) >= 3 else f"{t} of a rank-{len(x.shape)} input"
    if t in REDUCES:
        return _reduce(op, len(x.shape))
    if t in NORMS:
        return _norm(graph, op, x, extra)
    return WHY_NOT.get(t, f"{t} is not an op Serenity knows to compute per channel")


def analyse(graph: Graph, op: Op, extra: Mapping[str, tuple[int, ...]] | None = None) -> Plan | str:
    """How to split ``op`` of ``graph``, or why it cannot be split (one line naming its type).

    Args:
        graph: The graph ``op`` belongs to (shapes, which inputs are constants).
        op: The op.
        extra: Shapes of constants produced by ``Constant`` ops with a ``value`` tensor, which
            the graph does not record (empty without a model).

    Returns:
        A :class:`Plan` (a concatenation, a group-1 convolution or a per-channel op), or a reason.
    """
    extra = extra or {}
    if op.type == "Concat":
        rank = len(graph.tensors[op.outputs[0]].shape)
        axis = int(op.attributes.get("axis", 0))
        if not -rank <= axis < rank:
            return f"Concat axis {axis} is out of range for rank {rank}"
        return Plan(Role("concat", axis % rank, axis % rank))
    outs = [o for o in op.outputs if o]
    if op.type == "MaxPool" and len(outs) > 1:
        return "MaxPool writes its indices too"
    if len(outs) != 1:
        return f"{op.type} writes {len(outs)} tensors"
    d = next((j for j, n in enumerate(op.inputs) if n and not graph.tensors[n].constant), None)
    if d is None:
        return WHY_NOT.get(op.type, f"{op.type} reads no activation")
    x, y = graph.tensors[op.inputs[d]], graph.tensors[outs[0]]
    if len(x.shape) < 2:
        return f"{op.type} of a rank-{len(x.shape)} input has no channel axis"
    plan = _by_type(graph, op, x, y, extra)
    if isinstance(plan, str) or plan.role.kind == "conv":
        return plan
    if len(y.shape) < 2 or y.shape[1] != x.shape[1] * plan.role.multiplier:
        return f"{op.type} maps {x.shape[1]} channels to {y.shape[1] if len(y.shape) > 1 else 0}"
    return plan


__all__ = ["BINARY", "NORMS", "POOLS", "REDUCES", "UNARY", "Plan", "analyse", "const_shape"]
