"""Start-up: the command line imports only what a command needs, small searches never reach the
compiler, and a compile on first use says so on stderr (and a warm run does not).

Each check runs in a fresh interpreter, since this one has imported everything already. Speed
targets live in ``benchmarks/bench_startup.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from dags import random_dag
from onnx_graphs import wide
from serenity.schedulers.bounds import static_lower_bound
from serenity.schedulers.dp import search
from serenity.schedulers.reduce import build_items
from serenity.schedulers.warmup import progress_line

#: Heavy packages ``serenity schedule`` has no use for (the TFLite Micro runtime is the
#: package's extension module, which its ``__init__`` loads).
UNNEEDED = ("onnxruntime", "matplotlib", "ortools", "tflite_micro", "torch")


def python(code: str, *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter; fail the test on a non-zero exit."""
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r


def test_cli_start_imports_nothing_heavy() -> None:
    code = (
        "import sys, json, serenity.cli, serenity.commands.schedule\n"
        "serenity.cli.build_parser()\n"
        "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))\n"
    )
    loaded = set(json.loads(python(code).stdout))
    assert not loaded & {*UNNEEDED, "numba", "numpy", "onnx", "rich"}


@pytest.mark.parametrize("method", ["optimal", "auto"])
def test_scheduling_a_small_model_stays_off_the_compiler(tmp_path: Path, method: str) -> None:
    """The whole schedule command on an ONNX model of a few ops: no numba (the pure-Python search
    answers), no runtime, no plotting, and no compile line even with an empty numba cache. The
    dynamic program alone needs no ILP solver either (``auto`` only looks whether one is installed)."""
    src, dst = tmp_path / "m.onnx", tmp_path / "m.sched.onnx"
    onnx.save(wide(6), src)
    code = (
        "import sys, json\n"
        "from serenity.cli import main\n"
        f"code = main(['schedule', {str(src)!r}, '-o', {str(dst)!r}, '--method', {method!r}, '--json'])\n"
        "print(json.dumps({'code': code, 'modules': sorted(m.split('.')[0] for m in sys.modules)}))\n"
    )
    r = python(code, env={"NUMBA_CACHE_DIR": str(tmp_path / "numba")})
    out = json.loads(r.stdout.splitlines()[-1])
    result = json.loads("\n".join(r.stdout.splitlines()[:-1]))
    assert out["code"] == 0 and result["proven_optimal"]
    unneeded = {*UNNEEDED, "numba"}
    assert not set(out["modules"]) & unneeded
    assert "compiling" not in r.stderr


def test_compile_line_only_on_a_cache_miss(tmp_path: Path) -> None:
    """With an empty numba cache the compiled search announces its compile, once; run again on
    the cache that run wrote, it loads the kernel silently."""
    pytest.importorskip("numba")
    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    code = "from serenity.schedulers.warmup import warm_up; warm_up(['search_jit'])"
    line = progress_line("serenity.schedulers.search_jit")
    cold = python(code, env=env)
    assert cold.stderr.splitlines() == [line]
    warm = python(code, env=env)
    assert "compiling" not in warm.stderr


@pytest.mark.parametrize("seed", range(12))
def test_the_path_never_changes_the_answer(seed: int) -> None:
    """Whichever search ``dp.search`` picks (the pure-Python reference, the compiled kernel, or
    the reference handing over to the kernel), the outcome is the same: order, peak, bound and
    proof, finished or stopped at a state cap. So skipping the compiler changes only the time."""
    pytest.importorskip("numba")
    g = random_dag(seed, 20 + 7 * seed, max_width=3 + seed % 4)
    for fuse in (True, False):
        items = build_items(g.dense, fuse=fuse)
        lb = static_lower_bound(g.dense)
        for cap in (10**6, 300):
            runs = [
                search(items, ub=10**12, lb=lb, time_limit=None, max_states=cap, compiled=c)
                for c in (False, True, None)
            ]
            seen = {(r.order and tuple(r.order), r.peak, r.lower_bound, r.proven) for r in runs}
            assert len(seen) == 1, (fuse, cap, seen)
