"""Stress benchmark of the default scheduler on RandWire built the ways other code bases build it
(issue 10, part 1).

Run ``.venv/bin/python benchmarks/bench_randwire.py`` (``--quick`` for a smaller set, ``--help``
for options). The graphs are :func:`serenity.zoo.randwire.stress_network`:

* the generators WS(32, 4, 0.75), ER(0.2) and BA(5), each with the graph seeds :data:`SEEDS`
  (stage ``s`` draws its graph from ``seed + s``);
* × node aggregation: weighted sum (a ``Mul`` per edge), unweighted ``Sum``, concat + 1×1 conv,
  and PyTorch's chain of pairwise ``Add``;
* × node chain: ReLU → separable conv → BN, and conv → BN → ReLU;
* × resolution: 32×32 with every stage at 32×32 and the first stage's width (no downsampling,
  the hardest case) and 224×224 with the usual downsampling between stages;
* plus whole networks with the stem and the head (224×224, downsampling), four per generator.

Each graph is scheduled with the default method (``serenity.schedulers.DEFAULT_METHOD``, whatever
it is) under a time limit, in a child process of its own (spawned; one at a time unless
``--jobs 2``: a portfolio method already uses the second core), which builds the ONNX model,
imports it, and reports the scheduler's seconds, states and peak resident memory. A crash or a
hang costs one graph, not the run. The peak RSS is the child's whole resident memory
(interpreter, imports, the imported graph) at its highest while scheduling: the child frees the
model, returns the free heap to the system and resets its high-water mark
(``/proc/self/clear_refs``) before scheduling, because building a 224×224 network's weights
alone can take 1.4 GB; where it cannot reset, the RSS is the child's peak over its whole life
(an upper bound). The model-building peak is printed apart, and so is the largest worker
process the scheduler started (a portfolio's solver).

Numba's compiled kernels: the parent first fills their on-disk cache
(``python -m serenity.schedulers.warmup``, then one schedule in a child; the time is printed: a
compile when the cache was empty). The seconds are then those of each child's one ``schedule``
call, as in a user's fresh ``serenity schedule`` process: the scheduler decides itself whether a
search is worth loading the cached kernels for, and pays for the load when it does. ``--warm``
instead schedules a second import of the same graph first (at most :data:`WARM_LIMIT` s,
untimed), timing the search in a process that has already loaded what it needs.

Targets (a miss prints ``MISS`` and exits 1): every graph proven optimal; p95 of the seconds
<= 1 s; max <= 5 s; peak RSS of every child <= 2 GB.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import math
import multiprocessing as mp
import os
import resource
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import onnx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from verdict import verdict

from serenity.formats.onnx_io import from_proto
from serenity.schedulers import DEFAULT_METHOD, schedule
from serenity.zoo.randwire import AGGREGATIONS, CHAINS, GENERATORS, stress_network

KINDS = tuple(GENERATORS)
#: Graph seeds of the grid; stage ``s`` uses ``seed + s``, so seeds 100 apart never share a stage.
SEEDS = (0, 100, 200)
QUICK_SEEDS = (0,)
#: Graph seed of the whole networks (stem and head).
STEM_SEED = 300
#: (resolution, downsample): every stage at 32×32, and ImageNet's 224×224 with downsampling.
RESOLUTIONS = ((32, False), (224, True))

TARGET_P95 = 1.0
TARGET_MAX = 5.0
TARGET_RSS_MB = 2048.0
#: Characters of a result's ``stopped`` text quoted in a MISS line (all of it in ``--json``).
STOPPED_CHARS = 160
#: Seconds the untimed warm-up call in each child may take.
WARM_LIMIT = 1.0
#: Seconds a child may spend beyond its time limit (start-up, model building, import, warm-up)
#: before the parent kills it.
SLACK = 120.0


@dataclass(frozen=True, slots=True)
class Case:
    """One stress graph: the arguments of :func:`serenity.zoo.randwire.stress_network`."""

    kind: str
    graph_seed: int
    aggregate: str
    chain: str
    resolution: int
    downsample: bool
    stem: bool = False

    @property
    def shape(self) -> str:
        """``32 flat`` (no downsampling), ``224`` or ``224 stem`` (a whole network)."""
        return f"{self.resolution}" + ("" if self.downsample else " flat") + (" stem" if self.stem else "")

    @property
    def name(self) -> str:
        return f"{self.kind}{self.graph_seed} {self.aggregate} {self.chain} {self.shape}"

    def build(self) -> onnx.ModelProto:
        """The ONNX model."""
        return stress_network(
            self.kind, self.graph_seed, aggregate=self.aggregate, chain=self.chain,
            resolution=self.resolution, downsample=self.downsample, stem=self.stem,
        )  # fmt: skip


#: The graph the parent schedules first, in a child, after the kernels' warm-up module: whatever
#: else the first schedule of a process compiles or caches is then on disk too.
WARM_UP = Case("ws", 0, "weighted", "relu-sep-bn", 32, False)


def cases(quick: bool = False) -> list[Case]:
    """The benchmark's graphs, in a fixed order.

    Full: 3 generators × 3 seeds × 4 aggregations × 2 chains × 2 resolutions, and 4 whole networks
    per generator (each aggregation once, the chains alternating): 156 graphs. Quick: one seed
    at 32×32 only, and one whole network per generator (generator ``i`` with aggregation ``i``):
    27 graphs.
    """
    out = []
    for i, kind in enumerate(KINDS):
        for seed in QUICK_SEEDS if quick else SEEDS:
            for res, down in RESOLUTIONS[:1] if quick else RESOLUTIONS:
                for agg in AGGREGATIONS:
                    for chain in CHAINS:
                        out.append(Case(kind, seed, agg, chain, res, down))
        for j, agg in enumerate(AGGREGATIONS):
            if not quick or j == i:
                out.append(Case(kind, STEM_SEED, agg, CHAINS[j % 2], 224, True, stem=True))
    return out


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one child reported (``error`` set, the rest zero, when it failed).

    Attributes:
        seconds: The measured ``schedule`` call.
        warm_seconds: The untimed warm-up call before it (``--warm``; else 0).
        rss_mb: Peak resident memory of the child while scheduling (see the module docstring).
        worker_rss_mb: Peak resident memory of the largest process the scheduler started and
            waited for (e.g. a portfolio's solver; 0 if none), counting the pages it shared
            with the child when forked.
        build_rss_mb: Peak resident memory of the child while building and importing the model.
        method, proved_by, stopped: ``result.method`` and the result's ``stats`` entries.
    """

    case: Case
    ops: int = 0
    peak: int = 0
    lower_bound: int = 0
    proven: bool = False
    seconds: float = 0.0
    warm_seconds: float = 0.0
    states: int = 0
    rss_mb: float = 0.0
    worker_rss_mb: float = 0.0
    build_rss_mb: float = 0.0
    method: str = ""
    proved_by: str = ""
    stopped: str = ""
    error: str = ""

    @property
    def name(self) -> str:
        return self.case.name


def _child(case: Case, time_limit: float, warm: bool, conn: Connection) -> None:
    """Build, import and schedule one graph; send an :class:`Outcome` (never raises)."""
    try:
        os.setpgrp()  # a group of its own: the parent can end it with whatever it starts
        # 1. The model, imported (twice with the warm-up: each call gets a graph of its own, so
        #    nothing the first call caches on the graph helps the timed one).
        model = case.build()
        graph = from_proto(model).graph
        warm_graph = from_proto(model).graph if warm else None
        del model
        gc.collect()
        build_kib = peak_rss_kib()
        # 2. From here the peak is the scheduler's (on top of what the process still holds: the
        #    freed model's heap goes back to the system first).
        release_free_heap()
        scoped = reset_peak_rss()
        warm_seconds = 0.0
        if warm_graph is not None:  # loads the compiled kernels this graph needs; untimed
            t = time.perf_counter()
            schedule(warm_graph, DEFAULT_METHOD, time_limit=min(WARM_LIMIT, time_limit))
            warm_seconds = time.perf_counter() - t
            del warm_graph
        # 3. The measured call.
        t = time.perf_counter()
        r = schedule(graph, DEFAULT_METHOD, time_limit=time_limit)
        seconds = time.perf_counter() - t
        rss_kib = peak_rss_kib() if scoped else max(build_kib, peak_rss_kib())
        conn.send(
            Outcome(
                case, ops=len(graph), peak=r.peak, lower_bound=r.lower_bound,
                proven=r.proven_optimal, seconds=seconds, warm_seconds=warm_seconds,
                states=int(r.stats.get("states", 0)), rss_mb=rss_kib / 1024,
                worker_rss_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                build_rss_mb=build_kib / 1024, method=r.method,
                proved_by=str(r.stats.get("proved_by", "")), stopped=str(r.stats.get("stopped", "")),
            )
        )  # fmt: skip
    except BaseException as e:  # reported as the graph's error; the parent decides
        last = traceback.format_exception_only(type(e), e)[-1].strip()
        frames = traceback.extract_tb(e.__traceback__)
        where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
        conn.send(Outcome(case, error=last + where))
    finally:
        conn.close()


def peak_rss_kib() -> int:
    """This process's peak resident memory in KiB: ``VmHWM`` where ``/proc`` has it, else
    ``ru_maxrss`` (KiB on Linux). ``ru_maxrss`` of a spawned child also counts the pages of the
    parent it was forked from before its ``exec``; ``VmHWM`` is the child's own."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def release_free_heap() -> None:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim``; elsewhere nothing):
    without it the pages protobuf freed with the model stay resident and count as the
    scheduler's."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak_rss() -> bool:
    """Lower ``VmHWM`` to the current resident size (Linux >= 4.0, ``/proc/self/clear_refs``);
    whether it could."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


#: Process groups of the children running now (each child leads its own, so that killing it also
#: ends any process the scheduler started, e.g. a portfolio's solver).
RUNNING: set[int] = set()


def kill_group(pid: int) -> None:
    """SIGKILL the process group a child of ours leads (gone already: nothing to do)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def run_case(case: Case, time_limit: float, warm: bool = False) -> Outcome:
    """Schedule ``case`` in a spawned child; a crash or a hang becomes an ``error`` outcome."""
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(case, time_limit, warm, send))
    proc.start()
    assert proc.pid is not None
    RUNNING.add(proc.pid)
    send.close()
    deadline = time_limit + (WARM_LIMIT if warm else 0.0) + SLACK
    try:
        if recv.poll(deadline):
            out: Outcome = recv.recv()
        else:
            kill_group(proc.pid)
            out = Outcome(case, error=f"killed after {deadline:.0f} s")
    except EOFError:  # the child died before sending
        kill_group(proc.pid)  # whatever it started (the unreaped child keeps the group id ours)
        proc.join()
        out = Outcome(case, error=f"crashed (exit code {proc.exitcode})")
    finally:
        recv.close()
    proc.join()
    RUNNING.discard(proc.pid)
    return out


def run_all(
    todo: list[Case], time_limit: float, jobs: int, warm: bool, done: Callable[[Outcome], None]
) -> list[Outcome]:
    """Run every case, ``jobs`` children at a time; the outcomes in the order of ``todo``.

    Interrupted (Ctrl-C), it kills the running children and their process groups first.
    """
    results: dict[Case, Outcome] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run_case, c, time_limit, warm): c for c in todo}
        try:
            for f in as_completed(futures):
                results[futures[f]] = f.result()
                done(results[futures[f]])
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            for pid in list(RUNNING):
                kill_group(pid)
            raise
    return [results[c] for c in todo]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    s = sorted(values)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


@dataclass(frozen=True, slots=True)
class Summary:
    """The distribution over a group of graphs (seconds of the schedule call; the RSS of the
    child or of a worker it started, whichever is larger)."""

    group: str
    graphs: int
    proven: int
    p50: float
    p95: float
    max: float
    max_rss_mb: float

    @property
    def proven_pct(self) -> float:
        return 100.0 * self.proven / self.graphs


def summarize(group: str, outs: Iterable[Outcome]) -> Summary:
    """The group's distribution; a failed child counts as unproven and has no time (``nan`` when
    no child of the group reported one)."""
    outs = list(outs)
    secs = [o.seconds for o in outs if not o.error] or [math.nan]
    return Summary(
        group, len(outs), sum(o.proven for o in outs), percentile(secs, 50), percentile(secs, 95),
        max(secs), max(max(o.rss_mb, o.worker_rss_mb) for o in outs),
    )  # fmt: skip


def distribution(outs: list[Outcome]) -> list[Summary]:
    """All graphs, then grouped by generator, aggregation, node chain and shape."""
    keys: tuple[tuple[str, Callable[[Case], str]], ...] = (
        ("generator", lambda c: c.kind),
        ("aggregation", lambda c: c.aggregate),
        ("chain", lambda c: c.chain),
        ("shape", lambda c: c.shape),
    )
    rows = [summarize("all", outs)]
    for label, key in keys:
        for value in dict.fromkeys(key(o.case) for o in outs):
            rows.append(summarize(f"{label} {value}", (o for o in outs if key(o.case) == value)))
    return rows


def no_nan(d: dict[str, object]) -> dict[str, object]:
    """``d`` with ``nan`` values as ``None`` (JSON has no NaN)."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in d.items()}


def misses_of(outs: list[Outcome], total: Summary) -> list[str]:
    """One line per failed or unproven graph, then one per missed distribution target."""
    misses = []
    for o in outs:
        if o.error:
            misses.append(f"{o.name}: {o.error}")
        elif not o.proven:
            why = o.stopped or "no reason given"
            why = why if len(why) <= STOPPED_CHARS else why[: STOPPED_CHARS - 1] + "…"
            misses.append(f"{o.name}: not proven (peak {o.peak:,}, bound {o.lower_bound:,}; {why})")
    if total.proven < total.graphs:
        misses.append(f"proven {total.proven}/{total.graphs} = {total.proven_pct:.1f} % (target 100 %)")
    if total.p95 > TARGET_P95:
        misses.append(f"p95 {total.p95:.2f} s (target <= {TARGET_P95:g} s)")
    if total.max > TARGET_MAX:
        misses.append(f"max {total.max:.2f} s (target <= {TARGET_MAX:g} s)")
    if total.max_rss_mb > TARGET_RSS_MB:
        misses.append(f"peak RSS {total.max_rss_mb:,.0f} MB (target <= {TARGET_RSS_MB:,.0f} MB)")
    return misses


def graph_table(outs: list[Outcome], method: str) -> Table:
    table = Table(title=f"RandWire stress graphs, default method '{method}'")
    cols = (
        "graph",
        "ops",
        "peak",
        "lower bound",
        "proven",
        "seconds",
        "states",
        "RSS MB",
        "worker MB",
        "proved by",
    )
    for col in cols:
        table.add_column(col, justify="left" if col in ("graph", "proved by") else "right")
    for o in outs:
        if o.error:
            table.add_row(o.name, "", "", "", "[red]ERROR[/red]", "", "", "", "", o.error)
            continue
        by = o.method + (f" ({o.proved_by})" if o.proved_by else "")
        table.add_row(
            o.name, str(o.ops), f"{o.peak:,}", f"{o.lower_bound:,}",
            "yes" if o.proven else "[red]NO[/red]", f"{o.seconds:.3f}", f"{o.states:,}",
            f"{o.rss_mb:.0f}", f"{o.worker_rss_mb:.0f}" if o.worker_rss_mb else "", by if o.proven else "",
        )  # fmt: skip
    return table


def distribution_table(rows: list[Summary]) -> Table:
    table = Table(title="distribution (seconds of the schedule call)")
    for col in ("group", "graphs", "proven", "p50 s", "p95 s", "max s", "max RSS MB"):
        table.add_column(col, justify="left" if col == "group" else "right")
    for s in rows:
        proven = f"{s.proven}/{s.graphs} ({s.proven_pct:.0f} %)"
        table.add_row(
            s.group, str(s.graphs), proven if s.proven == s.graphs else f"[red]{proven}[/red]",
            f"{s.p50:.3f}", f"{s.p95:.3f}", f"{s.max:.3f}", f"{s.max_rss_mb:.0f}",
        )  # fmt: skip
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="27 graphs instead of 156")
    ap.add_argument("--time-limit", type=float, default=30.0, help="seconds per graph (default 30)")
    ap.add_argument("--jobs", type=int, default=1, choices=(1, 2), help="children at a time (default 1)")
    ap.add_argument(
        "--warm", action="store_true", help="schedule each graph once untimed before the timed call"
    )
    ap.add_argument("--only", metavar="TEXT", help="run only the graphs whose name contains TEXT")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write every outcome and the distribution")
    args = ap.parse_args(argv)
    console = Console(width=150)
    jobs = min(args.jobs, os.cpu_count() or 1)

    todo = cases(args.quick)
    if args.only:
        todo = [c for c in todo if args.only in c.name]
    if not todo:
        console.print(f"no graph's name contains '{args.only}'")
        return 1
    method = DEFAULT_METHOD

    # 1. Fill numba's on-disk cache (a compile if it was empty) before any timed child.
    t = time.perf_counter()
    kernels = subprocess.run(
        [sys.executable, "-m", "serenity.schedulers.warmup"], capture_output=True, text=True, check=False
    )
    said = (kernels.stdout + kernels.stderr).strip().splitlines()
    if kernels.returncode:
        console.print(
            f"[red]kernel warm-up failed[/red] (exit {kernels.returncode}): {said[-1] if said else ''}"
        )
    w = run_case(WARM_UP, args.time_limit)
    if w.error:
        console.print(f"[red]warm-up child failed[/red] on {w.name}: {w.error}")
    took = time.perf_counter() - t
    console.print(
        f"warm-up (kernels, then one schedule in a child): {took:.1f} s; {said[-1] if said else ''}"
    )

    # 2. Every graph in a child of its own.
    t = time.perf_counter()
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"{len(todo)} graphs", total=len(todo))
        outs = run_all(todo, args.time_limit, jobs, args.warm, lambda o: progress.advance(task))
    wall = time.perf_counter() - t

    # 3. Per graph, the distribution, the targets.
    console.print(graph_table(outs, method))
    rows = distribution(outs)
    console.print(distribution_table(rows))
    ok = [o for o in outs if not o.error]
    if ok and args.warm:
        console.print(
            f"first call in a fresh child (kernel load + search, limit {WARM_LIMIT:g} s, untimed): "
            f"p50 {percentile([o.warm_seconds for o in ok], 50):.3f} s, "
            f"max {max(o.warm_seconds for o in ok):.3f} s"
        )
    if ok:
        console.print(
            f"building and importing the model (not counted above): peak RSS max "
            f"{max(o.build_rss_mb for o in ok):.0f} MB"
        )
    at_a_time = f"{jobs} children" if jobs > 1 else "one child"
    console.print(
        f"{len(todo)} graphs in {wall:.1f} s wall ({at_a_time} at a time, time limit "
        f"{args.time_limit:g} s each); targets: 100 % proven, p95 <= {TARGET_P95:g} s, "
        f"max <= {TARGET_MAX:g} s, peak RSS <= {TARGET_RSS_MB:,.0f} MB"
    )
    if jobs > 1:
        console.print(
            f"(the {jobs} children share {os.cpu_count()} cores with each other and with any worker "
            "the scheduler starts: --jobs 1 times each graph alone)"
        )
    misses = misses_of(outs, rows[0])
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "method": method,
                    "time_limit": args.time_limit,
                    "warm": args.warm,
                    "wall_seconds": round(wall, 3),
                    "graphs": [{"name": o.name, **asdict(o)} for o in outs],
                    "distribution": [{**no_nan(asdict(s)), "proven_pct": s.proven_pct} for s in rows],
                    "misses": misses,
                },
                indent=1,
            ),
            encoding="utf-8",
        )
    return verdict(console, misses)


if __name__ == "__main__":
    sys.exit(main())
