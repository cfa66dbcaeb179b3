"""Best-first search for the order of items with the smallest peak (the exact core).

This is the dynamic program of Ahn et al., "Ordering Chaos: Memory-Aware Scheduling of
Irregularly Wired Neural Networks for Edge Devices" (MLSys 2020), run best-first. A state is the
set ``S`` of items already run (a bitmask); its live bytes ``L(S)`` and its ready set (the paper's
zero-indegree "signature") depend on ``S`` alone, so for each state only the smallest peak ``g(S)``
that reaches it matters:

    g(S ∪ {v}) = min over ready v of max(g(S), cost(S, v)),
    cost(S, v) = max over the steps of v of (live bytes before the step + its out)
                                                   (see *Step encoding* in :mod:`.reduce`).

States leave a heap in order of ``g`` (deeper states first among equals, then the smaller set),
like Dijkstra's algorithm with the bottleneck ``max`` in place of ``+``. ``g`` never falls along a
path, so the first complete state to leave the heap has the optimal peak, a state's ``g`` is final
when it leaves the heap, and at any moment the smallest ``g`` in the heap is a lower bound on the
optimum. Peaks are clamped from below at a known lower bound ``lb`` (no order beats it, so nothing
below it needs telling apart): below ``lb`` the search is a depth-first dive. States at or above
the incumbent peak ``ub`` are never stored: this is the paper's hard budget.

**Run-now rule** (an optimality-preserving reduction applied inside the search). If a ready item
``v`` leaves no more bytes live than before (``L(S ∪ {v}) <= L(S)``) and costs no more than the
peak so far (``cost(S, v) <= g(S)``, ``g`` clamped, so ``<= max(g, lb)``), only ``S ∪ {v}`` is
generated. Proof: take an order from ``S`` with peak ``P``; move ``v`` to the front. Every item
that moves behind ``v`` runs with ``L(S ∪ {v}) - L(S) <= 0`` more bytes live (none of them reads
``v``'s outputs, and an input ``v`` no longer frees last is freed no later by its other reader),
so its steps cost no more; ``v``'s own steps cost at most ``max(g(S), lb)``, and ``lb <= OPT``.
So if some optimal order passes through ``S`` with ``g(S) <= OPT``, one passes through
``S ∪ {v}`` too, and the first complete state to leave the heap is still optimal.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field

from serenity.schedulers.clock import stop_requested
from serenity.schedulers.reduce import Items, Step


@dataclass(slots=True)
class SearchOutcome:
    """What :func:`best_first` established.

    Attributes:
        order: Items in the best order found, or ``None`` if none beats ``ub``.
        peak: Peak of ``order`` (``ub`` when ``order`` is ``None``).
        lower_bound: No order of the items peaks below this.
        proven: The search finished: ``peak`` is the optimum (or ``ub`` is, if no order was found).
        states: States expanded.
        stored: States stored.
        stopped: Why the search stopped early (``""`` if it finished).
    """

    order: list[int] | None
    peak: int
    lower_bound: int
    proven: bool
    states: int = 0
    stored: int = 0
    stopped: str = ""
    stats: dict[str, int] = field(default_factory=dict)


def item_cost(items: Items, order: list[int]) -> int:
    """Peak of an item order under the item memory model (the reference for tests)."""
    done, live, peak = 0, items.initial, items.initial if not order else 0
    for v in order:
        done |= 1 << v
        peak, live = apply_steps(items.steps[v], peak, live, done)
    return peak


def apply_steps(steps: tuple[Step, ...], g: int, L: int, done: int) -> tuple[int, int]:
    """Run one item's steps from live bytes ``L`` and peak ``g``; ``done`` is the set of items run,
    the item included. Returns ``(peak, live)`` after the item (see *Step encoding* in :mod:`.reduce`):
    each step peaks at the live bytes plus its ``out``, then adds ``delta`` and frees every input
    whose readers are all in ``done``."""
    for out, delta, frees in steps:
        if L + out > g:
            g = L + out
        L += delta
        for size, cm in frees:
            if cm & done == cm:
                L -= size
    return g, L


def pred_masks(items: Items) -> list[int]:
    """Per item, the bitmask of its predecessors."""
    pmask = [0] * len(items)
    for v, ps in enumerate(items.preds):
        for p in ps:
            pmask[v] |= 1 << p
    return pmask


def forceable_mask(items: Items, run_now: bool = True) -> int:
    """Items the run-now rule may force: only those that can ever free at least what they keep."""
    if not run_now:
        return 0
    return sum(1 << v for v in range(len(items)) if items.growth(v) <= items.freeable(v))


def ready_after(ready: int, v: int, nxt: int, succs: tuple[int, ...], pmask: list[int]) -> int:
    """The ready set after running ``v`` (``nxt`` holds it): ``v`` leaves, and every successor
    whose predecessors are all in ``nxt`` joins."""
    ready &= ~(1 << v)
    for w in succs:
        if pmask[w] & nxt == pmask[w]:
            ready |= 1 << w
    return ready


def best_first(
    items: Items,
    *,
    ub: int,
    lb: int = 0,
    time_limit: float | None = None,
    max_states: int = 2_000_000,
    run_now: bool = True,
) -> SearchOutcome:
    """Find an item order with peak below ``ub`` and prove it optimal, best-first on the peak.

    Peaks are clamped from below at ``lb``: every order peaks at ``>= OPT >= lb``, so only
    ``max(g, lb)`` matters, and the clamp turns the search below ``lb`` into a depth-first dive.

    Args:
        items: The reduced graph.
        ub: Peak of an order already known; only strictly better orders are searched for.
        lb: A lower bound on the optimum. A larger ``lb`` is allowed (window searches pass the
            whole graph's bound); the answer is then exact only up to ``max(OPT, lb)``.
        time_limit: Seconds before the search gives up (then ``proven`` is false); the clock is
            read every 256 expansions.
        max_states: Cap on stored states, exact: a state that would be stored beyond it stops
            the search (``stopped`` says so). At most ``max(1, max_states)`` states are stored
            (the start state always is). Integers are Python ints: no size overflows.
        run_now: Apply the run-now rule (off only to test that it changes nothing).

    Returns:
        A :class:`SearchOutcome`.
    """
    t0 = time.perf_counter()
    n = len(items)
    full = (1 << n) - 1
    steps, succs = items.steps, items.succs
    pmask = pred_masks(items)
    forceable = forceable_mask(items, run_now)
    ready0 = sum(1 << v for v in range(n) if not pmask[v])
    g0 = max(items.initial, lb)
    if n == 0:
        return SearchOutcome([], items.initial, items.initial, True)
    assert n < 1 << 20, "items are packed in 20 bits"
    # seen[state] = (g << 20) | v: the best clamped peak reaching state and the last item run.
    seen: dict[int, int] = {0: g0 << 20}
    # Open states by peak: a heap of the distinct peaks, and a stack per peak (last in, first
    # out, so among equal peaks the newest, deepest states go first: a depth-first dive).
    levels = [g0]
    buckets: dict[int, list[tuple[int, int, int]]] = {g0: [(0, items.initial, ready0)]}
    expanded = 0
    stopped = ""
    g = g0
    bucket = buckets[g0]
    while True:
        if not bucket:
            del buckets[g]
            heapq.heappop(levels)
            if not levels:
                break
            g = levels[0]
            bucket = buckets[g]
            continue
        state, L, ready = bucket.pop()
        R = ready
        if seen[state] >> 20 != g:
            continue  # a better way to state was found after this entry was pushed
        if state == full:
            return _done(SearchOutcome(_unwind(seen, state), g, g, True), expanded, len(seen), t0)
        expanded += 1
        if expanded & 255 == 0 and (
            (time_limit is not None and time.perf_counter() - t0 > time_limit) or stop_requested()
        ):
            stopped = stop_message(time_limit, max_states, timed_out=True)
            break
        # 1. Run-now rule: a forceable ready item that frees what it keeps and costs no more
        #    than the peak so far is the only successor.
        r = R & forceable
        while r:
            low = r & -r
            v = low.bit_length() - 1
            r ^= low
            c, L2 = apply_steps(steps[v], g, L, state | low)
            if L2 <= L and c == g:
                R = low
                break
        # 2. Expand every ready item (or just the forced one).
        r = R
        while r:
            low = r & -r
            v = low.bit_length() - 1
            r ^= low
            nxt = state | low
            g2, L2 = apply_steps(steps[v], g, L, nxt)
            if g2 >= ub:
                continue
            old = seen.get(nxt)
            if old is not None and old >> 20 <= g2:
                continue
            if old is None and len(seen) >= max_states:  # the cap is exact: never store one more
                stopped = stop_message(time_limit, max_states, timed_out=False)
                break
            seen[nxt] = (g2 << 20) | v
            R2 = ready_after(ready, v, nxt, succs[v], pmask)
            if g2 == g:
                bucket.append((nxt, L2, R2))
            else:
                b2 = buckets.get(g2)
                if b2 is None:
                    buckets[g2] = [(nxt, L2, R2)]
                    heapq.heappush(levels, g2)
                else:
                    b2.append((nxt, L2, R2))
        if stopped:
            break
    if stopped:
        bound = max(lb, min(g, ub))
        return _done(SearchOutcome(None, ub, bound, False, stopped=stopped), expanded, len(seen), t0)
    # The heap ran dry: no order peaks below ``ub``.
    return _done(SearchOutcome(None, ub, ub, True), expanded, len(seen), t0)


def stop_message(time_limit: float | None, max_states: int, *, timed_out: bool) -> str:
    """Why a search stopped early: its time limit, else its state cap (``SearchOutcome.stopped``)."""
    if timed_out:
        return f"time limit of {time_limit:g} s reached"
    return (
        f"state cap of {max_states} stored states reached; raise max_states "
        "or give a time limit to accept the best order found"
    )


def _unwind(seen: dict[int, int], state: int) -> list[int]:
    order = []
    while state:
        v = seen[state] & 0xFFFFF
        order.append(v)
        state &= ~(1 << v)
    order.reverse()
    return order


def _done(out: SearchOutcome, expanded: int, stored: int, t0: float) -> SearchOutcome:
    out.states = expanded
    out.stored = stored
    out.stats = {"expanded": expanded, "stored": stored, "ms": round(1000 * (time.perf_counter() - t0))}
    return out
