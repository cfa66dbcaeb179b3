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
a prefix ``P`` is one iff **every sink of ``P`` (an op of ``P`` with no successor in ``P``) is a
direct predecessor of every op ready after ``P``** (all its predecessors in ``P``). Proof (⇐):
every op of ``P`` reaches a sink of ``P``, and every op outside ``P`` descends from a ready op.
(⇒): a sink ``m`` must be an ancestor of a ready op ``r``; the second op of that path is a
successor of ``m``, hence outside ``P``, and an ancestor of ``r`` or ``r`` itself; all of ``r``'s
ancestors are in ``P``, so it is ``r``. This needs no reachability: one scan of the order, each
step comparing the sinks with the ready ops' predecessors, O(n · width²) at worst and
usually O(n) (the first mismatch ends the check).

**Linear work.** The piece graphs are built in one pass over the tensors (:func:`piece_graphs`),
and a tensor that only passes through a piece (live across it, not touched there) is not copied
into it: the bytes passing through piece ``j`` are one pinned input tensor of that piece, which is
live at every step there as each of them is in the whole graph. So splitting a chain of 100,000
ops into 12,500 pieces costs O(n + tensors), not O(n · pieces). A time limit covers the split,
the pieces' bounds and their solutions; pieces not reached keep their topological order.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from serenity.ir import Graph, Op, Tensor
from serenity.schedulers.bounds import static_lower_bound
from serenity.schedulers.clock import Deadline
from serenity.schedulers.result import ScheduleResult, make_result, op_lower_bound

#: Pieces smaller than this are merged with their neighbour: a search that small is instant and
#: a separate piece costs a graph rebuild.
MIN_PIECE = 8


def universal_cuts(graph: Graph) -> list[int]:
    """Positions ``k`` (0 < k < n) in the graph's topological order after which the prefix is a
    universal cut.

    Every universal cut is a prefix of every topological order, so scanning one
    (:attr:`~serenity.ir.Graph.topological_order`) finds them all, by the test of the module
    docstring (the prefix's sinks are predecessors of every ready op).
    """
    d = graph.dense
    n = d.n_ops
    order = graph.topological_order
    indeg = [len(p) for p in d.preds]
    ready = {v for v in range(n) if indeg[v] == 0}
    sinks: set[int] = set()  # ops of the prefix with no successor in it
    cuts = []
    for k, v in enumerate(order[:-1], start=1):
        ready.discard(v)
        sinks.difference_update(d.preds[v])
        sinks.add(v)
        for w in d.succs[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                ready.add(w)
        if all(len(d.preds[r]) >= len(sinks) and sinks.issubset(d.preds[r]) for r in ready):
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
    """Piece ``j`` of ``parts`` as a graph of its own (see :func:`piece_graphs`)."""
    graphs = piece_graphs(graph, parts)
    assert graphs is not None
    return graphs[j]


def piece_graphs(
    graph: Graph, parts: Sequence[Sequence[int]], clock: Deadline | None = None
) -> list[Graph] | None:
    """Each piece of ``parts`` as a graph of its own whose peak equals the whole graph's during
    those steps (Claim 2 of the module docstring). Ops keep their names; op ``i`` of piece graph
    ``j`` is ``parts[j][i]`` of the whole. A piece's graph holds the tensors its ops touch, plus
    one pinned graph input (named ``<live across>``) for the bytes that only pass through it.
    One pass over the tensors: O(ops + tensors + pieces). ``None`` if ``clock`` runs out."""
    P = len(parts)
    where = [0] * len(graph.ops)
    for k, part in enumerate(parts):
        for v in part:
            where[v] = k
    tensors: list[list[Tensor]] = [[] for _ in parts]
    inputs: list[list[str]] = [[] for _ in parts]
    outputs: list[list[str]] = [[] for _ in parts]
    across = [0] * (P + 1)  # difference array: bytes passing through each piece untouched
    for t in graph.tensors.values():
        readers = sorted({where[c] for c in t.consumers})
        if t.constant:
            owners = set(readers) if t.producer is None else {*readers, where[t.producer]}
            for j in sorted(owners):
                tensors[j].append(Tensor(t.name, t.shape, t.dtype, 0, constant=True))
            continue
        born = -1 if t.producer is None else where[t.producer]
        # Live from piece ``born`` to the last reader's piece, or to the end for an output.
        end = P - 1 if t.is_output else (readers[-1] if readers else born)
        touched = [j for j in readers if j > born]
        if born >= 0:
            touched.insert(0, born)
        for j in touched:
            tensors[j].append(Tensor(t.name, t.shape, t.dtype, t.nbytes))
            if j > born:
                inputs[j].append(t.name)
            if j < end or t.is_output:
                outputs[j].append(t.name)
        # Pieces after ``born`` up to ``end`` that do not read it: its bytes pass through.
        if t.nbytes and end > born:
            across[born + 1] += t.nbytes
            across[end + 1] -= t.nbytes
            for j in touched:
                if j > born:
                    across[j] -= t.nbytes
                    across[j + 1] += t.nbytes
    out = []
    passing = 0
    for j, part in enumerate(parts):
        if j % 64 == 0 and clock is not None and clock.expired():
            return None
        passing += across[j]
        ops = [graph.ops[v] for v in part]
        plain = [Op(op.name, op.type, op.inputs, op.outputs, attributes=op.attributes) for op in ops]
        if passing:
            names = {t.name for t in tensors[j]}
            name = "<live across>"
            while name in names:
                name += "'"
            tensors[j].append(Tensor(name, (passing,), "uint8", passing))
            inputs[j].append(name)
            outputs[j].append(name)
        out.append(
            Graph(
                f"{graph.name}[{j}]",
                plain,
                tensors[j],
                inputs[j],
                outputs[j],
                memory_model=graph.memory_model,
            )
        )
    return out


def schedule_in_pieces(
    graph: Graph,
    solve: Callable[[Graph, float | None, int], ScheduleResult],
    *,
    method: str,
    time_limit: float | None = None,
    min_piece: int = MIN_PIECE,
    share: bool = False,
) -> ScheduleResult | None:
    """Split ``graph`` at its universal cuts, ``solve`` each piece, and join the orders.

    Args:
        graph: The graph.
        solve: Schedules one piece graph within a time limit, given a floor: a peak every
            order of the whole graph needs, so that any piece order at or below it is good
            enough (its result's ``proven_optimal`` then means "peak <= max(floor, optimum)").
        method: Name recorded in the result.
        time_limit: Seconds for everything (the split, the bounds, all pieces); pieces not
            reached in time keep their topological order and leave the result unproven.
        min_piece: Smallest piece worth splitting off (see :func:`pieces`).
        share: Give each piece a share of the time left in proportion to its ops (the last piece
            all of it), instead of all of it: for a ``solve`` that may use its whole limit even
            when it cannot finish (``auto`` waits for its integer program), so that one hard
            piece does not leave the pieces after it unscheduled.

    Returns:
        The joined result (``proven_optimal`` only if every piece was proven, the lower bound
        the largest piece bound), or ``None`` when the graph has no cut worth splitting at, or
        the time ran out before the pieces were built (the caller then falls back to a whole-graph
        order).
    """
    clock = Deadline(time_limit)
    parts = pieces(graph, min_piece=min_piece)
    if len(parts) < 2 or clock.expired():
        return None
    graphs = piece_graphs(graph, parts, clock)
    if graphs is None:
        return None
    # The largest piece bound bounds the whole graph, so no piece needs to go below it.
    floor = 0
    for g in graphs:
        if clock.expired():
            floor = max(floor, op_lower_bound(graph))
            break
        floor = max(floor, static_lower_bound(g.dense), op_lower_bound(g))
    order: list[int] = []
    bound = floor
    peak = 0
    proven = True
    states = items = incumbent = 0
    stopped = []
    proved_by: dict[str, int] = {}
    for j, (part, pg) in enumerate(zip(parts, graphs, strict=True)):
        if clock.expired():
            # Out of time: the rest keeps its topological order, and nothing more is proven.
            order.extend(v for p in parts[j:] for v in p)
            stopped.append(f"{clock.message()} before piece {j} of {len(parts)}")
            proven = False
            break
        left = clock.left()
        if share and left is not None:
            rest = sum(len(p) for p in parts[j:])
            left *= len(part) / rest
        r = solve(pg, left, floor)
        order.extend(part[i] for i in r.order)
        bound = max(bound, r.lower_bound)
        peak = max(peak, r.peak)
        # Every order of the whole graph needs what this piece needs: later pieces need not go
        # below it.
        floor = max(floor, r.lower_bound)
        for name in str(r.stats.get("proved_by", "")).split(","):
            if name:
                proved_by[name] = proved_by.get(name, 0) + 1
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
    if proved_by:
        stats["proved_by"] = ",".join(sorted(proved_by))
        stats["proved_by_pieces"] = proved_by
    if stopped:
        stats["stopped"] = "; ".join(stopped)
    return make_result(
        graph,
        order,
        method=method,
        seconds=clock.elapsed(),
        lower_bound=peak if proven else bound,  # proven: the joined peak is the optimum
        proven=proven,
        stats=stats,
    )
