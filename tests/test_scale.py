"""Limits that hold: an exact state cap, time limits over every phase, Ctrl-C, long graphs
(issue 7, items 3 and 4). Speed targets live in benchmarks/bench_scale.py; these only check
that the limits are honoured with generous margins."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dags import random_dag
from serenity.ir import Graph, Op, Tensor
from serenity.schedulers import SCHEDULERS, schedule
from serenity.schedulers.bounds import static_lower_bound
from serenity.schedulers.dp import schedule_dp
from serenity.schedulers.hourglass import pieces
from serenity.schedulers.reduce import build_items
from serenity.schedulers.search import best_first
from serenity.schedulers.search_jit import (
    AVAILABLE,
    INTERRUPTED,
    best_first_jit,
    deferred_sigint,
    poll,
)
from serenity.schedulers.search_wide import best_first_wide

SEARCHES = [best_first] + ([best_first_jit, best_first_wide] if AVAILABLE else [])


def residual_chain(n_blocks: int, seed: int = 0) -> Graph:
    """Blocks ``x -> a -> b``, ``x -> s``, ``add(x, b, s)``: a universal cut after each block."""
    rng = random.Random(seed)
    tensors = [Tensor("x0", (1,), "int8", rng.randint(1, 100))]
    ops: list[Op] = []
    for b in range(n_blocks):
        x, a, y, s, out = f"x{b}", f"a{b}", f"b{b}", f"s{b}", f"x{b + 1}"
        tensors += [Tensor(t, (1,), "int8", rng.randint(1, 100)) for t in (a, y, s, out)]
        ops += [Op(f"ca{b}", "Conv", (x,), (a,)), Op(f"cb{b}", "Conv", (a,), (y,)),
                Op(f"side{b}", "Relu", (x,), (s,)), Op(f"add{b}", "Add", (x, y, s), (out,))]  # fmt: skip
    return Graph("residual", ops, tensors, ["x0"], [f"x{n_blocks}"])


@pytest.mark.parametrize("search", SEARCHES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("cap", [1, 2, 7, 100])
def test_state_cap_is_exact(search: object, cap: int) -> None:
    """``max_states=N`` stores at most ``N`` states (the start state counts), never N + 4096."""
    g = random_dag(13, 40, max_width=6)
    items = build_items(g.dense)
    out = search(items, ub=10**12, lb=static_lower_bound(g.dense), max_states=cap)  # type: ignore[operator]
    assert out.stored <= cap
    assert not out.proven and "state cap" in out.stopped


@pytest.mark.parametrize("method", [*SCHEDULERS, "best"])
def test_time_limit_holds_for_every_method(method: str) -> None:
    g = random_dag(3, 4000, max_width=6)
    t0 = time.perf_counter()
    r = schedule(g, method, time_limit=0.3)
    took = time.perf_counter() - t0
    assert took < 0.3 + 1.5, f"{method}: {took:.2f} s"
    assert g.is_topological(r.order)
    assert r.lower_bound <= r.peak
    if not r.proven_optimal and method in ("optimal", "best"):
        assert "time limit" in str(r.stats.get("stopped", ""))


def test_zero_time_limit_returns_a_valid_unproven_order() -> None:
    g = random_dag(13, 40, max_width=6)
    full = schedule_dp(g)
    cut = schedule_dp(g, time_limit=0.0)
    assert g.is_topological(cut.order)
    assert cut.lower_bound <= full.peak <= cut.peak
    assert cut.proven_optimal == (cut.peak == cut.lower_bound)
    assert "time limit" in cut.stats["stopped"]


def test_long_chain_is_solved_at_once() -> None:
    n = 20_000
    tensors = [Tensor(f"t{i}", (1,), "int8", 1 + i % 7) for i in range(n + 1)]
    ops = [Op(f"op{i}", "Relu", (f"t{i}",), (f"t{i + 1}",)) for i in range(n)]
    g = Graph("chain", ops, tensors, ["t0"], [f"t{n}"])
    r = schedule_dp(g)
    assert r.proven_optimal and r.order == tuple(range(n)) and r.lower_bound == r.peak == 13


def test_residual_chain_is_split_and_proven() -> None:
    g = residual_chain(500)
    assert len(pieces(g)) > 100
    r = schedule_dp(g)
    assert r.proven_optimal and r.peak == r.lower_bound
    assert r.peak == schedule_dp(g, split=False, use_windows=False).peak


def test_cut_short_pieces_keep_a_valid_order() -> None:
    g = residual_chain(3000)
    r = schedule_dp(g, time_limit=0.05)
    assert g.is_topological(r.order) and r.lower_bound <= r.peak


def test_ctrl_c_flag_becomes_keyboard_interrupt() -> None:
    """Inside a kernel, SIGINT only sets the flag the clock poll reports; KeyboardInterrupt is
    raised once the kernel has returned (never inside numba's objmode)."""
    with pytest.raises(KeyboardInterrupt), deferred_sigint():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert poll(-1.0) == INTERRUPTED
    assert poll(-1.0) != INTERRUPTED


@pytest.mark.skipif(not AVAILABLE, reason="numba is not installed")
def test_ctrl_c_during_compiled_search_is_a_clean_keyboard_interrupt(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, {tests!r})
        from dags import random_dag
        from serenity.schedulers.reduce import build_items
        from serenity.schedulers.search_jit import best_first_jit
        items = build_items(random_dag(2, 62, max_width=12, max_size=10**6).dense, fuse=False)
        best_first_jit(items, ub=10**15, lb=0, max_states=3, time_limit=0)  # load the kernel
        print("ready", flush=True)
        try:
            best_first_jit(items, ub=10**15, lb=0, max_states=5_000_000, run_now=False)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(130)
        print("finished", flush=True)
        """
    ).format(tests=str(Path(__file__).parent))
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert "SystemError" not in err and "Traceback" not in err, err
    assert out.strip() == "interrupted" and child.returncode == 130
