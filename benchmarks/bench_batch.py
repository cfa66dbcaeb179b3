"""``serenity batch`` over the whole zoo (issue 13): one process, two worker processes and a local
Ray instance give the same rows, and how long each takes.

Run ``.venv/bin/python benchmarks/bench_batch.py`` (``--help`` for options). Every zoo network is
exported as ONNX (``serenity zoo export``) to a temporary folder, then the command a user runs,
``serenity batch FILES... --json``, is timed with ``--workers 1``, ``--workers 2`` and ``--ray``
(a local instance, started and stopped by the command: its start-up is in its wall time). One
table of the rows, one of the wall times, then the verdict: exit 1 when any executor's rows differ
from one worker's (``seconds`` aside), when a row failed, or when a command failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from verdict import verdict

EXECUTORS = {"1 worker": ["--workers", "1"], "2 workers": ["--workers", "2"], "ray (local)": ["--ray"]}


def batch(files: list[str], extra: list[str]) -> tuple[list[dict[str, Any]], float]:
    """Run ``serenity batch FILES EXTRA --json``; its rows and wall time (raises on a failure)."""
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-m", "serenity", "batch", *files, *extra, "--json"], capture_output=True, text=True
    )
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"serenity batch {' '.join(extra)}: exit {p.returncode}: {p.stderr.strip()}")
    return json.loads(p.stdout)["results"], seconds


def export(names: list[str], folder: Path) -> list[str]:
    """Each zoo network as ``folder/NAME.onnx``, through ``serenity zoo export``."""
    files = []
    for name in names:
        path = folder / f"{name}.onnx"
        subprocess.run(
            [sys.executable, "-m", "serenity", "zoo", "export", name, "-o", str(path)],
            check=True,
            capture_output=True,
        )
        files.append(str(path))
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zoo", nargs="*", help="zoo networks (default: all)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    args = ap.parse_args(argv)
    from serenity import zoo
    from serenity.report import fmt_bytes

    names = args.zoo or zoo.names()
    misses: list[str] = []
    results: dict[str, list[dict[str, Any]]] = {}
    walls: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        files = export(names, Path(tmp))
        for label, extra in EXECUTORS.items():
            try:
                results[label], walls[label] = batch(files, extra)
            except RuntimeError as e:
                misses.append(str(e))
    reference = results.get("1 worker", [])

    def key(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    for label, rows in results.items():
        if key(rows) != key(reference):
            diff = [a["model"] for a, b in zip(key(rows), key(reference), strict=False) if a != b]
            misses.append(f"{label}: rows differ from 1 worker's ({', '.join(map(str, diff)) or 'count'})")
    misses += [f"{Path(r['model']).stem}: {r['error']}" for r in reference if r["error"]]
    if args.json:
        print(json.dumps({"wall_seconds": walls, "results": results, "misses": misses}, indent=2))
        return 1 if misses else 0
    console = Console(width=max(120, Console().width))
    t = Table(title="serenity batch over the zoo (rows of 1 worker; seconds per model)", title_justify="left")
    for c in ("network", "ops", "peak before", "peak after", "proven", *EXECUTORS):
        t.add_column(c, justify="left" if c == "network" else "right")
    for i, r in enumerate(reference):
        secs = [f"{results[lb][i]['seconds']:.2f}" if lb in results else "-" for lb in EXECUTORS]
        if r["error"]:
            t.add_row(Path(r["model"]).stem, "", "", "", "error", *secs)
            continue
        t.add_row(
            Path(r["model"]).stem,
            str(r["ops"]),
            "invalid" if r["peak_before"] is None else fmt_bytes(r["peak_before"]),
            fmt_bytes(r["peak_after"]),
            "yes" if r["proven_optimal"] else "no",
            *secs,
        )
    console.print(t)
    w = Table(title=f"Wall time of the whole batch ({len(names)} networks)", title_justify="left")
    for c in ("executor", "wall s", "speed-up", "rows identical to 1 worker"):
        w.add_column(c, justify="left" if c == "executor" else "right")
    base = walls.get("1 worker")
    for label, wall in walls.items():
        same = "yes" if key(results[label]) == key(reference) else "NO"
        w.add_row(label, f"{wall:.1f}", f"{base / wall:.2f}x" if base else "-", same)
    console.print(w)
    return verdict(console, misses)


if __name__ == "__main__":
    sys.exit(main())
