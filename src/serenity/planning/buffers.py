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

Under the ``inplace`` memory model an op may write its output over a dying input of the same
size (:func:`serenity.memory.inplace_pairs` says where an order does). Such a pair shares one
buffer, and so does a chain of them (``x -> Relu -> Sigmoid`` overwrites ``x`` twice): it lives
from the first tensor's start to the last one's end, has their (equal) size, is named after the
first tensor, and lists the others in :attr:`Buffer.aliases`. The step where the output takes
over counts the bytes once, exactly as :func:`~serenity.memory.simulate` does, so
``peak_of(buffers_of(g, order)) == simulate(g, order).peak`` under either model.

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
from serenity.memory import inplace_pairs


@dataclass(frozen=True, slots=True)
class Buffer:
    """A block of bytes live during steps ``[lower, upper)``.

    Attributes:
        id: The name the buffer goes by (a tensor name, or minimalloc's ``id`` column).
        lower: First step at which the buffer is live.
        upper: First step at which it is no longer live (``upper > lower``).
        size: Bytes (``>= 0``).
        aliases: Tensors written over ``id`` in place, in the order they take the buffer over
            (the ``inplace`` memory model); they share its offset. Empty for a buffer that holds
            one tensor, a scratch buffer or a CSV row.
    """

    id: str
    lower: int
    upper: int
    size: int
    aliases: tuple[str, ...] = ()

    def __repr__(self) -> str:  # aliases only where there are some: most buffers hold one tensor
        extra = f", aliases={self.aliases!r}" if self.aliases else ""
        return f"Buffer(id={self.id!r}, lower={self.lower}, upper={self.upper}, size={self.size}{extra})"

    @property
    def names(self) -> tuple[str, ...]:
        """Every name the buffer holds: ``id``, then its aliases."""
        return (self.id, *self.aliases)


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
        if buffers is not None:  # every tensor of a buffer shared in place gets its offset
            out["offsets"] = {n: o for b, o in zip(buffers, self.offsets, strict=True) for n in b.names}
        else:
            out["offsets"] = list(self.offsets)
        return out


def align_up(n: int, alignment: int) -> int:
    """``n`` rounded up to a multiple of ``alignment`` (``alignment >= 1``).

    >>> align_up(0, 16), align_up(1, 16), align_up(16, 16), align_up(17, 16)
    (0, 16, 16, 32)
    """
    return -(-n // alignment) * alignment


def buffers_of(graph: Graph, order: Sequence[int], *, alignment: int = 1) -> list[Buffer]:
    """The activation buffers of ``graph`` run in ``order``, one per activation tensor that is
    ever live (one per in-place chain under ``inplace``), in the graph's tensor declaration
    order (a chain stands where its first tensor does; see the module docstring).

    Sizes are the tensors' ``nbytes``; a graph built for a target that aligns buffers (see
    :func:`serenity.ir.with_alignment`) already carries the aligned sizes. ``alignment`` rounds
    them here instead, while the in-place pairs come from the raw sizes: a runtime may only
    write an output over an input of truly the same size (a 1-byte input broadcast into a 16-byte
    output is also 16 bytes once aligned, and is not overwritten element by element).

    Raises:
        OrderError: ``order`` is not topological.

    Example:
        >>> from serenity.ir import Graph, Op, Tensor, with_memory_model
        >>> T = lambda n, b: Tensor(n, (b,), "int8", b)
        >>> g = Graph("ex", [Op("A", "Relu", ("x",), ("a",)), Op("B", "Relu", ("x",), ("b",)),
        ...                  Op("C", "Add", ("a", "b"), ("c",))],
        ...           [T("x", 10), T("a", 20), T("b", 30), T("c", 20)], ["x"], ["c"])
        >>> [(b.id, b.lower, b.upper, b.size) for b in buffers_of(g, [0, 1, 2])]
        [('x', 0, 2, 10), ('a', 0, 3, 20), ('b', 1, 3, 30), ('c', 2, 3, 20)]
        >>> buffers_of(with_memory_model(g, "inplace"), [0, 1, 2])[1]   # c written over a
        Buffer(id='a', lower=0, upper=3, size=20, aliases=('c',))
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
        size = d.sizes[t] if alignment == 1 else align_up(d.sizes[t], alignment)
        out.append(Buffer(d.names[t], lower, max(upper, lower + 1), size))
    return merge_inplace(out, inplace_names(graph, order))


def inplace_names(graph: Graph, order: Sequence[int]) -> dict[str, str]:
    """``{output: input}`` by tensor name for every op of ``order`` that writes its output over
    a dying input (:func:`serenity.memory.inplace_pairs`); ``{}`` under ``"tflm"``."""
    d = graph.dense
    return {d.names[o]: d.names[c] for o, c in inplace_pairs(d, order).items()}


def merge_inplace(buffers: Sequence[Buffer], pairs: Mapping[str, str]) -> list[Buffer]:
    """``buffers`` with each in-place pair ``{output: input}`` (by buffer id) made one buffer.

    A chain (``b`` over ``a`` over ``x``) becomes one buffer named after its first tensor, in that
    tensor's place, living from its ``lower`` to the last one's ``upper``, with the others as
    :attr:`Buffer.aliases` in chain order. Ids that are in no pair pass unchanged.

    Raises:
        SerenityError: a pair names a buffer that is not there or two of different sizes, two
            outputs take over one input, or the pairs form a cycle.

    Example:
        >>> merge_inplace([Buffer("x", 0, 2, 8), Buffer("y", 1, 3, 8), Buffer("z", 2, 4, 8)],
        ...               {"y": "x", "z": "y"})
        [Buffer(id='x', lower=0, upper=4, size=8, aliases=('y', 'z'))]
    """
    if not pairs:
        return list(buffers)
    by_id = {b.id: b for b in buffers}
    if len(set(pairs.values())) < len(pairs):
        twice = next(c for c in pairs.values() if list(pairs.values()).count(c) > 1)
        raise SerenityError(f"in-place pairs write over '{twice}' twice")
    # 1. Each output's chain: its first tensor and its depth (1 for the first overwrite).
    where: dict[str, tuple[str, int]] = {}
    for o in pairs:
        path = [o]
        while path[-1] in pairs and path[-1] not in where:
            path.append(pairs[path[-1]])
            if len(path) > len(pairs) + 1:
                raise SerenityError(f"in-place pairs form a cycle through '{o}'")
        r, depth = where[path[-1]] if path[-1] in where else (path[-1], 0)
        for name in reversed(path[:-1]):
            depth += 1
            where[name] = (r, depth)
    # 2. Check the pairs, and gather each chain in order.
    chains: dict[str, list[str]] = {}
    for o, (r, _) in sorted(where.items(), key=lambda kv: kv[1][1]):
        c = pairs[o]
        for name in (o, c):
            if name not in by_id:
                raise SerenityError(f"in-place pair '{c}' -> '{o}': no buffer '{name}'")
        if by_id[o].size != by_id[c].size:
            raise SerenityError(
                f"in-place pair '{c}' -> '{o}': sizes {by_id[c].size} and {by_id[o].size} differ"
            )
        chains.setdefault(r, [r]).append(o)
    out: list[Buffer] = []
    for b in buffers:
        if b.id in where:
            continue  # held by its chain's first buffer
        chain = chains.get(b.id)
        if chain is None:
            out.append(b)
            continue
        members = [by_id[name] for name in chain]
        lower = min(m.lower for m in members)
        upper = max(m.upper for m in members)
        out.append(Buffer(b.id, lower, upper, b.size, tuple(m.id for m in members[1:])))
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
