"""The memory model: the one function that says how many activation bytes an order needs.

Every scheduler, the CLI, the benchmarks and the tests report peaks through :func:`simulate`.
Schedulers may keep their own incremental bookkeeping while searching, but the peak they return
is recomputed here.

The model is the one TensorFlow Lite Micro's arena planner works to:

* Only activations count. Constants (weights) live in flash / the model buffer.
* A graph input is live from the start until its last consumer has run.
* An op's output is live from the start of that op until its last consumer has run; an output
  nobody reads is freed right after its op.
* Graph outputs stay live to the end.
* While an op runs, its inputs and its outputs are all live; an input whose last consumer is
  this op is freed after it.
* The peak is the maximum over steps of the bytes live during the step.

That is the default memory model, ``"tflm"``. The other, ``"inplace"``, is how HMCOS (Wang et al.,
DAC 2022) and several compilers count: an element-wise or reshape-like op (:data:`INPLACE_OPS`)
with one activation output may write that output over one of its inputs of the same size that
*dies at it* (this op is its last reader) and is not a graph output. The output then takes the
input's bytes: the step costs the output's size less, and the live bytes after the step are the
same as under ``"tflm"``. Whether an input dies at an op depends on the order, so the saving does
too; :attr:`serenity.ir.Dense.reuse` lists each op's candidate inputs, and an op reuses the first
of them (in input order) that dies at it. A graph carries its model (:func:`serenity.ir.with_memory_model`);
every scheduler, bound, planner and the off-chip simulation read it from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from serenity.ir import Dense, Graph, Op, Tensor

#: The memory models (see the module docstring). ``"tflm"`` is the default everywhere.
MEMORY_MODELS = ("tflm", "inplace")

#: Op types (ONNX and TFLite spellings) whose output may overwrite an input under ``"inplace"``:
#: element-wise maps (each output element is computed from the input elements at the same
#: position only) and reshape-like ops (same bytes, new shape). Softmax, normalisations across
#: an axis, convolutions and pooling are not: they read neighbours of the element they write.
INPLACE_OPS = frozenset(
    {
        # ONNX
        "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Mod",
        "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "ThresholdedRelu", "Gelu", "Mish",
        "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softplus", "Softsign", "Clip",
        "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Erf",
        "Sin", "Cos", "Not", "And", "Or", "Xor", "Cast", "BatchNormalization",
        "QuantizeLinear", "DequantizeLinear",
        "Identity", "Dropout", "Reshape", "Squeeze", "Unsqueeze", "Flatten",
        # TFLite
        "ADD", "SUB", "MUL", "DIV", "POW", "MAXIMUM", "MINIMUM", "ADD_N", "SQUARED_DIFFERENCE",
        "FLOOR_DIV", "FLOOR_MOD", "RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "LEAKY_RELU",
        "PRELU", "ELU", "GELU", "LOGISTIC", "TANH", "HARD_SWISH", "ABS", "NEG", "EXP", "LOG",
        "SQRT", "RSQRT", "SQUARE", "FLOOR", "CEIL", "ROUND", "SIN", "COS", "SIGN",
        "LOGICAL_NOT", "LOGICAL_AND", "LOGICAL_OR", "CAST", "QUANTIZE", "DEQUANTIZE",
        "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "IDENTITY",
    }
)  # fmt: skip


def check_memory_model(name: str) -> str:
    """``name`` if it is one of :data:`MEMORY_MODELS`, else ``ValueError`` naming the choices."""
    if name not in MEMORY_MODELS:
        raise ValueError(f"unknown memory model {name!r}; choose one of {', '.join(MEMORY_MODELS)}")
    return name


def reuse_candidates(graph: Graph, op: Op) -> tuple[str, ...]:
    """The inputs ``op``'s output may overwrite under ``"inplace"``, in input order: ``op`` is an
    :data:`INPLACE_OPS` type with exactly one activation output, and each candidate is a
    distinct activation input of the same (non-zero) size, element count and element size (so
    the same raw bytes, whatever the accounting), that is not a graph output."""
    if op.type not in INPLACE_OPS:
        return ()
    outs = [n for n in op.outputs if n and graph.tensors[n].is_activation]
    if len(outs) != 1:
        return ()
    out = graph.tensors[outs[0]]
    if out.nbytes == 0:
        return ()
    found: list[str] = []
    for n in op.inputs:
        t = graph.tensors.get(n) if n else None
        if t is None or not t.is_activation or t.is_output or n in found or n == outs[0]:
            continue
        if _same_bytes(t, out):
            found.append(n)
    return tuple(found)


#: Bytes per element of the dtypes whose raw sizes :func:`_same_bytes` compares.
_ITEMSIZE = {"bool": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "float16": 2, "bfloat16": 2,
             "int32": 4, "uint32": 4, "float32": 4, "int64": 8, "uint64": 8, "float64": 8}  # fmt: skip


def _same_bytes(a: Tensor, b: Tensor) -> bool:
    """Whether ``a`` and ``b`` hold the same raw bytes (elements x element size), not only the
    same accounted size: aligned sizes (:func:`serenity.ir.with_alignment`) round a 1-byte
    broadcast input up to an output's 16, and no runtime can write one over the other."""
    if a.nbytes != b.nbytes or _numel(a) != _numel(b):
        return False
    return a.dtype == b.dtype or _ITEMSIZE.get(a.dtype, -1) == _ITEMSIZE.get(b.dtype, -2)


def _numel(t: Tensor) -> int:
    n = 1
    for s in t.shape:
        n *= s
    return n


@dataclass(frozen=True, slots=True)
class MemoryProfile:
    """The result of :func:`simulate`.

    Attributes:
        peak: Maximum of ``during``; with no ops, the bytes of the live graph inputs.
        during: Bytes live while each step of the order runs (inputs + outputs + everything
            still waiting for a consumer), one entry per step.
        after: Bytes live after each step once its dead tensors are freed.
        peak_step: The first step at which ``peak`` is reached (-1 with no ops).
    """

    peak: int
    during: tuple[int, ...]
    after: tuple[int, ...]
    peak_step: int


def simulate(
    graph: Graph, order: Sequence[int], *, check: bool = True, memory_model: str | None = None
) -> MemoryProfile:
    """Simulate ``order`` step by step and return its memory timeline and peak.

    Worked example: ``x`` (input, 10 B) feeds ``A`` and ``B``; ``A`` writes ``a`` (20 B), ``B``
    writes ``b`` (30 B); ``C(a, b)`` writes the output ``c`` (5 B).

    =====  ========================  ==========================  ================
    step   live while the op runs    freed after                 bytes during
    =====  ========================  ==========================  ================
    A      x, a                      -- (x still read by B)      10 + 20 = 30
    B      x, a, b                   x                           10 + 20 + 30 = 60
    C      a, b, c                   a, b  (c is an output)      20 + 30 + 5 = 55
    =====  ========================  ==========================  ================

    Peak 60. The other order, ``B, A, C``, is also 60 here: ``x`` must stay until both ran.

    >>> from serenity.ir import Graph, Op, Tensor
    >>> T = lambda n, b: Tensor(n, (b,), "int8", b)
    >>> g = Graph("ex", [Op("A", "Relu", ("x",), ("a",)), Op("B", "Relu", ("x",), ("b",)),
    ...                  Op("C", "Add", ("a", "b"), ("c",))],
    ...           [T("x", 10), T("a", 20), T("b", 30), T("c", 5)], ["x"], ["c"])
    >>> p = simulate(g, [0, 1, 2])
    >>> p.peak, p.during, p.after
    (60, (30, 60, 55), (30, 50, 5))

    Args:
        graph: The graph.
        order: A permutation of op indices.
        check: Verify first that ``order`` is topological (raises ``OrderError`` if not).
        memory_model: ``"tflm"`` or ``"inplace"``; default: the graph's own (``graph.memory_model``).

    Returns:
        The :class:`MemoryProfile`.
    """
    if memory_model is not None:
        from serenity.ir import with_memory_model

        graph = with_memory_model(graph, memory_model)
    if check:
        order = graph.check_order(order)
    return simulate_dense(graph.dense, order)


def simulate_dense(d: Dense, order: Sequence[int]) -> MemoryProfile:
    """:func:`simulate` on the dense form, without the order check."""
    remaining = [len(c) for c in d.consumers]
    live = sum(d.sizes[t] for t in d.initial)
    during: list[int] = []
    after: list[int] = []
    reuse = d.reuse
    for v in order:
        # 1. Outputs are allocated when the op starts; inputs are still live. Under "inplace"
        #    the output takes the bytes of a candidate input that dies here (its last reader).
        for t in d.op_out[v]:
            live += d.sizes[t]
        saved = 0
        if reuse:
            for s in reuse[v]:
                if remaining[s] == 1:
                    saved = d.sizes[s]
                    break
        during.append(live - saved)
        # 2. Inputs whose last consumer this is are freed, and outputs nobody reads.
        for t in d.op_in[v]:
            remaining[t] -= 1
            if remaining[t] == 0 and not d.pinned[t]:
                live -= d.sizes[t]
        for t in d.op_out[v]:
            if not d.consumers[t] and not d.pinned[t]:
                live -= d.sizes[t]
        after.append(live)
    if not during:
        initial = sum(d.sizes[t] for t in d.initial)
        return MemoryProfile(initial, (), (), -1)
    peak = max(during)
    return MemoryProfile(peak, tuple(during), tuple(after), during.index(peak))


def inplace_pairs(d: Dense, order: Sequence[int]) -> dict[int, int]:
    """Under ``"inplace"``, ``{output id: input id}`` for every step of ``order`` whose output
    takes over a dying input's bytes (the choice :func:`simulate_dense` makes); ``{}`` under
    ``"tflm"``. Planners give each pair one buffer."""
    if not d.reuse:
        return {}
    remaining = [len(c) for c in d.consumers]
    pairs: dict[int, int] = {}
    for v in order:
        for s in d.reuse[v]:
            if remaining[s] == 1:
                pairs[d.op_out[v][0]] = s
                break
        for t in d.op_in[v]:
            remaining[t] -= 1
    return pairs


def op_footprint(d: Dense, v: int) -> int:
    """Bytes op ``v`` needs live while it runs in any order: its inputs and outputs, less the
    output's size when the ``"inplace"`` model lets it overwrite a candidate input."""
    total = sum(d.sizes[t] for t in (*d.op_in[v], *d.op_out[v]))
    if d.reuse and d.reuse[v]:
        total -= d.sizes[d.reuse[v][0]]
    return total


def peak_bytes(graph: Graph, order: Sequence[int]) -> int:
    """The peak of :func:`simulate`; checks that ``order`` is topological."""
    return simulate(graph, order).peak
