"""``schedule_budget``: the paper's dynamic program with adaptive soft budgeting, for comparison.

Ahn et al., "Ordering Chaos" (MLSys 2020), section 3: the DP walks the states level by level (a
level is the number of ops scheduled), keeping for each state the smallest peak and the op that
reached it. The *hard budget* is the best heuristic peak; a *soft budget* ``tau`` below it prunes
every state whose peak exceeds ``tau``. If no schedule fits, ``tau`` was too low; if a level
holds too many states, the search "explodes" and ``tau`` is lowered. Made exact here as a
bisection over ``tau``:

1. ``lo`` = a proven lower bound, ``hi`` = the incumbent peak; start at ``tau = hi - 1``.
2. Run the level DP under ``tau``. It finds an order ⇒ that order is optimal (every state with
   peak ``<= tau`` was kept, so the DP is exact up to ``tau``). No order ⇒ ``OPT > tau``: set
   ``lo = tau + 1``. Too many states ⇒ remember ``tau`` as a ceiling and lower it.
3. Next ``tau`` = midpoint of ``lo`` and the lowest exploded ceiling (or ``hi - 1``); stop when
   ``lo`` reaches ``hi`` (the incumbent is proven) or passes the ceiling (not proven).

It shares the reductions and bounds of :func:`serenity.schedulers.dp.schedule_dp` but not its
best-first search or run-now rule, so the two can be compared state for state. Under the
``inplace`` memory model the items carry the conditional savings in their steps (*Step encoding*
in :mod:`.reduce`), which :func:`.search.apply_steps` applies here too; window bounds are off,
as in the DP.
"""

from __future__ import annotations

import time

from serenity.ir import Graph
from serenity.memory import simulate
from serenity.schedulers.bounds import static_lower_bound
from serenity.schedulers.dp import WINDOW_OPS, incumbent, scope_groups, window_bound
from serenity.schedulers.reduce import Items, build_items
from serenity.schedulers.result import ScheduleResult, make_result
from serenity.schedulers.search import apply_steps, pred_masks, ready_after

#: States kept across all levels of one DP run before it counts as exploded.
MAX_STATES = 200_000


def level_dp(
    items: Items, tau: int, *, max_states: int = MAX_STATES, deadline: float | None = None
) -> tuple[list[int] | None, int, str]:
    """The paper's DP, level by level, keeping states whose peak is at most ``tau``.

    Returns:
        ``(order, states, why)``: the optimal item order if one fits ``tau`` (else ``None``), the
        states kept, and ``"exploded"``/``"time"`` when the run was cut (then ``order`` is None
        and nothing is proven), ``""`` otherwise.
    """
    n = len(items)
    if n == 0:
        return [], 0, ""
    steps, succs = items.steps, items.succs
    pmask = pred_masks(items)
    ready0 = sum(1 << v for v in range(n) if not pmask[v])
    last: dict[int, int] = {}  # state -> last item, over all levels (for the order)
    level: dict[int, tuple[int, int, int]] = {0: (items.initial, items.initial, ready0)}
    total = 1
    for _ in range(n):
        nxt_level: dict[int, tuple[int, int, int]] = {}
        for state, (g, L, ready) in level.items():
            r = ready
            while r:
                low = r & -r
                v = low.bit_length() - 1
                r ^= low
                nxt = state | low
                g2, L2 = apply_steps(steps[v], g, L, nxt)
                if g2 > tau:
                    continue
                old = nxt_level.get(nxt)
                if old is not None and old[0] <= g2:
                    continue
                nxt_level[nxt] = (g2, L2, ready_after(ready, v, nxt, succs[v], pmask))
                last[nxt] = v
        if not nxt_level:
            return None, total, ""
        total += len(nxt_level)
        if total > max_states:
            return None, total, "exploded"
        if deadline is not None and time.perf_counter() > deadline:
            return None, total, "time"
        level = nxt_level
    (state,) = level
    order = []
    while state:
        v = last[state]
        order.append(v)
        state &= ~(1 << v)
    order.reverse()
    return order, total, ""


def schedule_budget(
    graph: Graph, *, time_limit: float | None = None, max_states: int = MAX_STATES
) -> ScheduleResult:
    """The memory-optimal order by the paper's budgeted level DP (see the module docstring).

    Example:
        >>> from serenity.ir import Graph, Op, Tensor
        >>> T = lambda n, b: Tensor(n, (b,), "int8", b)
        >>> g = Graph("ex", [Op("A", "Relu", ("x",), ("a",)), Op("B", "Relu", ("x",), ("b",)),
        ...                  Op("C", "Add", ("a", "b"), ("c",))],
        ...           [T("x", 10), T("a", 20), T("b", 30), T("c", 5)], ["x"], ["c"])
        >>> schedule_budget(g).peak
        60
    """
    t0 = time.perf_counter()
    deadline = None if time_limit is None else t0 + time_limit
    d = graph.dense
    items = build_items(d)
    lo = static_lower_bound(d)
    best = incumbent(graph)
    hi, order = best.peak, list(best.order)
    # Window bounds as in the DP, and not under "inplace" either (see ``schedule_dp``, step 4).
    if lo < hi and d.n_ops >= 2 * WINDOW_OPS and not d.inplace:

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.perf_counter())

        lo, _ = window_bound(d, lo, hi, left, scope_groups(graph))
    # 1-3. Bisection on the soft budget.
    ceiling = hi - 1
    tau = ceiling
    rounds: list[str] = []
    states = 0
    proven = lo >= hi
    while not proven and lo <= ceiling:
        found, kept, why = level_dp(items, tau, max_states=max_states, deadline=deadline)
        states += kept
        rounds.append(f"{tau}:{why or ('fit' if found is not None else 'none')}")
        if why == "time":
            break
        if found is not None:  # the DP kept every state under tau: this order is optimal
            order = [v for i in found for v in items.ops[i]]
            proven = True
            break
        if why == "exploded":
            ceiling = tau - 1
        else:
            lo = tau + 1
            proven = lo >= hi
        tau = (lo + ceiling + 1) // 2 if lo <= ceiling else ceiling
    peak = simulate(graph, order).peak
    return make_result(
        graph,
        order,
        method="optimal-budget",
        seconds=time.perf_counter() - t0,
        lower_bound=peak if proven else min(lo, peak),
        proven=proven,
        stats={"states": states, "budgets": rounds, "items": len(items)},
    )
