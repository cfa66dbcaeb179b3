"""``--method auto``: the DP raced by the ILP; exact either way, and it says which proved it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from dags import dags, random_dag
from serenity import zoo
from serenity.cli import main
from serenity.ir import Graph
from serenity.memory import simulate
from serenity.schedulers import DEFAULT_METHOD, NOT_IN_PORTFOLIO, schedule
from serenity.schedulers.auto import HANDOVER, _Race, schedule_auto
from serenity.schedulers.clock import Deadline, stop_when
from serenity.schedulers.dp import schedule_dp
from test_dp import brute_force

pytest.importorskip("ortools")

SETTINGS = settings(
    max_examples=25, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_default_and_not_in_best() -> None:
    assert DEFAULT_METHOD == "auto"
    assert "auto" in NOT_IN_PORTFOLIO


@SETTINGS
@given(dags(max_ops=8))
def test_equals_brute_force_with_the_race_forced(g: Graph) -> None:
    # grace 0: the ILP child starts at the DP's first clock poll, so both run on every example.
    r = schedule_auto(g, grace=0.0, use_ilp=True)
    assert r.peak == brute_force(g) == simulate(g, r.order).peak
    assert r.proven_optimal
    assert r.stats["proved_by"] in {"optimal", "ilp", "bound"}


def test_ilp_proves_when_the_dp_is_capped() -> None:
    g = random_dag(0, 10, max_width=4)
    dp = schedule_dp(g, max_states=1, split=False, use_windows=False)
    assert not dp.proven_optimal  # the DP alone cannot prove it with one state
    r = schedule_auto(g, max_states=1, grace=0.0, use_ilp=True)
    assert r.proven_optimal
    assert r.stats["proved_by"] in {"ilp", "bound"}
    assert r.peak == brute_force(g)
    assert r.stats["portfolio"]["optimal"]["proven"] is False


def test_without_the_ilp_it_is_the_dp() -> None:
    g = zoo.graph("darts_normal_cell")
    a, b = schedule_auto(g, use_ilp=False), schedule_dp(g)
    assert (a.peak, a.lower_bound, a.proven_optimal) == (b.peak, b.lower_bound, b.proven_optimal)
    assert a.stats["proved_by"] == "optimal"
    assert "ilp" not in a.stats["portfolio"]


def test_a_stop_request_stops_the_dp_like_a_time_limit() -> None:
    g = random_dag(5, 120, max_width=12)
    with stop_when(lambda: True):
        r = schedule_dp(g, split=False)
    assert not r.proven_optimal
    assert "stopped on request" in r.stats["stopped"]
    assert simulate(g, r.order).peak == r.peak


def test_race_child_answers_and_stops() -> None:
    g = zoo.graph("darts_normal_cell")
    race = _Race(g, Deadline(30.0), grace=0.0, enabled=True)
    try:
        race.start()
        race.wait(30.0)
        assert race.result is not None and race.result.proven_optimal
        assert race.check()  # a proof from the child asks the DP to stop
    finally:
        race.stop()
    assert race.proc is not None and race.proc.poll() is not None
    assert race.tmp is None  # its files are gone


def test_time_limit_is_honoured_and_the_order_is_the_better_one() -> None:
    g = random_dag(7, 200, max_width=14)
    r = schedule_auto(g, time_limit=2.0, grace=0.0)
    assert r.seconds < 6.0
    assert simulate(g, r.order).peak == r.peak
    port = r.stats["portfolio"]
    peaks = [v["peak"] for v in port.values() if "peak" in v]
    assert r.peak == min(peaks)
    if not r.proven_optimal:
        assert r.stats["stopped"]


def test_cli_says_which_method_proved_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "cell.onnx"
    assert main(["zoo", "export", "darts_normal_cell", "-o", str(src)]) == 0
    capsys.readouterr()
    assert main(["schedule", str(src), "-o", str(tmp_path / "out.onnx"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "auto"
    assert out["proven_optimal"] is True
    assert out["stats"]["proved_by"] == "optimal"
    assert main(["schedule", str(src), "-o", str(tmp_path / "out2.onnx")]) == 0
    assert "yes, by the dynamic program" in capsys.readouterr().out


def test_named_method_still_runs_alone() -> None:
    g = zoo.graph("nasfpn_body")
    assert schedule(g, "optimal").method == "optimal"
    assert schedule(g).method == "auto"


def test_the_child_started_inside_the_search_answers() -> None:
    # A wide DAG the DP cannot prove: the child starts from the compiled search's clock poll
    # (grace 0.05 s), the DP stops at its cap, and the child's order comes back before the limit.
    g = random_dag(11, 160, max_width=14)
    r = schedule_auto(g, time_limit=8.0, grace=0.05, max_states=300_000, use_ilp=True)
    ilp = r.stats["portfolio"]["ilp"]
    assert "peak" in ilp, ilp
    assert ilp["started_at"] < 1.0
    assert r.peak == min(ilp["peak"], r.stats["portfolio"]["optimal"]["peak"])
    assert simulate(g, r.order).peak == r.peak
    assert r.seconds < 8.0 + 2 * HANDOVER
