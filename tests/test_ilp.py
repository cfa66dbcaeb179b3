"""The CP-SAT scheduler: equal to brute force and to the exact DP, honest about proofs, limits
and sizes CP-SAT cannot hold."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
from hypothesis import HealthCheck, given, settings

from dags import dags, random_dag
from serenity import zoo
from serenity.cli import main
from serenity.ir import Graph, Op, Tensor, with_memory_model
from serenity.memory import inplace_pairs, simulate
from serenity.schedulers import NOT_IN_PORTFOLIO, SCHEDULERS, schedule
from serenity.schedulers.dp import schedule_dp
from serenity.schedulers.ilp import MAX_TOTAL, schedule_ilp, windows
from test_dp import brute_force
from test_inplace_planning import inplace_dag, inplace_dags

pytest.importorskip("ortools")

SETTINGS = settings(
    max_examples=40, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def scaled(g: Graph, k: int, offset: int = 0) -> Graph:
    """``g`` with every activation size ``s`` replaced by ``s << k`` (plus ``offset`` if > 0)."""
    tensors = [
        replace(t, nbytes=(t.nbytes << k) + (offset if t.nbytes else 0)) if t.is_activation else t
        for t in g.tensors.values()
    ]
    return Graph(g.name, g.ops, tensors, g.inputs, g.outputs)


def check(g: Graph, r: object) -> None:
    """The properties every result holds: a topological order, the shared cost model's peak, a
    bound below it, and a proof only where the bound is met."""
    from serenity.schedulers.result import ScheduleResult

    assert isinstance(r, ScheduleResult)
    assert g.is_topological(r.order)
    assert r.peak == simulate(g, r.order).peak
    assert r.lower_bound <= r.peak
    assert not r.proven_optimal or r.lower_bound == r.peak


def test_registered_but_not_in_the_portfolio() -> None:
    assert SCHEDULERS["ilp"] is schedule_ilp
    assert "ilp" in NOT_IN_PORTFOLIO
    g = random_dag(2, 12)
    assert "ilp" not in schedule(g, "best").stats["peaks"]


@SETTINGS
@given(dags(min_ops=1, max_ops=8))
def test_equals_brute_force_and_dp(g: Graph) -> None:
    r = schedule_ilp(g)
    check(g, r)
    assert r.proven_optimal
    assert r.peak == brute_force(g) == schedule_dp(g).peak


@SETTINGS
@given(inplace_dags(min_ops=1, max_ops=8))
def test_inplace_equals_brute_force_and_dp(g: Graph) -> None:
    """Under ``inplace`` the program's proven peak is the brute-force optimum and the DP's, and
    its bound never passes the optimum."""
    r = schedule_ilp(g, workers=1)
    check(g, r)
    best = brute_force(g)
    assert r.lower_bound <= best
    assert r.proven_optimal
    assert r.peak == best == schedule_dp(g).peak


def test_inplace_program_alone_finds_the_optimum() -> None:
    """The CP-SAT program itself, without the incumbent or the static bound that often settle
    small graphs before it is built, on graphs where writing in place lowers the optimum: its
    optimum is the brute-force one and re-costs exactly (simulate), and a hinted order with its
    in-place pairs is a solution at its own peak."""
    from ortools.sat.python import cp_model

    from serenity.schedulers.ilp import build_model

    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    saving = 0
    for seed in range(40):
        g = inplace_dag(seed, 8)
        d = g.dense
        best = brute_force(g)
        if best == brute_force(with_memory_model(g, "tflm")):
            continue
        saving += 1
        prog = build_model(cp_model, d, windows(d), 1, lb=0, ub=sum(d.sizes))
        assert prog is not None
        assert solver.solve(prog.model) == cp_model.OPTIMAL
        found = sorted(range(d.n_ops), key=lambda v: solver.value(prog.steps[v]))
        assert solver.objective_value == best == simulate(g, found).peak
        order = list(g.listed_order)
        peak = simulate(g, order).peak
        hinted = build_model(cp_model, d, windows(d), 1, lb=0, ub=sum(d.sizes))
        assert hinted is not None
        hinted.hint(order, peak, inplace_pairs(d, order))
        hinted.model.add(hinted.peak <= peak)
        fixed = cp_model.CpSolver()
        fixed.parameters.num_workers = 1
        fixed.parameters.fix_variables_to_their_hinted_value = True
        assert fixed.solve(hinted.model) == cp_model.OPTIMAL
    assert saving >= 15


def test_windows_hold_every_topological_position() -> None:
    """ASAP = ancestors, ALAP = n - 1 - descendants: on a diamond a -> (b, c) -> d."""
    t = [Tensor(n, (1,), "int8", 1) for n in "xabcd"]
    ops = [Op("A", "R", ("x",), ("a",)), Op("B", "R", ("a",), ("b",)), Op("C", "R", ("a",), ("c",)),
           Op("D", "Add", ("b", "c"), ("d",))]  # fmt: skip
    w = windows(Graph("diamond", ops, t, ["x"], ["d"]).dense)
    assert (w.asap, w.alap) == ([0, 1, 1, 3], [0, 2, 2, 3])


@pytest.mark.parametrize("name", ["nasnet_a_normal_cell", "darts_normal_cell", "swiftnet_cell_a"])
def test_zoo_cells_prove_the_dp_optimum(name: str) -> None:
    g = zoo.graph(name)
    r = schedule_ilp(g, time_limit=60)
    check(g, r)
    dp = schedule_dp(g)
    assert dp.proven_optimal and r.proven_optimal
    assert r.peak == r.lower_bound == dp.peak


def test_tiny_time_limit_returns_a_valid_order_without_a_false_proof() -> None:
    g = random_dag(13, 40, max_width=6)
    opt = schedule_dp(g).peak
    for limit in (0.0, 0.01):
        r = schedule_ilp(g, time_limit=limit)
        check(g, r)
        assert r.lower_bound <= opt <= r.peak
        if not r.proven_optimal:
            assert r.stats["stopped"]


def test_time_limit_holds_on_a_long_graph() -> None:
    """4000 ops: the model is refused or cut short, never built past the limit."""
    import time

    g = random_dag(3, 4000, max_width=6)
    t0 = time.perf_counter()
    r = schedule_ilp(g, time_limit=0.3)
    assert time.perf_counter() - t0 < 0.3 + 1.5
    check(g, r)
    assert r.stats["stopped"]


@pytest.mark.parametrize("seed", range(4))
def test_sizes_scaled_by_2_60_scale_the_answer(seed: int) -> None:
    g = random_dag(seed, 10, max_width=4)
    small, big = schedule_ilp(g), schedule_ilp(scaled(g, 60))
    check(scaled(g, 60), big)
    assert big.proven_optimal and big.peak == small.peak << 60


@pytest.mark.parametrize("seed", range(4))
def test_sizes_without_a_common_factor_fall_back_honestly(seed: int) -> None:
    """Sizes near 2^62 with gcd 1 cannot be summed in int64: the baseline, no false proof."""
    g = scaled(random_dag(seed, 10, max_width=4), 0, offset=1 << 62)
    r = schedule_ilp(g)
    check(g, r)
    assert r.lower_bound <= brute_force(g) <= r.peak
    assert "status" not in r.stats  # CP-SAT never saw these sizes
    if not r.proven_optimal:
        assert "too large" in r.stats["stopped"] and str(MAX_TOTAL.bit_length() - 1) in r.stats["stopped"]


def test_workers_and_determinism() -> None:
    g = random_dag(7, 20, max_width=5)
    one = schedule_ilp(g, workers=1)
    assert one.stats["workers"] == 1 and one.proven_optimal
    assert schedule_ilp(g, workers=1).order == one.order
    assert schedule_ilp(g).peak == one.peak


def test_cli_schedule_with_method_ilp(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    src, out_path = tmp_path / "cell.onnx", tmp_path / "out.onnx"
    onnx.save(zoo.build("swiftnet_cell_a"), src)
    code = main(["schedule", str(src), "-o", str(out_path), "--method", "ilp", "--json"])
    d = json.loads(capsys.readouterr()[0])
    assert code == 0 and out_path.exists()
    assert d["method"] == "ilp" and d["proven_optimal"] is True
    assert d["peak_after"] == d["lower_bound"] <= d["peak_before"]
