"""``plan_exact``: the smallest arena for buffers with fixed lifetimes, with a proof.

The search of Moffitt, "MiniMalloc: A Lightweight Memory Allocator for Hardware-Accelerated
Machine Learning" (ASPLOS 2024), turned from a feasibility check at one capacity into an optimiser:

1. **Normalise**: drop empty buffers (offset 0), divide every size by the sizes' gcd (a canonical
   placement's offsets are sums of sizes, so nothing is lost), and split time where no buffer
   crosses: the parts share no step, so each is planned alone and the arena is the largest part's.
2. **Sweep**: per part, the sections (maximal sets of buffers live together), which sections each
   buffer spans, and which buffers overlap in time.
3. **Bound**: the peak (the fullest section) is a lower bound ``lo``.
4. **Greedy**: place buffers by decreasing size, then by decreasing area (size times lifetime),
   each at the lowest gap that fits among the buffers already placed beside it in time; keep the
   better. Its arena is the incumbent ``hi``; when ``hi == lo`` the plan is proven at once.
5. **Search** (:mod:`.exact_search`): the depth-first search over canonical placements decides
   whether capacity ``C`` can be met. Try ``C = lo`` first (most real plans reach the peak), then
   bisect ``[lo, hi)``: a placement found sets ``hi`` to its arena, an exhausted search proves
   ``lo = C + 1``. As in minimalloc, each decision runs three static buffer orders in turn (by
   lifetime, area and section total, in three priorities) under a node limit that doubles each
   round, so the order that suits the instance finishes first.
6. **Stop**: ``proven`` when ``lo == hi``. A time limit returns the best plan and bound so far,
   ``stats["stopped"]`` saying so.

With ``capacity`` (minimalloc's own mode) steps 5-6 become one decision at ``C = capacity``: any
placement that fits, or :class:`~serenity.errors.InfeasibleError` when none can.

The search is compiled (numba, ``int64``) when the sizes of a part, in units of their gcd, sum
below ``2**62``, so no offset, top or section total can overflow; otherwise the same search runs on
Python ints, exact but slower.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from serenity.errors import InfeasibleError, SerenityError
from serenity.planning import exact_search as xs
from serenity.planning.buffers import ArenaPlan, Buffer

#: Sums of sizes (in gcd units) below this run compiled on int64 (tops and totals stay < 2**63).
INT64_SAFE = 2**62
#: minimalloc's static buffer orders: W lifetime, A area, T section total (largest first).
PREORDERS = ("WAT", "TAW", "TWA")
#: Nodes a slice of the search may expand between two looks at the clock.
SLICE_JIT, SLICE_PY = 20_000, 500


class _TimeUp(Exception):
    """The deadline passed during a search (internal)."""


@dataclass(frozen=True, slots=True)
class Part:
    """One independent part of an instance (step 1), swept (step 2). Sizes in gcd units.

    Attributes:
        index: For each buffer of the part, its index in the caller's buffer list.
        z: Sizes.
        lower: First live step of each buffer.
        upper: First step each buffer is no longer live.
        s_lo: First section each buffer spans.
        s_hi: One past its last section.
        sections: The buffers of each section, in time order.
        totals: Bytes of each section (its maximum is the part's peak).
        overlaps: For each buffer, the buffers live at a step with it.
    """

    index: list[int]
    z: list[int]
    lower: list[int]
    upper: list[int]
    s_lo: list[int]
    s_hi: list[int]
    sections: list[list[int]]
    totals: list[int]
    overlaps: list[list[int]]

    @property
    def peak(self) -> int:
        """Bytes of the fullest section: no placement of the part is lower."""
        return max(self.totals)


def split(buffers: Sequence[Buffer], unit: int) -> list[Part]:
    """Steps 1-2: the non-empty buffers in parts that share no step, each swept into sections.

    Args:
        buffers: The buffers.
        unit: A divisor of every size (their gcd).

    Returns:
        The parts, in time order.
    """
    live = sorted((i for i, b in enumerate(buffers) if b.size > 0), key=lambda i: (buffers[i].lower, i))
    groups: list[list[int]] = []
    reach = None
    for i in live:
        if reach is None or buffers[i].lower >= reach:
            groups.append([])
            reach = buffers[i].upper
        groups[-1].append(i)
        reach = max(reach, buffers[i].upper)
    return [_sweep([buffers[i] for i in g], g, unit) for g in groups]


def _sweep(bufs: list[Buffer], index: list[int], unit: int) -> Part:
    # A section is a segment [x[i], x[i+1]) between two event times at whose end a buffer dies,
    # as minimalloc's sweep makes them: every maximal clique is one, and so are the smaller sets
    # left as buffers die one by one, whose floors and totals sharpen the inference (step 4).
    n = len(bufs)
    ends = {b.upper for b in bufs}
    xs = sorted({b.lower for b in bufs} | ends)
    points = [xs[i] for i in range(len(xs) - 1) if xs[i + 1] in ends]
    s_lo, s_hi = [0] * n, [0] * n
    sections: list[list[int]] = [[] for _ in points]
    for k, b in enumerate(bufs):
        s_lo[k] = bisect.bisect_left(points, b.lower)
        s_hi[k] = bisect.bisect_left(points, b.upper)
        for s in range(s_lo[k], s_hi[k]):
            sections[s].append(k)
    z = [b.size // unit for b in bufs]
    overlaps: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):  # sorted by lower: i's overlaps after it are those starting before it ends
        for j in range(i + 1, n):
            if bufs[j].lower >= bufs[i].upper:
                break
            overlaps[i].append(j)
            overlaps[j].append(i)
    return Part(
        index, z, [b.lower for b in bufs], [b.upper for b in bufs], s_lo, s_hi, sections,
        [sum(z[k] for k in sec) for sec in sections], overlaps,
    )  # fmt: skip


def greedy(part: Part) -> list[int]:
    """Step 4: first fit by decreasing size and by decreasing area; the lower of the two.

    Args:
        part: The part.

    Returns:
        An offset per buffer of the part (a valid placement).
    """
    best: list[int] = []
    best_top = -1
    n = len(part.z)
    for key in (
        lambda k: (-part.z[k], part.lower[k] - part.upper[k], k),
        lambda k: (-part.z[k] * (part.upper[k] - part.lower[k]), -part.z[k], k),
    ):
        off = [-1] * n
        for k in sorted(range(n), key=key):
            used = sorted((off[j], off[j] + part.z[j]) for j in part.overlaps[k] if off[j] >= 0)
            at = 0
            for lo, hi in used:
                if lo - at >= part.z[k]:
                    break
                at = max(at, hi)
            off[k] = at
        top = max(o + z for o, z in zip(off, part.z, strict=True))
        if best_top < 0 or top < best_top:
            best, best_top = off, top
    return best


def _dense_rank(values: list[int]) -> list[int]:
    # Rank of each value among the distinct values (order kept, magnitudes dropped: no overflow).
    where = {v: r for r, v in enumerate(sorted(set(values)))}
    return [where[v] for v in values]


def decide(part: Part, cap: int, deadline: float | None, stats: dict[str, Any]) -> list[int] | None:
    """Step 5: a placement of ``part`` within ``cap`` (gcd units), or ``None`` when none exists.

    Args:
        part: The part.
        cap: The capacity.
        deadline: ``time.perf_counter()`` value at which to give up, or ``None``.
        stats: Counters to add to (``nodes``, ``runs``, ``compiled``).

    Returns:
        An offset per buffer of the part, or ``None`` (proven: the search was exhausted).

    Raises:
        _TimeUp: the deadline passed first.
    """
    n = len(part.z)
    if part.peak > cap:
        return None
    compiled = xs.AVAILABLE and sum(part.z) < INT64_SAFE
    stats["compiled"] = stats.get("compiled", True) and compiled
    run = xs.search_jit if compiled else xs.search_py
    step = SLICE_JIT if compiled else SLICE_PY
    ov_ptr, ov_idx = [0], []
    for k in range(n):
        ov_idx.extend(sorted(part.overlaps[k]))
        ov_ptr.append(len(ov_idx))
    sec_ptr, sec_buf = [0], []
    for sec in part.sections:
        sec_buf.extend(sorted(sec))
        sec_ptr.append(len(sec_buf))
    width = [u - lo for lo, u in zip(part.lower, part.upper, strict=True)]
    keyw = _dense_rank(width)
    keya = _dense_rank([z * w for z, w in zip(part.z, width, strict=True)])
    static = (part.z, ov_ptr, ov_idx, part.s_lo, part.s_hi, sec_ptr, sec_buf, part.totals)
    limit = n
    while True:
        limit *= 2
        for keys in PREORDERS:
            heur = ["WAT".index(c) for c in keys]
            ws = xs.workspace(*static, heur, keyw, keya, compiled=compiled)
            st = ws[-1]
            stats["runs"] = stats.get("runs", 0) + 1
            status = xs.RUNNING
            while status == xs.RUNNING and st[xs.NODES] < limit:
                if deadline is not None and time.perf_counter() > deadline:
                    stats["nodes"] = stats.get("nodes", 0) + int(st[xs.NODES])
                    raise _TimeUp
                status = run(n, len(part.totals), cap, *ws, min(step, limit - int(st[xs.NODES])))
            stats["nodes"] = stats.get("nodes", 0) + int(st[xs.NODES])
            if status == xs.EXHAUSTED:
                return None
            if status == xs.FOUND:
                return [int(o) for o in ws[xs.OFFSET]]


def plan_exact(
    buffers: Sequence[Buffer], *, time_limit: float | None = None, capacity: int | None = None
) -> ArenaPlan:
    """The smallest arena for ``buffers`` (planner ``"exact"``); see the module docstring.

    Args:
        buffers: The buffers to place.
        time_limit: Seconds to search; then the best plan so far is returned with
            ``proven=False`` and ``stats["stopped"]`` set (with ``capacity``: an error).
        capacity: Find any placement within this many bytes instead of the smallest one.

    Returns:
        An :class:`ArenaPlan`: ``proven`` when ``arena`` is the smallest possible, and
        ``lower_bound`` the best bound proven (the peak, or more when the search showed it).

    Raises:
        InfeasibleError: with ``capacity``, no placement fits (proven).
        SerenityError: with ``capacity``, the time limit passed before a placement was found;
            or a buffer has a negative size or an empty lifetime.

    Example:
        >>> from serenity.planning import Buffer
        >>> bufs = [Buffer("a", 0, 2, 4), Buffer("b", 1, 3, 4), Buffer("c", 2, 4, 4),
        ...         Buffer("d", 0, 4, 2)]
        >>> plan = plan_exact(bufs)
        >>> plan.arena, plan.lower_bound, plan.proven
        (10, 10, True)
    """
    t0 = time.perf_counter()
    deadline = None if time_limit is None else t0 + time_limit
    for b in buffers:
        if b.size < 0 or b.upper <= b.lower:
            raise SerenityError(f"buffer '{b.id}' has size {b.size} and lifetime [{b.lower}, {b.upper})")
    unit = math.gcd(*(b.size for b in buffers)) or 1
    parts = split(buffers, unit)
    stats: dict[str, Any] = {"buffers": len(buffers), "parts": len(parts), "unit": unit,
                             "sections": sum(len(p.totals) for p in parts), "nodes": 0}  # fmt: skip
    # 3-4. Bound and incumbent, per part.
    lo = max((p.peak for p in parts), default=0)
    best = [greedy(p) for p in parts]
    tops = [
        max((o + z for o, z in zip(off, p.z, strict=True)), default=0)
        for off, p in zip(best, parts, strict=True)
    ]
    hi = max(tops, default=0)
    stats["greedy"] = hi * unit
    stopped = ""
    if capacity is not None:
        cap = min(capacity // unit, sum(sum(p.z) for p in parts))
        if lo > cap:
            raise InfeasibleError(
                f"the buffers need at least {lo * unit} bytes live at one step, "
                f"above the capacity of {capacity}"
            )
        try:
            for i, p in enumerate(parts):
                if tops[i] > cap:
                    found = decide(p, cap, deadline, stats)
                    if found is None:
                        raise InfeasibleError(
                            f"no placement of the {len(buffers)} buffers fits in {capacity} bytes "
                            "(proven by exhaustive search)"
                        )
                    best[i], tops[i] = found, max(o + z for o, z in zip(found, p.z, strict=True))
        except _TimeUp:
            raise SerenityError(
                f"no placement within {capacity} bytes found in the time limit of {time_limit:g} s "
                "(not proven infeasible); raise the time limit or the capacity"
            ) from None
        hi = max(tops, default=0)
    else:
        # 5. Decide C = lo, then bisect [lo, hi).
        first = True
        try:
            while lo < hi:
                cap = lo if first else (lo + hi - 1) // 2
                first = False
                trial = list(best)
                for i, p in enumerate(parts):
                    found = best[i] if tops[i] <= cap else decide(p, cap, deadline, stats)
                    if found is None:
                        lo = cap + 1
                        break
                    trial[i] = found
                else:
                    best = trial
                    tops = [
                        max(o + z for o, z in zip(off, p.z, strict=True))
                        for off, p in zip(best, parts, strict=True)
                    ]
                    hi = max(tops)
        except _TimeUp:
            stopped = f"time limit of {time_limit:g} s reached"
    offsets = [0] * len(buffers)
    for p, off in zip(parts, best, strict=True):
        for k, o in zip(p.index, off, strict=True):
            offsets[k] = o * unit
    stats["stopped"] = stopped
    # 6. Proven when the bound meets the arena (lo only rises on an exhausted search).
    proven = lo >= hi
    return ArenaPlan(tuple(offsets), hi * unit, lo * unit, proven, "exact", time.perf_counter() - t0, stats)
