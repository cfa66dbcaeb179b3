"""Baseline orders: what frameworks and simple heuristics do today.

Each is a scheduler with the shared signature and returns a :class:`ScheduleResult` whose peak
comes from the shared memory model. They are fast (O(n log n) to O(n^2)) and never claim
optimality unless the peak meets the op lower bound.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from serenity.ir import Dense, Graph
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
    """Live bytes and per-op memory deltas while an order is built front to back."""

    def __init__(self, d: Dense) -> None:
        self.d = d
        self.remaining = [len(c) for c in d.consumers]
        self.live = sum(d.sizes[t] for t in d.initial)
        self.peak = self.live
        self.indeg = [len(p) for p in d.preds]

    def alloc(self, v: int) -> int:
        return sum(self.d.sizes[t] for t in self.d.op_out[v])

    def freed(self, v: int) -> int:
        """Bytes released once ``v`` has run: inputs it reads last, outputs nobody reads."""
        d = self.d
        out = sum(d.sizes[t] for t in d.op_in[v] if self.remaining[t] == 1 and not d.pinned[t])
        return out + sum(d.sizes[t] for t in d.op_out[v] if not d.consumers[t] and not d.pinned[t])

    def run(self, v: int) -> list[int]:
        """Account for ``v`` and return the ops it made ready."""
        alloc, freed = self.alloc(v), self.freed(v)
        self.peak = max(self.peak, self.live + alloc)
        self.live += alloc - freed
        for t in self.d.op_in[v]:
            self.remaining[t] -= 1
        ready = []
        for w in self.d.succs[v]:
            self.indeg[w] -= 1
            if self.indeg[w] == 0:
                ready.append(w)
        return ready


def _list_schedule(graph: Graph, method: str, key: Callable[[_Tracker, int], tuple]) -> ScheduleResult:
    """Repeatedly run the ready op with the smallest ``key``; O(n * width)."""
    t0 = time.perf_counter()
    tr = _Tracker(graph.dense)
    ready = [i for i in range(graph.dense.n_ops) if tr.indeg[i] == 0]
    order = []
    while ready:
        v = min(ready, key=lambda v: key(tr, v))
        ready.remove(v)
        order.append(v)
        ready.extend(tr.run(v))
    return make_result(graph, order, method=method, seconds=time.perf_counter() - t0)


def schedule_xla_list(graph: Graph, *, time_limit: float | None = None) -> ScheduleResult:
    """XLA's list-scheduler rule: the ready op with the most bytes freed minus bytes defined."""
    return _list_schedule(graph, "xla-list", lambda tr, v: (tr.alloc(v) - tr.freed(v), v))


def schedule_greedy(graph: Graph, *, time_limit: float | None = None) -> ScheduleResult:
    """The LPMF rule of PyTorch Inductor's ``topological_sort_lpmf``.

    Run the ready op that keeps the running peak lowest; ties go to the op with the smallest
    net allocation (bytes defined minus bytes freed), then to the lowest original index.
    """
    return _list_schedule(
        graph,
        "greedy",
        lambda tr, v: (max(tr.peak, tr.live + tr.alloc(v)), tr.alloc(v) - tr.freed(v), v),
    )
