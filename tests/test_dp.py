"""The exact scheduler: equal to brute force, never worse than a baseline, honest about proofs."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dags import dags, random_dag
from serenity.ir import Graph, Op, Tensor
from serenity.memory import simulate
from serenity.schedulers import BASELINES, DEFAULT_METHOD, SCHEDULERS, schedule
from serenity.schedulers.bounds import reachability, static_lower_bound
from serenity.schedulers.decompose import neighbourhood, window_dense
from serenity.schedulers.dp import schedule_dp, window_bound
from serenity.schedulers.reduce import build_items
from serenity.schedulers.search import best_first, item_cost

SETTINGS = settings(
    max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def brute_force(g: Graph) -> int:
    """The smallest peak over all topological orders, enumerated one by one."""
    d = g.dense
    best = [simulate(g, g.listed_order).peak]
    indeg = [len(p) for p in d.preds]
    order: list[int] = []

    def walk() -> None:
        if len(order) == d.n_ops:
            best[0] = min(best[0], simulate(g, order, check=False).peak)
            return
        for v in range(d.n_ops):
            if indeg[v] == 0 and v not in order:
                order.append(v)
                for w in d.succs[v]:
                    indeg[w] -= 1
                walk()
                for w in d.succs[v]:
                    indeg[w] += 1
                order.pop()

    walk()
    return best[0]


def _t(name: str, size: int) -> Tensor:
    return Tensor(name, (size,), "int8", size)


def test_registered_as_default() -> None:
    assert SCHEDULERS["optimal"] is schedule_dp
    assert SCHEDULERS["auto"].__name__ == "schedule_auto"
    assert DEFAULT_METHOD == "auto"


@SETTINGS
@given(dags(min_ops=1, max_ops=9))
def test_equals_brute_force(g: Graph) -> None:
    r = schedule_dp(g)
    assert g.is_topological(r.order)
    assert r.peak == brute_force(g)
    assert r.proven_optimal
    assert r.lower_bound == r.peak


@SETTINGS
@given(dags(min_ops=1, max_ops=9))
def test_bounds_never_above_optimum(g: Graph) -> None:
    opt = brute_force(g)
    assert static_lower_bound(g.dense) <= opt
    # Every window of consecutive ops, grown by its neighbourhood, bounds the optimum from below.
    d = g.dense
    anc, desc = reachability(d)
    for start in range(0, d.n_ops, 2):
        core = set(range(start, min(d.n_ops, start + 3)))
        sub = window_dense(d, neighbourhood(d, core), anc, desc)
        out = best_first(build_items(sub), ub=10**12, lb=static_lower_bound(sub))
        assert out.proven and out.peak <= opt


@SETTINGS
@given(dags(min_ops=1, max_ops=14))
def test_variants_agree(g: Graph) -> None:
    """Fused or not, run-now or not, windowed or not: the same optimum."""
    d = g.dense
    ref = best_first(build_items(d, fuse=False), ub=10**12, run_now=False)
    fused = build_items(d)
    out = best_first(fused, ub=10**12, lb=static_lower_bound(d))
    assert out.peak == ref.peak
    order = [v for i in out.order or [] for v in fused.ops[i]]
    assert simulate(g, order).peak == out.peak == item_cost(fused, out.order or [])
    assert schedule_dp(g, fuse=False).peak == ref.peak
    cores = [set(range(s, min(d.n_ops, s + 4))) for s in range(0, d.n_ops, 4)]
    lb, _ = window_bound(d, 0, 10**12, None, cores)
    assert lb <= ref.peak


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(10, 30))
def test_never_worse_than_a_baseline(seed: int, n_ops: int) -> None:
    g = random_dag(seed, n_ops, max_width=5)
    r = schedule_dp(g, time_limit=5.0)
    for name, fn in BASELINES.items():
        assert r.peak <= fn(g).peak, name
    assert r.lower_bound <= r.peak


def test_time_limit_never_claims_a_proof() -> None:
    g = random_dag(13, 40, max_width=6)  # needs ~20k states to prove
    full = schedule_dp(g)
    assert full.proven_optimal and full.stats["states"] > 5000
    cut = schedule_dp(g, time_limit=0.0)
    assert cut.lower_bound <= full.peak <= cut.peak
    assert cut.proven_optimal == (cut.peak == cut.lower_bound)
    assert "time limit" in cut.stats["stopped"]


def test_state_cap_stops_with_a_message() -> None:
    g = random_dag(13, 40, max_width=6)
    r = schedule_dp(g, max_states=100)
    assert "state cap of 100" in r.stats["stopped"]
    assert r.lower_bound <= schedule_dp(g).peak <= r.peak


def test_empty_and_single_op() -> None:
    g = Graph("one", [Op("a", "Relu", ("x",), ("y",))], [_t("x", 3), _t("y", 5)], ["x"], ["y"])
    r = schedule(g, "optimal")
    assert r.order == (0,) and r.peak == 8 and r.proven_optimal


@pytest.mark.parametrize("seed", range(5))
def test_deterministic(seed: int) -> None:
    g = random_dag(seed, 25, max_width=random.Random(seed).randint(2, 6))
    assert schedule_dp(g).order == schedule_dp(g).order


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(1, 30), st.booleans())
def test_compiled_search_matches_reference(seed: int, n_ops: int, run_now: bool) -> None:
    from serenity.schedulers.search_jit import AVAILABLE, best_first_jit

    if not AVAILABLE:
        pytest.skip("numba is not installed")
    g = random_dag(seed, n_ops, max_width=6)
    items = build_items(g.dense)
    lb = static_lower_bound(g.dense)
    ref = best_first(items, ub=10**12, lb=lb, run_now=run_now)
    jit = best_first_jit(items, ub=10**12, lb=lb, run_now=run_now)
    assert jit.proven and jit.peak == ref.peak
    assert item_cost(items, jit.order or []) == jit.peak
    order = [v for i in jit.order or [] for v in items.ops[i]]
    assert simulate(g, order).peak == jit.peak


@pytest.mark.parametrize("kernel", ["search_jit", "search_wide"])
def test_compiled_search_honours_caps(kernel: str) -> None:
    from serenity.schedulers import search_jit, search_wide

    if not search_jit.AVAILABLE:
        pytest.skip("numba is not installed")
    search = search_jit.best_first_jit if kernel == "search_jit" else search_wide.best_first_wide
    g = random_dag(13, 40, max_width=6)
    items = build_items(g.dense)
    lb = static_lower_bound(g.dense)
    opt = best_first(items, ub=10**12, lb=lb).peak
    capped = search(items, ub=10**12, lb=lb, max_states=10)
    assert not capped.proven and "state cap" in capped.stopped and capped.lower_bound <= opt
    timed = search(items, ub=10**12, lb=lb, time_limit=0.0)
    assert not timed.proven and "time limit" in timed.stopped and timed.lower_bound <= opt


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(1, 16))
def test_budget_variant_equals_best_first(seed: int, n_ops: int) -> None:
    """The paper's budgeted level DP and the best-first search agree, and both are proven."""
    from serenity.schedulers.budget import schedule_budget

    g = random_dag(seed, n_ops, max_width=5)
    a, b = schedule_budget(g), schedule_dp(g)
    assert a.proven_optimal and b.proven_optimal
    assert a.peak == b.peak == a.lower_bound


def test_budget_variant_reports_explosion_honestly() -> None:
    from serenity.schedulers.budget import schedule_budget

    g = random_dag(13, 40, max_width=6)
    opt = schedule_dp(g).peak
    r = schedule_budget(g, max_states=50)
    assert r.lower_bound <= opt <= r.peak
    assert r.proven_optimal == (r.peak == r.lower_bound)
    assert any("exploded" in b for b in r.stats["budgets"])


@settings(max_examples=40, derandomize=True, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 90), st.booleans())
def test_wide_compiled_search_matches_reference(seed: int, n_ops: int, fuse: bool) -> None:
    """Several state words (more than 63 items without fusion) give the reference's peak."""
    from serenity.schedulers.search_jit import AVAILABLE
    from serenity.schedulers.search_wide import best_first_wide

    if not AVAILABLE:
        pytest.skip("numba is not installed")
    g = random_dag(seed, n_ops, max_width=2 if n_ops > 30 else 5)
    items = build_items(g.dense, fuse=fuse)
    lb = static_lower_bound(g.dense)
    ref = best_first(items, ub=10**12, lb=lb, max_states=200_000)
    wide = best_first_wide(items, ub=10**12, lb=lb, max_states=200_000)
    if ref.proven and wide.proven:
        assert wide.peak == ref.peak
        order = [v for i in wide.order or [] for v in items.ops[i]]
        assert simulate(g, order).peak == wide.peak
    else:
        assert wide.lower_bound <= ref.peak and ref.lower_bound <= wide.peak
