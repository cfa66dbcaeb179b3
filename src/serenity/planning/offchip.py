"""Off-chip traffic: the bytes an order moves to and from external memory under an SRAM budget.

When the activations live at some step exceed the on-chip memory (``sram`` bytes), some of them
are written out to external memory and read back before an op needs them. How many bytes move
depends on the order: Ahn et al., "Ordering Chaos: Memory-Aware Scheduling of Irregularly Wired
Neural Networks for Edge Devices" (MLSys 2020) report 1.52x / 1.49x / 1.51x / 1.76x less
off-chip traffic at 32 / 64 / 128 / 256 KB for memory-aware orders. :func:`offchip_traffic`
counts it for one order; :func:`traffic_lower_bound` bounds it for every order.

The simulation walks the order with the tensors of :mod:`serenity.memory` (activations only;
lifetimes and the ``inplace`` saving exactly as :func:`serenity.memory.simulate` counts them) and
keeps each one *on chip* or *off chip*:

1. **Start.** Graph inputs start on chip, as TensorFlow Lite Micro's arena holds them, with no
   off-chip copy. If together they exceed ``sram``, step 3's rule evicts some before the first op.
2. **An op runs.** Before op ``v`` runs, every activation input and output of ``v`` is on chip.
   An input that is off chip is *reloaded* (``read += size``). Under the ``inplace`` memory
   model, when ``v`` overwrites a dying input (the choice of :func:`serenity.memory.inplace_pairs`:
   the first candidate of ``Dense.reuse[v]`` whose only reader left is ``v``), its output
   occupies that input's bytes and the step needs the output's size less. If ``v``'s inputs and
   outputs alone (less that saving) exceed ``sram``, no eviction can help: :class:`OpDoesNotFit`.
3. **Eviction** (only when needed). When the bytes on chip during the step would exceed
   ``sram``, on-chip tensors that ``v`` does not read are evicted one at a time until they fit,
   **furthest next use first** (Belady's rule): a tensor's next use is the next step that reads
   it, and a graph output nobody reads any more is never used (evicted first). Ties go to a
   *clean* tensor (one with an off-chip copy already) before a *dirty* one, then to the larger,
   then to the lower tensor id (:class:`serenity.ir.Dense` numbering), so the result is
   reproducible. Evicting a dirty tensor writes it off chip (``written += size``); tensors are
   immutable, so a copy written once stays valid and a clean tensor is dropped for free.
4. **After the op.** A tensor with no reader left that is not a graph output is freed, wherever
   it is, at no cost (an output nobody reads right after its op). Graph outputs stay where they
   are at the end: no final write unless they were evicted.

Since nothing is evicted unless the step would not fit, an order whose peak
(:func:`serenity.memory.simulate`) is at most ``sram`` moves nothing. ``spills`` counts the
writes (each tensor at most once), ``reloads`` the reads. Belady's rule is optimal for pages of
one size that cost nothing to drop; here sizes differ and writes cost, so the policy is a good
heuristic, not an optimum: :mod:`.offchip_exact` solves the eviction of one order exactly.

Worked example: ``x`` (input, 10 B) feeds ``A`` and ``B``; ``A`` writes ``a`` (20 B), ``B``
writes ``b`` (30 B); ``C(a, b)`` writes the output ``c`` (5 B). The peak is 60 B; with 55 B of
SRAM, in the order ``A, B, C``:

=====  ====================  ===========================================  ============
step   must be on chip       what happens                                 on chip
=====  ====================  ===========================================  ============
A      x, a                  10 + 20 = 30 B fit                           x, a
B      x, b                  x, a, b = 60 B > 55: evict ``a`` (next use   x, b
                             C, the only candidate), written 20
C      a, b, c               reload ``a`` (read 20): 20 + 30 + 5 = 55 B   a, b, c
=====  ====================  ===========================================  ============

Traffic 40 B. The order ``B, A, C`` must evict ``b`` (30 B) instead: 60 B.

>>> from serenity.ir import Graph, Op, Tensor
>>> T = lambda n, b: Tensor(n, (b,), "int8", b)
>>> g = Graph("ex", [Op("A", "Relu", ("x",), ("a",)), Op("B", "Relu", ("x",), ("b",)),
...                  Op("C", "Add", ("a", "b"), ("c",))],
...           [T("x", 10), T("a", 20), T("b", 30), T("c", 5)], ["x"], ["c"])
>>> offchip_traffic(g, [0, 1, 2], 55).as_dict()
{'sram': 55, 'written': 20, 'read': 20, 'traffic': 40, 'spills': 1, 'reloads': 1}
>>> offchip_traffic(g, [1, 0, 2], 55).traffic, offchip_traffic(g, [0, 1, 2], 60).traffic
(60, 0)
>>> traffic_lower_bound(g, 55, 60)
5
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from serenity.errors import SerenityError
from serenity.ir import Graph
from serenity.memory import inplace_pairs


@dataclass(frozen=True, slots=True)
class Traffic:
    """The off-chip traffic of one order at one SRAM budget (:func:`offchip_traffic`).

    Attributes:
        sram: The on-chip budget in bytes.
        written: Bytes written to external memory (each tensor at most once).
        read: Bytes read back from external memory.
        spills: Number of tensors written.
        reloads: Number of reads.
    """

    sram: int
    written: int
    read: int
    spills: int
    reloads: int

    @property
    def traffic(self) -> int:
        """All bytes moved: ``written + read``."""
        return self.written + self.read

    def as_dict(self) -> dict[str, int]:
        """A JSON-ready dict: ``sram, written, read, traffic, spills, reloads``."""
        return {
            "sram": self.sram,
            "written": self.written,
            "read": self.read,
            "traffic": self.traffic,
            "spills": self.spills,
            "reloads": self.reloads,
        }


class OpDoesNotFit(SerenityError):
    """One op's inputs and outputs alone exceed the SRAM budget: no eviction can run it.

    Attributes:
        op: The op's name.
        needs: Bytes it needs on chip (inputs and outputs, less an in-place saving).
        sram: The budget.
    """

    def __init__(self, op: str, needs: int, sram: int) -> None:
        self.op = op
        self.needs = needs
        self.sram = sram
        super().__init__(
            f"op '{op}' alone needs {needs:,} B of on-chip memory (inputs and outputs), "
            f"more than the {sram:,} B budget"
        )

    def __reduce__(self) -> tuple[type, tuple[str, int, int]]:
        return (type(self), (self.op, self.needs, self.sram))


#: Event kinds of a traced run (:func:`run_policy`): a tensor leaves the chip, or comes back.
EVICT, LOAD = "evict", "load"


def step_savings(graph: Graph, order: Sequence[int]) -> list[int]:
    """Bytes each step of ``order`` saves by writing its output over a dying input (``inplace``
    model, :func:`serenity.memory.inplace_pairs`); all zero under ``tflm``."""
    d = graph.dense
    pairs = inplace_pairs(d, order)
    saved = [0] * len(order)
    if pairs:
        for k, v in enumerate(order):
            if d.op_out[v] and d.op_out[v][0] in pairs:
                saved[k] = d.sizes[pairs[d.op_out[v][0]]]
    return saved


def check_fits(graph: Graph, order: Sequence[int], sram: int, saved: Sequence[int] | None = None) -> None:
    """Raise :class:`OpDoesNotFit` for the first step of ``order`` whose op needs more than ``sram``
    on its own (inputs and outputs, less its in-place saving)."""
    d = graph.dense
    saved = step_savings(graph, order) if saved is None else saved
    for k, v in enumerate(order):
        need = sum(d.sizes[t] for t in d.op_in[v]) + sum(d.sizes[t] for t in d.op_out[v]) - saved[k]
        if need > sram:
            raise OpDoesNotFit(graph.ops[v].name, need, sram)


def offchip_traffic(graph: Graph, order: Sequence[int], sram: int) -> Traffic:
    """The off-chip traffic of ``order`` with ``sram`` bytes on chip (the module docstring's rules).

    Runs in O((steps + reads) log(tensors)): a heap keyed by next use picks each eviction.

    Args:
        graph: The graph; its memory model (``tflm`` or ``inplace``) is honoured.
        order: A topological permutation of op indices.
        sram: On-chip bytes available for activations.

    Returns:
        The :class:`Traffic`; zero whenever ``simulate(graph, order).peak <= sram``.

    Raises:
        OrderError: ``order`` is not topological.
        OpDoesNotFit: some op's inputs and outputs alone exceed ``sram``.
    """
    return run_policy(graph, graph.check_order(order), sram)


def run_policy(
    graph: Graph,
    order: Sequence[int],
    sram: int,
    trace: list[tuple[int, str, int]] | None = None,
) -> Traffic:
    """:func:`offchip_traffic` without the order check; with ``trace``, append ``(step, EVICT or
    LOAD, tensor id)`` for every move (an eviction at step ``k`` means the tensor is off chip
    during ``k``; step ``-1`` is before the first op)."""
    d = graph.dense
    sizes, pinned = d.sizes, d.pinned
    n = len(order)
    saved = step_savings(graph, order)
    check_fits(graph, order, sram, saved)
    never = n  # the next use of a graph output nobody reads any more: after every step
    pos = [0] * d.n_ops
    for k, v in enumerate(order):
        pos[v] = k
    uses = [sorted(pos[c] for c in cs) for cs in d.consumers]  # steps that read each tensor
    nxt = [0] * len(sizes)  # index in uses[t] of t's next read
    on_chip = bytearray(len(sizes))
    copied = bytearray(len(sizes))  # has an off-chip copy (clean)
    stamp = [0] * len(sizes)  # the heap entry of t with this stamp is current
    heap: list[tuple[int, int, int, int, int]] = []
    resident = 0
    written = read = spills = reloads = 0

    def push(t: int) -> None:
        # Smallest key = evicted first: furthest next use, clean, larger, lower id.
        stamp[t] += 1
        u = uses[t][nxt[t]] if nxt[t] < len(uses[t]) else never
        heapq.heappush(heap, (-u, 0 if copied[t] else 1, -sizes[t], t, stamp[t]))

    def evict_until(limit: int, step: int) -> None:
        nonlocal resident, written, spills
        while resident > limit:
            neg_use, _, _, t, s = heapq.heappop(heap)
            if s != stamp[t] or not on_chip[t]:
                continue  # stale entry
            # The op's own inputs have next use `step`, the nearest of all: never reached here
            # because the op fits on its own (check_fits).
            assert -neg_use > step, "evicting an input of the running op"
            on_chip[t] = 0
            resident -= sizes[t]
            if not copied[t]:
                copied[t] = 1
                written += sizes[t]
                spills += 1
            if trace is not None:
                trace.append((step, EVICT, t))

    def free(t: int) -> None:
        nonlocal resident
        if on_chip[t]:
            on_chip[t] = 0
            resident -= sizes[t]
        stamp[t] += 1  # its heap entries are stale now

    # 1. Graph inputs start on chip; evict before the first op if they do not fit.
    for t in d.initial:
        on_chip[t] = 1
        resident += sizes[t]
        push(t)
    evict_until(sram, -1)
    for k, v in enumerate(order):
        ins, outs = d.op_in[v], d.op_out[v]
        # 2. Make room: the step needs every input and output on chip, less the in-place saving.
        missing = [t for t in ins if not on_chip[t]]
        extra = sum(sizes[t] for t in missing) + sum(sizes[t] for t in outs) - saved[k]
        evict_until(sram - extra, k)
        for t in missing:  # reload (the tensor is clean: it was written when evicted)
            on_chip[t] = 1
            resident += sizes[t]
            read += sizes[t]
            reloads += 1
            if trace is not None:
                trace.append((k, LOAD, t))
        for t in outs:
            on_chip[t] = 1
            resident += sizes[t]
        # 3. After the op: dead tensors are freed, the others get their new next use.
        for t in ins:
            nxt[t] += 1
            if nxt[t] == len(uses[t]) and not pinned[t]:
                free(t)
            else:
                push(t)
        for t in outs:
            if not uses[t] and not pinned[t]:
                free(t)
            else:
                push(t)
    return Traffic(sram=sram, written=written, read=read, spills=spills, reloads=reloads)


def traffic_lower_bound(graph: Graph, sram: int, peak_lower_bound: int) -> int:
    """Bytes of off-chip traffic that EVERY order of ``graph`` moves at ``sram`` (with any
    eviction, not only the policy's), given ``peak_lower_bound`` ``P``: a peak no order beats
    (e.g. the proven optimal peak, ``ScheduleResult.lower_bound``).

    ``max(0, P - sram) + max(0, P - sram - O)``, ``O`` the bytes of all graph outputs.

    Proof. Take any order and any eviction. Its peak is at least ``P``, so at some step ``k`` the
    live tensors ``L`` (as :func:`serenity.memory.simulate` counts them: ``size(L) - s >= P``
    with ``s`` the step's in-place saving) include the running op's inputs and outputs, which are
    on chip. The tensors on chip ``R`` (a subset of ``L`` holding those) fit:
    ``size(R) - s <= sram``. So the live tensors off chip, ``L - R``, weigh at least
    ``(P + s) - (sram + s) = P - sram``. Each started on chip (a graph input or an op's output)
    and is off chip now, so it was written at least once: ``written >= P - sram``. Every one of
    them that is not a graph output is live only because a later op reads it (the running op's
    own tensors are on chip), and that op needs it on chip, so it is read back at least once;
    at most ``O`` of the off-chip bytes are graph outputs: ``read >= P - sram - O``. Both hold
    with 0 when negative. ∎

    Args:
        graph: The graph.
        sram: On-chip bytes.
        peak_lower_bound: A lower bound on the peak of every order of ``graph``.

    Returns:
        The bound in bytes (0 when ``P <= sram``).
    """
    d = graph.dense
    outputs = sum(s for s, p in zip(d.sizes, d.pinned, strict=True) if p)
    over = peak_lower_bound - sram
    return max(0, over) + max(0, over - outputs)


__all__ = [
    "EVICT",
    "LOAD",
    "OpDoesNotFit",
    "Traffic",
    "check_fits",
    "offchip_traffic",
    "run_policy",
    "step_savings",
    "traffic_lower_bound",
]
