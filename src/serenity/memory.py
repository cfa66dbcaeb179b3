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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from serenity.ir import Dense, Graph


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


def simulate(graph: Graph, order: Sequence[int], *, check: bool = True) -> MemoryProfile:
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

    Returns:
        The :class:`MemoryProfile`.
    """
    if check:
        order = graph.check_order(order)
    return simulate_dense(graph.dense, order)


def simulate_dense(d: Dense, order: Sequence[int]) -> MemoryProfile:
    """:func:`simulate` on the dense form, without the order check."""
    remaining = [len(c) for c in d.consumers]
    live = sum(d.sizes[t] for t in d.initial)
    during: list[int] = []
    after: list[int] = []
    for v in order:
        # 1. Outputs are allocated when the op starts; inputs are still live.
        for t in d.op_out[v]:
            live += d.sizes[t]
        during.append(live)
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


def peak_bytes(graph: Graph, order: Sequence[int]) -> int:
    """The peak of :func:`simulate`; checks that ``order`` is topological."""
    return simulate(graph, order).peak
