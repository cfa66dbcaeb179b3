"""Benchmark of the exact arena planner (``plan_exact``) against the targets of issue 8.

Run ``.venv/bin/python benchmarks/bench_planner.py`` (``--help`` for options). It prints two
tables and exits non-zero when a target is missed:

* minimalloc's challenging suite (``../shared/benchmarks/minimalloc``, instances A-K): every
  instance placed within 1,048,576 bytes, the placement validated here by an independent sweep,
  in at most twice minimalloc's measured CPU seconds (the goal is to beat them);
* NASNet-size networks of the zoo (500-900 tensors) in their optimal order: the exact plan,
  proven, in under 1 s when the arena equals the peak, unaligned and with 16-byte alignment.

The machine may be shared, so each row shows process CPU seconds beside wall seconds; the
targets are judged on CPU seconds. The compiled search is warmed up first (numba loads or
compiles it once per machine); the warm-up time is printed separately.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table
from verdict import verdict

from serenity.errors import SerenityError
from serenity.planning import Buffer, buffers_of, peak_of, plan_exact, read_csv
from serenity.planning.exact import decide, split

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT.parent / "shared" / "benchmarks" / "minimalloc"
CAPACITY = 1_048_576
#: minimalloc's measured CPU seconds per instance (issue 8).
MINIMALLOC_SECONDS = {"A": 6.0, "B": 4.3, "C": 0.8, "D": 3.2, "E": 4.5, "F": 6.7, "G": 1.4, "H": 2.2,
                      "I": 4.4, "J": 1.1, "K": 0.7}  # fmt: skip
NASNET = ("nasnet_a_cifar", "nasnet_a_imagenet")


def independent_check(buffers: Sequence[Buffer], offsets: Sequence[int], capacity: int) -> str:
    """Why a placement is invalid ("" when it is valid): every pair of buffers live at one step
    must be disjoint in bytes and every buffer within ``capacity``. A plain pairwise loop,
    sharing no code with the planner or with ``check_plan``."""
    if len(offsets) != len(buffers):
        return f"{len(offsets)} offsets for {len(buffers)} buffers"
    for b, o in zip(buffers, offsets, strict=True):
        if o < 0 or o + b.size > capacity:
            return f"buffer {b.id} at [{o}, {o + b.size}) is outside [0, {capacity})"
    order = sorted(range(len(buffers)), key=lambda i: buffers[i].lower)
    for x, i in enumerate(order):
        a = buffers[i]
        for j in order[x + 1 :]:
            b = buffers[j]
            if b.lower >= a.upper:
                break
            if a.size and b.size and offsets[i] < offsets[j] + b.size and offsets[j] < offsets[i] + a.size:
                return f"buffers {a.id} and {b.id} are live together and overlap"
    return ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds per instance (default 60)")
    ap.add_argument("--only", nargs="*", help="instances of the suite to run (default: all)")
    args = ap.parse_args(argv)
    console = Console(width=140)
    misses: list[str] = []

    t = time.perf_counter()
    tiny = split([Buffer("a", 0, 2, 3), Buffer("b", 1, 3, 5), Buffer("c", 2, 4, 3)], 1)[0]
    decide(tiny, tiny.peak, None, {})  # the search itself (a plan may stop at its greedy)
    console.print(f"warm-up (compiled search load/compile): {time.perf_counter() - t:.2f} s")

    table = Table(title=f"plan_exact on minimalloc's challenging suite (capacity {CAPACITY:,})")
    for col in ("instance", "buffers", "peak", "arena", "valid", "nodes", "cpu s", "wall s",
                "minimalloc s", "ratio"):  # fmt: skip
        table.add_column(col, justify="left" if col == "instance" else "right")
    for path in sorted(SUITE.glob("*.csv")):
        name = path.name.split(".")[0]
        if args.only and name not in args.only:
            continue
        buffers = read_csv(path)
        c0, w0 = time.process_time(), time.perf_counter()
        try:
            plan = plan_exact(buffers, capacity=CAPACITY, time_limit=args.time_limit)
        except SerenityError as e:
            misses.append(f"{name}: {e}")
            table.add_row(
                name, str(len(buffers)), str(peak_of(buffers)), "-", "[red]NO[/red]", "", "", "", "", ""
            )
            continue
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        why = independent_check(buffers, plan.offsets, CAPACITY)
        ref = MINIMALLOC_SECONDS.get(name)
        table.add_row(
            name, str(len(buffers)), f"{peak_of(buffers):,}", f"{plan.arena:,}",
            "yes" if not why else "[red]NO[/red]", str(plan.stats.get("nodes", 0)), f"{cpu:.2f}",
            f"{wall:.2f}", "" if ref is None else f"{ref:.1f}", "" if ref is None else f"{cpu / ref:.2f}",
        )  # fmt: skip
        if why:
            misses.append(f"{name}: invalid placement: {why}")
        if ref is not None and cpu > 2 * ref:
            misses.append(f"{name}: {cpu:.2f} CPU s, above twice minimalloc's {ref:.1f} s")
    console.print(table)

    from serenity import zoo
    from serenity.formats.onnx_io import from_proto
    from serenity.ir import with_alignment
    from serenity.schedulers import schedule

    table = Table(title="plan_exact on NASNet-size networks in their optimal order")
    for col in ("network", "align", "buffers", "peak", "arena", "proven", "nodes", "cpu s", "wall s"):
        table.add_column(col, justify="left" if col == "network" else "right")
    for name in NASNET:
        graph = from_proto(zoo.build(name)).graph
        order = schedule(graph).order
        for align in (1, 16):
            buffers = buffers_of(with_alignment(graph, align), order)
            c0, w0 = time.process_time(), time.perf_counter()
            plan = plan_exact(buffers, time_limit=args.time_limit)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            why = independent_check(buffers, plan.offsets, plan.arena)
            table.add_row(
                name, str(align), str(len(buffers)), f"{peak_of(buffers):,}", f"{plan.arena:,}",
                "yes" if plan.proven else "[red]NO[/red]", str(plan.stats.get("nodes", 0)),
                f"{cpu:.3f}", f"{wall:.3f}",
            )  # fmt: skip
            if why:
                misses.append(f"{name} (align {align}): invalid placement: {why}")
            if not plan.proven:
                misses.append(f"{name} (align {align}): not proven ({plan.stats.get('stopped', '')})")
            if plan.arena == peak_of(buffers) and cpu >= 1.0:
                misses.append(f"{name} (align {align}): {cpu:.2f} CPU s (target < 1 s)")
    console.print(table)
    return verdict(console, misses)


if __name__ == "__main__":
    sys.exit(main())
