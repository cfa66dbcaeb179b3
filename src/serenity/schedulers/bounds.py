"""Lower bounds on the peak of every order: what must be live while each op runs.

While op ``v`` runs, a tensor ``t`` is live in *every* order when ``t`` is produced by ``v`` or
by an ancestor of ``v`` (or is a graph input), and is still needed afterwards: it is a graph
output, or ``v`` reads it, or some consumer of ``t`` is a descendant of ``v`` (that consumer runs
after ``v``, so ``t`` cannot have been freed). The sum of those sizes is a peak no order can beat,
for each ``v``; the bound is the largest such sum. It subsumes
:func:`serenity.schedulers.result.op_lower_bound` (inputs plus outputs of one op) and is the
"surely live" reasoning of memory-aware schedulers such as HMCOS (Wang et al., DAC 2022) and the
lifetime analysis of Ahn et al., "Ordering Chaos" (MLSys 2020).

Byte counts are Python ints throughout (no ``int64`` to overflow), and no structure grows as n²:
:func:`surely_live` tracks reachability within :data:`REACH` positions only (see there).
:func:`reachability` (full ancestor/descendant bitsets, n² bits) serves the window bounds of
:mod:`.decompose`, which run on graphs of at most :data:`.dp.WINDOW_MAX_OPS` ops.
"""

from __future__ import annotations

import numpy as np

from serenity.ir import Dense
from serenity.schedulers.clock import Deadline


def reachability(d: Dense) -> tuple[list[int], list[int]]:
    """Ancestor and descendant bitmasks of every op (bit ``i`` = op ``i``), strict."""
    n = d.n_ops
    indeg = [len(p) for p in d.preds]
    topo = [i for i in range(n) if indeg[i] == 0]
    for v in topo:  # Kahn's algorithm; ``topo`` grows while we walk it
        for w in d.succs[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                topo.append(w)
    anc = [0] * n
    for v in topo:
        m = 0
        for p in d.preds[v]:
            m |= anc[p] | (1 << p)
        anc[v] = m
    desc = [0] * n
    for v in reversed(topo):
        m = 0
        for w in d.succs[v]:
            m |= desc[w] | (1 << w)
        desc[v] = m
    return anc, desc


#: Positions (in a topological order) over which :func:`surely_live` tracks reachability: exact
#: for graphs of up to this many ops, a valid weaker bound beyond, with n · REACH bits of memory.
REACH = 2048


def topological(d: Dense) -> list[int]:
    """Kahn's order of the ops, sources and successors in index order."""
    indeg = [len(p) for p in d.preds]
    topo = [i for i in range(d.n_ops) if indeg[i] == 0]
    for v in topo:  # ``topo`` grows while we walk it
        for w in d.succs[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                topo.append(w)
    return topo


def surely_live(d: Dense, *, reach: int = REACH, clock: Deadline | None = None) -> list[int] | None:
    """Bytes live while each op runs, in every order (indexed by op; Python ints, exact), or
    ``None`` if ``clock`` ran out first.

    Reachability is tracked within ``reach`` positions of a topological order: ``anc[v]`` holds
    bit ``i`` for the ancestor at position ``pos(v) - K + i``, ``desc[v]`` bit ``j`` for the
    descendant at ``pos(v) + 1 + j`` (``K = min(n, reach)``). An ancestor within ``K`` positions
    is found through ops that all lie within them, so these sets are exact inside the window.
    A tensor then counts at ``v`` only where ``v`` is proven between its producer and a reader:
    with ``n <= reach`` that is the whole rule of the module docstring; beyond, pairs farther
    apart than ``K`` are left out, which can only lower the sum (the bound stays valid). Memory
    and time are O((n + edges) · K / 64) words.
    """
    n = d.n_ops
    topo = topological(d)
    pos = [0] * n
    for i, v in enumerate(topo):
        pos[v] = i
    K = max(1, min(n, reach))
    anc = [0] * n
    for v in topo:
        m = 0
        for p in d.preds[v]:
            delta = pos[v] - pos[p]
            if delta <= K:
                m |= (anc[p] >> delta) | (1 << (K - delta))
        anc[v] = m
    window = (1 << K) - 1
    desc = [0] * n
    for v in reversed(topo):
        m = 0
        for w in d.succs[v]:
            delta = pos[w] - pos[v]
            if delta <= K:
                m |= (desc[w] << delta) | (1 << (delta - 1))
        desc[v] = m & window
    need = [0] * n  # by position
    for t, size in enumerate(d.sizes):
        if t % 4096 == 0 and clock is not None and clock.expired():
            return None
        if size == 0:
            continue
        p = d.producer[t]
        if p < 0:
            if d.pinned[t]:  # a graph input that is also an output: live throughout
                need = [x + size for x in need]
                continue
            # Live before its last use: every ancestor of a reader, and the readers.
            live = 0
            for c in d.consumers[t]:
                live |= _shift(anc[c], pos[c] - K) | (1 << pos[c])
            _add(need, 0, live, size)
            continue
        need[pos[p]] += size
        if d.pinned[t]:
            _add(need, pos[p] + 1, desc[p], size)
            continue
        live = 0
        for c in d.consumers[t]:
            delta = pos[c] - pos[p]
            if delta <= K:  # c, and what lies between p and c (in p's descendant frame)
                live |= (1 << (delta - 1)) | (desc[p] & (anc[c] >> (K + 1 - delta)))
            else:
                need[pos[c]] += size
        _add(need, pos[p] + 1, live, size)
    return [need[pos[v]] for v in range(n)]


def _shift(mask: int, by: int) -> int:
    return mask << by if by >= 0 else mask >> -by


def _add(need: list[int], base: int, mask: int, size: int) -> None:
    """``need[base + i] += size`` for every bit ``i`` of ``mask``."""
    if mask.bit_count() <= 32:
        while mask:
            low = mask & -mask
            need[base + low.bit_length() - 1] += size
            mask ^= low
        return
    n_bits = mask.bit_length()
    raw = np.frombuffer(mask.to_bytes((n_bits + 7) // 8, "little"), dtype=np.uint8)
    for i in np.flatnonzero(np.unpackbits(raw, bitorder="little")[:n_bits]).tolist():
        need[base + i] += size


def static_lower_bound(d: Dense, *, clock: Deadline | None = None) -> int:
    """The largest :func:`surely_live` over ops (less an op's output bytes where the ``inplace``
    model lets it overwrite an input), and the live bytes at the start and the end (only these
    two if ``clock`` runs out)."""
    best = sum(d.sizes[t] for t in d.initial)
    if d.n_ops:
        best = max(best, sum(s for s, p in zip(d.sizes, d.pinned, strict=True) if p))
        need = surely_live(d, clock=clock)
        if need is not None and d.reuse:
            # Under "inplace" an op may write its output over a dying input: its step can
            # cost the output's size less (every candidate has that size).
            need = [x - (d.sizes[r[0]] if r else 0) for x, r in zip(need, d.reuse, strict=True)]
        if need is not None:
            best = max(best, max(need))
    return best
