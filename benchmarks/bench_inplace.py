"""The two memory models side by side (issue 11): the proven optimum of every zoo network when
every output gets bytes of its own (``tflm``, TensorFlow Lite Micro) and when an element-wise or
reshape-like op may write over an input that dies at it (``inplace``, as HMCOS counts).

Run ``.venv/bin/python benchmarks/bench_inplace.py`` (``--help`` for options). One table, and a
non-zero exit when a target is missed. Targets, per network: both optima proven within
``--time-limit`` s; the ``inplace`` optimum never above the ``tflm`` one (every ``tflm`` order
is an ``inplace`` order that saves nothing); the ``inplace`` optimum never above the listed
order under ``inplace``; and every reported peak equal to :func:`serenity.memory.simulate` of
the order returned.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from rich.console import Console
from rich.table import Table
from verdict import verdict

from serenity.ir import with_memory_model
from serenity.memory import simulate
from serenity.schedulers import DEFAULT_METHOD, schedule


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--time-limit", type=float, default=30.0, help="s per network and model (default 30)")
    ap.add_argument("--zoo", nargs="*", help="zoo networks (default: all)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)
    from serenity import zoo
    from serenity.schedulers.warmup import warm_up

    warm_up()
    rows = []
    misses: list[str] = []
    for name in args.zoo or zoo.names():
        g = zoo.graph(name)
        row: dict[str, object] = {"network": name, "ops": len(g.ops)}
        for mm in ("tflm", "inplace"):
            gm = with_memory_model(g, mm)
            r = schedule(gm, DEFAULT_METHOD, time_limit=args.time_limit)
            listed = simulate(gm, gm.topological_order).peak
            row[mm] = {
                "listed": listed,
                "optimal": r.peak,
                "proven": r.proven_optimal,
                "seconds": round(r.seconds, 3),
                "proved_by": r.stats.get("proved_by"),
            }
            if simulate(gm, r.order).peak != r.peak:
                misses.append(f"{name} {mm}: reported peak {r.peak} is not the simulated one")
            if not r.proven_optimal:
                misses.append(f"{name} {mm}: not proven within {args.time_limit:g} s")
            if r.peak > listed:
                misses.append(f"{name} {mm}: optimum {r.peak} above the listed order's {listed}")
        t, i = row["tflm"], row["inplace"]
        assert isinstance(t, dict) and isinstance(i, dict)
        if i["optimal"] > t["optimal"]:
            misses.append(f"{name}: inplace optimum {i['optimal']} above tflm's {t['optimal']}")
        row["saving"] = round(t["optimal"] / i["optimal"], 4) if i["optimal"] else None
        rows.append(row)
        if not args.json:
            print(f"{name}: tflm {t['optimal']:,} B, inplace {i['optimal']:,} B", file=sys.stderr)
    savings = [float(r["saving"]) for r in rows if r["saving"]]  # type: ignore[arg-type]
    geomean = math.exp(sum(map(math.log, savings)) / len(savings)) if savings else None
    if args.json:
        print(json.dumps({"networks": rows, "geomean_saving": geomean, "misses": misses}, indent=2))
        return 1 if misses else 0
    table = Table(title=f"Proven optimal peak under both memory models (limit {args.time_limit:g} s each)")
    cols = ("network", "ops", "tflm listed", "tflm optimal", "s", "inplace listed", "inplace optimal", "s",
            "proven", "tflm/inplace")  # fmt: skip
    for c in cols:
        table.add_column(c, justify="left" if c == "network" else "right")
    for r in rows:
        t, i = r["tflm"], r["inplace"]
        assert isinstance(t, dict) and isinstance(i, dict)
        table.add_row(
            str(r["network"]), str(r["ops"]),
            f"{t['listed']:,}", f"{t['optimal']:,}", f"{t['seconds']:.2f}",
            f"{i['listed']:,}", f"{i['optimal']:,}", f"{i['seconds']:.2f}",
            {(True, True): "both", (True, False): "tflm", (False, True): "inplace"}.get(
                (t["proven"], i["proven"]), "no"),
            f"{r['saving']:.3f}x" if r["saving"] else "-",
        )  # fmt: skip
    console = Console(width=160)
    console.print(table)
    if geomean:
        console.print(f"geomean optimal-peak saving of inplace over tflm: {geomean:.3f}x")
    return verdict(console, misses)


if __name__ == "__main__":
    sys.exit(main())
