"""``offchip_exact``: the least off-chip traffic of one fixed order, its eviction solved by CP-SAT.

:func:`serenity.planning.offchip.offchip_traffic` evicts by Belady's rule, which is optimal for
pages of one size that cost nothing to drop, but not when sizes differ and the first eviction of
a tensor costs a write. For a fixed order this module finds the eviction that moves the fewest
bytes, under the same rules (tensors, lifetimes, the ``inplace`` saving and the start state of
:mod:`.offchip`), as a 0-1 program:

1. **Residency.** Steps are ``-1`` (before the first op) and ``0 .. n-1``. A tensor ``t`` of
   non-zero size lives from its birth ``b`` (its producer's step; ``-1`` for a graph input,
   which starts on chip) to its end ``e`` (its last reader's step; ``n - 1`` for a graph
   output; ``b`` for an output nobody reads). Boolean ``r[t, k]``, ``b <= k <= e``, says ``t``
   is on chip during step ``k``; it is fixed to 1 where step ``k``'s op reads or writes ``t``.
2. **Writes.** Boolean ``w[t] >= 1 - r[t, k]`` for every ``k``: a tensor off chip at any step
   of its life was written once (tensors are immutable, one copy serves every reload); a graph
   output evicted at any point is written, and an input evicted before the first op too.
3. **Loads.** Boolean ``l[t, k] >= r[t, k] - r[t, k-1]`` for ``b < k <= e``: coming back on chip
   is a read.
4. **Capacity.** At every step ``k``: ``sum size(t) * r[t, k] <= sram + s_k``, ``s_k`` the bytes
   the op of step ``k`` saves by overwriting a dying input (:func:`.offchip.step_savings`; fixed,
   since the order is).
5. **Objective.** Minimise ``sum size(t) * (w[t] + sum_k l[t, k])``, bytes written plus read.

Every eviction of the policy is a solution (its run is the hint, its traffic the upper bound),
so the result is never worse than the policy's. Sizes are divided by their gcd (exact); the
program is refused (:class:`~serenity.errors.UnsupportedError`) when the gcd-divided objective
could leave CP-SAT's ``int64`` headroom (:data:`MAX_TOTAL`) or when it would have more than
:data:`MAX_RESIDENCY` residency variables (``sum over tensors of their lifetime in steps``: a
few hundred ops), beyond which the policy (:func:`~.offchip.offchip_traffic`) is the tool.
CP-SAT runs one worker with a fixed seed, so a run is reproducible; OR-Tools is the optional
``[ilp]`` extra, imported on the first call.

Example (the graph of :mod:`.offchip`'s docstring; the policy is optimal there):

>>> from serenity.ir import Graph, Op, Tensor
>>> T = lambda n, b: Tensor(n, (b,), "int8", b)
>>> g = Graph("ex", [Op("A", "Relu", ("x",), ("a",)), Op("B", "Relu", ("x",), ("b",)),
...                  Op("C", "Add", ("a", "b"), ("c",))],
...           [T("x", 10), T("a", 20), T("b", 30), T("c", 5)], ["x"], ["c"])
>>> r = offchip_exact(g, [0, 1, 2], 55)
>>> r.traffic.traffic, r.proven, r.lower_bound
(40, True, 40)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from serenity.errors import UnsupportedError
from serenity.ir import Graph
from serenity.memory import simulate_dense
from serenity.planning.offchip import EVICT, Traffic, run_policy, step_savings, traffic_lower_bound

#: Most residency variables (tensor × step of its life) a program is built with.
MAX_RESIDENCY = 50_000

#: Largest gcd-divided objective bound (every tensor written once and loaded at every step of its
#: life) the program is built with: CP-SAT sums in ``int64``; this leaves 2^13 of headroom.
MAX_TOTAL = 1 << 50

#: CP-SAT's seed (with one worker, a run is reproducible).
SEED = 0


@dataclass(frozen=True, slots=True)
class ExactTraffic:
    """What :func:`offchip_exact` found.

    Attributes:
        traffic: The best eviction's traffic (never above the policy's).
        proven: ``traffic`` is the least of every eviction of this order.
        lower_bound: No eviction of this order moves fewer bytes.
        seconds: Wall-clock time.
        status: CP-SAT's status (``OPTIMAL``, ``FEASIBLE``, ``UNKNOWN``...), or ``BOUND`` when
            the policy met :func:`~.offchip.traffic_lower_bound` and no program was needed.
    """

    traffic: Traffic
    proven: bool
    lower_bound: int
    seconds: float
    status: str


def offchip_exact(
    graph: Graph, order: Sequence[int], sram: int, *, time_limit: float | None = None
) -> ExactTraffic:
    """The least off-chip traffic of ``order`` at ``sram`` over every eviction (module docstring).

    Args:
        graph: The graph; its memory model is honoured.
        order: A topological permutation of op indices.
        sram: On-chip bytes.
        time_limit: Seconds for CP-SAT; cut short, the best eviction found (at worst the
            policy's) is returned with ``proven`` false.

    Returns:
        An :class:`ExactTraffic`.

    Raises:
        OrderError: ``order`` is not topological.
        OpDoesNotFit: some op alone exceeds ``sram``.
        UnsupportedError: OR-Tools is not installed, or the program exceeds :data:`MAX_RESIDENCY`
            variables or :data:`MAX_TOTAL`.
    """
    try:
        from ortools.sat.python import cp_model
    except ImportError as missing:
        raise UnsupportedError("offchip_exact needs OR-Tools: pip install 'serenity-sched[ilp]'") from missing
    t0 = time.perf_counter()
    order = graph.check_order(order)
    d = graph.dense
    n = len(order)
    trace: list[tuple[int, str, int]] = []
    policy = run_policy(graph, order, sram, trace)
    bound = traffic_lower_bound(graph, sram, simulate_dense(d, order).peak)
    if policy.traffic <= bound:
        return ExactTraffic(policy, True, policy.traffic, time.perf_counter() - t0, "BOUND")

    # 1. Lifetimes [b, e] and the steps that need each tensor on chip.
    pos = [0] * d.n_ops
    for k, v in enumerate(order):
        pos[v] = k
    initial = set(d.initial)
    life: dict[int, tuple[int, int]] = {}
    needed: set[tuple[int, int]] = set()
    for t, size in enumerate(d.sizes):
        if size == 0 or (d.producer[t] < 0 and t not in initial):
            continue
        b = -1 if d.producer[t] < 0 else pos[d.producer[t]]
        reads = [pos[c] for c in d.consumers[t]]
        e = n - 1 if d.pinned[t] else max(reads, default=b)
        life[t] = (b, max(b, e))
        needed.update((t, k) for k in reads)
        if b >= 0:
            needed.add((t, b))
    cells = sum(e - b + 1 for b, e in life.values())
    if cells > MAX_RESIDENCY:
        raise UnsupportedError(
            f"{graph.name}: the exact eviction program would have {cells:,} residency variables "
            f"(more than {MAX_RESIDENCY:,}); use the eviction policy (offchip_traffic) instead"
        )
    g = math.gcd(*(d.sizes[t] for t in life)) or 1
    total = sum(d.sizes[t] // g * (e - b + 2) for t, (b, e) in life.items())
    if total > MAX_TOTAL:
        raise UnsupportedError(
            f"{graph.name}: sizes too large for CP-SAT ({total} units after dividing by gcd {g} > 2^50); "
            "use the eviction policy (offchip_traffic) instead"
        )

    # 2. The program: r (1 where forced), w, l, capacity, objective; the policy's run as hint.
    m = cp_model.CpModel()
    r: dict[tuple[int, int], Any] = {}
    writes: dict[int, Any] = {}
    loads: dict[tuple[int, int], Any] = {}
    for t, (b, e) in life.items():
        free = []
        for k in range(b, e + 1):
            if (t, k) in needed:
                r[t, k] = 1
            else:
                r[t, k] = m.new_bool_var(f"r_{t}_{k}")
                free.append(r[t, k])
        if free:
            writes[t] = m.new_bool_var(f"w_{t}")
            for x in free:
                m.add(writes[t] + x >= 1)
        for k in range(b + 1, e + 1):
            if isinstance(r[t, k - 1], int):
                continue  # on chip at k - 1: nothing to load at k
            loads[t, k] = m.new_bool_var(f"l_{t}_{k}")
            m.add(loads[t, k] >= r[t, k] - r[t, k - 1])
    saved = [0, *step_savings(graph, order)]  # index k + 1 for step k
    alive: list[list[int]] = [[] for _ in range(n + 1)]
    for t, (b, e) in life.items():
        for k in range(b, e + 1):
            alive[k + 1].append(t)
    for k in range(-1, n):
        cap = (sram + saved[k + 1]) // g
        fixed = sum(d.sizes[t] // g for t in alive[k + 1] if isinstance(r[t, k], int))
        free_terms = [(d.sizes[t] // g, r[t, k]) for t in alive[k + 1] if not isinstance(r[t, k], int)]
        if free_terms and fixed + sum(u for u, _ in free_terms) > cap:
            m.add(_weighted(cp_model, free_terms) <= cap - fixed)
    objective = _weighted(
        cp_model,
        [(d.sizes[t] // g, x) for t, x in writes.items()]
        + [(d.sizes[t] // g, x) for (t, _), x in loads.items()],
    )
    m.minimize(objective)
    m.add(objective <= policy.traffic // g)
    hint = _policy_residency(d.initial, order, d.op_out, trace, life)
    for (t, k), x in r.items():
        if not isinstance(x, int):
            m.add_hint(x, hint[t, k])
    for t, x in writes.items():
        m.add_hint(x, int(any(hint[t, k] == 0 for k in range(life[t][0], life[t][1] + 1))))
    for (t, k), x in loads.items():
        m.add_hint(x, int(hint[t, k] == 1 and hint[t, k - 1] == 0))

    # 3. Solve; re-cost the residency found (never trust the objective's auxiliaries).
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = SEED
    if time_limit is not None:
        solver.parameters.max_time_in_seconds = max(0.0, time_limit - (time.perf_counter() - t0))
    status = solver.solve(m)
    name = solver.status_name(status)
    best, lower = policy, bound
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        found = {tk: (1 if isinstance(x, int) else int(solver.value(x))) for tk, x in r.items()}
        costed = _traffic_of(found, life, d.sizes, sram)
        if costed.traffic < policy.traffic:
            best = costed
        lower = max(lower, math.ceil(solver.best_objective_bound - 1e-9) * g)
    if status == cp_model.OPTIMAL:
        lower = best.traffic
    lower = min(lower, best.traffic)
    return ExactTraffic(best, lower == best.traffic, lower, time.perf_counter() - t0, name)


def _weighted(cp_model: Any, terms: Sequence[tuple[int, Any]]) -> Any:
    """``sum(coefficient * variable)`` as one CP-SAT linear expression."""
    return cp_model.LinearExpr.weighted_sum([x for _, x in terms], [u for u, _ in terms])


def _policy_residency(
    initial: Sequence[int],
    order: Sequence[int],
    op_out: Sequence[Sequence[int]],
    trace: Sequence[tuple[int, str, int]],
    life: dict[int, tuple[int, int]],
) -> dict[tuple[int, int], int]:
    """``r[t, k]`` of the policy's run, replayed from its trace."""
    on = set(initial)
    events: dict[int, list[tuple[str, int]]] = {}
    for k, kind, t in trace:
        events.setdefault(k, []).append((kind, t))
    by_step: list[list[int]] = [[] for _ in range(len(order) + 1)]
    for t, (b, e) in life.items():
        for k in range(b, e + 1):
            by_step[k + 1].append(t)
    r: dict[tuple[int, int], int] = {}
    for k in range(-1, len(order)):
        if k >= 0:
            on.update(op_out[order[k]])
        for kind, t in events.get(k, ()):
            if kind == EVICT:
                on.discard(t)
            else:
                on.add(t)
        for t in by_step[k + 1]:
            r[t, k] = int(t in on)
    return r


def _traffic_of(
    r: dict[tuple[int, int], int], life: dict[int, tuple[int, int]], sizes: Sequence[int], sram: int
) -> Traffic:
    """The bytes a residency moves: one write per tensor ever off chip, one read per return."""
    written = read = spills = reloads = 0
    for t, (b, e) in life.items():
        if any(r[t, k] == 0 for k in range(b, e + 1)):
            written += sizes[t]
            spills += 1
        for k in range(b + 1, e + 1):
            if r[t, k] and not r[t, k - 1]:
                read += sizes[t]
                reloads += 1
    return Traffic(sram=sram, written=written, read=read, spills=spills, reloads=reloads)


__all__ = ["MAX_RESIDENCY", "MAX_TOTAL", "ExactTraffic", "offchip_exact"]
