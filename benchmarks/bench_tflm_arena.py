"""Benchmark of TFLite Micro's arena against Serenity's models of it (issue 8).

Run ``.venv/bin/python benchmarks/bench_tflm_arena.py`` (``--help`` for options). It prints two
tables and exits non-zero on any miss:

(a) **prediction**: for every model in ``../shared/models`` (``stem/`` included), in its listed
    order, the optimal order and 20 seeded random topological orders, the head TFLite Micro
    reports equals :func:`serenity.planning.tflm_greedy.predict_tflm_arena` byte for byte;
(b) **embedded optimum**: with the exact plan (``serenity.planning.exact.plan_exact``, over
    TFLM's buffers with the kernels' scratch buffers reserved) embedded as
    ``OfflineMemoryAllocation`` at the optimal order, TFLM's head equals the proven optimal peak
    (16-byte sizes) and the outputs are bit-identical to the original file's; where no
    placement reaches the peak the proven gap is printed. The last column shows what TFLM
    reports when the plan leaves scratch buffers out (TFLM then fits them around the plan).

Every TFLM run is a child process; ``--jobs`` of them run at once.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from serenity.formats import Model, load, save
from serenity.formats.tflite_plan import embed_plan
from serenity.ir import Graph, with_alignment
from serenity.planning import ArenaPlan, buffers_of, peak_of
from serenity.planning.tflm_greedy import predict_tflm_arena, tflm_buffers
from serenity.runtime import tflm
from serenity.schedulers import schedule

ROOT = Path(__file__).resolve().parents[1]


def model_paths(folder: Path) -> list[Path]:
    """The ``.tflite`` files of ``folder`` and of its subfolders (folders themselves skipped)."""
    return sorted(p for p in folder.rglob("*.tflite") if p.is_file())


def random_order(graph: Graph, rng: random.Random) -> list[int]:
    """A uniformly chosen ready op at each step (Kahn's algorithm), seeded by ``rng``."""
    d = graph.dense
    indeg = [len(p) for p in d.preds]
    ready = [i for i, k in enumerate(indeg) if k == 0]
    order = []
    while ready:
        v = ready.pop(rng.randrange(len(ready)))
        order.append(v)
        for w in d.succs[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                ready.append(w)
    return order


def predictions(
    path: Path, m: Model, n_random: int, work: Path, pool: ThreadPoolExecutor
) -> tuple[int, int, list[str]]:
    """(orders checked, hits, one line per miss) for the listed, optimal and random orders."""
    g = m.graph
    orders = [("listed", list(g.listed_order)), ("optimal", list(schedule(g).order))]
    orders += [(f"random#{s}", random_order(g, random.Random(s))) for s in range(n_random)]

    def measure(k: int, order: list[int]) -> int:
        out = work / f"{path.stem}-{k}.tflite"
        save(m, order, out)
        return tflm.arena_bytes(out)

    measured = list(pool.map(lambda ko: measure(*ko), [(k, o) for k, (_, o) in enumerate(orders)]))
    misses = []
    for (label, order), head in zip(orders, measured, strict=True):
        predicted = predict_tflm_arena(g, order)
        if predicted != head:
            misses.append(f"{path.name} {label}: TFLM {head} B, predicted {predicted} B")
    return len(orders), len(orders) - len(misses), misses


def exact_planner() -> Callable[..., ArenaPlan] | None:
    try:
        from serenity.planning.exact import plan_exact
    except ImportError:
        return None
    return plan_exact


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, default=ROOT.parent / "shared" / "models")
    ap.add_argument("--random", type=int, default=20, help="random topological orders per model")
    ap.add_argument("--jobs", type=int, default=2, help="TFLM child processes at once")
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds for each exact plan")
    args = ap.parse_args(argv)
    console = Console(width=150)
    paths = model_paths(args.models)
    if not paths:
        console.print(f"no .tflite models under {args.models}")
        return 1
    misses: list[str] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-tflm-") as tmp, ThreadPoolExecutor(args.jobs) as pool:
        work = Path(tmp)
        models = {p: load(p) for p in paths}
        # (a) prediction
        ta = Table(title="(a) tflm-greedy predicts TFLM's arena head")
        for col in ("model", "orders", "exact", "listed head", "optimal head", "peak (16 B)"):
            ta.add_column(col, justify="left" if col == "model" else "right")
        for p, m in models.items():
            n, hits, miss = predictions(p, m, args.random, work, pool)
            misses += miss
            g = m.graph
            opt = list(schedule(g).order)
            ta.add_row(
                str(p.relative_to(args.models)), str(n), f"{hits}/{n}",
                f"{predict_tflm_arena(g, g.listed_order):,}", f"{predict_tflm_arena(g, opt):,}",
                f"{peak_of(buffers_of(with_alignment(g, 16), opt)):,}",
            )  # fmt: skip
        console.print(ta)
        # (b) the exact plan embedded
        plan_exact = exact_planner()
        if plan_exact is None:
            misses.append("(b) serenity.planning.exact is missing: no exact plan to embed")
        else:
            tb_ = Table(title="(b) exact plan embedded (optimal order)")
            for col in (
                "model",
                "peak (16 B)",
                "plan",
                "proven",
                "gap",
                "TFLM head",
                "outputs",
                "no scratch room",
            ):
                tb_.add_column(col, justify="left" if col == "model" else "right")
            for p, m in models.items():
                row, miss = embedded(p, m, plan_exact, args.time_limit)
                misses += miss
                tb_.add_row(str(p.relative_to(args.models)), *row)
            console.print(tb_)
    for line in misses:
        console.print(f"[red]MISS[/red] {line}")
    console.print(f"{len(misses)} misses in {time.perf_counter() - t0:.1f} s")
    return 1 if misses else 0


def embedded(
    path: Path, m: Model, plan_exact: Callable[..., ArenaPlan], time_limit: float
) -> tuple[list[str], list[str]]:
    """One row of table (b) and its misses; a proven plan above the peak is a gap, not a miss."""
    g = m.graph
    order = list(schedule(g).order)
    tb = tflm_buffers(g, order)
    peak = peak_of(tb.buffers)
    plan = plan_exact(list(tb.buffers), time_limit=time_limit)
    offsets = {t: o for t, o in zip(tb.tensors, plan.offsets, strict=True) if t is not None}
    inputs = tflm.random_inputs(path, 0)
    original = [y.tobytes() for y in tflm.run(path, inputs)]
    run = tflm.execute_planned(embed_plan(m, order, offsets), inputs)
    same = [y.tobytes() for y in run.result.outputs] == original
    # The same exact placement without room for scratch buffers: what TFLM makes of it.
    bufs = buffers_of(with_alignment(g, 16), order)
    bare = plan_exact(bufs, time_limit=time_limit)
    bare_head = tflm.arena_bytes(
        embed_plan(m, order, {b.id: o for b, o in zip(bufs, bare.offsets, strict=True)})
    )
    misses = []
    name = path.name
    if not same:
        misses.append(f"{name}: outputs differ with the plan embedded")
    if run.measured != plan.arena:
        misses.append(f"{name}: TFLM head {run.measured} B, plan {plan.arena} B (plan not honoured)")
    if not plan.proven:
        misses.append(f"{name}: exact plan not proven ({plan.arena} B, bound {plan.lower_bound} B)")
    gap = "-" if plan.arena == peak else f"{plan.arena - peak:,} (proven)" if plan.proven else "?"
    scratch = "same" if bare_head == bare.arena else f"{bare_head:,} (+{bare_head - bare.arena:,})"
    row = [
        f"{peak:,}", f"{plan.arena:,}", "yes" if plan.proven else "no", gap,
        f"{run.measured:,}", "identical" if same else "DIFFER", scratch,
    ]  # fmt: skip
    return row, misses


if __name__ == "__main__":
    sys.exit(main())
