"""Benchmark of a whole ``serenity schedule`` process against the start-up targets of issue 10.

Run ``.venv/bin/python benchmarks/bench_startup.py`` (``--help`` for options). Every case runs
``python -m serenity schedule MODEL -o OUT`` in a child process and measures its wall time and
its CPU time (user + sys, from ``getrusage(RUSAGE_CHILDREN)`` around the child); each figure is
the median of ``--repeat`` runs. It prints one table row per case and exits non-zero when a
target is missed:

* a 10-op model (``examples/fan_concat_int8.tflite``), warm: under 1 s of wall time;
* the first run on NASNet-size graphs (the zoo's NASNet-A CIFAR, 874 ops, and DARTS CIFAR, 742
  ops): under 3 s of wall time, with an empty numba cache (``NUMBA_CACHE_DIR`` a fresh folder)
  and no bytecode cache at all (``PYTHONPYCACHEPREFIX`` a fresh folder: every module, the
  standard library's included, is compiled from source, which is worse than a fresh install);
* the zoo's NASNet-A and DARTS networks, warm: at most 0.8 s of CPU time, HMCOS's whole process.

"Warm" means one untimed run of the same command first (numba's cache and Python's bytecode
written, the model file in the page cache). The machine may be shared: wall times there include
waiting for a core, CPU times do not.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table
from verdict import verdict

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "examples" / "fan_concat_int8.tflite"
FIRST_RUN = ("nasnet_a_cifar", "darts_cifar")
WARM_CPU = ("nasnet_a_imagenet", "nasnet_a_cifar", "darts_imagenet", "darts_cifar")
WALL_SMALL, WALL_FIRST, CPU_NAS = 1.0, 3.0, 0.8


@dataclass
class Case:
    """One row: what runs, which figure is judged against which limit, and the runs' figures."""

    name: str
    model: Path
    judged: str  # "wall" or "cpu"
    limit: float
    cold: bool = False
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpus)

    @property
    def ok(self) -> bool:
        return self.wall < self.limit if self.judged == "wall" else self.cpu <= self.limit


def run_once(model: Path, out: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + sys) of one ``python -m serenity schedule`` child."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "serenity", "schedule", str(model), "-o", str(out)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"serenity schedule {model} failed ({proc.returncode}): {proc.stderr.strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def export(names: set[str], folder: Path) -> dict[str, Path]:
    """Each zoo network as an ONNX file in ``folder`` (``serenity zoo export``)."""
    paths = {}
    for name in sorted(names):
        path = folder / f"{name}.onnx"
        cmd = [sys.executable, "-m", "serenity", "zoo", "export", name, "-o", str(path)]
        subprocess.run(cmd, check=True, capture_output=True)
        paths[name] = path
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the median is judged (default 3)")
    args = ap.parse_args(argv)
    console = Console(width=120)
    base_env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "PYTHONPYCACHEPREFIX")}

    with tempfile.TemporaryDirectory(prefix="serenity-startup-") as tmp:
        work = Path(tmp)
        models = export({*FIRST_RUN, *WARM_CPU}, work)
        cases = [Case("10-op model, warm", SMALL, "wall", WALL_SMALL)]
        cases += [
            Case(f"{n}, first run (empty caches)", models[n], "wall", WALL_FIRST, cold=True)
            for n in FIRST_RUN
        ]
        cases += [Case(f"{n}, warm", models[n], "cpu", CPU_NAS) for n in WARM_CPU]
        for i, case in enumerate(cases):
            out = work / f"out{i}{case.model.suffix}"
            if not case.cold:
                run_once(case.model, out, base_env)  # warm: numba's cache and bytecode written
            for k in range(args.repeat):
                env = dict(base_env)
                if case.cold:
                    env["NUMBA_CACHE_DIR"] = str(work / f"numba-{i}-{k}")
                    env["PYTHONPYCACHEPREFIX"] = str(work / f"pyc-{i}-{k}")
                wall, cpu = run_once(case.model, out, env)
                case.walls.append(wall)
                case.cpus.append(cpu)

    table = Table(title=f"serenity schedule, whole process (median of {args.repeat} runs)")
    for col in ("case", "wall s", "CPU s", "target", "ok"):
        table.add_column(col, justify="left" if col == "case" else "right")
    misses = []
    for case in cases:
        target = f"{case.judged} {'<' if case.judged == 'wall' else '<='} {case.limit:g} s"
        table.add_row(
            case.name, f"{case.wall:.2f}", f"{case.cpu:.2f}", target, "yes" if case.ok else "[red]NO[/red]"
        )
        if not case.ok:
            got = case.wall if case.judged == "wall" else case.cpu
            misses.append(f"{case.name}: {case.judged} {got:.2f} s (target {target})")
    console.print(table)
    return verdict(console, misses)


if __name__ == "__main__":
    sys.exit(main())
