"""``schedule_traffic``: the order that moves the fewest bytes off chip under an SRAM budget.

When the activations do not fit on chip, the order decides how many bytes spill to external
memory and come back (:mod:`serenity.planning.offchip`; Ahn et al., "Ordering Chaos", MLSys
2020, Fig. 11). An order with a smaller peak usually spills less, but not always: what matters is
how long, and how far above the budget, the live bytes stay. ``schedule_traffic`` costs every
order with :func:`~serenity.planning.offchip.offchip_traffic` (the eviction policy) and keeps the
cheapest of:

1. **The peak-optimal order** (:func:`serenity.schedulers.schedule` with
   :data:`~serenity.schedulers.DEFAULT_METHOD`, or the ``peak_result`` given). If its peak is at
   most ``sram`` it moves nothing, which is optimal (and proven): the search ends there.
2. **Every baseline order** (:data:`~serenity.schedulers.BASELINES`: listed, bfs, dfs, xla-list,
   greedy).
3. **A local search** from the best so far: in passes over the ops, nearest to the traffic
   first (:func:`_by_pressure`), move one op to another position that keeps the order
   topological and keep the first move that strictly lowers the traffic. A narrow pass tries the
   ends of the op's window (right after its last producer, right before its first reader) and
   the places beside each op it shares a tensor with; when a narrow pass improves nothing, a wide
   pass tries every position of the window, and an improvement returns to narrow passes. It
   stops when a wide pass improves nothing, when the traffic meets the lower bound, after
   :data:`MAX_EVALUATIONS` orders, or when its time runs out (:data:`DEFAULT_SEARCH_SECONDS`
   without a ``time_limit``).

Ties keep the earlier candidate (the peak-optimal order first), so the result is reproducible
from its inputs unless the time limit, rather than the evaluation cap, ends the search. The
listed order is a candidate: **the chosen order never moves more bytes than the listed one** at
the same budget. :func:`~serenity.planning.offchip.traffic_lower_bound`, from the peak result's
proven lower bound, says how far from optimal the traffic can be.

The record is a :class:`~serenity.schedulers.result.ScheduleResult` with method ``"traffic"``.
Its ``peak``, ``lower_bound`` and ``proven_optimal`` are about the peak, as in every record (the
chosen order's peak may be above the optimal one, which ``stats["peak_optimal"]`` gives);
the traffic is in ``stats``: ``traffic`` (:meth:`~serenity.planning.offchip.Traffic.as_dict`),
``traffic_lower_bound``, ``traffic_proven`` (the traffic meets the bound), ``candidates``
(``{name: traffic}``, ``None`` for an order an op does not fit), ``chosen`` and ``search``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from serenity.ir import Graph
from serenity.memory import simulate, simulate_dense
from serenity.planning.offchip import EVICT, OpDoesNotFit, Traffic, run_policy, traffic_lower_bound
from serenity.schedulers.clock import Deadline
from serenity.schedulers.result import ScheduleResult, make_result

#: Seconds of local search when no time limit is given.
DEFAULT_SEARCH_SECONDS = 2.0

#: Most orders the local search costs (its deterministic stop).
MAX_EVALUATIONS = 5000

METHOD = "traffic"


def schedule_traffic(
    graph: Graph,
    sram: int,
    *,
    time_limit: float | None = None,
    peak_result: ScheduleResult | None = None,
) -> ScheduleResult:
    """The order with the least off-chip traffic found at ``sram`` bytes of on-chip memory.

    Args:
        graph: The graph; its memory model is honoured.
        sram: On-chip bytes for activations.
        time_limit: Seconds for everything (the peak schedule, when not given, included); the
            local search gets what is left, :data:`DEFAULT_SEARCH_SECONDS` without a limit.
        peak_result: The peak-optimal schedule when the caller has it (one per graph serves
            every budget); its ``lower_bound`` feeds the traffic bound.

    Returns:
        A :class:`ScheduleResult` (see the module docstring for its ``stats``).

    Raises:
        OpDoesNotFit: an op does not fit ``sram`` in any candidate order.

    Example (the graph of :mod:`serenity.planning.offchip`; ``A, B, C`` moves 40 B, ``B, A, C`` 60 B):
        >>> from serenity.ir import Graph, Op, Tensor
        >>> T = lambda n, b: Tensor(n, (b,), "int8", b)
        >>> g = Graph("ex", [Op("A", "Relu", ("x",), ("a",)), Op("B", "Relu", ("x",), ("b",)),
        ...                  Op("C", "Add", ("a", "b"), ("c",))],
        ...           [T("x", 10), T("a", 20), T("b", 30), T("c", 5)], ["x"], ["c"])
        >>> r = schedule_traffic(g, 55)
        >>> r.order, r.stats["traffic"]["traffic"], r.stats["traffic_lower_bound"]
        ((0, 1, 2), 40, 5)
    """
    from serenity.schedulers import BASELINES, DEFAULT_METHOD, schedule

    clock = Deadline(time_limit)
    peak = peak_result if peak_result is not None else schedule(graph, DEFAULT_METHOD, time_limit=time_limit)
    bound = traffic_lower_bound(graph, sram, peak.lower_bound)
    candidates: dict[str, int | None] = {}
    best: tuple[str, tuple[int, ...], Traffic] | None = None
    first_error: OpDoesNotFit | None = None

    def consider(name: str, order: tuple[int, ...]) -> None:
        nonlocal best, first_error
        try:
            cost = run_policy(graph, order, sram)
        except OpDoesNotFit as e:
            candidates[name] = None
            first_error = first_error or e
            return
        candidates[name] = cost.traffic
        if best is None or cost.traffic < best[2].traffic:
            best = (name, order, cost)

    # 1. The peak-optimal order; 2. the baselines (unless the first already meets the bound).
    consider("min-peak", peak.order)
    for name, fn in BASELINES.items():
        if best is not None and best[2].traffic <= bound:
            break
        consider(name, fn(graph, time_limit=clock.left()).order)
    if best is None:
        assert first_error is not None
        raise first_error
    # 3. Local search from the best.
    left = clock.left()
    search_clock = Deadline(DEFAULT_SEARCH_SECONDS if left is None else left)
    order, cost, search = local_search(graph, sram, best[1], best[2], bound, search_clock)
    name = best[0]
    if cost.traffic < best[2].traffic:
        candidates["local-search"] = cost.traffic
        name = "local-search"
    stats: dict[str, Any] = {
        "sram": sram,
        "traffic": cost.as_dict(),
        "traffic_lower_bound": bound,
        "traffic_proven": cost.traffic == bound,
        "candidates": candidates,
        "chosen": name,
        "peak_optimal": peak.peak,
        "peak_lower_bound": peak.lower_bound,
        "peak_method": peak.method,
        "search": search,
    }
    return make_result(
        graph,
        order,
        method=METHOD,
        seconds=clock.elapsed(),
        lower_bound=peak.lower_bound,
        proven=peak.proven_optimal and simulate(graph, order).peak == peak.peak,
        stats=stats,
    )


def local_search(
    graph: Graph,
    sram: int,
    start: Sequence[int],
    start_cost: Traffic,
    bound: int,
    clock: Deadline,
) -> tuple[tuple[int, ...], Traffic, dict[str, Any]]:
    """Step 3 of the module docstring: first-improvement moves of one op from ``start``.

    Returns:
        The best order, its traffic, and ``{"evaluations", "moves", "stopped"}``.
    """
    d = graph.dense
    n = d.n_ops
    order = list(start)
    cost = start_cost
    pos = [0] * n
    for p, v in enumerate(order):
        pos[v] = p
    # Ops sharing a tensor with v: its producers, the other readers of its inputs, its readers.
    neighbours = [
        sorted({*d.preds[v], *d.succs[v], *(c for t in d.op_in[v] for c in d.consumers[t] if c != v)})
        for v in range(n)
    ]
    evaluations = moves = 0

    def stop_reason() -> str | None:
        if cost.traffic <= bound:
            return "traffic meets the lower bound"
        if evaluations >= MAX_EVALUATIONS:
            return f"evaluation cap of {MAX_EVALUATIONS} reached"
        if clock.expired():
            return clock.message()
        return None

    stopped = stop_reason()
    wide = False  # narrow: next to neighbours; wide: anywhere in the window
    while stopped is None:
        improved = False
        for v in _by_pressure(graph, order, sram):
            p = pos[v]
            for q in _targets(d.preds[v], d.succs[v], None if wide else neighbours[v], pos, p, n):
                if (stopped := stop_reason()) is not None:
                    break
                trial = order[:p] + order[p + 1 :]
                trial.insert(q, v)
                evaluations += 1
                try:
                    trial_cost = run_policy(graph, trial, sram)
                except OpDoesNotFit:  # an in-place saving lost by the move
                    continue
                if trial_cost.traffic < cost.traffic:
                    order, cost = trial, trial_cost
                    for i, u in enumerate(order):
                        pos[u] = i
                    moves += 1
                    improved = True
                    break
            if stopped is not None:
                break
        if not improved:
            if wide:
                break
            wide = True
        else:
            wide = False
    stopped = stop_reason() or stopped or "no move improves"
    return tuple(order), cost, {"evaluations": evaluations, "moves": moves, "stopped": stopped}


def _by_pressure(graph: Graph, order: Sequence[int], sram: int) -> list[int]:
    """The ops in the order a pass tries them: nearest to the traffic first. Distance 0 for an op
    that runs while the live bytes exceed ``sram`` or that writes or reads a tensor the policy
    evicts; otherwise the number of steps to the nearest step over ``sram``. Ties by index."""
    d = graph.dense
    n = len(order)
    during = simulate_dense(d, order).during
    trace: list[tuple[int, str, int]] = []
    run_policy(graph, order, sram, trace)
    touched = {t for _, kind, t in trace if kind == EVICT}
    far = n + 1
    dist = [0 if during[k] > sram else far for k in range(n)]
    for k in range(1, n):  # distance to the nearest step over the budget, both ways
        dist[k] = min(dist[k], dist[k - 1] + 1)
    for k in range(n - 2, -1, -1):
        dist[k] = min(dist[k], dist[k + 1] + 1)
    for k, v in enumerate(order):
        if any(t in touched for t in (*d.op_in[v], *d.op_out[v])):
            dist[k] = 0
    return [order[k] for k in sorted(range(n), key=lambda k: (dist[k], order[k]))]


def _targets(
    preds: Sequence[int],
    succs: Sequence[int],
    neighbours: Sequence[int] | None,
    pos: Sequence[int],
    p: int,
    n: int,
) -> list[int]:
    """Positions (in the order after the move) the op at ``p`` may take, ascending, the current
    one left out: with ``neighbours``, the ends of its window and the places right before and
    after each neighbour; without, every position of the window."""
    lo = max((pos[u] for u in preds), default=-1) + 1
    hi = min((pos[w] for w in succs), default=n) - 1
    if neighbours is None:
        return [q for q in range(lo, hi + 1) if q != p]
    found = {lo, hi}
    for u in neighbours:
        pu = pos[u]
        # Removing the op shifts everything after it left by one.
        found.update((pu, pu + 1) if pu < p else (pu - 1, pu))
    return sorted(q for q in found if lo <= q <= hi and q != p)


__all__ = ["DEFAULT_SEARCH_SECONDS", "MAX_EVALUATIONS", "local_search", "schedule_traffic"]
