"""``schedule_ilp``: the memory-optimal order as a time-indexed integer program, solved by CP-SAT.

The exact formulation of Zhong et al., "Memory-aware Scheduling for Complex Wired Networks with
Iterative Graph Optimization" (ICCAD 2023), with its liveness written as CP-SAT intervals:

1. **Steps.** Boolean ``x[v, t]`` says op ``v`` runs at step ``t``. It exists only inside the
   op's window ``[ASAP(v), ALAP(v)]``: ``ASAP(v)`` is the number of ancestors of ``v`` (they all
   run first) and ``ALAP(v) = n - 1 - |descendants(v)|``. Each op takes exactly one step, each
   step exactly one op, and the step of ``v`` is ``s_v = sum_t t * x[v, t]`` with
   ``s_u + 1 <= s_v`` for every edge ``u -> v``.
2. **Liveness.** A tensor is live during step ``t`` iff ``start <= t < end`` with ``start`` the
   producer's step (0 for a graph input) and ``end`` one past its last reader's step (``n`` for a
   graph output, ``start + 1`` for an output nobody reads) -- exactly :mod:`serenity.memory`'s
   rule. The tensor is an interval of that span demanding its size, and one cumulative
   constraint caps the bytes of overlapping intervals by the peak variable ``M``, minimised.
   ``end`` is only constrained from below (``end >= s_c + 1`` for each reader ``c``): a longer
   interval can only raise ``M``, so the optimum of the relaxed program is the optimum of the
   exact one, and every solution's order is re-costed by :func:`serenity.memory.simulate`.
3. **In place** (the ``inplace`` memory model of :mod:`serenity.memory`). For an op ``v`` that
   may write its output ``o`` over one of its candidate inputs ``C`` (:attr:`.Dense.reuse`),
   booleans ``r[v, c]`` for ``c`` in ``C`` with ``sum_c r[v, c] <= 1``; ``r[v, c]`` forces
   ``end_c == s_v + 1`` (``v`` is ``c``'s last reader: with ``end_c >= s_w + 1`` for every reader
   ``w`` this holds only if none runs later), and ``o``'s interval starts at ``s_v + r_v`` with
   ``r_v = sum_c r[v, c]``: during ``v``'s own step ``o`` takes ``c``'s bytes, which ``c``'s
   interval still covers, and from the next step on ``o`` is live and ``c`` is not -- the step
   costs ``o``'s size less (every candidate has it), as in :func:`serenity.memory.simulate`.
   The solver may leave ``r_v = 0`` where a candidate does die at ``v``; that only raises
   ``M``, and the order is re-costed by :func:`~serenity.memory.simulate`, which always takes the
   saving. Conversely every order with the saving set where it applies is a solution costing
   exactly its simulated peak, so the optimum is the same. The same argument as for ``end``:
   the program is a relaxation whose optimum is exact.
4. **Warm start.** The best baseline order (:func:`.dp.incumbent`) is the solution hint (with
   ``r`` set where :func:`~serenity.memory.inplace_pairs` says the order overwrites) and its peak
   the upper bound of ``M``; the static bound (:mod:`.bounds`, which honours ``inplace``) is its
   lower bound.
5. **Exact integers.** CP-SAT works in ``int64``: sizes are divided by their gcd (exact), and
   when the bytes of all tensors together still exceed :data:`MAX_TOTAL` the program is not
   built; the baseline order is returned unproven with ``stats["stopped"]`` saying why. A proof
   never rests on rounded sizes.

The result is ``proven_optimal`` only when CP-SAT reports ``OPTIMAL`` (the gap closed) or the
baseline met the static bound; otherwise it is the best order found, and ``lower_bound`` the
best bound CP-SAT proved (rounded up, times the gcd) or the static bound, whichever is larger.
CP-SAT runs with a fixed seed; with one worker the order is reproducible, with several the peak
and the proof are (when proven) but the order among equally good ones may differ between runs.
OR-Tools is an optional dependency (``pip install 'serenity-sched[ilp]'``), imported on the
first call.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from serenity.errors import UnsupportedError
from serenity.ir import Dense, Graph
from serenity.memory import inplace_pairs, simulate_dense
from serenity.schedulers.bounds import reachability, static_lower_bound
from serenity.schedulers.clock import Deadline
from serenity.schedulers.dp import incumbent
from serenity.schedulers.result import ScheduleResult, make_result, op_lower_bound

if TYPE_CHECKING:
    from ortools.sat.python import cp_model

#: Largest total of (gcd-divided) tensor sizes the program is built with: CP-SAT sums demands
#: and bounds in ``int64``, and this leaves a factor of 2^13 of headroom for its internal sums.
MAX_TOTAL = 1 << 50
#: Largest number of step booleans ``x[v, t]``: beyond it the model alone would take longer to
#: build than a time-limited run allows, and CP-SAT would not close the gap anyway.
MAX_BOOLS = 200_000
#: Largest graph the program is built for: the ASAP/ALAP windows come from reachability
#: bitsets of n^2 bits (8 MiB here).
MAX_OPS = 8192
#: Fixed seed of CP-SAT's search (determinism is part of the contract).
SEED = 0

METHOD = "ilp"


@dataclass(frozen=True, slots=True)
class Windows:
    """Step windows of the ops (topological-level pruning, step 1).

    Attributes:
        asap: ``asap[v]`` = number of ancestors of ``v``: its earliest possible step.
        alap: ``alap[v]`` = ``n - 1`` minus the number of descendants: its latest step.
    """

    asap: list[int]
    alap: list[int]

    @property
    def n_bools(self) -> int:
        """Number of step booleans the windows leave."""
        return sum(b - a + 1 for a, b in zip(self.asap, self.alap, strict=True))


def windows(d: Dense) -> Windows:
    """The ASAP / ALAP step of every op from ancestor and descendant counts.

    Args:
        d: The graph's dense form.

    Returns:
        The :class:`Windows`; ``asap[v] <= alap[v]`` for every op of an acyclic graph.
    """
    anc, desc = reachability(d)
    n = d.n_ops
    return Windows([a.bit_count() for a in anc], [n - 1 - m.bit_count() for m in desc])


def schedule_ilp(
    graph: Graph, *, time_limit: float | None = None, workers: int | None = None
) -> ScheduleResult:
    """The order with the smallest peak from the time-indexed program of Zhong et al. (ICCAD 2023).

    Args:
        graph: The graph to schedule.
        time_limit: Seconds for the whole run (baselines, bounds, model and CP-SAT); the best
            order found so far is returned when it runs out, unproven.
        workers: CP-SAT search workers (default ``min(2, os.cpu_count())``).

    Returns:
        A :class:`ScheduleResult` with method ``"ilp"``; ``stats`` holds the model size, the
        solver status, the incumbent and, when the run was cut short or the program was not
        built, ``stopped``.

    Raises:
        UnsupportedError: OR-Tools is not installed.

    Example:
        >>> from serenity.ir import Graph, Op, Tensor
        >>> T = lambda n, b: Tensor(n, (b,), "int8", b)
        >>> g = Graph("ex", [Op("A", "Relu", ("x",), ("a",)), Op("B", "Relu", ("x",), ("b",)),
        ...                  Op("C", "Add", ("a", "b"), ("c",))],
        ...           [T("x", 10), T("a", 20), T("b", 30), T("c", 5)], ["x"], ["c"])
        >>> r = schedule_ilp(g)
        >>> r.peak, r.proven_optimal
        (60, True)
    """
    try:
        from ortools.sat.python import cp_model
    except ImportError as e:
        raise UnsupportedError("method 'ilp' needs OR-Tools: pip install 'serenity-sched[ilp]'") from e
    clock = Deadline(time_limit)
    d = graph.dense
    n_workers = workers if workers is not None else min(2, os.cpu_count() or 1)

    # 1. Incumbent (the hint and the upper bound) and the static lower bound.
    best = incumbent(graph, clock)
    order, ub = list(best.order), best.peak
    lb = op_lower_bound(graph)
    stats: dict[str, Any] = {"ops": d.n_ops, "incumbent": f"{best.method}:{ub}", "workers": n_workers}
    if not clock.expired():
        lb = max(lb, static_lower_bound(d, clock=clock))
        stats["static_bound"] = lb

    def done(proven: bool = False) -> ScheduleResult:
        return make_result(
            graph, order, method=METHOD, seconds=clock.elapsed(), lower_bound=lb, proven=proven, stats=stats
        )

    if lb >= ub:  # the baseline meets a bound: nothing to search
        return done(proven=True)

    # 2. Exact integer sizes for int64 arithmetic.
    g = math.gcd(*d.sizes) or 1  # all sizes 0 cannot get here: lb = ub = 0
    total = sum(d.sizes) // g
    stats["gcd"] = g
    if total > MAX_TOTAL:
        stats["stopped"] = f"sizes too large for CP-SAT: {total} units after dividing by gcd {g} > 2^50"
        return done()

    # 3. Step windows (reachability is n^2 bits: bounded by MAX_OPS).
    if d.n_ops > MAX_OPS or clock.expired():
        stats["stopped"] = (
            clock.message() + " before the model"
            if clock.expired()
            else f"model too large: {d.n_ops} ops > {MAX_OPS}"
        )
        return done()
    win = windows(d)
    stats["bools"] = win.n_bools
    if win.n_bools > MAX_BOOLS:
        stats["stopped"] = f"model too large: {win.n_bools} step booleans > {MAX_BOOLS}"
        return done()

    # 4. The program, its hint, and CP-SAT.
    prog = build_model(cp_model, d, win, g, lb=-(-lb // g), ub=ub // g, clock=clock)
    if prog is not None:
        prog.hint(order, ub // g, inplace_pairs(d, order))
    left = clock.left()
    if prog is None or (left is not None and left <= 0):
        stats["stopped"] = clock.message() + " while building the model"
        return done()
    pos = {v: t for t, v in enumerate(order)}
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = n_workers
    solver.parameters.random_seed = SEED
    if left is not None:
        solver.parameters.max_time_in_seconds = left
    status = solver.solve(prog.model)
    stats["status"] = solver.status_name(status)
    stats["solver_seconds"] = round(solver.wall_time, 6)
    stats["branches"] = solver.num_branches

    # 5. Order from the solution (ops by step), re-costed by the memory model; the bound.
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        found = sorted(range(d.n_ops), key=lambda v: (solver.value(prog.steps[v]), pos[v]))
        if simulate_dense(d, found).peak <= ub:
            order = found
        lb = max(lb, math.ceil(solver.best_objective_bound) * g)
    proven = status == cp_model.OPTIMAL
    if not proven:
        stats["stopped"] = (
            f"{clock.message()} in CP-SAT ({stats['status']})"
            if clock.expired()
            else f"CP-SAT stopped with status {stats['status']}"
        )
    return done(proven=proven)


@dataclass(frozen=True, slots=True)
class Program:
    """The CP-SAT model of steps 1-3 and the variables a hint or a solution is read through.

    Attributes:
        model: The CP-SAT model.
        x: ``x[v][t - asap[v]]`` is the boolean "op ``v`` runs at step ``t``".
        asap: First step of each op's window.
        steps: ``s_v``, the step of each op.
        peak: ``M``, the peak in units of the gcd (the objective).
        reuse: ``r[v, c]`` by ``(output id, candidate input id)`` (step 3; empty under ``tflm``).
    """

    model: cp_model.CpModel
    x: list[list[cp_model.IntVar]]
    asap: list[int]
    steps: list[cp_model.IntVar]
    peak: cp_model.IntVar
    reuse: dict[tuple[int, int], cp_model.IntVar]

    def hint(self, order: list[int], peak: int, pairs: dict[int, int]) -> None:
        """Hint ``order`` (op ``order[i]`` at step ``i``) with its divided peak ``peak`` and its
        in-place ``pairs`` (:func:`~serenity.memory.inplace_pairs`, ``{output: input}``), so
        CP-SAT starts from a feasible solution."""
        for t, v in enumerate(order):
            self.model.add_hint(self.steps[v], t)
            for i, x in enumerate(self.x[v]):
                self.model.add_hint(x, self.asap[v] + i == t)
        for (o, c), r in self.reuse.items():
            self.model.add_hint(r, pairs.get(o) == c)
        self.model.add_hint(self.peak, peak)


def build_model(
    cp_model: Any, d: Dense, win: Windows, g: int, *, lb: int, ub: int, clock: Deadline | None = None
) -> Program | None:
    """The program of steps 1-3 over sizes divided by ``g``.

    Args:
        cp_model: The ``ortools.sat.python.cp_model`` module.
        d: The graph's dense form.
        win: The ops' step windows.
        g: A common divisor of every size.
        lb: Lower bound of the (divided) peak.
        ub: Upper bound of the (divided) peak.
        clock: Stop building when it runs out.

    Returns:
        The :class:`Program`, or ``None`` if ``clock`` ran out first.
    """
    n = d.n_ops
    m = cp_model.CpModel()
    # 1. Step booleans in each window; each op one step, each step one op.
    by_step: list[list[Any]] = [[] for _ in range(n)]
    steps = []
    xss = []
    for v in range(n):
        a, b = win.asap[v], win.alap[v]
        if v % 64 == 0 and clock is not None and clock.expired():
            return None
        xs = [m.new_bool_var(f"x{v}_{t}") for t in range(a, b + 1)]
        m.add_exactly_one(xs)
        xss.append(xs)
        for t, x in zip(range(a, b + 1), xs, strict=True):
            by_step[t].append(x)
        s = m.new_int_var(a, b, f"s{v}")
        # s_v = sum_t t * x[v, t] (one linear row; measured as fast as CP-SAT's channelling
        # x[v, t] <=> (s_v == t), which takes two constraints per boolean to build).
        m.add(s == cp_model.LinearExpr.weighted_sum(xs, list(range(a, b + 1))))
        steps.append(s)
    for row in by_step:
        m.add_exactly_one(row)
    # Redundant with the rows above, but CP-SAT propagates it on the integer steps directly:
    # measured 2-4x faster proofs on the zoo cells, and better orders on randwire_ws_stage.
    m.add_all_different(steps)
    for v in range(n):
        for u in d.preds[v]:
            m.add(steps[u] + 1 <= steps[v])
    # 2. One interval per tensor that takes memory, [start, end), under one cumulative.
    ends: dict[int, Any] = {}
    starts: dict[int, Any] = {}
    for t, size in enumerate(d.sizes):
        p = d.producer[t]
        if size // g == 0 or (p < 0 and t not in d.initial):
            continue  # no bytes, or an unread, unkept graph input: never live
        readers = d.consumers[t]
        starts[t] = 0 if p < 0 else steps[p]
        if d.pinned[t]:
            ends[t] = n
        elif not readers:
            ends[t] = starts[t] + 1
        elif len(readers) == 1:
            ends[t] = steps[readers[0]] + 1
        else:
            ends[t] = m.new_int_var(max(win.asap[c] for c in readers) + 1, n, f"e{t}")
            for c in readers:
                m.add(ends[t] >= steps[c] + 1)
    # 3. In place: r[v, c] => v is c's last reader; the output then starts a step later.
    reuse: dict[tuple[int, int], Any] = {}
    for v, cands in enumerate(d.reuse):
        if not cands:
            continue
        o = d.op_out[v][0]  # an op with candidates has exactly one activation output
        rs = []
        for c in cands:
            r = reuse[o, c] = m.new_bool_var(f"r{v}_{c}")
            m.add(ends[c] == steps[v] + 1).only_enforce_if(r)
            rs.append(r)
        m.add(sum(rs) <= 1)
        starts[o] = m.new_int_var(win.asap[v], win.alap[v] + 1, f"b{o}")
        m.add(starts[o] == steps[v] + sum(rs))
    intervals, demands = [], []
    for t, start in starts.items():
        p = d.producer[t]
        lo = 0 if p < 0 else win.asap[p]
        # An in-place output nobody reads (or a graph output written last) may be empty.
        shortest = 0 if p >= 0 and d.reuse and d.reuse[p] else 1
        length = m.new_int_var(shortest, n - lo, f"l{t}")
        intervals.append(m.new_interval_var(start, length, ends[t], f"i{t}"))
        demands.append(d.sizes[t] // g)
    peak = m.new_int_var(lb, max(lb, ub), "peak")
    m.add_cumulative(intervals, demands, peak)
    m.minimize(peak)
    return Program(m, xss, win.asap, steps, peak, reuse)
