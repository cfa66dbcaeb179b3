"""Divide-and-conquer at hourglass cuts: schedule the pieces independently and join them.

Serenity (Ahn et al., MLSys 2020, §3.3) splits a network at *hourglass* points, single nodes
every path goes through, and schedules the segments one by one. NAS cells read the two previous
cells, so a single-node hourglass is rare there. We generalise the cut to a set of ops:

    A **universal cut** is a set ``D`` of ops such that every op in ``D`` is an ancestor of every
    op outside ``D``.

Claim 1: the topological orders of the graph are exactly the orders ``π_D ++ π_rest`` with
``π_D`` a topological order of ``D`` and ``π_rest`` one of the rest. (Every op outside ``D``
waits for all of ``D``; inside each part the graph's own edges are the only constraints.)

Claim 2: the peak of ``π_D ++ π_rest`` is ``max(peak_D(π_D), peak_rest(π_rest))``, where each
part is simulated as its own graph (:func:`piece_graph`). The live set after ``D`` has run is
the same for every order (a function of the set alone, see :mod:`serenity.memory`): tensors
written before the cut that are graph outputs or still have a reader after it. The piece graph of
the rest starts with exactly these tensors live (as graph inputs), keeps those still needed
after the piece as graph outputs, and frees the others after their last reader in the piece,
which is when the whole graph frees them. Likewise for ``D``, whose graph outputs are the
tensors live across the cut. So every step costs the same bytes in the piece as in the whole.

Hence ``min peak = max over pieces of min peak(piece)``, exactly, however many tensors cross a
cut: the optimal orders of the pieces, joined, are optimal for the graph, and the largest lower
bound ``F`` of a piece bounds the whole graph. A piece need not reach its own optimum, only
``max(F, its optimum)``: the joined peak is then at most ``max(F, max optima)`` = the optimum.

Cuts are found on any one topological order: a universal cut is a prefix of *every* order, and
a prefix ``P`` is one iff every op ready after it (all its predecessors in ``P``) has all of
``P`` among its ancestors (every other op outside ``P`` descends from a ready op).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence

from serenity.ir import Graph, Op, Tensor
from serenity.schedulers.bounds import reachability, static_lower_bound
from serenity.schedulers.result import ScheduleResult, make_result, op_lower_bound

#: Pieces smaller than this are merged with their neighbour: a search that small is instant and
#: a separate piece costs a graph rebuild.
MIN_PIECE = 8


def universal_cuts(graph: Graph) -> list[int]:
    """Positions ``k`` (0 < k < n) in the graph's topological order after which the prefix is a
    universal cut.

    Every universal cut is a prefix of every topological order, so scanning one
    (:attr:`~serenity.ir.Graph.topological_order`) finds them all. O(n · width) big-int
    operations on ancestor bitsets.
    """
    d = graph.dense
    n = d.n_ops
    order = graph.topological_order
    anc, _ = reachability(d)
    indeg = [len(p) for p in d.preds]
    ready = {v for v in range(n) if indeg[v] == 0}
    prefix = 0
    cuts = []
    for k, v in enumerate(order[:-1], start=1):
        ready.discard(v)
        prefix |= 1 << v
        for w in d.succs[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                ready.add(w)
        if all(anc[r] & prefix == prefix for r in ready):
            cuts.append(k)
    return cuts


def pieces(graph: Graph, *, min_piece: int = MIN_PIECE) -> list[tuple[int, ...]]:
    """The op sets between consecutive universal cuts, in order, each at least ``min_piece`` ops
    (except when the whole graph is smaller). Joined in order they are the graph's
    topological order."""
    order = graph.topological_order
    bounds = [0]
    for k in universal_cuts(graph):
        if k - bounds[-1] >= min_piece:
            bounds.append(k)
    if len(order) - bounds[-1] < min_piece and len(bounds) > 1:
        bounds.pop()
    bounds.append(len(order))
    return [tuple(order[a:b]) for a, b in itertools.pairwise(bounds)]


def piece_graph(graph: Graph, parts: Sequence[Sequence[int]], j: int) -> Graph:
    """Piece ``j`` of ``parts`` as a graph of its own whose peak equals the whole graph's during
    those steps (Claim 2 of the module docstring). Ops keep their names; op ``i`` of the piece
    graph is ``parts[j][i]`` of the whole."""
    where = {v: k for k, part in enumerate(parts) for v in part}
    ops = [graph.ops[v] for v in parts[j]]
    touched = {t for op in ops for t in (*op.inputs, *op.outputs) if t}
    inputs: list[str] = []
    outputs: list[str] = []
    tensors: list[Tensor] = []
    for t in graph.tensors.values():
        born = -1 if t.producer is None else where[t.producer]
        readers = [where[c] for c in t.consumers]
        needed_after = t.is_output or any(r > j for r in readers)
        if t.constant:
            if t.name in touched:
                tensors.append(Tensor(t.name, t.shape, t.dtype, 0, constant=True))
            continue
        if born > j or (born < j and not needed_after and j not in readers):
            continue  # written later, or dead before this piece starts
        if born == j and t.name not in touched:
            continue
        tensors.append(Tensor(t.name, t.shape, t.dtype, t.nbytes))
        if born < j:
            inputs.append(t.name)
        if needed_after:
            outputs.append(t.name)
    plain = [Op(op.name, op.type, op.inputs, op.outputs, attributes=op.attributes) for op in ops]
    return Graph(f"{graph.name}[{j}]", plain, tensors, inputs, outputs)


def schedule_in_pieces(
    graph: Graph,
    solve: Callable[[Graph, float | None, int], ScheduleResult],
    *,
    method: str,
    time_limit: float | None = None,
    min_piece: int = MIN_PIECE,
) -> ScheduleResult | None:
    """Split ``graph`` at its universal cuts, ``solve`` each piece, and join the orders.

    Args:
        graph: The graph.
        solve: Schedules one piece graph within a time limit, given a floor: a peak every
            order of the whole graph needs, so that any piece order at or below it is good
            enough (its result's ``proven_optimal`` then means "peak <= max(floor, optimum)").
        method: Name recorded in the result.
        time_limit: Seconds for all pieces together (shared out as they run).
        min_piece: Smallest piece worth splitting off (see :func:`pieces`).

    Returns:
        The joined result (``proven_optimal`` only if every piece was proven, the lower bound
        the largest piece bound), or ``None`` when the graph has no cut worth splitting at.
    """
    t0 = time.perf_counter()
    parts = pieces(graph, min_piece=min_piece)
    if len(parts) < 2:
        return None
    graphs = [piece_graph(graph, parts, j) for j in range(len(parts))]
    # The largest piece bound bounds the whole graph, so no piece needs to go below it.
    floor = max(max(static_lower_bound(g.dense), op_lower_bound(g)) for g in graphs)
    order: list[int] = []
    bound = floor
    peak = 0
    proven = True
    states = items = incumbent = 0
    stopped = []
    for j, (part, pg) in enumerate(zip(parts, graphs, strict=True)):
        left = None if time_limit is None else max(0.0, time_limit - (time.perf_counter() - t0))
        r = solve(pg, left, floor)
        order.extend(part[i] for i in r.order)
        bound = max(bound, r.lower_bound)
        peak = max(peak, r.peak)
        # Good enough: optimal for the piece, or at or below a peak the whole graph needs anyway.
        proven = proven and (r.proven_optimal or r.peak <= floor)
        states += int(r.stats.get("states", 0))
        items += int(r.stats.get("items", len(pg.ops)))
        incumbent = max(incumbent, int(str(r.stats.get("incumbent", f"x:{r.peak}")).rsplit(":", 1)[1]))
        if r.stats.get("stopped"):
            stopped.append(f"piece {j}: {r.stats['stopped']}")
    stats: dict[str, object] = {
        "ops": len(graph.ops),
        "pieces": len(parts),
        "largest_piece": max(map(len, parts)),
        "items": items,
        "incumbent": f"pieces:{incumbent}",
        "states": states,
    }
    if stopped:
        stats["stopped"] = "; ".join(stopped)
    return make_result(
        graph,
        order,
        method=method,
        seconds=time.perf_counter() - t0,
        lower_bound=peak if proven else bound,  # proven: the joined peak is the optimum
        proven=proven,
        stats=stats,
    )
