"""Divide and conquer for the proof: exact optima of windows are lower bounds of the whole.

Ahn et al. (MLSys 2020) split a network at *hourglass* points and schedule the pieces
independently, which is exact only when a single tensor crosses the cut. NAS cells read the two
previous cells, so cuts are crossed by several tensors and the pieces interleave. This module keeps
the proof exact by using pieces for the **lower bound** only; the order itself always comes from
the whole-graph search, which the bound then steers (see :mod:`serenity.schedulers.dp`).

**Window relaxation.** For a set ``U`` of ops, build a small graph over ``U`` plus ``X``, the
producers of tensors ``U`` reads (``X`` ops keep no inputs). A tensor keeps its producer; its
readers are its readers in ``U`` plus, when it has readers outside ``U``, every op of ``U`` that
descends from its producer and is an ancestor of such an outside reader (a *virtual read*: the
tensor must still be live there in every order). Edges are the reachability of the whole graph
restricted to ``U ∪ X`` (transitively reduced). Claim: ``OPT(window) <= OPT(graph)``. Proof: the
restriction of any order of the graph to ``U ∪ X`` is an order of the window; in it, each window
tensor lives from its producer to its last (real or virtual) window reader, and in the whole
order it lives at least that long (a virtual reader runs before a real reader that descends from
it; graph outputs stay live to the end either way). So at every window step the window's live set
is a subset of the whole order's live set at the same op, and the window peak is at most the
whole peak. Every window optimum is therefore a lower bound, and so is their maximum.

Windows are runs of consecutive ops in the listed order, overlapping by half, so that a cell and
its neighbours' preprocessing ops fall together in some window.
"""

from __future__ import annotations

from serenity.ir import Dense


def window_dense(d: Dense, window: set[int], anc: list[int], desc: list[int]) -> Dense:
    """The relaxation of ``d`` to the ops ``window`` (see the module docstring).

    Args:
        d: The whole graph.
        window: Original op indices forming ``U``.
        anc: Ancestor bitmasks of ``d`` (from :func:`.bounds.reachability`).
        desc: Descendant bitmasks of ``d``.

    Returns:
        A :class:`Dense` over ``U ∪ X`` (ops in original order); its optimum is a lower bound.
    """
    u_mask = 0
    for v in window:
        u_mask |= 1 << v
    # 1. External producers X of what U reads.
    extra = {d.producer[t] for v in window for t in d.op_in[v]} - window - {-1}
    sub = sorted(window | extra)
    new = {v: i for i, v in enumerate(sub)}
    sub_mask = 0
    for v in sub:
        sub_mask |= 1 << v
    # 2. Readers of each tensor inside the window, real and virtual.
    readers: dict[int, set[int]] = {}
    for v in window:
        for t in d.op_in[v]:
            readers.setdefault(t, set()).add(v)
    everyone = (1 << d.n_ops) - 1
    graph_inputs = [(t, everyone) for t in readers if d.producer[t] < 0]
    for t, p_after in graph_inputs + [(t, desc[v]) for v in sub for t in d.op_out[v]]:
        outside = [c for c in d.consumers[t] if c not in window]
        if outside:
            for c in outside:
                m = p_after & anc[c] & u_mask
                while m:
                    low = m & -m
                    readers.setdefault(t, set()).add(low.bit_length() - 1)
                    m ^= low
    # 3. Tensors of the window: read there, or written by a window op.
    tensors = sorted(set(readers) | {t for v in window for t in d.op_out[v]})
    tid = {t: i for i, t in enumerate(tensors)}
    op_in: list[list[int]] = [[] for _ in sub]
    for t, rs in readers.items():
        for v in rs:
            op_in[new[v]].append(tid[t])
    op_out: list[tuple[int, ...]] = []
    for v in sub:
        if v in window:
            op_out.append(tuple(tid[t] for t in d.op_out[v]))
        else:
            op_out.append(tuple(tid[t] for t in d.op_out[v] if t in readers))
    # 4. Edges: whole-graph reachability restricted to the window, transitively reduced.
    preds: list[tuple[int, ...]] = []
    for v in sub:
        r = anc[v] & sub_mask
        covered = 0
        m = r
        while m:
            low = m & -m
            covered |= anc[low.bit_length() - 1]
            m ^= low
        direct = r & ~covered
        ps = []
        while direct:
            low = direct & -direct
            ps.append(new[low.bit_length() - 1])
            direct ^= low
        preds.append(tuple(sorted(ps)))
    succs: list[list[int]] = [[] for _ in sub]
    for i, pred in enumerate(preds):
        for p in pred:
            succs[p].append(i)
    consumers = [tuple(sorted(new[v] for v in readers.get(t, ()))) for t in tensors]
    producer = tuple(new[d.producer[t]] if d.producer[t] >= 0 else -1 for t in tensors)
    pinned = tuple(d.pinned[t] for t in tensors)
    initial = tuple(
        tid[t] for t in tensors if d.producer[t] < 0 and (consumers[tid[t]] or pinned[tid[t]])
    )
    return Dense(
        n_ops=len(sub),
        names=tuple(d.names[t] for t in tensors),
        sizes=tuple(d.sizes[t] for t in tensors),
        producer=producer,
        consumers=tuple(consumers),
        pinned=pinned,
        initial=initial,
        op_in=tuple(tuple(sorted(ins)) for ins in op_in),
        op_out=tuple(op_out),
        preds=tuple(preds),
        succs=tuple(tuple(s) for s in succs),
    )


def windows(n_ops: int, size: int) -> list[set[int]]:
    """Runs of ``size`` consecutive ops overlapping by half (one run if the graph is small)."""
    if n_ops <= size:
        return [set(range(n_ops))] if n_ops else []
    step = max(1, size // 2)
    starts = list(range(0, n_ops - size + 1, step))
    if starts[-1] != n_ops - size:
        starts.append(n_ops - size)
    return [set(range(s, s + size)) for s in starts]


def neighbourhood(d: Dense, core: set[int], *, hops: int = 6, fan_out: int = 3) -> set[int]:
    """``core`` plus the other readers of every tensor it reads or writes, each grown forwards
    through ops whose predecessors are all in the window (at most ``hops`` steps, not past an
    op with ``fan_out`` or more successors), so that a neighbour cell's preprocessing comes whole.
    """
    out = set(core)
    frontier = []
    for v in sorted(core):
        for t in (*d.op_in[v], *d.op_out[v]):
            for c in d.consumers[t]:
                if c not in out:
                    out.add(c)
                    frontier.append(c)
    for _ in range(hops):
        grown = []
        for v in frontier:
            if len(d.succs[v]) >= fan_out:
                continue
            for w in d.succs[v]:
                if w not in out and all(p in out for p in d.preds[w]):
                    out.add(w)
                    grown.append(w)
        frontier = grown
    return out
