"""Benchmark: time limits that hold and bounded memory on 10,000- to 100,000-op graphs (issue 7).

Run ``.venv/bin/python benchmarks/bench_scale.py`` (``--help`` for options). For each size it
writes three JSON graphs into a temporary folder and runs the real CLI on each,
``serenity schedule G.json -o OUT.json --time-limit 2 --json``, as a child process:

* ``chain``: one op after another (a single topological order);
* ``residual``: a chain of residual blocks ``x -> a -> b -> add(x, b)`` (a universal cut after
  every block: the piecewise path, 4 ops a block);
* ``dag``: a random layered DAG of width up to 8 whose ops read the previous three layers
  (``bench_scheduler.layered_dag``; almost no cuts, one huge piece).

It measures each child's wall time and peak resident memory (``os.wait4``), and prints the load
and save times the CLI reports (``load_seconds``, ``save_seconds`` of ``--json``) and the start-up
cost of the CLI (a run on a 5-op graph). Targets, a miss exits non-zero:

* with ``--time-limit 2``: wall time <= 2 s + load + save + start-up + 0.5 s tolerance (the CLI's
  limit also counts loading, so this is the looser of the two), the scheduler's own ``seconds``
  <= 2 s + 0.5 s, and peak RSS < 2 GB;
* without a limit: the 100,000-op chain and residual chain are solved and proven optimal in
  under 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_scheduler import layered_dag
from rich.console import Console
from rich.table import Table
from verdict import verdict

from serenity.formats.json_io import to_dict
from serenity.ir import Graph, Op, Tensor

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / ".venv" / "bin" / "serenity"
TOLERANCE = 0.5
RSS_LIMIT_MB = 2048
UNLIMITED_TARGET = 30.0


def chain(n_ops: int, seed: int = 0) -> Graph:
    """``n_ops`` ops in a row, activation sizes 1-100 bytes."""
    rng = random.Random(seed)
    tensors = [Tensor("t0", (1,), "int8", rng.randint(1, 100))]
    ops = []
    for i in range(n_ops):
        tensors.append(Tensor(f"t{i + 1}", (1,), "int8", rng.randint(1, 100)))
        ops.append(Op(f"op{i}", "Relu", (f"t{i}",), (f"t{i + 1}",)))
    return Graph(f"chain{n_ops}", ops, tensors, ["t0"], [f"t{n_ops}"])


def residual(n_ops: int, seed: int = 0) -> Graph:
    """Residual blocks ``x -> a -> b -> add(x, b)`` (4 ops a block, with a second reader of
    ``x``), ``n_ops`` ops in all; sizes 1-100 bytes."""
    rng = random.Random(seed)
    tensors = [Tensor("x0", (1,), "int8", rng.randint(1, 100))]
    ops: list[Op] = []
    x = "x0"
    b = 0
    while len(ops) + 4 <= n_ops:
        names = [f"a{b}", f"b{b}", f"s{b}", f"x{b + 1}"]
        for name in names:
            tensors.append(Tensor(name, (1,), "int8", rng.randint(1, 100)))
        a, y, side, out = names
        ops += [
            Op(f"conv_a{b}", "Conv", (x,), (a,)),
            Op(f"conv_b{b}", "Conv", (a,), (y,)),
            Op(f"side{b}", "Relu", (x,), (side,)),
            Op(f"add{b}", "Add", (x, y, side), (out,)),
        ]
        x = out
        b += 1
    return Graph(f"residual{n_ops}", ops, tensors, ["x0"], [x])


def write(graph: Graph, folder: Path) -> Path:
    path = folder / f"{graph.name}.json"
    path.write_text(json.dumps(to_dict(graph)), encoding="utf-8")
    return path


def run_cli(args: list[str], folder: Path) -> tuple[float, float, int, str, str]:
    """Run the CLI; ``(wall seconds, peak RSS in MB, exit code, stdout, stderr)`` of the child
    (its own peak RSS, from ``os.wait4``)."""
    out_path, err_path = folder / "stdout.txt", folder / "stderr.txt"
    t0 = time.perf_counter()
    with out_path.open("w") as out, err_path.open("w") as err:
        child = subprocess.Popen([str(CLI), *args], stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    child.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, child.returncode, out_path.read_text(), err_path.read_text()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 30_000, 100_000])
    ap.add_argument("--time-limit", type=float, default=2.0)
    ap.add_argument("--kinds", nargs="*", default=["chain", "residual", "dag"])
    ap.add_argument("--cli-args", nargs="*", default=[], help="extra arguments for every CLI run")
    args = ap.parse_args(argv)
    console = Console(width=160)
    makers = {"chain": chain, "residual": residual, "dag": lambda n: layered_dag(1, n)}
    misses: list[str] = []
    table = Table(title=f"serenity schedule --time-limit {args.time_limit:g} (child process)")
    for col in ("graph", "ops", "limit", "wall s", "load s", "sched s", "save s", "RSS MB", "peak",
                "bound", "proven", "stopped"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("graph", "stopped") else "right")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tiny = write(chain(5), folder)
        startup, _, code, _, err = run_cli(
            ["schedule", str(tiny), "-o", str(folder / "o.json"), "--json", *args.cli_args], folder
        )
        if code != 0:
            console.print(f"[red]the CLI fails on a 5-op chain[/red]: {err.strip()}")
            return 1
        console.print(f"CLI start-up (5-op chain, whole command): {startup:.2f} s")
        runs = [(kind, n, args.time_limit) for n in args.sizes for kind in args.kinds]
        runs += [(kind, max(args.sizes), None) for kind in ("chain", "residual") if kind in args.kinds]
        for kind, n, limit in runs:
            path = write(makers[kind](n), folder)
            cmd = ["schedule", str(path), "-o", str(folder / f"out_{path.name}"), "--json"]
            if limit is not None:
                cmd += ["--time-limit", str(limit)]
            wall, rss, code, out, err = run_cli([*cmd, *args.cli_args], folder)
            name = f"{kind} {n}"
            if code != 0:
                misses.append(f"{name}: exit {code}: {err.strip()[-300:]}")
                table.add_row(name, str(n), str(limit), f"{wall:.2f}", "", "", "", f"{rss:.0f}",
                              "", "", "[red]FAILED[/red]", "")  # fmt: skip
                continue
            rep = json.loads(out)
            load, save, sched = rep.get("load_seconds"), rep.get("save_seconds"), rep["seconds"]
            stopped = str(rep["stats"].get("stopped", ""))
            table.add_row(
                name, str(n), "none" if limit is None else f"{limit:g}", f"{wall:.2f}",
                "?" if load is None else f"{load:.2f}", f"{sched:.2f}",
                "?" if save is None else f"{save:.2f}", f"{rss:.0f}", str(rep["peak_after"]),
                str(rep["lower_bound"]), "yes" if rep["proven_optimal"] else "no", stopped[:50],
            )  # fmt: skip
            if rss >= RSS_LIMIT_MB:
                misses.append(f"{name}: {rss:.0f} MB (target < {RSS_LIMIT_MB} MB)")
            if limit is None:
                if not rep["proven_optimal"] or wall >= UNLIMITED_TARGET:
                    misses.append(f"{name} without a limit: {wall:.1f} s, proven {rep['proven_optimal']}"
                                  f" (target: proven in < {UNLIMITED_TARGET:g} s)")  # fmt: skip
                continue
            allowed = limit + (load or 0.0) + (save or 0.0) + startup + TOLERANCE
            if wall > allowed:
                misses.append(f"{name}: {wall:.2f} s wall (target <= {allowed:.2f} s)")
            if sched > limit + TOLERANCE:
                misses.append(f"{name}: scheduler took {sched:.2f} s (target <= {limit + TOLERANCE:g} s)")
    console.print(table)
    return verdict(console, misses)


if __name__ == "__main__":
    sys.exit(main())
