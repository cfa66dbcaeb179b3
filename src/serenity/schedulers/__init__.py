"""The scheduler family: one signature, one result record, one registry.

``SCHEDULERS`` maps a method name to a function ``f(graph, *, time_limit=None) ->
ScheduleResult``. :func:`schedule` runs one by name; the name ``"best"`` runs a portfolio and
keeps the lowest peak.
"""

from __future__ import annotations

import logging
import time

from serenity.errors import SerenityError
from serenity.ir import Graph
from serenity.schedulers.baselines import (
    schedule_bfs,
    schedule_dfs,
    schedule_greedy,
    schedule_listed,
    schedule_xla_list,
)
from serenity.schedulers.dp import schedule_dp
from serenity.schedulers.result import ScheduleResult, Scheduler, make_result, op_lower_bound

log = logging.getLogger(__name__)

BASELINES: dict[str, Scheduler] = {
    "listed": schedule_listed,
    "bfs": schedule_bfs,
    "dfs": schedule_dfs,
    "xla-list": schedule_xla_list,
    "greedy": schedule_greedy,
}

SCHEDULERS: dict[str, Scheduler] = {**BASELINES, "optimal": schedule_dp}

#: The method ``serenity schedule`` uses when none is named.
DEFAULT_METHOD = "optimal"


def schedule_best(graph: Graph, *, time_limit: float | None = None) -> ScheduleResult:
    """Portfolio: run every registered scheduler and keep the lowest peak.

    Ties go to the earlier method in registry order. The returned ``stats`` record each
    method's peak so the choice can be explained.
    """
    t0 = time.perf_counter()
    results = []
    for name, fn in SCHEDULERS.items():
        left = None if time_limit is None else max(0.0, time_limit - (time.perf_counter() - t0))
        r = fn(graph, time_limit=left)
        log.info("%-10s peak %d B in %.3f s", name, r.peak, r.seconds)
        results.append(r)
    best = min(results, key=lambda r: r.peak)
    bound = max(r.lower_bound for r in results)
    return make_result(
        graph,
        best.order,
        method=f"best:{best.method}",
        seconds=time.perf_counter() - t0,
        lower_bound=bound,
        proven=any(r.proven_optimal for r in results) or best.peak == bound,
        stats={"peaks": {r.method: r.peak for r in results}, **best.stats},
    )


def schedule(graph: Graph, method: str = DEFAULT_METHOD, *, time_limit: float | None = None) -> ScheduleResult:
    """Schedule ``graph`` with the named method (``"best"`` for the portfolio).

    Raises:
        SerenityError: the method name is unknown.
    """
    if method == "best":
        return schedule_best(graph, time_limit=time_limit)
    fn = SCHEDULERS.get(method)
    if fn is None:
        known = ", ".join(["best", *SCHEDULERS])
        raise SerenityError(f"unknown scheduling method '{method}' (known: {known})")
    return fn(graph, time_limit=time_limit)


__all__ = [
    "BASELINES",
    "DEFAULT_METHOD",
    "SCHEDULERS",
    "ScheduleResult",
    "Scheduler",
    "make_result",
    "op_lower_bound",
    "schedule",
    "schedule_best",
]
