"""The best-first search of :mod:`.search` compiled with numba, for graphs of up to 63 items.

Same states, recurrence, clamp at ``lb``, hard budget ``ub`` and run-now rule as
:func:`serenity.schedulers.search.best_first` (the pure-Python reference, which the tests compare
it with); only the containers differ: a state is one ``int64`` word, the table of best peaks is an
open-addressing hash table in numpy arrays, and the open states sit in a binary heap ordered by
``(peak, newest first)``. Ties may therefore be broken differently from the reference, so the
order can differ while the peak cannot.

The compiled pieces that do not depend on the state's width live here once and serve
:mod:`.search_wide` too: :func:`apply_steps` (an item's steps, for the run-now check and for the
expansion), :func:`covers` (a mask inside a state of one word or of several), the heap
(:func:`heap_push`, :func:`heap_pop`, :func:`grow`) and :func:`stop_status`.

**Exact arithmetic.** Byte counts are Python ints everywhere else; a kernel holds them in
``int64`` and packs ``peak << 8 | item`` (``<< 16`` in :mod:`.search_wide`) into one word. Before
a kernel runs, :func:`scale_to_fit` divides every byte count by the gcd of the sizes and the
bounds (exact: the search only adds, subtracts and compares them, so the peak of the scaled
problem times the gcd is the peak) and checks that the largest value the kernel could hold,
:meth:`.Items.magnitude`, fits the packing; when it does not the caller falls back to the
pure-Python search, whose integers are unbounded. No result is ever computed in a type that
could have wrapped.

**Stopping.** The kernel polls the clock every :data:`POLL` expansions (through ``objmode``) and
checks the state cap on every store, so ``max_states`` is exact. Ctrl-C must not raise inside
``objmode`` (numba turns that into a ``SystemError``): :func:`deferred_sigint` makes SIGINT set a
flag the poll reports, and re-raises ``KeyboardInterrupt`` once the kernel has returned.

numba compiles the kernels on first use and caches them next to the sources (``cache=True``); when
numba is missing :data:`AVAILABLE` is false and callers use the reference. numba invalidates a
cached kernel only when its own file changes: after editing a helper here, clear the cache
(``__pycache__/*.nbi``, ``*.nbc``) so :mod:`.search_wide` is recompiled too.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from serenity.schedulers.clock import stop_requested
from serenity.schedulers.reduce import Items
from serenity.schedulers.search import SearchOutcome, forceable_mask, pred_masks, stop_message

try:  # numba is a dependency, but keep the reference usable without it
    from numba import njit, objmode, types
    from numba.extending import overload
except ImportError:  # pragma: no cover - exercised only without numba
    AVAILABLE = False
else:
    AVAILABLE = True

#: Most items a state word can hold (bit 63 stays clear so states are non-negative).
MAX_ITEMS = 63
#: Largest byte count the kernel may hold: ``peak << 8 | item`` must stay below 2**63.
MAX_VALUE = (1 << 55) - 1
#: Expansions between two polls of the clock (and of Ctrl-C).
POLL = 256

#: How a kernel stopped: the full state left the heap, the heap ran dry, time limit, state cap,
#: Ctrl-C.
FOUND, DRY, TIME, CAP, INTERRUPTED = 0, 1, 2, 3, 4


class _Sigint:
    """Set by the SIGINT handler of :func:`deferred_sigint`, read by :func:`poll`."""

    hit = False


def poll(deadline: float) -> int:
    """:data:`INTERRUPTED` after Ctrl-C, :data:`TIME` past ``deadline`` (a ``perf_counter``
    instant; ``< 0``: none), else :data:`DRY` (go on). Plain Python, called from the kernels'
    ``objmode``: it never raises. A :func:`.clock.stop_when` check that asks to stop counts as
    the time limit."""
    if _Sigint.hit:
        return INTERRUPTED
    if (deadline >= 0 and time.perf_counter() > deadline) or stop_requested():
        return TIME
    return DRY


@contextmanager
def deferred_sigint() -> Iterator[None]:
    """Run a kernel with Ctrl-C turned into a flag; raise ``KeyboardInterrupt`` after it returns.

    Only the main thread can install signal handlers; elsewhere the default stays (SIGINT is
    delivered to the main thread anyway).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _Sigint.hit = False

    def handler(signum: int, frame: object) -> None:
        _Sigint.hit = True

    old = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        hit, _Sigint.hit = _Sigint.hit, False
    if hit:
        if callable(old):
            old(signal.SIGINT, None)
        else:
            raise KeyboardInterrupt


def deadline_of(time_limit: float | None, t0: float) -> float:
    """The ``perf_counter`` instant a kernel stops at (``-1.0``: no limit)."""
    return -1.0 if time_limit is None else t0 + max(0.0, time_limit)


@dataclass(frozen=True, slots=True)
class Scaled:
    """A search problem divided by ``k`` so that a kernel holds it exactly (:func:`scale_to_fit`)."""

    items: Items
    k: int
    lb: int
    ub: int


def scale_to_fit(items: Items, lb: int, ub: int, max_value: int) -> Scaled | None:
    """The problem with byte counts divided by their gcd ``k``, or ``None`` if even then some
    value the kernel could hold exceeds ``max_value``.

    ``ub`` is first lowered to the next multiple of the size gcd above every reachable value
    (``max(magnitude, lb)``): no state reaches it, so the pruning is the same. ``k`` divides the
    sizes, ``lb`` and that ``ub``, so dividing is exact and the answer times ``k`` is the answer.
    """
    top = items.magnitude()
    g0 = items.size_gcd() or 1
    ub2 = min(ub, (max(top, lb) // g0 + 1) * g0)
    k = math.gcd(g0, lb, ub2) or 1
    if ub2 // k > max_value or top // k > max_value:
        return None
    return Scaled(items.scaled(k), k, lb // k, ub2 // k)


def covers(masks: object, i: int, words: object) -> bool:
    """Whether every bit of mask ``i`` is set in ``words``: ``masks[i]`` against one ``int64``
    word (this module's kernel), or, for :mod:`.search_wide`, the items listed in
    ``idx[ptr[i]:ptr[i + 1]]`` of ``masks = (ptr, idx)`` against a row of 63-bit words (a list,
    not a row of ``W`` words per mask, so the masks take O(items) memory, not O(items²)).
    Compiled code only (see the overload)."""
    raise NotImplementedError("covers is implemented for compiled code only")


if AVAILABLE:

    @overload(covers)
    def _covers(masks, i, words):  # type: ignore[no-untyped-def]
        # numba picks the body by the type of ``words``, so both kernels share the helpers below.
        if isinstance(words, types.Integer):

            def one_word(masks, i, words):  # type: ignore[no-untyped-def]
                return masks[i] & words == masks[i]

            return one_word

        def listed_items(masks, i, words):  # type: ignore[no-untyped-def]
            ptr, idx = masks
            for k in range(ptr[i], ptr[i + 1]):
                x = idx[k]
                if (words[x // 63] >> (x % 63)) & 1 == 0:
                    return False
            return True

        return listed_items

    @njit(cache=True)
    def apply_steps(steps, v, g, L, nxt):  # type: ignore[no-untyped-def]
        """:func:`.search.apply_steps` on the flat arrays of :func:`flatten`: run item ``v``'s
        steps from live bytes ``L`` and peak ``g``, ``nxt`` being the items run with ``v``.
        Returns ``(peak, live)``."""
        step_ptr, st_out, st_delta, free_ptr, free_size, free_mask = steps
        for k in range(step_ptr[v], step_ptr[v + 1]):
            g = max(g, L + st_out[k])
            L += st_delta[k]
            for f in range(free_ptr[k], free_ptr[k + 1]):
                if covers(free_mask, f, nxt):
                    L -= free_size[f]
        return g, L

    @njit(cache=True)
    def heap_push(hg, hq, hp, size, g, q):  # type: ignore[no-untyped-def]
        """Add the entry ``(g, q)`` to the binary heap of ``size`` entries, smallest ``(g, q)``
        first. ``hp`` maps heap positions to payload rows and holds the free rows past ``size``;
        the caller has written the new entry's payload at row ``hp[size]``."""
        p = hp[size]
        j = size
        while j > 0:
            up = (j - 1) // 2
            if not (g < hg[up] or (g == hg[up] and q < hq[up])):
                break
            hg[j], hq[j], hp[j] = hg[up], hq[up], hp[up]
            j = up
        hg[j], hq[j], hp[j] = g, q, p

    @njit(cache=True)
    def heap_pop(hg, hq, hp, size):  # type: ignore[no-untyped-def]
        """Remove the smallest entry of the heap of ``size`` entries and return its payload row,
        which becomes free (``hp[size - 1]``): read it before the next push."""
        p = hp[0]
        size -= 1
        kg, kq, kp = hg[size], hq[size], hp[size]
        j = 0
        while True:
            c = 2 * j + 1
            if c >= size:
                break
            if c + 1 < size and (hg[c + 1] < hg[c] or (hg[c + 1] == hg[c] and hq[c + 1] < hq[c])):
                c += 1
            if not (hg[c] < kg or (hg[c] == kg and hq[c] < kq)):
                break
            hg[j], hq[j], hp[j] = hg[c], hq[c], hp[c]
            j = c
        hg[j], hq[j], hp[j] = kg, kq, kp
        hp[size] = p
        return p

    @njit(cache=True)
    def grow(a):  # type: ignore[no-untyped-def]
        """``a`` with twice the rows, the new ones zero."""
        return np.concatenate((a, np.zeros_like(a)))

    @njit(cache=True)
    def grow_rows(hp):  # type: ignore[no-untyped-def]
        """The heap's row map with twice the rows, the new rows free."""
        return np.concatenate((hp, np.arange(hp.size, 2 * hp.size)))

    @njit(cache=True)
    def stop_status(deadline):  # type: ignore[no-untyped-def]
        """:func:`poll` from compiled code: :data:`INTERRUPTED`, :data:`TIME` or :data:`DRY`."""
        with objmode(status="int64"):
            status = poll(deadline)
        return status

    @njit(cache=True)
    def _slot(tab: np.ndarray, state: np.int64) -> np.int64:
        """Index of ``state``'s pair in ``tab`` (key at ``2i``, ``peak << 8 | item`` at ``2i+1``),
        or of the empty pair where it would go; linear probing."""
        mask = np.uint64(tab.size // 2 - 1)
        x = np.uint64(state)
        x ^= x >> np.uint64(33)
        x *= np.uint64(0xFF51AFD7ED558CCD)
        x ^= x >> np.uint64(33)
        x *= np.uint64(0xC4CEB9FE1A85EC53)
        x ^= x >> np.uint64(33)
        i = np.int64(x & mask)
        while tab[2 * i] != -1 and tab[2 * i] != state:
            i = (i + 1) & np.int64(mask)
        return i

    @njit(cache=True)
    def _kernel(
        n, steps, succ_ptr, succ_idx, pmask, forceable, initial, lb, ub, max_states, deadline,
    ):  # type: ignore[no-untyped-def]
        # 1. Tables: best clamped peak and last item per state; a heap of open states (key:
        #    peak, -seq; payload row: state, live bytes, ready set).
        tab = np.full(2 << 12, -1, np.int64)
        hcap = 1 << 12
        hg = np.zeros(hcap, np.int64)
        hq = np.zeros(hcap, np.int64)
        hp = np.arange(hcap)
        hs = np.zeros(hcap, np.int64)
        hl = np.zeros(hcap, np.int64)
        hr = np.zeros(hcap, np.int64)
        seq = 0
        full = (np.int64(1) << n) - 1
        g0 = max(initial, lb)
        ready0 = np.int64(0)
        for v in range(n):
            if pmask[v] == 0:
                ready0 |= np.int64(1) << v
        i = _slot(tab, np.int64(0))
        tab[2 * i] = 0
        tab[2 * i + 1] = (g0 << 8) | 255
        stored = 1
        hs[0], hl[0], hr[0] = 0, initial, ready0
        heap_push(hg, hq, hp, 0, g0, 0)
        size = 1
        expanded = 0
        status = stop_status(deadline)
        g = g0
        while size > 0 and status == DRY:
            # 2. Pop the smallest (peak, -seq).
            g = hg[0]
            p = heap_pop(hg, hq, hp, size)
            size -= 1
            state, L, ready = hs[p], hl[p], hr[p]
            if tab[2 * _slot(tab, state) + 1] >> 8 != g:
                continue
            if state == full:
                status = FOUND
                break
            expanded += 1
            if expanded % POLL == 0:
                status = stop_status(deadline)
                if status != DRY:
                    break
            # 3. Run-now rule, then expansion (as in the reference).
            R = ready
            r = ready & forceable
            while r:
                low = r & -r
                v = 63 - _clz(low)
                r ^= low
                c, L2 = apply_steps(steps, v, g, L, state | low)
                if L2 <= L and c == g:
                    R = low
                    break
            r = R
            while r:
                low = r & -r
                v = 63 - _clz(low)
                r ^= low
                nxt = state | low
                g2, L2 = apply_steps(steps, v, g, L, nxt)
                if g2 >= ub:
                    continue
                i = _slot(tab, nxt)
                if tab[2 * i] == nxt and tab[2 * i + 1] >> 8 <= g2:
                    continue
                if tab[2 * i] != nxt:
                    if stored >= max_states:  # the cap is exact: never store one more
                        status = CAP
                        break
                    tab[2 * i] = nxt
                    stored += 1
                tab[2 * i + 1] = (g2 << 8) | v
                R2 = ready ^ low
                for k in range(succ_ptr[v], succ_ptr[v + 1]):
                    w = succ_idx[k]
                    if covers(pmask, w, nxt):
                        R2 |= np.int64(1) << w
                # 4. Push (grow the heap when full).
                if size == hg.size:
                    hg, hq, hp = grow(hg), grow(hq), grow_rows(hp)
                    hs, hl, hr = grow(hs), grow(hl), grow(hr)
                p = hp[size]
                hs[p], hl[p], hr[p] = nxt, L2, R2
                seq += 1
                heap_push(hg, hq, hp, size, g2, -seq)
                size += 1
                # 5. Keep the table at most half full.
                if 4 * stored > tab.size:
                    old = tab
                    tab = np.full(2 * old.size, -1, np.int64)
                    for a in range(old.size // 2):
                        if old[2 * a] != -1:
                            b = _slot(tab, old[2 * a])
                            tab[2 * b], tab[2 * b + 1] = old[2 * a], old[2 * a + 1]
        order = np.zeros(n, np.int64)
        if status == FOUND:
            state = full
            for pos in range(n - 1, -1, -1):
                v = tab[2 * _slot(tab, state) + 1] & 255
                order[pos] = v
                state &= ~(np.int64(1) << v)
        return status, g, expanded, stored, order

    @njit(cache=True)
    def _clz(x):  # type: ignore[no-untyped-def]
        """Leading zeros of a one-bit word (binary search; numba has no portable clz)."""
        c = 0
        if x >> 32 == 0:
            c += 32
            x <<= 32
        if x >> 48 == 0:
            c += 16
            x <<= 16
        if x >> 56 == 0:
            c += 8
            x <<= 8
        if x >> 60 == 0:
            c += 4
            x <<= 4
        if x >> 62 == 0:
            c += 2
            x <<= 2
        if x >> 63 == 0:
            c += 1
        return c


def flatten(items: Items) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                   list[int], np.ndarray, np.ndarray]:
    """The items as flat arrays: steps (``step_ptr``, ``out``, ``delta``), frees per step
    (``free_ptr``, ``size``, reader masks as Python ints), successors (``succ_ptr``, ``idx``)."""
    step_ptr, st_out, st_delta, free_ptr = [0], [], [], [0]
    free_size: list[int] = []
    free_masks: list[int] = []
    for row in items.steps:
        for out, delta, frees in row:
            st_out.append(out)
            st_delta.append(delta)
            for size, cm in frees:
                free_size.append(size)
                free_masks.append(cm)
            free_ptr.append(len(free_size))
        step_ptr.append(len(st_out))
    succ_ptr: list[int] = [0]
    flat: list[int] = []
    for succ in items.succs:
        flat.extend(succ)
        succ_ptr.append(len(flat))

    def arr(x: list[int]) -> np.ndarray:
        return np.array(x, np.int64)

    return (arr(step_ptr), arr(st_out), arr(st_delta), arr(free_ptr), arr(free_size), free_masks,
            arr(succ_ptr), arr(flat))  # fmt: skip


def best_first_jit(
    items: Items,
    *,
    ub: int,
    lb: int = 0,
    time_limit: float | None = None,
    max_states: int = 2_000_000,
    run_now: bool = True,
) -> SearchOutcome:
    """:func:`serenity.schedulers.search.best_first` compiled; ``len(items) <= MAX_ITEMS``.

    At most ``max(1, max_states)`` states are stored (the start state always is).

    Raises:
        ValueError: too many items for one state word, numba is not installed, or the byte
            counts do not fit the kernel's integers even divided by their gcd (see
            :func:`scale_to_fit`; the pure-Python search has no such limit).
        KeyboardInterrupt: Ctrl-C during the search.
    """
    t0 = time.perf_counter()
    n = len(items)
    if not AVAILABLE or n > MAX_ITEMS:
        raise ValueError(f"the compiled search needs numba and at most {MAX_ITEMS} items (got {n})")
    if n == 0:
        return SearchOutcome([], items.initial, items.initial, True)
    fit = scale_to_fit(items, lb, ub, MAX_VALUE)
    if fit is None:
        raise ValueError(f"byte counts up to {items.magnitude()} do not fit the compiled search")
    *steps, free_masks, succ_ptr, succ_idx = flatten(fit.items)
    with deferred_sigint():
        result = _kernel(
            n, (*steps, np.array(free_masks, np.int64)), succ_ptr, succ_idx,
            np.array(pred_masks(items), np.int64), np.int64(forceable_mask(items, run_now)),
            np.int64(fit.items.initial), np.int64(fit.lb), np.int64(fit.ub), np.int64(max_states),
            deadline_of(time_limit, t0),
        )  # fmt: skip
    return outcome(*result, k=fit.k, ub=ub, lb=lb, time_limit=time_limit, max_states=max_states, t0=t0)


def outcome(
    status: int, g: int, expanded: int, stored: int, order: np.ndarray, *, k: int,
    ub: int, lb: int, time_limit: float | None, max_states: int, t0: float,
) -> SearchOutcome:  # fmt: skip
    """A kernel's ``(status, peak, expanded, stored, order)`` as a :class:`.SearchOutcome`, its
    peak multiplied back by the scale ``k``; ``lb`` and ``ub`` are the unscaled bounds."""
    peak = int(g) * k
    if status == FOUND:
        out = SearchOutcome([int(v) for v in order], peak, peak, True)
    elif status == DRY:
        out = SearchOutcome(None, ub, ub, True)
    else:
        why = stop_message(time_limit, max_states, timed_out=status != CAP)
        out = SearchOutcome(None, ub, max(lb, min(peak, ub)), False, stopped=why)
    out.states, out.stored = int(expanded), int(stored)
    out.stats = {"expanded": out.states, "stored": out.stored, "ms": round(1000 * (time.perf_counter() - t0))}
    return out
