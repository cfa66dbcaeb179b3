"""Universal cuts and the piecewise schedule: exact by construction, checked by brute force."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from dags import random_dag, random_topological_order
from serenity.ir import Graph, Op, Tensor
from serenity.memory import simulate
from serenity.schedulers.hourglass import piece_graph, pieces, schedule_in_pieces, universal_cuts
from sim_reference import reference_peak


def blocks(seed: int, n_blocks: int, skip: bool) -> Graph:
    """Random DAG blocks joined in series; with ``skip``, each block also reads the output of the
    block before the previous one (like NAS cells reading two previous cells)."""
    rng = random.Random(seed)
    ops: list[Op] = []
    tensors = [Tensor("x", (1,), "int8", rng.randint(1, 40))]
    prev, prev2 = "x", None
    for b in range(n_blocks):
        width = rng.randint(1, 3)
        outs = []
        for i in range(width):
            ins = (prev,) if not (skip and prev2 and rng.random() < 0.6) else (prev, prev2)
            t = f"b{b}_{i}"
            tensors.append(Tensor(t, (1,), "int8", rng.randint(1, 40)))
            ops.append(Op(f"op_b{b}_{i}", "X", ins, (t,)))
            if rng.random() < 0.5:
                u = f"b{b}_{i}_u"
                tensors.append(Tensor(u, (1,), "int8", rng.randint(1, 40)))
                ops.append(Op(f"op_b{b}_{i}_u", "Y", (t,), (u,)))
                t = u
            outs.append(t)
        join = f"j{b}"
        tensors.append(Tensor(join, (1,), "int8", rng.randint(1, 40)))
        ops.append(Op(f"join{b}", "Concat", tuple(outs), (join,)))
        prev2, prev = prev, join
    return Graph(f"blocks{seed}", ops, tensors, ["x"], [prev])


def all_orders(g: Graph) -> list[tuple[int, ...]]:
    """Every topological order, by recursion over the ready set."""
    preds = [set(p) for p in g.dense.preds]
    out: list[tuple[int, ...]] = []

    def rec(prefix: list[int], done: set[int]) -> None:
        if len(prefix) == len(preds):
            out.append(tuple(prefix))
        for v in range(len(preds)):
            if v not in done and preds[v] <= done:
                done.add(v)
                prefix.append(v)
                rec(prefix, done)
                prefix.pop()
                done.remove(v)

    rec([], set())
    return out


graphs = st.one_of(
    st.builds(blocks, st.integers(0, 10**6), st.integers(1, 4), st.booleans()),
    st.builds(random_dag, st.integers(0, 10**6), st.integers(1, 8)),
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(graphs.filter(lambda g: len(g.ops) <= 8))
def test_cuts_are_exactly_the_prefixes_shared_by_every_order(g: Graph) -> None:
    orders = all_orders(g)
    shared = [k for k in range(1, len(g.ops)) if len({frozenset(o[:k]) for o in orders}) == 1]
    assert universal_cuts(g) == shared


@settings(max_examples=80, deadline=None, derandomize=True)
@given(graphs, st.integers(0, 1000))
def test_whole_peak_is_the_max_of_piece_peaks(g: Graph, seed: int) -> None:
    parts = pieces(g, min_piece=1)
    assert sorted(v for p in parts for v in p) == list(range(len(g.ops)))
    rng = random.Random(seed)
    whole: list[int] = []
    piece_peaks = []
    for j, part in enumerate(parts):
        pg = piece_graph(g, parts, j)
        local = random_topological_order(pg, rng)
        piece_peaks.append(simulate(pg, local).peak)
        whole.extend(part[i] for i in local)
    assert g.is_topological(whole)
    assert simulate(g, whole).peak == reference_peak(g, whole)[0] == max(piece_peaks)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    st.builds(blocks, st.integers(0, 10**6), st.integers(2, 3), st.booleans()).filter(
        lambda g: len(g.ops) <= 9
    )
)
def test_piecewise_optimum_equals_brute_force(g: Graph) -> None:
    best = min(simulate(g, o).peak for o in all_orders(g))

    def brute(pg: Graph, _limit: float | None, _floor: int):
        from serenity.schedulers.result import make_result

        o = min(all_orders(pg), key=lambda o: simulate(pg, o).peak)
        return make_result(pg, o, method="brute", seconds=0.0, lower_bound=simulate(pg, o).peak, proven=True)

    parts = pieces(g, min_piece=1)
    if len(parts) < 2:
        return
    r = schedule_in_pieces(g, brute, method="pieces", min_piece=1)
    assert r is not None and r.peak == best and r.proven_optimal and r.lower_bound == best


def test_nas_like_blocks_with_skip_inputs_have_cuts() -> None:
    g = blocks(3, 6, skip=True)
    assert len(universal_cuts(g)) >= 1
    assert len(pieces(g, min_piece=1)) == len(universal_cuts(g)) + 1


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.builds(blocks, st.integers(0, 10**6), st.integers(2, 12), st.booleans()))
def test_split_dp_equals_unsplit_dp(g: Graph) -> None:
    from serenity.schedulers.dp import schedule_dp

    whole = schedule_dp(g, split=False)
    split = schedule_dp(g)
    assert whole.proven_optimal and split.proven_optimal
    assert split.peak == whole.peak == split.lower_bound
    assert g.is_topological(split.order)
    if len(pieces(g)) > 1:
        assert split.stats["pieces"] == len(pieces(g))
