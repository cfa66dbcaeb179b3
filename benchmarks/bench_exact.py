"""The two exact methods and their race (issue 10): agreement, and what ``auto`` costs.

Run ``.venv/bin/python benchmarks/bench_exact.py`` (``--help`` for options). Two tables, and a
non-zero exit when a target is missed:

1. **Agreement**: every zoo network, scheduled by the dynamic program (``optimal``) and the integer
   program (``ilp``, CP-SAT, ``--ilp-limit`` seconds, 60 by default). Target: where both prove,
   the peaks are equal, and no proven optimum is above the other method's order.
2. **Race**: the zoo's HRNet and NAS-FPN graphs and random layered DAGs of 100-300 ops with width
   up to 16, scheduled by ``optimal``, ``ilp`` and ``auto`` with ``--time-limit`` seconds each.
   A method's time is its time to a proof, or the limit when it has none. Target: ``auto`` never
   slower than the faster of the other two by more than 20 % (plus :data:`SLACK` s of absolute
   slack for timer and process noise on sub-second runs).

Requires the ``[ilp]`` extra (OR-Tools). Uses two cores (CP-SAT's default workers).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench_scheduler import layered_dag
from rich.console import Console
from rich.table import Table
from verdict import verdict

from serenity.ir import Graph
from serenity.schedulers import schedule
from serenity.schedulers.result import ScheduleResult

ROOT = Path(__file__).resolve().parents[1]
#: Absolute slack (seconds) on top of the 20 % of the race target.
SLACK = 0.05
RACE_ZOO = ("hrnet_w18_small", "hrnet_w18_small_body", "nasfpn", "nasfpn_body")


def race_dags() -> list[tuple[str, Graph]]:
    """Random layered DAGs of 100-300 ops, widths 4 to 16 (sizes 1-100 bytes)."""
    out = []
    sizes = ((100, 4), (150, 8), (200, 8), (300, 8), (100, 12), (200, 12), (120, 16), (300, 16))
    for i, (n, w) in enumerate(sizes):
        out.append((f"dag {n} ops, width {w}", layered_dag(500 + i, n, max_width=w)))
    return out


def seconds_to_answer(r: ScheduleResult, wall: float, limit: float) -> float:
    """Wall time to a proof; without one, the whole limit (the method used all of it)."""
    return wall if r.proven_optimal else max(wall, limit)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ilp-limit", type=float, default=60.0, help="CP-SAT s per zoo network (default 60)")
    ap.add_argument("--time-limit", type=float, default=10.0, help="s per method in the race (default 10)")
    ap.add_argument("--zoo", nargs="*", help="zoo networks for the agreement table (default: all)")
    ap.add_argument("--skip-agreement", action="store_true", help="only the race table")
    args = ap.parse_args(argv)
    from serenity import zoo

    console = Console(width=150)
    misses: list[str] = []
    from serenity.schedulers.warmup import warm_up

    # Load (or compile) every kernel first: the process then decides the same way for every
    # method (otherwise whichever runs first pays numba's import and kernel load, ~0.5 s).
    warm_up()

    if not args.skip_agreement:
        table = Table(title=f"DP and ILP agree (ILP limit {args.ilp_limit:g} s)")
        for col in ("network", "ops", "DP peak", "DP s", "ILP peak", "ILP proven", "ILP s", "agree"):
            table.add_column(col, justify="left" if col == "network" else "right")
        agreed = compared = 0
        for name in args.zoo or zoo.names():
            g = zoo.graph(name)
            dp = schedule(g, "optimal", time_limit=args.ilp_limit)
            ilp = schedule(g, "ilp", time_limit=args.ilp_limit)
            both = dp.proven_optimal and ilp.proven_optimal
            ok = (not both or dp.peak == ilp.peak) and not (dp.proven_optimal and dp.peak > ilp.peak)
            ok = ok and not (ilp.proven_optimal and ilp.peak > dp.peak)
            compared += both
            agreed += both and ok
            table.add_row(
                name, str(len(g.ops)), f"{dp.peak:,}" + ("" if dp.proven_optimal else " (unproven)"),
                f"{dp.seconds:.2f}", f"{ilp.peak:,}", "yes" if ilp.proven_optimal else "no",
                f"{ilp.seconds:.2f}", "yes" if ok else "[red]NO[/red]",
            )  # fmt: skip
            if not ok:
                misses.append(f"{name}: DP {dp.peak} (proven {dp.proven_optimal}) vs ILP {ilp.peak} "
                              f"(proven {ilp.proven_optimal})")  # fmt: skip
        console.print(table)
        console.print(f"both proved {compared} networks; agreed on {agreed}")

    race = Table(title=f"auto against the faster of DP and ILP ({args.time_limit:g} s each)")
    for col in ("graph", "ops", "DP", "ILP", "auto", "proved by", "auto peak", "best other peak", "ok"):
        race.add_column(col, justify="left" if col == "graph" else "right")
    cases = [(name, zoo.graph(name)) for name in RACE_ZOO] + race_dags()
    for name, g in cases:
        runs: dict[str, ScheduleResult] = {}
        wall: dict[str, float] = {}
        for method in ("optimal", "ilp", "auto"):
            t = time.perf_counter()
            runs[method] = schedule(g, method, time_limit=args.time_limit)
            wall[method] = time.perf_counter() - t
        secs = {m: seconds_to_answer(r, wall[m], args.time_limit) for m, r in runs.items()}
        fastest = min(secs["optimal"], secs["ilp"])
        ok = secs["auto"] <= 1.2 * fastest + SLACK
        auto = runs["auto"]
        cell = {m: f"{secs[m]:.2f} s" + ("" if r.proven_optimal else " (no proof)") for m, r in runs.items()}

        race.add_row(
            name, str(len(g.ops)), cell["optimal"], cell["ilp"], cell["auto"],
            str(auto.stats.get("proved_by", "-")), f"{auto.peak:,}",
            f"{min(runs['optimal'].peak, runs['ilp'].peak):,}", "yes" if ok else "[red]NO[/red]",
        )  # fmt: skip
        if not ok:
            misses.append(f"race {name}: auto {secs['auto']:.2f} s > 1.2 × {fastest:.2f} s + {SLACK} s")
        if auto.proven_optimal and min(runs["optimal"].peak, runs["ilp"].peak) < auto.peak:
            misses.append(f"race {name}: auto proved {auto.peak} but another method found lower")
    console.print(race)
    return verdict(console, misses)


if __name__ == "__main__":
    sys.exit(main())
