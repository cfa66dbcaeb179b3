"""The compiled best-first search for graphs of more than 63 items: states of several words.

The same search as :mod:`.search_jit` (and as the reference :func:`.search.best_first`), with a
state stored as ``W`` words of 63 bits (item ``v`` is bit ``v % 63`` of word ``v // 63``); the
masks of readers and predecessors are item lists (:func:`.search_jit.covers`). The hash
table keeps ``W`` key words and one value word (``peak << 16 | last item``) per slot; the heap's
payload rows keep the state and its ready set as ``W`` words each. The item steps, the heap and
the stop check are the compiled helpers of :mod:`.search_jit`, and so are the exact-arithmetic
check (:func:`.search_jit.scale_to_fit`, here for ``peak << 16``), the exact state cap and the
Ctrl-C handling.
"""

from __future__ import annotations

import time

import numpy as np

from serenity.schedulers.reduce import Items
from serenity.schedulers.search import SearchOutcome, forceable_mask, pred_masks
from serenity.schedulers.search_jit import (
    AVAILABLE,
    CAP,
    DRY,
    FOUND,
    POLL,
    deadline_of,
    deferred_sigint,
    flatten,
    outcome,
    scale_to_fit,
)

BITS = 63
#: Items are stored in 16 bits of a table value.
MAX_ITEMS = 65535
#: Largest byte count the kernel may hold: ``peak << 16 | item`` must stay below 2**63.
MAX_VALUE = (1 << 47) - 1

if AVAILABLE:
    from numba import njit

    from serenity.schedulers.search_jit import (
        _clz,
        apply_steps,
        covers,
        grow,
        grow_rows,
        heap_pop,
        heap_push,
        stop_status,
    )

    @njit(cache=True)
    def _slot(tk, state, W):  # type: ignore[no-untyped-def]
        """Slot of ``state`` in the key table ``tk`` (row ``-1`` in column 0 = empty)."""
        mask = np.uint64(tk.shape[0] - 1)
        k = np.uint64(0x9E3779B97F4A7C15)
        x = k
        for w in range(W):
            x ^= np.uint64(state[w]) + k + (x << np.uint64(6)) + (x >> np.uint64(2))
        x ^= x >> np.uint64(33)
        x *= np.uint64(0xFF51AFD7ED558CCD)
        x ^= x >> np.uint64(33)
        i = np.int64(x & mask)
        while tk[i, 0] != -1:
            same = True
            for w in range(W):
                if tk[i, w] != state[w]:
                    same = False
                    break
            if same:
                return i
            i = (i + 1) & np.int64(mask)
        return i

    @njit(cache=True)
    def _kernel(
        n, W, steps, succ_ptr, succ_idx, pmask, forceable, initial, lb, ub, max_states, deadline,
    ):  # type: ignore[no-untyped-def]
        # 1. Tables (keys, values) and the heap (key: peak, -seq; payload row: live bytes,
        #    state words, ready words).
        tk = np.full((1 << 12, W), -1, np.int64)
        tv = np.zeros(1 << 12, np.int64)
        hcap = 1 << 12
        hg = np.zeros(hcap, np.int64)
        hq = np.zeros(hcap, np.int64)
        hp = np.arange(hcap)
        hl = np.zeros(hcap, np.int64)
        hs = np.zeros((hcap, W), np.int64)
        hr = np.zeros((hcap, W), np.int64)
        full = np.zeros(W, np.int64)
        for v in range(n):
            full[v // 63] |= np.int64(1) << (v % 63)
        state = np.zeros(W, np.int64)
        ready = np.zeros(W, np.int64)
        R = np.zeros(W, np.int64)
        nxt = np.zeros(W, np.int64)
        for v in range(n):
            if pmask[0][v] == pmask[0][v + 1]:  # no predecessors
                hr[0, v // 63] |= np.int64(1) << (v % 63)
        g0 = max(initial, lb)
        i = _slot(tk, state, W)
        tk[i, :] = state
        tv[i] = (g0 << 16) | 65535
        stored = 1
        hl[0] = initial
        heap_push(hg, hq, hp, 0, g0, 0)
        size = 1
        seq = 0
        expanded = 0
        status = stop_status(deadline)
        g = g0
        while size > 0 and status == DRY:
            # 2. Pop the smallest (peak, -seq) into state/ready.
            g = hg[0]
            p = heap_pop(hg, hq, hp, size)
            size -= 1
            L = hl[p]
            state[:] = hs[p]
            ready[:] = hr[p]
            if tv[_slot(tk, state, W)] >> 16 != g:
                continue
            done = True
            for w in range(W):
                if state[w] != full[w]:
                    done = False
            if done:
                status = FOUND
                break
            expanded += 1
            if expanded % POLL == 0:
                status = stop_status(deadline)
                if status != DRY:
                    break
            # 3. Run-now rule, then expansion (as in the reference).
            R[:] = ready
            forced = False
            for wi in range(W):
                if forced:
                    break
                r = ready[wi] & forceable[wi]
                while r:
                    low = r & -r
                    v = wi * 63 + (63 - _clz(low))
                    r ^= low
                    nxt[:] = state
                    nxt[wi] |= low
                    c, L2 = apply_steps(steps, v, g, L, nxt)
                    if L2 <= L and c == g:
                        R[:] = 0
                        R[wi] = low
                        forced = True
                        break
            for wi in range(W):
                if status != DRY:
                    break
                r = R[wi]
                while r:
                    low = r & -r
                    v = wi * 63 + (63 - _clz(low))
                    r ^= low
                    nxt[:] = state
                    nxt[wi] |= low
                    g2, L2 = apply_steps(steps, v, g, L, nxt)
                    if g2 >= ub:
                        continue
                    i = _slot(tk, nxt, W)
                    if tk[i, 0] != -1 and tv[i] >> 16 <= g2:
                        continue
                    if tk[i, 0] == -1:
                        if stored >= max_states:  # the cap is exact: never store one more
                            status = CAP
                            break
                        tk[i, :] = nxt
                        stored += 1
                    tv[i] = (g2 << 16) | v
                    # 4. Push (grow when full), with the ready set of the successor.
                    if size == hg.size:
                        status = stop_status(deadline)
                        if status != DRY:
                            break
                        hg, hq, hp = grow(hg), grow(hq), grow_rows(hp)
                        hl, hs, hr = grow(hl), grow(hs), grow(hr)
                    p = hp[size]
                    hl[p] = L2
                    hs[p] = nxt
                    hr[p] = ready
                    hr[p, wi] ^= low
                    for k in range(succ_ptr[v], succ_ptr[v + 1]):
                        x = succ_idx[k]
                        if covers(pmask, x, nxt):
                            hr[p, x // 63] |= np.int64(1) << (x % 63)
                    seq += 1
                    heap_push(hg, hq, hp, size, g2, -seq)
                    size += 1
                    # 5. Keep the table at most half full. Rehashing copies every row of W
                    #    words: look at the clock first, so a limit holds on wide states.
                    if 2 * stored > tk.shape[0]:
                        status = stop_status(deadline)
                        if status != DRY:
                            break
                        ok_, ov = tk, tv
                        tk = np.full((2 * ok_.shape[0], W), -1, np.int64)
                        tv = np.zeros(2 * ok_.shape[0], np.int64)
                        for a in range(ok_.shape[0]):
                            if ok_[a, 0] != -1:
                                b = _slot(tk, ok_[a], W)
                                tk[b, :] = ok_[a]
                                tv[b] = ov[a]
        order = np.zeros(n, np.int64)
        if status == FOUND:
            state[:] = full
            for pos in range(n - 1, -1, -1):
                v = tv[_slot(tk, state, W)] & 65535
                order[pos] = v
                state[v // 63] &= ~(np.int64(1) << (v % 63))
        return status, g, expanded, stored, order


def _lists(masks: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Item masks as lists ``(ptr, idx)``: mask ``i`` holds items ``idx[ptr[i]:ptr[i + 1]]``."""
    ptr = [0]
    idx: list[int] = []
    for m in masks:
        while m:
            low = m & -m
            idx.append(low.bit_length() - 1)
            m ^= low
        ptr.append(len(idx))
    return np.array(ptr, np.int64), np.array(idx, np.int64)


def _words(mask: int, W: int) -> list[int]:
    return [(mask >> (BITS * w)) & ((1 << BITS) - 1) for w in range(W)]


def best_first_wide(
    items: Items,
    *,
    ub: int,
    lb: int = 0,
    time_limit: float | None = None,
    max_states: int = 2_000_000,
    run_now: bool = True,
) -> SearchOutcome:
    """:func:`serenity.schedulers.search.best_first` compiled for any number of items (< 65535).

    At most ``max(1, max_states)`` states are stored (the start state always is).

    Raises:
        ValueError: numba is not installed, there are too many items, or the byte counts do not
            fit even divided by their gcd (:func:`.search_jit.scale_to_fit`).
        KeyboardInterrupt: Ctrl-C during the search.
    """
    t0 = time.perf_counter()
    n = len(items)
    if not AVAILABLE or n >= MAX_ITEMS:
        raise ValueError(f"the compiled search needs numba and fewer than {MAX_ITEMS} items (got {n})")
    if n == 0:
        return SearchOutcome([], items.initial, items.initial, True)
    fit = scale_to_fit(items, lb, ub, MAX_VALUE)
    if fit is None:
        raise ValueError(f"byte counts up to {items.magnitude()} do not fit the compiled search")
    W = (n + BITS - 1) // BITS
    *steps, free_masks, succ_ptr, succ_idx = flatten(fit.items)
    masks = _lists(free_masks)
    pmask = _lists(pred_masks(items))
    with deferred_sigint():
        result = _kernel(
            n, W, (*steps, masks), succ_ptr, succ_idx, pmask,
            np.array(_words(forceable_mask(items, run_now), W), np.int64),
            np.int64(fit.items.initial), np.int64(fit.lb), np.int64(fit.ub), np.int64(max_states),
            deadline_of(time_limit, t0),
        )  # fmt: skip
    return outcome(*result, k=fit.k, ub=ub, lb=lb, time_limit=time_limit, max_states=max_states, t0=t0)
