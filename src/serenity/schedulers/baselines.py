"""Baseline orders: what frameworks and simple heuristics do today.

Each is a scheduler with the shared signature and returns a :class:`ScheduleResult` whose peak
comes from the shared memory model. They are fast (O(n + edges) for the traversals,
O(n · width) for the list schedulers) and never claim optimality unless the peak meets the op
lower bound. The list schedulers honour ``time_limit``: cut short, they finish the order with the
lowest-index ready op each step (cheap, still topological) and say so in ``stats["stopped"]``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from serenity.ir import Dense, Graph
from serenity.schedulers.clock import Deadline
from serenity.schedulers.result import ScheduleResult, make_result


def schedule_listed(graph: Graph, *, time_limit: float | None = None) -> ScheduleResult:
    """The file's own order; for a ``.tflite`` this is the TFLite converter's schedule.

    A JSON graph may list its ops out of dependency order; then the nearest valid order stands in
    (:attr:`~serenity.ir.Graph.topological_order`) and ``stats["listed_invalid"]`` says why.
    """
    t0 = time.perf_counter()
    stats = {"listed_invalid": graph.listed_problem} if graph.listed_problem else {}
    return make_result(
        graph, graph.topological_order, method="listed", seconds=time.perf_counter() - t0, stats=stats
    )


def schedule_bfs(graph: Graph, *, time_limit: float | None = None) -> ScheduleResult:
    """Kahn's algorithm with a FIFO queue, sources and successors in index order."""
    t0 = time.perf_counter()
    d = graph.dense
    indeg = [len(p) for p in d.preds]
    queue = deque(i for i in range(d.n_ops) if indeg[i] == 0)
    order = []
    while queue:
        v = queue.popleft()
        order.append(v)
        for w in d.succs[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                queue.append(w)
    return make_result(graph, order, method="bfs", seconds=time.perf_counter() - t0)


def schedule_dfs(graph: Graph, *, time_limit: float | None = None) -> ScheduleResult:
    """Reverse post-order of a depth-first search from the sources, successors in index order.

    Iterative, so deep graphs do not hit Python's recursion limit.
    """
    t0 = time.perf_counter()
    d = graph.dense
    visited = [False] * d.n_ops
    post: list[int] = []
    # Visit sources in reverse index order so that, once reversed, low indices come first.
    for s in reversed(range(d.n_ops)):
        if d.preds[s] or visited[s]:
            continue
        visited[s] = True
        stack = [(s, iter(d.succs[s]))]
        while stack:
            v, it = stack[-1]
            w = next((w for w in it if not visited[w]), None)
            if w is None:
                stack.pop()
                post.append(v)
            else:
                visited[w] = True
                stack.append((w, iter(d.succs[w])))
    post.reverse()
    return make_result(graph, post, method="dfs", seconds=time.perf_counter() - t0)


class _Tracker:
    """Live bytes and per-op memory deltas while an order is built front to back, kept up to
    date incrementally (O(edges) in all) so a list scheduler costs O(n · width)."""

    def __init__(self, d: Dense) -> None:
        self.d = d
        self.remaining = [len(c) for c in d.consumers]
        self.live = sum(d.sizes[t] for t in d.initial)
        self.peak = self.live
        self.indeg = [len(p) for p in d.preds]
        self.done = [False] * d.n_ops
        self._alloc = [sum(d.sizes[t] for t in outs) for outs in d.op_out]
        # Bytes each op would free if it ran now: outputs nobody reads, and inputs it reads last.
        self._freed = [
            sum(d.sizes[t] for t in d.op_out[v] if not d.consumers[t] and not d.pinned[t])
            + sum(d.sizes[t] for t in d.op_in[v] if len(d.consumers[t]) == 1 and not d.pinned[t])
            for v in range(d.n_ops)
        ]

    def alloc(self, v: int) -> int:
        """Bytes ``v`` allocates (its outputs)."""
        return self._alloc[v]

    def freed(self, v: int) -> int:
        """Bytes released once ``v`` has run: inputs it reads last, outputs nobody reads."""
        return self._freed[v]

    def run(self, v: int) -> list[int]:
        """Account for ``v`` and return the ops it made ready."""
        d = self.d
        alloc, freed = self._alloc[v], self._freed[v]
        self.peak = max(self.peak, self.live + alloc)
        self.live += alloc - freed
        self.done[v] = True
        for t in d.op_in[v]:
            self.remaining[t] -= 1
            if self.remaining[t] == 1 and not d.pinned[t]:
                # The one reader left now frees ``t``.
                last = next(c for c in d.consumers[t] if not self.done[c])
                self._freed[last] += d.sizes[t]
        ready = []
        for w in d.succs[v]:
            self.indeg[w] -= 1
            if self.indeg[w] == 0:
                ready.append(w)
        return ready


def _list_schedule(
    graph: Graph, method: str, key: Callable[[_Tracker, int], tuple], time_limit: float | None
) -> ScheduleResult:
    """Repeatedly run the ready op with the smallest ``key``; O(n * width). Past ``time_limit``
    the lowest-index ready op runs instead (``stats["stopped"]`` says so)."""
    clock = Deadline(time_limit)
    tr = _Tracker(graph.dense)
    ready = [i for i in range(graph.dense.n_ops) if tr.indeg[i] == 0]
    order: list[int] = []
    stats: dict[str, str] = {}
    while ready:
        if not stats and len(order) % 256 == 0 and clock.expired():
            stats["stopped"] = f"{clock.message()} after {len(order)} ops; the rest by index"
        v = min(ready) if stats else min(ready, key=lambda v: key(tr, v))
        ready.remove(v)
        order.append(v)
        ready.extend(tr.run(v))
    return make_result(graph, order, method=method, seconds=clock.elapsed(), stats=stats)


def schedule_xla_list(graph: Graph, *, time_limit: float | None = None) -> ScheduleResult:
    """XLA's list-scheduler rule: the ready op with the most bytes freed minus bytes defined."""
    return _list_schedule(graph, "xla-list", lambda tr, v: (tr.alloc(v) - tr.freed(v), v), time_limit)


def schedule_greedy(graph: Graph, *, time_limit: float | None = None) -> ScheduleResult:
    """The LPMF rule of PyTorch Inductor's ``topological_sort_lpmf``.

    Run the ready op that keeps the running peak lowest; ties go to the op with the smallest
    net allocation (bytes defined minus bytes freed), then to the lowest original index.
    """
    return _list_schedule(
        graph,
        "greedy",
        lambda tr, v: (max(tr.peak, tr.live + tr.alloc(v)), tr.alloc(v) - tr.freed(v), v),
        time_limit,
    )
