"""Benchmark of the exact scheduler (``optimal``) against the targets of issue 3.

Run ``.venv/bin/python benchmarks/bench_scheduler.py`` (``--help`` for options). It prints one
table row per model and exits non-zero when a target is missed:

* every model in ``../shared/models`` and every zoo network, whole: proven optimal;
* every zoo network of 550-900 ops (NASNet-A size): proven in under 1 s, process under 1 GB;
* 200 random layered DAGs of 25-40 ops (width up to 8, sizes 1-100): all proven, under 10 s.

The compiled search is warmed up first (numba loads or compiles it once per machine); the
warm-up time is printed separately.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from verdict import verdict

from serenity.ir import Graph, Op, Tensor
from serenity.schedulers.budget import schedule_budget
from serenity.schedulers.dp import schedule_dp
from serenity.schedulers.result import ScheduleResult

ROOT = Path(__file__).resolve().parents[1]
NASNET_SIZE = range(550, 901)


def layered_dag(seed: int, n_ops: int, max_width: int = 8) -> Graph:
    """A random layered DAG: layers of 1..``max_width`` ops, each reading 1-3 tensors of the
    previous three layers (at least one from the layer just before, half the time), sizes 1-100
    bytes; ops nobody reads are graph outputs."""
    rng = random.Random(seed)
    tensors = [Tensor("x", (1,), "int8", rng.randint(1, 100))]
    ops: list[Op] = []
    layers = [["x"]]
    while len(ops) < n_ops:
        layer = []
        for _ in range(rng.randint(1, min(max_width, n_ops - len(ops)))):
            recent = [t for lay in layers[-3:] for t in lay]
            ins = rng.sample(recent, rng.randint(1, min(3, len(recent))))
            if layers[-1][0] not in ins and rng.random() < 0.5:
                ins.append(rng.choice(layers[-1]))
            name = f"t{len(ops)}"
            tensors.append(Tensor(name, (1,), "int8", rng.randint(1, 100)))
            ops.append(Op(f"op{len(ops)}", "X", tuple(dict.fromkeys(ins)), (name,)))
            layer.append(name)
        layers.append(layer)
    read = {t for op in ops for t in op.inputs}
    outputs = [op.outputs[0] for op in ops if op.outputs[0] not in read]
    return Graph(f"layered{seed}", ops, tensors, ["x"], outputs)


def models(zoo_names: list[str] | None) -> list[tuple[str, Graph]]:
    """The model files under ``../shared/models`` (sub-folders too) through
    ``serenity.formats.load``, then the zoo networks."""
    from serenity.formats import load

    out = []
    shared = ROOT.parent / "shared" / "models"
    for path in sorted(shared.rglob("*")):  # sub-folders (e.g. stem/) included, folders skipped
        if path.is_file() and path.suffix in (".tflite", ".onnx", ".json"):
            out.append((f"shared/{path.relative_to(shared)}", load(path).graph))
    try:
        from serenity import zoo
        from serenity.formats.onnx_io import from_proto
    except ImportError:
        return out
    for name in zoo_names or zoo.names():
        out.append((f"zoo/{name}", from_proto(zoo.build(name)).graph))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--time-limit", type=float, default=30.0, help="seconds per model (default 30)")
    ap.add_argument("--dags", type=int, default=200, help="random DAGs (default 200)")
    ap.add_argument("--zoo", nargs="*", help="zoo networks to run (default: all)")
    ap.add_argument(
        "--compare-budget", action="store_true",
        help="also run the paper's budgeted level DP (optimal-budget) on every model, for comparison",
    )  # fmt: skip
    args = ap.parse_args(argv)
    console = Console(width=140)
    misses: list[str] = []

    t = time.perf_counter()
    from serenity.schedulers.warmup import warm_up

    warm_up()  # load (or compile) every kernel: small searches alone stay in pure Python
    console.print(f"warm-up (compiled search load/compile): {time.perf_counter() - t:.2f} s")

    table = Table(title="schedule_dp (method 'optimal')")
    for col in ("model", "ops", "items", "incumbent", "peak", "lower bound", "proven", "states", "seconds"):
        table.add_column(col, justify="left" if col == "model" else "right")

    def row(name: str, g: Graph, r: ScheduleResult) -> None:
        inc = str(r.stats.get("incumbent", "")).split(":")[-1]
        table.add_row(
            name, str(len(g)), str(r.stats.get("items", "")), inc, str(r.peak), str(r.lower_bound),
            "yes" if r.proven_optimal else "[red]NO[/red]", str(r.stats.get("states", 0)),
            f"{r.seconds:.3f}",
        )

    budget_rows: list[tuple[str, ScheduleResult, ScheduleResult]] = []
    for name, g in models(args.zoo):
        r = schedule_dp(g, time_limit=args.time_limit)
        row(name, g, r)
        if args.compare_budget:
            budget_rows.append((name, r, schedule_budget(g, time_limit=args.time_limit)))
        if not r.proven_optimal:
            misses.append(f"{name}: not proven (peak {r.peak}, bound {r.lower_bound}; "
                          f"{r.stats.get('stopped', '')})")
        if len(g) in NASNET_SIZE and name.startswith("zoo/") and r.seconds >= 1.0:
            misses.append(f"{name}: {r.seconds:.2f} s (target < 1 s)")

    # Random layered DAGs.
    t = time.perf_counter()
    proven = states = 0
    worst = 0.0
    for seed in range(args.dags):
        g = layered_dag(seed, random.Random(10_000 + seed).randint(25, 40))
        r = schedule_dp(g, time_limit=args.time_limit)
        proven += r.proven_optimal
        states += int(r.stats.get("states", 0))
        worst = max(worst, r.seconds)
    total = time.perf_counter() - t
    table.add_row(
        f"{args.dags} random DAGs (25-40 ops)", "", "", "", "", "",
        f"{proven}/{args.dags}", str(states), f"{total:.3f} (max {worst:.3f})",
    )
    if proven < args.dags:
        misses.append(f"random DAGs: {args.dags - proven} not proven")
    if total >= 10.0:
        misses.append(f"random DAGs: {total:.2f} s (target < 10 s)")

    console.print(table)
    if budget_rows:
        cmp = Table(title="the paper's budgeted level DP (optimal-budget) vs best-first (optimal)")
        for col in ("model", "peak", "proven", "states", "seconds", "best-first states", "best-first s"):
            cmp.add_column(col, justify="left" if col == "model" else "right")
        for name, r, b in budget_rows:
            cmp.add_row(
                name, str(b.peak), "yes" if b.proven_optimal else "no", str(b.stats.get("states", 0)),
                f"{b.seconds:.3f}", str(r.stats.get("states", 0)), f"{r.seconds:.3f}",
            )  # fmt: skip
        console.print(cmp)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    console.print(f"peak resident memory of the whole run: {rss_mb:.0f} MB")
    if rss_mb >= 1024:
        misses.append(f"memory: {rss_mb:.0f} MB (target < 1 GB)")
    return verdict(console, misses)


if __name__ == "__main__":
    sys.exit(main())
