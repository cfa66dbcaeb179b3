"""Buffers with lifetimes, the one record every arena planner returns, and an independent check.

A *buffer* is a block of ``size`` bytes live during the half-open step interval
``[lower, upper)`` (minimalloc's convention). :func:`buffers_of` derives them from a graph and an
order under the one memory model (:mod:`serenity.memory`), so that for every step the bytes of
the buffers live at that step equal ``simulate(graph, order).during[step]``:

* a graph input lives from step 0 until the step of its last reader, inclusive;
* an op's output lives from its producer's step until its last reader's step, inclusive
  (only the producer's step when nobody reads it);
* a graph output lives until the last step.

These are TensorFlow Lite Micro's lifetimes too (``first_created`` / ``last_used`` in
``micro_allocation_info.cc``, inclusive on both ends).

A *plan* gives every buffer an offset; it is valid when no two buffers whose lifetimes
intersect overlap in address space. The arena is the largest ``offset + size``; no plan can beat
the largest sum of sizes live at one step (the peak), which is every planner's lower bound.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from serenity.errors import SerenityError
from serenity.ir import Graph


@dataclass(frozen=True, slots=True)
class Buffer:
    """A block of bytes live during steps ``[lower, upper)``.

    Attributes:
        id: The name the buffer goes by (a tensor name, or minimalloc's ``id`` column).
        lower: First step at which the buffer is live.
        upper: First step at which it is no longer live (``upper > lower``).
        size: Bytes (``>= 0``).
    """

    id: str
    lower: int
    upper: int
    size: int


@dataclass(frozen=True, slots=True)
class ArenaPlan:
    """What an arena planner found.

    Attributes:
        offsets: Byte offset of each buffer, in the order of the buffers planned.
        arena: Bytes the plan needs: the largest ``offset + size`` (0 with no buffers).
        lower_bound: No valid placement of these buffers needs fewer bytes (at least the peak).
        proven: ``arena == lower_bound`` was established, or the search proved no smaller arena
            exists; never set by a search cut short.
        planner: The registered name of the planner.
        seconds: Wall-clock time taken.
        stats: Planner-specific counters, JSON-friendly.
    """

    offsets: tuple[int, ...]
    arena: int
    lower_bound: int
    proven: bool
    planner: str
    seconds: float
    stats: Mapping[str, Any] = field(default_factory=dict)

    @property
    def gap(self) -> int:
        """Bytes between the arena and the lower bound (0 when the plan reaches the peak)."""
        return self.arena - self.lower_bound

    def as_dict(self, buffers: Sequence[Buffer] | None = None) -> dict[str, Any]:
        """A JSON-ready dict; with ``buffers``, the offsets keyed by buffer id."""
        out: dict[str, Any] = {
            "planner": self.planner,
            "arena_bytes": self.arena,
            "lower_bound": self.lower_bound,
            "gap_bytes": self.gap,
            "proven": self.proven,
            "seconds": round(self.seconds, 6),
            "stats": dict(self.stats),
        }
        if buffers is not None:
            out["offsets"] = {b.id: o for b, o in zip(buffers, self.offsets, strict=True)}
        else:
            out["offsets"] = list(self.offsets)
        return out


def align_up(n: int, alignment: int) -> int:
    """``n`` rounded up to a multiple of ``alignment`` (``alignment >= 1``).

    >>> align_up(0, 16), align_up(1, 16), align_up(16, 16), align_up(17, 16)
    (0, 16, 16, 32)
    """
    return -(-n // alignment) * alignment


def buffers_of(graph: Graph, order: Sequence[int]) -> list[Buffer]:
    """The activation buffers of ``graph`` run in ``order``, one per activation tensor that is
    ever live, in the graph's tensor declaration order (see the module docstring).

    Sizes are the tensors' ``nbytes``; a graph built for a target that aligns buffers (see
    :func:`serenity.ir.with_alignment`) already carries the aligned sizes.

    Raises:
        OrderError: ``order`` is not topological.

    Example:
        >>> from serenity.ir import Graph, Op, Tensor
        >>> T = lambda n, b: Tensor(n, (b,), "int8", b)
        >>> g = Graph("ex", [Op("A", "Relu", ("x",), ("a",)), Op("B", "Relu", ("x",), ("b",)),
        ...                  Op("C", "Add", ("a", "b"), ("c",))],
        ...           [T("x", 10), T("a", 20), T("b", 30), T("c", 5)], ["x"], ["c"])
        >>> [(b.id, b.lower, b.upper, b.size) for b in buffers_of(g, [0, 1, 2])]
        [('x', 0, 2, 10), ('a', 0, 3, 20), ('b', 1, 3, 30), ('c', 2, 3, 5)]
    """
    order = graph.check_order(order)
    d = graph.dense
    n = len(order)
    step = [0] * d.n_ops
    for s, v in enumerate(order):
        step[v] = s
    initial = set(d.initial)
    out: list[Buffer] = []
    for t in range(len(d.sizes)):
        p = d.producer[t]
        if p < 0 and t not in initial:
            continue  # a graph input nobody reads and nobody outputs: never live
        lower = 0 if p < 0 else step[p]
        if d.pinned[t]:
            upper = n
        elif d.consumers[t]:
            upper = max(step[c] for c in d.consumers[t]) + 1
        else:
            upper = lower + 1
        if n == 0:
            lower, upper = 0, 1  # no ops: the live inputs form the whole (one-step) timeline
        out.append(Buffer(d.names[t], lower, max(upper, lower + 1), d.sizes[t]))
    return out


def peak_of(buffers: Sequence[Buffer]) -> int:
    """The largest total size of the buffers live at one step (the lower bound of every plan).

    A sweep over lifetime ends, ``O(n log n)``; exact integers, no overflow.

    >>> peak_of([Buffer("a", 0, 2, 10), Buffer("b", 1, 3, 30), Buffer("c", 2, 3, 5)])
    40
    """
    events: list[tuple[int, int]] = []
    for b in buffers:
        events.append((b.lower, b.size))
        events.append((b.upper, -b.size))
    events.sort(key=lambda e: (e[0], e[1]))  # at one step, frees (negative) before allocations
    live = peak = 0
    for _, delta in events:
        live += delta
        peak = max(peak, live)
    return peak


def check_plan(buffers: Sequence[Buffer], offsets: Sequence[int], *, capacity: int | None = None) -> int:
    """Check a placement independently of any planner and return its arena size.

    Raises:
        SerenityError: an offset is missing or negative, a buffer passes ``capacity``, or two
            buffers live at the same step share a byte (naming both).
    """
    if len(offsets) != len(buffers):
        raise SerenityError(f"plan has {len(offsets)} offsets for {len(buffers)} buffers")
    arena = 0
    for b, o in zip(buffers, offsets, strict=True):
        if o < 0:
            raise SerenityError(f"buffer '{b.id}' has negative offset {o}")
        arena = max(arena, o + b.size)
    if capacity is not None and arena > capacity:
        raise SerenityError(f"plan needs {arena} bytes, above the capacity of {capacity}")
    # Sweep over time; keep the live buffers sorted by offset and compare neighbours.
    idx = sorted(range(len(buffers)), key=lambda i: (buffers[i].lower, i))
    by_end = sorted(range(len(buffers)), key=lambda i: buffers[i].upper)
    live: list[tuple[int, int]] = []  # (offset, index), sorted
    e = 0
    for i in idx:
        b = buffers[i]
        if b.size == 0:
            continue
        while e < len(by_end) and buffers[by_end[e]].upper <= b.lower:
            j = by_end[e]
            e += 1
            k = bisect.bisect_left(live, (offsets[j], j))
            if k < len(live) and live[k] == (offsets[j], j):
                live.pop(k)
        o = offsets[i]
        k = bisect.bisect_left(live, (o, i))
        for nb in (k - 1, k):
            if 0 <= nb < len(live):
                oj, j = live[nb]
                if oj < o + b.size and o < oj + buffers[j].size:
                    raise SerenityError(
                        f"buffers '{b.id}' [{o}, {o + b.size}) and '{buffers[j].id}' "
                        f"[{oj}, {oj + buffers[j].size}) are live at the same step and overlap"
                    )
        live.insert(k, (o, i))
    return arena
