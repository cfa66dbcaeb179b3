"""Lower bounds on the peak of every order: what must be live while each op runs.

While op ``v`` runs, a tensor ``t`` is live in *every* order when ``t`` is produced by ``v`` or
by an ancestor of ``v`` (or is a graph input), and is still needed afterwards: it is a graph
output, or ``v`` reads it, or some consumer of ``t`` is a descendant of ``v`` (that consumer runs
after ``v``, so ``t`` cannot have been freed). The sum of those sizes is a peak no order can beat,
for each ``v``; the bound is the largest such sum. It subsumes
:func:`serenity.schedulers.result.op_lower_bound` (inputs plus outputs of one op) and is the
"surely live" reasoning of memory-aware schedulers such as HMCOS (Wang et al., DAC 2022) and the
lifetime analysis of Ahn et al., "Ordering Chaos" (MLSys 2020).
"""

from __future__ import annotations

import numpy as np

from serenity.ir import Dense


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


def _mask_to_bool(mask: int, n: int) -> np.ndarray:
    raw = np.frombuffer(mask.to_bytes((n + 7) // 8, "little"), dtype=np.uint8)
    return np.unpackbits(raw, bitorder="little")[:n].astype(bool)


def surely_live(d: Dense) -> np.ndarray:
    """Bytes live while each op runs, in every order (array indexed by op; ``int64``, or Python
    ints in an object array when the sizes add up to more than ``int64`` holds)."""
    n = d.n_ops
    anc, desc = reachability(d)
    everyone = (1 << n) - 1
    # Exact: int64 only when the sum of all sizes (the largest entry possible) fits.
    need = np.zeros(n, dtype=np.int64 if sum(d.sizes) < 1 << 62 else object)
    for t, size in enumerate(d.sizes):
        if size == 0:
            continue
        p = d.producer[t]
        after = everyone if p < 0 else desc[p] | (1 << p)
        if d.pinned[t]:
            live = after
        else:
            before_use = 0
            for c in d.consumers[t]:
                before_use |= anc[c] | (1 << c)
            live = after & before_use
            if p >= 0:
                live |= 1 << p
        if live:
            need[_mask_to_bool(live, n)] += size
    return need


def static_lower_bound(d: Dense) -> int:
    """The largest :func:`surely_live` over ops, and the live bytes at the start and the end."""
    best = sum(d.sizes[t] for t in d.initial)
    if d.n_ops:
        best = max(best, int(surely_live(d).max()))
        best = max(best, sum(s for s, p in zip(d.sizes, d.pinned, strict=True) if p))
    return best

