"""Optimality-preserving reductions (chain fusion R1/R2, sinking R3, run-now): each keeps the optimum."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from serenity.ir import Graph, Op, Tensor
from serenity.memory import simulate
from serenity.schedulers.dp import schedule_dp
from serenity.schedulers.reduce import build_items
from serenity.schedulers.search import best_first, item_cost
from test_dp import brute_force


def _t(name: str, size: int) -> Tensor:
    return Tensor(name, (size,), "int8", size)


def randwire_like(seed: int) -> Graph:
    """Nodes that aggregate scaled predecessors (Mul per edge, then Sum) and convolve, as in
    RandWire; random sizes so that R3 fires on some edges and not on others."""
    rng = random.Random(seed)
    tensors = [_t("x", rng.randint(1, 20))]
    ops: list[Op] = []
    n_nodes = rng.randint(2, 6)
    for k in range(n_nodes):
        preds = [j for j in range(k) if rng.random() < 0.5]
        if not preds:
            ops.append(Op(f"r{k}", "Relu", ("x",), (f"a{k}",)))
            tensors.append(_t(f"a{k}", rng.randint(1, 20)))
            src = f"a{k}"
        else:
            scaled = []
            for j in preds:
                u = f"u{j}_{k}"
                tensors.append(_t(u, rng.randint(1, 20)))
                ops.append(Op(f"m{j}_{k}", "Mul", (f"n{j}",), (u,)))
                scaled.append(u)
            tensors.append(_t(f"s{k}", rng.randint(1, 20)))
            ops.append(Op(f"s{k}", "Sum", tuple(scaled), (f"s{k}",)))
            src = f"s{k}"
        tensors.append(_t(f"n{k}", rng.randint(1, 20)))
        ops.append(Op(f"c{k}", "Conv", (src,), (f"n{k}",)))
    read = {t for op in ops for t in op.inputs}
    outputs = [f"n{k}" for k in range(n_nodes) if f"n{k}" not in read]
    return Graph(f"rw{seed}", ops, tensors, ["x"], outputs)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_reductions_keep_the_optimum_on_randwire_like_graphs(seed: int) -> None:
    g = randwire_like(seed)
    plain = best_first(build_items(g.dense, fuse=False), ub=10**12, run_now=False)
    items = build_items(g.dense)
    fused = best_first(items, ub=10**12)
    assert fused.proven and fused.peak == plain.peak
    assert item_cost(items, fused.order or []) == fused.peak
    assert simulate(g, [v for i in fused.order or [] for v in items.ops[i]]).peak == fused.peak
    if len(g) <= 9:
        assert fused.peak == brute_force(g)


def test_chain_fusion_hand_built() -> None:
    """x -> a -> b -> c with a private chain; a side branch y reads x."""
    g = Graph(
        "chain",
        [
            Op("a", "Conv", ("x",), ("ta",)),
            Op("b", "Relu", ("ta",), ("tb",)),
            Op("c", "Pool", ("tb",), ("tc",)),
            Op("y", "Conv", ("x",), ("ty",)),
            Op("z", "Add", ("tc", "ty"), ("out",)),
        ],
        [_t("x", 8), _t("ta", 16), _t("tb", 16), _t("tc", 4), _t("ty", 8), _t("out", 4)],
        ["x"],
        ["out"],
    )
    items = build_items(g.dense)
    # R1 fuses b, c; R2 may not delay the chain head a, but R3 sinks a into b (F=8 <= K=16 and
    # F + O - K = 8 <= out(b) = 16).
    assert (0, 1, 2) in items.ops and len(items) == 3
    assert build_items(g.dense, fuse=False).ops == ((0,), (1,), (2,), (3,), (4,))
    r = schedule_dp(g)
    assert r.peak == brute_force(g) and r.proven_optimal


def test_sink_rule_hand_built() -> None:
    """RandWire's edge scaling: t is read by two Muls, each feeding a Sum; the Muls sink."""
    g = Graph(
        "sink",
        [
            Op("p", "Conv", ("x",), ("t",)),
            Op("m1", "Mul", ("t",), ("u1",)),
            Op("m2", "Mul", ("t",), ("u2",)),
            Op("q", "Conv", ("x",), ("w",)),
            Op("m3", "Mul", ("w",), ("u3",)),
            Op("s1", "Sum", ("u1", "u3"), ("o1",)),
            Op("s2", "Sum", ("u2", "w"), ("o2",)),
        ],
        [_t("x", 4), _t("t", 8), _t("u1", 8), _t("u2", 8), _t("w", 8), _t("u3", 8),
         _t("o1", 8), _t("o2", 8)],
        ["x"],
        ["o1", "o2"],
    )  # fmt: skip
    items = build_items(g.dense)
    assert (1, 4, 5) in items.ops and (2, 6) in items.ops
    r = schedule_dp(g)
    assert r.peak == brute_force(g) and r.proven_optimal
