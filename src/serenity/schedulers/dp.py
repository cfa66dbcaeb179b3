"""``schedule_dp``: the memory-optimal order of a whole network, with a proof.

The exact scheduler of Ahn et al., "Ordering Chaos: Memory-Aware Scheduling of Irregularly Wired
Neural Networks for Edge Devices" (MLSys 2020), made to solve whole networks:

0. **Split** (:mod:`.hourglass`): cut the graph at its universal cuts (prefixes every order
   shares, however many tensors cross them), solve the pieces independently and join them; the
   joined order is optimal and the largest piece bound bounds the whole (proof in that module).
1. **Reduce** (:mod:`.reduce`): fuse chain links into items by Liu's hill–valley rules (R1, R2)
   and sink single ops into their only reader (R3); each rule keeps an optimal order (proofs in
   that module), so the search over items is exact.
2. **Bound** (:mod:`.bounds`): the bytes that are live in every order while each op runs.
3. **Incumbent**: the best baseline order is the hard budget (the paper's starting point).
4. **Divide** (:mod:`.decompose`): solve windows of the graph exactly (a cell and the readers of
   what it touches); each window optimum is a lower bound of the whole, so the pieces sharpen
   the bound without any claim that the pieces could be scheduled independently. This is how
   cuts crossed by several tensors (NAS cells read the two previous cells) stay exact.
5. **Search** (:mod:`.search`, compiled in :mod:`.search_jit` / :mod:`.search_wide`): best-first
   on the peak clamped at the bound, newest (deepest) states first among equals, with the run-now
   rule. When the bound is the optimum this is a depth-first dive that stops at the first order
   meeting it; otherwise it is the paper's dynamic program, pruned by the budget.

The result is ``proven_optimal`` only when the search finished or an order met the bound; a time
limit or the state cap leaves the best order found and the best bound proven so far, and
``stats["stopped"]`` says which. ``stats["states"]`` counts the states expanded (windows included).

**Limits that hold.** One :class:`.Deadline` covers every step: the split, each baseline of the
incumbent (the cheap listed order first, so there is always an order to return), the bounds, the
windows and the search, which polls the clock every 256 expansions. Nothing quadratic runs on a
long graph: cuts and pieces are linear (:mod:`.hourglass`), the static bound uses bitsets of
bounded length (:mod:`.bounds`), window bounds are skipped above :data:`WINDOW_MAX_OPS` ops, and
the state cap shrinks so that the stored states fit :data:`SEARCH_BYTES` however wide a state is.
A graph with a single topological order (a chain) is answered at once: that order is optimal.
"""

from __future__ import annotations

from serenity.ir import Dense, Graph
from serenity.memory import simulate_dense
from serenity.schedulers.baselines import (
    schedule_bfs,
    schedule_dfs,
    schedule_greedy,
    schedule_listed,
    schedule_xla_list,
)
from serenity.schedulers.bounds import reachability, static_lower_bound
from serenity.schedulers.clock import Deadline
from serenity.schedulers.decompose import neighbourhood, window_dense
from serenity.schedulers.hourglass import schedule_in_pieces
from serenity.schedulers.reduce import Items, build_items
from serenity.schedulers.result import ScheduleResult, make_result, op_lower_bound
from serenity.schedulers.search import SearchOutcome, best_first

#: Stored states at which the whole-graph search gives up (at most :data:`SEARCH_BYTES` anyway).
MAX_STATES = 1_000_000
#: Memory the stored states of one search may take; the state cap shrinks to fit it.
SEARCH_BYTES = 1 << 30
#: Largest graph (or piece) whose window bounds are computed: they need reachability bitsets of
#: n² bits and one search per window.
WINDOW_MAX_OPS = 8192
#: Stored states at which one window's search gives up (its bound is then skipped).
WINDOW_STATES = 20_000
#: Ops per window when op names carry no scope to group by.
WINDOW_OPS = 40


def schedule_dp(
    graph: Graph,
    *,
    time_limit: float | None = None,
    max_states: int = MAX_STATES,
    use_windows: bool = True,
    fuse: bool = True,
    split: bool = True,
    floor: int = 0,
) -> ScheduleResult:
    """The order with the smallest peak, its lower bound, and whether it is proven optimal.

    Args:
        graph: The graph to schedule.
        time_limit: Seconds after which the best order found so far is returned.
        max_states: Cap on stored search states, exact (``stats["stopped"]`` says when it was
            reached); lowered to fit :data:`SEARCH_BYTES` when states are wide
            (``stats["state_cap"]``).
        use_windows: Sharpen the bound with exact window optima (step 4).
        fuse: Fuse chains before the search (step 1).
        split: Solve the pieces between universal cuts independently (step 0).
        floor: A peak the caller already knows the whole problem needs (another piece's bound):
            any order at or below it is good enough, so the search stops there. With a floor,
            ``proven_optimal`` means "peak <= max(floor, optimum)".

    Returns:
        A :class:`ScheduleResult`; ``stats`` holds the states explored and each step's figures.

    Example:
        >>> from serenity.ir import Graph, Op, Tensor
        >>> T = lambda n, b: Tensor(n, (b,), "int8", b)
        >>> g = Graph("ex", [Op("A", "Relu", ("x",), ("a",)), Op("B", "Relu", ("x",), ("b",)),
        ...                  Op("C", "Add", ("a", "b"), ("c",))],
        ...           [T("x", 10), T("a", 20), T("b", 30), T("c", 5)], ["x"], ["c"])
        >>> r = schedule_dp(g)
        >>> r.peak, r.proven_optimal
        (60, True)
    """
    clock = Deadline(time_limit)
    d = graph.dense
    only = unique_order(d)
    if only is not None:  # nothing to choose: the one order is optimal
        peak = simulate_dense(d, only).peak
        info = {"ops": d.n_ops, "unique_order": True, "incumbent": f"unique:{peak}", "states": 0}
        return make_result(
            graph, only, method="optimal", seconds=clock.elapsed(), lower_bound=peak, proven=True,
            stats=info,
        )  # fmt: skip
    if split and not clock.expired():
        # 0. Pieces between universal cuts, each solved by steps 1-5 (``stats["pieces"]``).
        joined = schedule_in_pieces(
            graph,
            lambda piece, limit, floor: schedule_dp(
                piece,
                time_limit=limit,
                max_states=max_states,
                use_windows=use_windows,
                fuse=fuse,
                split=False,
                floor=floor,
            ),
            method="optimal",
            time_limit=clock.left(),
        )
        if joined is not None:
            return joined

    # 1-3. Incumbent (listed order first: always an order to return), static bound, items.
    best = incumbent(graph, clock)
    ub, order = best.peak, list(best.order)
    stats: dict[str, object] = {"ops": d.n_ops, "incumbent": f"{best.method}:{ub}"}
    lb = op_lower_bound(graph)
    proven = False
    states = 0
    if not clock.expired():
        lb = max(lb, static_lower_bound(d, clock=clock))
        stats["static_bound"] = lb
    items = None if clock.expired() else build_items(d, fuse=fuse)
    if items is not None:
        stats["items"] = len(items)
    # 4. Window bounds.
    # (Not under "inplace": a window's readers outside it are stand-ins, so which inputs die
    # where, and with it the saving, is not the whole graph's; its optimum would bound nothing.)
    if (
        use_windows
        and not d.inplace
        and max(lb, floor) < ub
        and d.n_ops >= 2 * WINDOW_OPS
        and not clock.expired()
    ):
        if d.n_ops <= WINDOW_MAX_OPS:
            lb, wstats = window_bound(d, lb, ub, clock.left, scope_groups(graph))
            stats.update(wstats)
        else:
            stats["windows"] = f"skipped: {d.n_ops} ops > {WINDOW_MAX_OPS}"
    # 5. Whole-graph search.
    target = max(lb, floor)
    proven = target >= ub
    if not proven and items is not None and not clock.expired():
        cap = state_cap(len(items), max_states)
        if cap < max_states:
            stats["state_cap"] = cap
        out = search(items, ub=ub, lb=target, time_limit=clock.left(), max_states=cap)
        states = out.states
        stats["stored"] = out.stored
        if out.order is not None:
            order = [v for i in out.order for v in items.ops[i]]
        if target == lb:  # a search clamped at a floor above lb proves nothing about this graph
            lb = max(lb, out.lower_bound)
        proven = out.proven
        if out.stopped:
            stats["stopped"] = out.stopped
    elif not proven:
        stats["stopped"] = f"{clock.message()} before the search"
    stats["states"] = stats.get("window_states", 0) + states  # type: ignore[operator]
    return make_result(
        graph,
        order,
        method="optimal",
        seconds=clock.elapsed(),
        lower_bound=lb,
        proven=proven,
        stats=stats,
    )


def unique_order(d: Dense) -> list[int] | None:
    """The graph's only topological order, or ``None`` if it has several (Kahn's algorithm,
    stopping at the first step with two ready ops)."""
    indeg = [len(p) for p in d.preds]
    ready = [v for v in range(d.n_ops) if indeg[v] == 0]
    order: list[int] = []
    while len(ready) == 1:
        v = ready.pop()
        order.append(v)
        for w in d.succs[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                ready.append(w)
    return order if len(order) == d.n_ops else None


def state_cap(n_items: int, max_states: int) -> int:
    """``max_states``, lowered so the stored states fit :data:`SEARCH_BYTES`: a state of ``W``
    words takes about ``64 W + 96`` bytes with the table at most a quarter full after growing
    and the heap's rows (state, ready set, live bytes, keys) at most half used."""
    words = max(1, -(-n_items // 63))
    return max(1, min(max_states, SEARCH_BYTES // (64 * words + 96)))


def incumbent(graph: Graph, clock: Deadline | None = None) -> ScheduleResult:
    """The best baseline order: the hard budget every exact search starts from.

    The listed (topological) order runs first, so that a run out of ``clock`` still has an order;
    the others each get the time left. Ties go to the earlier of greedy, xla-list, listed, dfs,
    bfs.
    """
    runs = (schedule_greedy, schedule_xla_list, schedule_listed, schedule_dfs, schedule_bfs)
    done = {schedule_listed: schedule_listed(graph)}
    for f in runs:
        if f in done:
            continue
        if clock is not None and clock.expired():
            break
        done[f] = f(graph, time_limit=None if clock is None else clock.left())
    return min((done[f] for f in runs if f in done), key=lambda r: r.peak)


def search(
    items: Items,
    *,
    ub: int,
    lb: int,
    time_limit: float | None,
    max_states: int,
    compiled: bool | None = None,
) -> SearchOutcome:
    """The search over ``items``: the pure-Python reference first, the compiled kernel for what
    outgrows it. Either way the answer is exact.

    1. **Python first.** Most searches are small (a window stores at most
       :data:`WINDOW_STATES` states, the whole of every NAS network in the zoo a few thousand)
       and the pure-Python search (:func:`.search.best_first`) answers them in milliseconds,
       while the compiled one costs a process about 0.5 s to import numba and load its kernels,
       or many seconds to compile them on the first run after an install. So the reference runs
       first, within the budget of :func:`.warmup.python_budget`: Python until the process has
       spent in it about what loading the kernels costs, the kernels after that. The reference
       is the kernels' specification and expands the same states in the same order (peak, then
       newest first), so the path changes the time taken, not the answer.
    2. **Compiled** (one state word up to 63 items, several beyond) when that search stopped at
       its budget (not at ``max_states`` or the time limit), numba is installed and every byte
       count the kernel could hold fits its ``int64`` packing once divided by the gcd of the
       sizes (:func:`.search_jit.scale_to_fit`). The kernel starts afresh with the time left; a
       first compile says so on stderr (:func:`.warmup.announce_compiles`). Otherwise the
       reference runs again with the whole ``max_states``: its integers are unbounded.

    Args:
        items: The reduced graph.
        ub: Peak of an order already known.
        lb: A lower bound on the optimum.
        time_limit: Seconds for the whole search.
        max_states: Cap on stored states (exact in every step).
        compiled: ``None`` to choose as above; ``True`` for step 2 at once (the warm-up compiles
            the kernels so); ``False`` for the reference alone.

    Returns:
        What the search established; ``states`` counts the expansions of both steps.
    """
    import time
    from importlib.util import find_spec

    from serenity.schedulers import warmup

    t0 = time.perf_counter()
    # 1. The pure-Python search within its budget (the whole cap when there is no kernel).
    first = None
    if not compiled:
        kernel_ok = compiled is None and find_spec("numba") is not None
        budget = min(max_states, warmup.python_budget()) if kernel_ok else max_states
        first = best_first(items, ub=ub, lb=lb, time_limit=time_limit, max_states=budget)
        warmup.spent_in_python(first.stored)
        # Finished, or stopped by the caller's cap, clock or stop request: that is the answer.
        if first.proven or budget >= max_states or first.stored < budget:
            return first
    # 2. The compiled kernel, imported only now (numba's import alone takes a quarter second).
    from serenity.schedulers import search_jit, search_wide

    n = len(items)
    left = None if time_limit is None else max(0.0, time_limit - (time.perf_counter() - t0))
    out = None
    if search_jit.AVAILABLE and n < search_wide.MAX_ITEMS:
        kernel, limit = (
            (search_jit.best_first_jit, search_jit.MAX_VALUE)
            if n <= search_jit.MAX_ITEMS
            else (search_wide.best_first_wide, search_wide.MAX_VALUE)
        )
        if search_jit.scale_to_fit(items, lb, ub, limit) is not None:
            warmup.announce_compiles()
            out = kernel(items, ub=ub, lb=lb, time_limit=left, max_states=max_states)
    if out is None:
        out = best_first(items, ub=ub, lb=lb, time_limit=left, max_states=max_states)
    if first is not None:
        out.states += first.states
    return out


def scope_groups(graph: Graph) -> list[set[int]]:
    """Runs of consecutive ops (listed order) sharing the first component of a ``/``-scoped name,
    else runs of :data:`WINDOW_OPS` ops. Only the choice of windows, never the proof, uses names.
    """
    n = len(graph.ops)
    groups: list[set[int]] = []
    key_prev = None
    for op in graph.ops:
        key = op.name.split("/", 1)[0] if "/" in op.name else None
        if key is None or key != key_prev or not groups:
            groups.append(set())
        groups[-1].add(op.index)
        key_prev = key
    if len(groups) > n // 4:  # names carry no useful scope: fall back to fixed runs
        step = WINDOW_OPS // 2
        groups = [set(range(s, min(n, s + WINDOW_OPS))) for s in range(0, max(1, n - step), step)]
    return groups


def window_bound(
    d: Dense, lb: int, ub: int, left: object, groups: list[set[int]] | None = None
) -> tuple[int, dict[str, object]]:
    """Raise ``lb`` with exact optima of windows (cores plus neighbourhoods); stop at ``ub``."""
    anc, desc = reachability(d)
    cores = groups if groups is not None else _listed_runs(d.n_ops)
    solved = capped = states = 0
    for core in cores:
        budget = left() if callable(left) else None
        if budget is not None and budget <= 0:
            break
        sub = window_dense(d, neighbourhood(d, core), anc, desc)
        w_items = build_items(sub)
        w_lb = static_lower_bound(sub)
        out = search(w_items, ub=ub, lb=max(w_lb, lb), time_limit=budget, max_states=WINDOW_STATES)
        states += out.states
        lb = max(lb, out.lower_bound)
        if out.proven:
            solved += 1
        else:
            capped += 1
        if lb >= ub:
            break
    return lb, {"windows": solved, "windows_capped": capped, "window_states": states, "window_bound": lb}


def _listed_runs(n: int) -> list[set[int]]:
    step = WINDOW_OPS // 2
    return [set(range(s, min(n, s + WINDOW_OPS))) for s in range(0, max(1, n - step), step)]
