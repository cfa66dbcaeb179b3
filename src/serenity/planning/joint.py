"""Order and placement chosen together: among orders with the optimal peak, one whose arena plan
reaches that peak.

Optimal orders are rarely unique, and their arenas differ: two tensors that are never live at
the same step may still block each other's place in the arena, so one optimal order can be laid
out with no fragmentation while another cannot. The proven optimal peak ``P`` (more exactly, the
scheduler's lower bound) is a lower bound on the arena of *every* order, so an order whose exact
plan reaches it is proven best for the arena too.

1. Plan the scheduler's optimal order; stop if the arena meets the bound.
2. Plan the other candidate orders that reach the same peak: the baselines', then neighbours of
   the best order so far, made by moving one op as early or as late as its dependencies allow
   when the peak stays ``<= P`` (seeded, deterministic), each planned with a share of the time.
3. Keep the order with the smallest arena (ties: the earlier candidate); report the bound and the
   gap when no candidate reached it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from serenity.ir import Graph, Order
from serenity.memory import simulate
from serenity.planning.buffers import ArenaPlan, Buffer
from serenity.schedulers.result import ScheduleResult

#: Candidate orders planned at most (the search also stops at its time limit).
MAX_CANDIDATES = 200
#: Seconds one candidate's exact plan may take before the next is tried.
PER_CANDIDATE = 1.0


@dataclass(frozen=True, slots=True)
class JointResult:
    """An order and its arena plan.

    Attributes:
        order: The order chosen.
        plan: Its arena plan (``plan.lower_bound`` is the bound for every order).
        peak: The order's peak (``<=`` the scheduler's peak: it is one of the optimal orders).
        candidates: Orders planned.
        stats: What was tried, JSON-friendly.
    """

    order: Order
    plan: ArenaPlan
    peak: int
    candidates: int
    stats: dict[str, Any] = field(default_factory=dict)


def plan_with_order(
    graph: Graph,
    schedule: ScheduleResult,
    buffers_for: Callable[[Order], Sequence[Buffer]],
    planner: Callable[..., ArenaPlan],
    *,
    time_limit: float | None = None,
    baselines: Sequence[ScheduleResult] = (),
    seed: int = 0,
) -> JointResult:
    """Choose, among orders with ``schedule``'s peak, one whose plan has the smallest arena.

    Args:
        graph: The graph the schedule was made for (its sizes are the ones planned).
        schedule: The scheduler's result: its order is the first candidate, its lower bound the
            arena bound of every order (when it is proven, the bound is the optimal peak).
        buffers_for: The buffers to plan for an order (e.g. TFLite Micro's, scratch included).
        planner: An arena planner, ``planner(buffers, time_limit=...) -> ArenaPlan``.
        time_limit: Seconds for the whole choice.
        baselines: Other scheduler results to try when their peak equals the schedule's.
        seed: Seed of the neighbour moves.

    Returns:
        A :class:`JointResult` whose plan's ``lower_bound`` is the best bound known for any order
        and ``proven`` says the arena meets it.
    """
    t0 = time.perf_counter()
    deadline = None if time_limit is None else t0 + time_limit
    target = schedule.peak
    bound = schedule.lower_bound

    def left() -> float | None:
        return None if deadline is None else max(0.0, deadline - time.perf_counter())

    best: tuple[Order, ArenaPlan, int] | None = None
    seen: set[Order] = set()
    tried = 0
    chosen = [schedule.order]  # the best order so far, which the neighbour moves start from
    for order in _candidates(graph, schedule, baselines, target, seed, lambda: chosen[0]):
        if order in seen:
            continue
        seen.add(order)
        budget = left()
        per = PER_CANDIDATE if budget is None else min(PER_CANDIDATE, budget)
        plan = planner(list(buffers_for(order)), time_limit=per)
        tried += 1
        if best is None or plan.arena < best[1].arena:
            best = (order, plan, simulate(graph, order).peak)
            chosen[0] = order
        if best[1].arena <= bound or tried >= MAX_CANDIDATES:
            break
        if deadline is not None and time.perf_counter() >= deadline:
            break
    assert best is not None  # the schedule's own order is always planned
    order, plan, peak = best
    # Every order's arena is at least its peak, so the schedule's bound holds for all of them;
    # one order's own plan bound (``plan.lower_bound``) says nothing about the others.
    final = ArenaPlan(
        offsets=plan.offsets,
        arena=plan.arena,
        lower_bound=min(bound, plan.arena),
        proven=plan.arena <= bound,
        planner=plan.planner,
        seconds=time.perf_counter() - t0,
        stats={**dict(plan.stats), "candidates": tried, "order_plan_proven": plan.proven},
    )
    return JointResult(order, final, peak, tried, {"candidates": tried, "bound": bound})


def _candidates(
    graph: Graph,
    schedule: ScheduleResult,
    baselines: Sequence[ScheduleResult],
    target: int,
    seed: int,
    current: Callable[[], Order],
) -> Iterator[Order]:
    """Orders peaking at ``<= target``: the schedule's, the baselines' that tie, then neighbours
    of the best order so far (one op moved as early or late as it can go, peak kept)."""
    yield schedule.order
    for r in baselines:
        if r.peak <= target:
            yield r.order
    rng = random.Random(seed)
    preds, succs = graph.dense.preds, graph.dense.succs
    n = len(graph.ops)
    if n < 3:
        return
    for _ in range(MAX_CANDIDATES * 4):
        base = list(current())
        pos = {v: i for i, v in enumerate(base)}
        v = base[rng.randrange(n)]
        i = pos[v]
        lo = max((pos[p] for p in preds[v]), default=-1) + 1
        hi = min((pos[s] for s in succs[v]), default=n) - 1
        if lo == hi:
            continue
        j = rng.choice([k for k in (lo, hi, rng.randint(lo, hi)) if k != i] or [i])
        if j == i:
            continue
        moved = base[:i] + base[i + 1 :]
        moved.insert(j, v)
        if simulate(graph, moved, check=False).peak <= target:
            yield tuple(moved)
