"""The scheduler family: one signature, one result record, one registry.

``SCHEDULERS`` maps a method name to a function ``f(graph, *, time_limit=None) ->
ScheduleResult``. :func:`schedule` runs one by name; the name ``"best"`` runs a portfolio and
keeps the lowest peak.
"""

from __future__ import annotations

import inspect
import logging
import time

from serenity.errors import SerenityError
from serenity.ir import Graph
from serenity.schedulers.auto import schedule_auto
from serenity.schedulers.baselines import (
    schedule_bfs,
    schedule_dfs,
    schedule_greedy,
    schedule_listed,
    schedule_xla_list,
)
from serenity.schedulers.dp import schedule_dp
from serenity.schedulers.ilp import schedule_ilp
from serenity.schedulers.result import Scheduler, ScheduleResult, make_result, op_lower_bound

log = logging.getLogger(__name__)

BASELINES: dict[str, Scheduler] = {
    "listed": schedule_listed,
    "bfs": schedule_bfs,
    "dfs": schedule_dfs,
    "xla-list": schedule_xla_list,
    "greedy": schedule_greedy,
}

SCHEDULERS: dict[str, Scheduler] = {
    **BASELINES,
    "optimal": schedule_dp,
    "ilp": schedule_ilp,
    "auto": schedule_auto,
}

#: Methods the portfolio ``best`` leaves out: ``ilp`` proves the same optimum as ``optimal``
#: (both are exact), usually slower, and needs the optional OR-Tools; ``auto`` is itself the
#: race of the two. Running them would only multiply the time ``best`` takes for the same answer.
NOT_IN_PORTFOLIO = frozenset({"ilp", "auto"})

#: The method ``serenity schedule`` uses when none is named: the DP, raced by the ILP on pieces
#: it does not prove within a grace period (:mod:`.auto`).
DEFAULT_METHOD = "auto"


def _run(fn: Scheduler, graph: Graph, time_limit: float | None, max_states: int | None) -> ScheduleResult:
    """Call ``fn``, passing ``max_states`` only to schedulers that take a state cap."""
    if max_states is not None and "max_states" in inspect.signature(fn).parameters:
        return fn(graph, time_limit=time_limit, max_states=max_states)  # type: ignore[call-arg]
    return fn(graph, time_limit=time_limit)


def schedule_best(
    graph: Graph, *, time_limit: float | None = None, max_states: int | None = None
) -> ScheduleResult:
    """Portfolio: run every registered scheduler (but :data:`NOT_IN_PORTFOLIO`) and keep the
    lowest peak.

    Ties go to the earlier method in registry order. The returned ``stats`` record each
    method's peak so the choice can be explained, and ``stopped`` names every method a time
    limit or state cap cut short.
    """
    t0 = time.perf_counter()
    results = []
    for name, fn in SCHEDULERS.items():
        if name in NOT_IN_PORTFOLIO:
            continue
        left = None if time_limit is None else max(0.0, time_limit - (time.perf_counter() - t0))
        r = _run(fn, graph, left, max_states)
        log.info("%-10s peak %d B in %.3f s", name, r.peak, r.seconds)
        results.append(r)
    best = min(results, key=lambda r: r.peak)
    bound = max(r.lower_bound for r in results)
    stats = {"peaks": {r.method: r.peak for r in results}, **best.stats}
    stopped = [f"{r.method}: {r.stats['stopped']}" for r in results if r.stats.get("stopped")]
    if stopped:
        stats["stopped"] = "; ".join(stopped)
    return make_result(
        graph,
        best.order,
        method=f"best:{best.method}",
        seconds=time.perf_counter() - t0,
        lower_bound=bound,
        proven=any(r.proven_optimal for r in results) or best.peak == bound,
        stats=stats,
    )


def schedule(
    graph: Graph,
    method: str = DEFAULT_METHOD,
    *,
    time_limit: float | None = None,
    max_states: int | None = None,
    memory_model: str | None = None,
) -> ScheduleResult:
    """Schedule ``graph`` with the named method (``"best"`` for the portfolio).

    Args:
        graph: The graph.
        method: A key of :data:`SCHEDULERS`, or ``"best"``.
        time_limit: Seconds the method may take; exact methods return their best order so far.
        max_states: Cap on stored search states for the exact methods (ignored by heuristics).
        memory_model: ``"tflm"`` or ``"inplace"`` (:mod:`serenity.memory`); default: the graph's
            own (``graph.memory_model``, ``"tflm"`` unless built otherwise). Op indices are the
            same under both, so the order applies to ``graph`` either way.

    Raises:
        SerenityError: the method name is unknown.
    """
    if memory_model is not None:
        from serenity.ir import with_memory_model

        graph = with_memory_model(graph, memory_model)
    if method == "best":
        return schedule_best(graph, time_limit=time_limit, max_states=max_states)
    fn = SCHEDULERS.get(method)
    if fn is None:
        known = ", ".join(["best", *SCHEDULERS])
        raise SerenityError(f"unknown scheduling method '{method}' (known: {known})")
    return _run(fn, graph, time_limit, max_states)


__all__ = [
    "BASELINES",
    "DEFAULT_METHOD",
    "NOT_IN_PORTFOLIO",
    "SCHEDULERS",
    "ScheduleResult",
    "Scheduler",
    "make_result",
    "op_lower_bound",
    "schedule",
    "schedule_best",
]
