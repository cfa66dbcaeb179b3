"""The depth-first search over canonical placements behind :func:`serenity.planning.exact.plan_exact`.

Moffitt, "MiniMalloc: A Lightweight Memory Allocator for Hardware-Accelerated Machine Learning"
(ASPLOS 2024). Given buffers with lifetimes, sizes and a capacity, find offsets such that buffers
live at the same step never share a byte and every ``offset + size <= capacity``, or prove that
none exist. Notation: buffer ``b`` has size ``z[b]``; a *section* is a maximal set of buffers live
together (a maximal clique of the interval graph), ``b`` spans sections ``[s_lo[b], s_hi[b])``.

A placement is *canonical* when every buffer rests at the top of a buffer below it that is live
at the same step, or at 0, and buffers are placed in order of ``(offset, index)``. Pushing every
buffer of any valid placement down as far as it goes gives a canonical placement no higher, so
searching canonical placements is complete. The search keeps, for every unplaced buffer, its
*minimum offset* ``m[b]`` (the highest top of the placed buffers it overlaps in time) and, for
every section, its ``floor`` (the lowest offset still usable there) and ``total`` (bytes of the
unplaced buffers in it):

1. **Branch**: order the unplaced buffers by ``(m[b], b)`` and try each at ``m[b]``, skipping
   those that would break the canonical order (``(m[b], b)`` below the previous placement's).
2. **Dominance**: a buffer with ``m[b] >= min(m[c] + z[c])`` over the unplaced ``c`` would leave
   a gap where ``c`` fits; a placement with ``c`` dropped into it is no higher, so skip it (and,
   the order being sorted, every buffer after it).
3. **Place**: raise ``m`` of the unplaced buffers that overlap ``b`` in time to ``m[b] + z[b]``;
   set the floor of ``b``'s sections to its top and take ``z[b]`` off their totals. A section's
   floor is also at least the smallest ``m`` of its unplaced buffers: nothing can go lower.
4. **Section inference**: every later buffer goes at or above ``m[b]`` (canonical order), so a
   section needs ``max(floor, m[b]) + total <= capacity``; otherwise undo and try the next buffer.
5. **Hatless pruning**: if ``b`` overlaps no unplaced buffer, its placement constrains nothing
   else, so when the subtree below it fails, so does every sibling: backtrack at once.

The search is written once, over plain indexable sequences, and runs two ways: compiled by numba
on ``int64`` numpy arrays (:data:`search_jit`, the caller checks that no sum can overflow), and as
the same Python function on lists of Python ints (:data:`search_py`), exact for any size. It does
not allocate: all state lives in the arrays the caller passes (:func:`workspace`), so the caller
can run it in slices of ``budget`` nodes, check the clock, and resume it where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

try:  # numba is a dependency, but keep the search usable without it
    from numba import njit
except ImportError:  # pragma: no cover - exercised only without numba
    AVAILABLE = False
else:
    AVAILABLE = True

#: How a slice of the search ended: a placement found, the space exhausted, the budget spent.
FOUND, EXHAUSTED, RUNNING = 0, 1, 2
#: Slots of the scalar state array ``st``: depth, status, nodes, stamp, started, opening, g0,
#: bar, rp (the top of the rank log).
DEPTH, STATUS, NODES, STAMP, STARTED, OPENING, G0, BAR, RP = range(9)
#: Index of ``offset`` (the placement) in the tuple :func:`workspace` returns.
OFFSET = 7


# fmt: off
def _search(
    n: Any, nsec: Any, cap: Any, z: Any, ov_ptr: Any, ov_idx: Any, s_lo: Any, s_hi: Any,
    sec_ptr: Any, sec_buf: Any, offset: Any, m: Any, floor: Any, total: Any, ordr: Any, cnt: Any,
    pos: Any, chosen: Any, hatless: Any, pmin_off: Any, pmin_pre: Any, minh: Any, mlog_b: Any,
    mlog_v: Any, mtop: Any, flog_s: Any, flog_v: Any, ftop: Any, mark: Any, ga: Any, gb: Any,
    barrier: Any, cuts: Any, cutdepth: Any, heur: Any, keyw: Any, keya: Any, tkey: Any,
    rank: Any, rlog_b: Any, rlog_v: Any, rbase: Any, st: Any, budget: Any,
) -> Any:
    # fmt: on
    """Run the search for at most ``budget`` more nodes; return ``FOUND``, ``EXHAUSTED`` or
    ``RUNNING`` (also left in ``st[STATUS]``). Buffers are indexed in preorder; the caller
    initialises the workspace with :func:`workspace` (``offset`` holds the placement when found).

    Depth ``d`` holds the placement ``chosen[d]`` and the candidates ``ordr[d*n : d*n+cnt[d]]``
    of its *group*, the sections ``[ga[d], gb[d])`` between two cuts no unplaced buffer crosses
    (6. decomposition: groups are solved one after another, left to right, and a group that
    fails sends the search back to ``barrier[d]``, the placement that cut it off, skipping the
    placements of the groups solved before it, which cannot help).
    """
    d = st[DEPTH]
    nodes = st[NODES]
    stamp = st[STAMP]
    opening = st[OPENING]
    g0 = st[G0]
    bar = st[BAR]
    if st[STARTED] == 0:
        st[STARTED] = 1
        d, opening, g0, bar = -1, 1, 0, -1
        mtop[0] = 0
        ftop[0] = 0
    spent = 0
    while True:
        if opening == 1:
            # 6. Open the next group at section g0 as depth d + 1, skipping emptied ones.
            e = g0
            while e < nsec - 1 and cuts[e] > 0:
                e += 1
            e += 1
            base = (d + 1) * n
            c = 0
            low = -1
            if g0 < nsec:
                # 7. Preorder the group as minimalloc does a part: by the keys in heur, largest
                # first (0 lifetime, 1 area, 2 the fullest section's unplaced bytes now).
                for s in range(g0, e):
                    for q in range(sec_ptr[s], sec_ptr[s + 1]):
                        j = sec_buf[q]
                        if s_lo[j] != s or offset[j] >= 0:
                            continue
                        t = 0
                        for u in range(s_lo[j], s_hi[j]):
                            t = max(t, total[u])
                        tkey[j] = t
                        r = base + c
                        while r > base:
                            p = ordr[r - 1]
                            after = p > j
                            for h in range(3):
                                if heur[h] == 0:
                                    vp, vj = keyw[p], keyw[j]
                                elif heur[h] == 1:
                                    vp, vj = keya[p], keya[j]
                                else:
                                    vp, vj = tkey[p], tkey[j]
                                if vp != vj:
                                    after = vp < vj
                                    break
                            if not after:
                                break
                            ordr[r] = p
                            r -= 1
                        ordr[r] = j
                        c += 1
                rbase[d + 1] = st[RP]
                for i in range(c):
                    j = ordr[base + i]
                    rlog_b[st[RP]] = j
                    rlog_v[st[RP]] = rank[j]
                    st[RP] += 1
                    rank[j] = i
                # Then by (m, rank): stable insertion keeps the preorder among equal m.
                for i in range(c):
                    j = ordr[base + i]
                    r = base + i
                    while r > base and m[ordr[r - 1]] > m[j]:
                        ordr[r] = ordr[r - 1]
                        r -= 1
                    ordr[r] = j
                    h = m[j] + z[j]
                    if low < 0 or h < low:
                        low = h
            if c == 0:
                if g0 >= nsec:
                    st[STATUS] = FOUND
                    break
                g0 = e
                if g0 < nsec:
                    bar = cutdepth[g0 - 1]
                continue
            opening = 0
            d += 1
            cnt[d] = c
            pos[d] = 0
            chosen[d] = -1
            pmin_off[d] = 0
            pmin_pre[d] = 0
            minh[d] = low
            ga[d] = g0
            gb[d] = e
            barrier[d] = bar
            continue
        # Undo the placement made at this depth (its check or its whole subtree failed).
        b = chosen[d]
        if b >= 0:
            for q in range(ftop[d + 1] - 1, ftop[d] - 1, -1):
                floor[flog_s[q]] = flog_v[q]
            for s in range(s_lo[b], s_hi[b]):
                total[s] += z[b]
                if s + 1 < s_hi[b]:
                    cuts[s] += 1
            for q in range(mtop[d + 1] - 1, mtop[d] - 1, -1):
                m[mlog_b[q]] = mlog_v[q]
            offset[b] = -1
            chosen[d] = -1
            if hatless[d] == 1:
                pos[d] = cnt[d]  # 5. hatless pruning
            else:
                pos[d] += 1
        if pos[d] >= cnt[d]:
            # Back to the depth this group hangs from, undoing the groups solved before it.
            target = barrier[d]
            for dd in range(d - 1, target, -1):
                b = chosen[dd]
                for q in range(ftop[dd + 1] - 1, ftop[dd] - 1, -1):
                    floor[flog_s[q]] = flog_v[q]
                for s in range(s_lo[b], s_hi[b]):
                    total[s] += z[b]
                    if s + 1 < s_hi[b]:
                        cuts[s] += 1
                for q in range(mtop[dd + 1] - 1, mtop[dd] - 1, -1):
                    m[mlog_b[q]] = mlog_v[q]
                offset[b] = -1
                chosen[dd] = -1
            for q in range(st[RP] - 1, rbase[target + 1] - 1, -1):
                rank[rlog_b[q]] = rlog_v[q]
            st[RP] = rbase[target + 1]
            if target < 0:
                st[STATUS] = EXHAUSTED
                break
            d = target
            continue
        if spent >= budget:
            st[STATUS] = RUNNING
            break
        # 1. Branch on the next buffer in (m, index) order, in canonical order only.
        k = ordr[d * n + pos[d]]
        off = m[k]
        if off >= minh[d]:  # 2. dominance: this and every later buffer leave a gap
            pos[d] = cnt[d]
            continue
        if off < pmin_off[d] or (off == pmin_off[d] and rank[k] < pmin_pre[d]):
            pos[d] += 1
            continue
        spent += 1
        nodes += 1
        # 3. Place k at its minimum offset.
        chosen[d] = k
        offset[k] = off
        top = off + z[k]
        stamp += 1
        q = mtop[d]
        hat = 1
        for e in range(ov_ptr[k], ov_ptr[k + 1]):
            j = ov_idx[e]
            if offset[j] >= 0:
                continue
            hat = 0
            if m[j] >= top:
                continue
            mlog_b[q] = j
            mlog_v[q] = m[j]
            q += 1
            m[j] = top
            for s in range(s_lo[j], s_hi[j]):
                mark[s] = stamp
        mtop[d + 1] = q
        hatless[d] = hat
        q = ftop[d]
        cut = False
        for s in range(s_lo[k], s_hi[k]):
            flog_s[q] = s
            flog_v[q] = floor[s]
            q += 1
            floor[s] = top
            total[s] -= z[k]
            if s + 1 < s_hi[k]:
                cuts[s] -= 1
                if cuts[s] == 0:
                    cutdepth[s] = d
                    cut = True
        for s in range(ga[d], gb[d]):
            if mark[s] != stamp:
                continue
            low = -1
            for e in range(sec_ptr[s], sec_ptr[s + 1]):
                j = sec_buf[e]
                if offset[j] < 0 and (low < 0 or m[j] < low):
                    low = m[j]
            if floor[s] < low:
                flog_s[q] = s
                flog_v[q] = floor[s]
                q += 1
                floor[s] = low
        ftop[d + 1] = q
        # 4. Section inference, over this group's sections.
        ok = True
        for s in range(ga[d], gb[d]):
            if max(floor[s], off) + total[s] > cap:
                ok = False
                break
        if not ok:
            continue
        if cut:  # 6. the group fell apart: open its first part
            opening, g0, bar = 1, ga[d], d
            continue
        # Next depth: the group's unplaced buffers re-sorted by (m, index), by insertion into
        # the parent's order (m only grew, so it is nearly sorted).
        base = (d + 1) * n
        c = 0
        low = -1
        for p in range(cnt[d]):
            j = ordr[d * n + p]
            if offset[j] >= 0:
                continue
            r = base + c
            while r > base:
                p = ordr[r - 1]
                if m[p] < m[j] or (m[p] == m[j] and rank[p] < rank[j]):
                    break
                ordr[r] = p
                r -= 1
            ordr[r] = j
            c += 1
            h = m[j] + z[j]
            if low < 0 or h < low:
                low = h
        if c == 0:  # the group is placed: open the next one
            opening, g0 = 1, gb[d]
            if g0 < nsec:
                bar = cutdepth[g0 - 1]
            continue
        d += 1
        cnt[d] = c
        pos[d] = 0
        chosen[d] = -1
        pmin_off[d] = off
        pmin_pre[d] = rank[k]
        rbase[d] = st[RP]
        minh[d] = low
        ga[d] = ga[d - 1]
        gb[d] = gb[d - 1]
        barrier[d] = d - 1
    st[DEPTH] = d
    st[NODES] = nodes
    st[STAMP] = stamp
    st[OPENING] = opening
    st[G0] = g0
    st[BAR] = bar
    return st[STATUS]


#: The search on Python ints (exact at any size; slow).
search_py: Callable[..., int] = _search
#: The search compiled for ``int64`` arrays (the caller rules out overflow), or the Python one.
search_jit: Callable[..., int] = njit(cache=True)(_search) if AVAILABLE else _search


# fmt: off
def workspace(
    z: list[int], ov_ptr: list[int], ov_idx: list[int], s_lo: list[int], s_hi: list[int],
    sec_ptr: list[int], sec_buf: list[int], totals: list[int], heur: list[int], keyw: list[int],
    keya: list[int], *, compiled: bool,
) -> tuple[Any, ...]:
    # fmt: on
    """The arrays :func:`_search` reads and writes, after ``n, nsec, cap``: numpy ``int64``
    arrays when ``compiled``, else Python lists (ints of any size).

    Args:
        z: Sizes.
        ov_ptr: For each buffer, where its run of ``ov_idx`` starts (CSR, ``n + 1`` entries).
        ov_idx: The buffers live at a step with each buffer.
        s_lo: First section each buffer spans.
        s_hi: One past the last section each buffer spans.
        sec_ptr: For each section, where its run of ``sec_buf`` starts (CSR).
        sec_buf: The buffers of each section.
        totals: Bytes of each section.
        heur: The preorder: three key codes (0 lifetime, 1 area, 2 section total).
        keyw: Rank of each buffer's lifetime (larger lifetime, larger rank).
        keya: Rank of each buffer's area.
        compiled: Arrays for :data:`search_jit` rather than lists for :data:`search_py`.

    Returns:
        The arguments of :func:`_search` after ``cap`` and before ``budget``.
    """
    n, nsec = len(z), len(totals)
    # Floor log: along one path, each placement logs its own sections and at most every section.
    flog = sum(s_hi[b] - s_lo[b] for b in range(n)) + n * nsec
    cuts = [0] * nsec  # buffers spanning sections s and s + 1
    for b in range(n):
        for s in range(s_lo[b], s_hi[b] - 1):
            cuts[s] += 1
    ne = len(ov_idx)
    state: list[list[int]] = [
        [-1] * n, [0] * n, [0] * nsec, list(totals),  # offset, m, floor, total
        [0] * (n * n), [0] * n, [0] * n, [-1] * n, [0] * n,  # ordr, cnt, pos, chosen, hatless
        [0] * n, [0] * n, [0] * n,  # pmin_off, pmin_pre, minh
        [0] * ne, [0] * ne, [0] * (n + 1), [0] * flog, [0] * flog, [0] * (n + 1),  # logs
        [0] * nsec, [0] * n, [0] * n, [0] * n, cuts, [0] * nsec,  # mark, ga, gb, barrier, cuts
        heur, keyw, keya, [0] * n, list(range(n)),  # heur, keyw, keya, tkey, rank
        [0] * (n * n), [0] * (n * n), [0] * (n + 1), [0] * 9,  # rlog_b, rlog_v, rbase, st
    ]  # fmt: skip
    static = (z, ov_ptr, ov_idx, s_lo, s_hi, sec_ptr, sec_buf)
    if not compiled:
        return (*static, *state)
    return tuple(np.array(a, dtype=np.int64) for a in (*static, *state))
