"""Off-chip traffic of the listed, the peak-optimal and the traffic-optimal orders, beside the
paper and the peer tool TiGrIS (issue 11).

Run ``.venv/bin/python benchmarks/bench_offchip.py`` (``--quick`` for fewer models, ``--help``
for options). When an order's live activations exceed the SRAM budget, tensors go to external
memory and come back (:mod:`serenity.planning.offchip`: graph inputs start on chip, Belady
eviction, bytes written + read). The models, activations at ``--element-size`` bytes (1: int8,
as on a microcontroller):

* the zoo's cells (:func:`serenity.zoo.names`, the entries that are not whole networks: the
  ImageNet-size DARTS / NASNet-A / AmoebaNet-A cells, RandWire's first CIFAR-10 stage, the
  SwiftNet cells, the HRNet and NAS-FPN bodies);
* cells at CIFAR size, cut out of the zoo's CIFAR networks by their scope (:data:`CIFAR_CELLS`:
  a normal cell of each of the three stages and both reduction cells of each NAS family, and
  RandWire's stages 2 and 3): most ImageNet-size cells hold an op that alone exceeds 256 KB
  at int8, so no order runs them without tiling;
* every int8 ``.tflite`` file in ``../shared/models`` (``stem/`` included), 16-byte aligned as
  TensorFlow Lite Micro places buffers.

Tables, and a non-zero exit when a target is missed:

1. **Traffic** per model and budget (``--sram``, 32K,64K,128K,256K by default) of three orders:
   the listed one, the peak-optimal one (``schedule(graph, DEFAULT_METHOD)``) and
   ``schedule_traffic``'s ("optimal"), with its lower bound, whether its traffic meets the bound
   (proven) and which candidate it kept. Where an op alone exceeds the budget
   (:class:`~serenity.planning.offchip.OpDoesNotFit`) no order runs: those budgets are listed
   apart, one line per model. Targets: ``schedule_traffic``'s traffic is never above the listed
   order's, and the traffic it reports is :func:`offchip_traffic` of its order.
2. **Reduction** per budget: the geometric mean of listed / optimal traffic over the models whose
   listed order moves bytes (a model whose optimal order moves nothing is counted apart: its
   ratio is unbounded), beside Ahn et al. (MLSys 2020, :data:`PAPER`); and how often the
   peak-optimal order alone is not worse than the listed one.
3. **Policy vs exact**: on the smallest graphs (at most ``--exact-max-ops`` ops) where the
   listed or the traffic-optimal order moves bytes, the eviction policy's traffic of each beside
   the least traffic of any eviction of the same order (``offchip_exact``, CP-SAT,
   ``--exact-limit`` s; RandWire stages of 180-260 ops are left out: CP-SAT does not prove them
   in 20 s). Targets: the exact traffic is never above the policy's, nor below its own bound.
4. **TiGrIS** (``benchmarks/peers/tigris.py``, a subprocess in ``.venv-peers``; ``--no-peers``
   skips it) on the ``.tflite`` files at the same budgets, beside our listed and optimal traffic.
   TiGrIS counts the model's input loads and output spills (we start inputs on chip and leave
   outputs where they are), so its traffic is also shown without them. It also tiles and runs
   its own runtime, so it has a figure where one op alone exceeds the budget; no target.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from peers.tigris import PeerError, PeerNotInstalledError, TigrisTraffic, peers_python, tigris_traffic
from rich.console import Console
from rich.table import Table
from verdict import verdict

from serenity import zoo
from serenity.commands.common import alignment_for, byte_sizes
from serenity.errors import UnsupportedError
from serenity.formats import load
from serenity.ir import Graph, with_alignment, with_memory_model
from serenity.memory import simulate
from serenity.planning.offchip import OpDoesNotFit, offchip_traffic
from serenity.planning.offchip_exact import offchip_exact
from serenity.report import fmt_bytes
from serenity.schedulers import DEFAULT_METHOD, schedule
from serenity.schedulers.result import ScheduleResult
from serenity.schedulers.traffic import schedule_traffic

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT.parent / "shared" / "models"
BUDGETS = (32 * 1024, 64 * 1024, 128 * 1024, 256 * 1024)
#: Off-chip traffic reduction of memory-aware orders over the baseline's, by SRAM budget: Ahn et
#: al., "Ordering Chaos: Memory-Aware Scheduling of Irregularly Wired Neural Networks for Edge
#: Devices", MLSys 2020.
PAPER = {32 * 1024: 1.52, 64 * 1024: 1.49, 128 * 1024: 1.51, 256 * 1024: 1.76}
#: Cells cut out of the zoo's CIFAR networks, as (network, scope): per NAS family a normal cell of
#: each stage (32×32, 16×16, 8×8) and the two reduction cells; RandWire's stages 2 and 3 (stage 1
#: is the zoo's ``randwire_*_stage``).
CIFAR_CELLS = tuple(
    (f"{fam}_cifar", f"cell{i}") for fam in ("darts", "nasnet_a", "amoebanet_a") for i in (2, 6, 9, 13, 16)
) + tuple((f"randwire_{kind}_c10", f"stage{s}") for kind in ("ws", "er", "ba") for s in (2, 3))
QUICK_ZOO = ("swiftnet_cell_c", "randwire_er_stage")
QUICK_CIFAR = (
    ("nasnet_a_cifar", "cell9"), ("amoebanet_a_cifar", "cell6"), ("amoebanet_a_cifar", "cell16"),
    ("randwire_ws_c10", "stage3"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Subject:
    """One model of the benchmark: a zoo entry, a cell cut out of a zoo network, or a file."""

    name: str
    zoo: str | None = None
    scope: str | None = None
    path: Path | None = None

    @property
    def kind(self) -> str:
        return "file" if self.path else "CIFAR cell" if self.scope else "zoo cell"


def subjects(quick: bool, models: Path = MODELS) -> list[Subject]:
    """The benchmark's models in a fixed order: zoo cells, CIFAR cells, then the int8 files."""
    zoo_cells = QUICK_ZOO if quick else tuple(n for n in zoo.names() if not zoo.info(n).whole)
    out = [Subject(n, zoo=n) for n in zoo_cells]
    out += [
        Subject(f"{net}/{scope}", zoo=net, scope=scope)
        for net, scope in (QUICK_CIFAR if quick else CIFAR_CELLS)
    ]
    files = sorted(p for p in models.rglob("*int8*.tflite") if p.is_file())
    out += [Subject(str(p.relative_to(models)), path=p) for p in files]
    return out


def cut_cell(graph: Graph, scope: str) -> Graph:
    """The ops of ``graph`` whose names start with ``scope/``, as a graph of their own.

    Its inputs are the activations those ops read and do not produce; its outputs the tensors
    they produce that an op outside reads, or that are outputs of ``graph``. The ops keep their
    relative order, so the cell's listed order is the network's.

    Raises:
        ValueError: no op's name starts with ``scope/``.
    """
    ops = [op for op in graph.ops if op.name.startswith(scope + "/")]
    if not ops:
        raise ValueError(f"{graph.name}: no op in scope '{scope}'")
    inside = {op.index for op in ops}
    made = {t for op in ops for t in op.outputs}
    read = [t for op in ops for t in op.inputs]
    inputs = [t for t in dict.fromkeys(read) if t not in made and graph.tensors[t].is_activation]
    read_outside = {t for op in graph.ops if op.index not in inside for t in op.inputs}
    outputs = [t for op in ops for t in op.outputs if t in read_outside or t in graph.outputs]
    used = made | set(read)
    tensors = [t for name, t in graph.tensors.items() if name in used]
    return Graph(f"{graph.name}/{scope}", ops, tensors, inputs, outputs, acyclic=True)


def load_subject(s: Subject, element_bytes: int, memory_model: str) -> Graph:
    """The subject's graph: zoo models at ``element_bytes`` per element; files as they are,
    aligned as their runtime places buffers (:func:`serenity.commands.common.alignment_for`)."""
    if s.path is not None:
        model = load(s.path)
        graph = with_alignment(model.graph, alignment_for(model, None))
    else:
        assert s.zoo is not None
        graph = zoo.graph(s.zoo, element_bytes=element_bytes)
        if s.scope is not None:
            graph = cut_cell(graph, s.scope)
    return with_memory_model(graph, memory_model)


@dataclass(frozen=True, slots=True)
class Row:
    """One model at one SRAM budget (traffic in bytes written + read; None where no order runs).

    Attributes:
        listed_peak, peak: The listed order's peak and the peak-optimal order's.
        listed, peak_optimal, optimal: Traffic of the listed order, of the peak-optimal order and
            of ``schedule_traffic``'s order.
        reported: The traffic ``schedule_traffic`` reports for its order (``stats["traffic"]``).
        optimal_peak: The peak of ``schedule_traffic``'s order.
        lower_bound, proven: ``schedule_traffic``'s traffic lower bound, and whether its
            order meets it.
        chosen: The candidate ``schedule_traffic`` kept (``min-peak``, a baseline's name or
            ``local-search``).
        evaluations, stopped: Orders its local search costed, and why it stopped.
        seconds: ``schedule_traffic``'s wall time.
        note: Why there is no traffic (an op alone exceeds the budget), or a listed-order problem.
        blocking_op, blocking_needs: The op that alone exceeds the budget, and its bytes.
    """

    model: str
    kind: str
    ops: int
    sram: int
    listed_peak: int | None
    peak: int
    listed: int | None = None
    peak_optimal: int | None = None
    optimal: int | None = None
    reported: int | None = None
    optimal_peak: int | None = None
    lower_bound: int | None = None
    proven: bool = False
    chosen: str = ""
    evaluations: int = 0
    stopped: str = ""
    seconds: float = 0.0
    note: str = ""
    blocking_op: str = ""
    blocking_needs: int = 0

    @property
    def ratio(self) -> float | None:
        """listed / optimal traffic (``inf`` when the optimal order moves nothing; None when the
        listed order moves nothing or no order runs)."""
        if not self.listed or self.optimal is None:
            return None
        return math.inf if self.optimal == 0 else self.listed / self.optimal


def traffic_of(graph: Graph, order: list[int] | tuple[int, ...] | None, sram: int) -> int | None:
    """:func:`offchip_traffic` of ``order`` in bytes; None when there is no order or an op of it
    does not fit (under ``inplace`` that can depend on the order: a lost in-place saving)."""
    if order is None:
        return None
    try:
        return offchip_traffic(graph, order, sram).traffic
    except OpDoesNotFit:
        return None


def measure(
    s: Subject, graph: Graph, budgets: list[int], time_limit: float
) -> tuple[list[Row], dict[int, list[int]]]:
    """Every budget's row for one model (the peak-optimal order is scheduled once), and
    ``schedule_traffic``'s order at each budget where some order runs."""
    listed = None if graph.listed_problem else graph.listed_order
    best: ScheduleResult = schedule(graph, DEFAULT_METHOD, time_limit=time_limit)
    base: dict[str, Any] = {
        "model": s.name, "kind": s.kind, "ops": len(graph.ops), "peak": best.peak,
        "listed_peak": None if listed is None else simulate(graph, listed).peak,
        "note": "" if listed is not None else f"listed order invalid: {graph.listed_problem}",
    }  # fmt: skip
    rows, orders = [], {}
    for sram in budgets:
        t = time.perf_counter()
        try:
            r = schedule_traffic(graph, sram, time_limit=time_limit, peak_result=best)
        except OpDoesNotFit as e:
            note = f"op '{e.op}' alone needs {fmt_bytes(e.needs)}"
            rows.append(Row(**{**base, "note": note}, sram=sram, blocking_op=e.op, blocking_needs=e.needs))
            continue
        seconds = time.perf_counter() - t
        orders[sram] = list(r.order)
        stats = r.stats
        search = stats.get("search") or {}
        rows.append(
            Row(
                **base, sram=sram, listed=traffic_of(graph, listed, sram),
                peak_optimal=traffic_of(graph, best.order, sram), optimal=traffic_of(graph, r.order, sram),
                reported=int(stats["traffic"]["traffic"]), optimal_peak=r.peak,
                lower_bound=int(stats["traffic_lower_bound"]), proven=bool(stats["traffic_proven"]),
                chosen=str(stats.get("chosen", "")), evaluations=int(search.get("evaluations", 0)),
                stopped=str(search.get("stopped", "")), seconds=seconds,
            )
        )  # fmt: skip
    return rows, orders


def misses_of(rows: list[Row]) -> list[str]:
    """A line per row where ``schedule_traffic`` moves more than the listed order, or reports
    another traffic than :func:`offchip_traffic` of its order."""
    misses = []
    for r in rows:
        at = f"{r.model} at {fmt_bytes(r.sram)}"
        if r.reported is not None and r.reported != r.optimal:
            misses.append(f"{at}: schedule_traffic reports {r.reported:,} B, its order moves {r.optimal:,} B")
        if r.optimal is not None and r.listed is not None and r.optimal > r.listed:
            misses.append(f"{at}: optimal order moves {r.optimal:,} B, listed {r.listed:,} B")
    return misses


def geomean(values: list[float]) -> float:
    """Geometric mean of positive finite values (``nan`` for none)."""
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


@dataclass(frozen=True, slots=True)
class Summary:
    """One budget over every model.

    Attributes:
        models: Models measured; ``no_fit`` of them hold an op that alone exceeds the budget.
        moving: Models whose listed order moves bytes.
        geomean: Geometric mean of listed / optimal traffic over those where the optimal order
            still moves bytes (``ratios`` of them), ``best`` the largest of those ratios;
            ``eliminated``: where it moves nothing.
        peak_not_worse: Of ``moving``, models where the peak-optimal order moves at most the
            listed order's bytes (and runs: under ``inplace`` an op's fit depends on the order).
        paper: Ahn et al.'s reduction at this budget (None when they report none).
    """

    sram: int
    models: int
    no_fit: int
    moving: int
    ratios: int
    geomean: float
    best: float
    eliminated: int
    peak_not_worse: int
    paper: float | None


def summarize(rows: list[Row], budgets: list[int]) -> list[Summary]:
    """One :class:`Summary` per budget, in the order of ``budgets``."""
    out = []
    for sram in budgets:
        at = [r for r in rows if r.sram == sram]
        moving = [r for r in at if r.listed and r.optimal is not None]
        finite = [r.ratio for r in moving if r.ratio is not None and math.isfinite(r.ratio)]
        out.append(
            Summary(
                sram, len(at), sum(r.optimal is None for r in at), len(moving), len(finite), geomean(finite),
                max(finite, default=math.nan), sum(r.optimal == 0 for r in moving),
                sum(r.peak_optimal is not None and r.peak_optimal <= (r.listed or 0) for r in moving),
                PAPER.get(sram),
            )
        )  # fmt: skip
    return out


@dataclass(frozen=True, slots=True)
class ExactRow:
    """The eviction policy against the exact eviction of one order at one budget.

    Attributes:
        order: ``listed`` or ``optimal`` (``schedule_traffic``'s).
        policy: The policy's traffic (:func:`offchip_traffic`).
        exact, lower_bound, proven, status, seconds: :class:`ExactTraffic`'s.
    """

    model: str
    ops: int
    sram: int
    order: str
    policy: int
    exact: int
    lower_bound: int
    proven: bool
    status: str
    seconds: float

    @property
    def gap(self) -> float | None:
        """How much more the policy moves than the best eviction found, as a fraction."""
        return None if not self.exact else self.policy / self.exact - 1


def exact_rows(
    graphs: dict[str, Graph], orders: dict[tuple[str, int], list[int]], rows: list[Row], max_ops: int,
    cases: int, time_limit: float,
) -> tuple[list[ExactRow], str]:  # fmt: skip
    """``offchip_exact`` of the listed and the optimal order on the ``cases`` smallest (model,
    budget) pairs of at most ``max_ops`` ops where either order moves bytes; and a note (why none
    ran, or empty)."""
    todo = sorted(
        (r for r in rows if (r.optimal or r.listed) and r.ops <= max_ops),
        key=lambda r: (r.ops, r.model, r.sram),
    )[:cases]
    out: list[ExactRow] = []
    for r in todo:
        g = graphs[r.model]
        for label, order, policy in (
            ("listed", g.listed_order, r.listed),
            ("optimal", orders[r.model, r.sram], r.optimal),
        ):
            if not policy:  # nothing to evict (or no valid listed order)
                continue
            try:
                e = offchip_exact(g, order, r.sram, time_limit=time_limit)
            except UnsupportedError as err:
                return out, str(err)
            out.append(
                ExactRow(
                    r.model, r.ops, r.sram, label, policy, e.traffic.traffic, e.lower_bound, e.proven,
                    e.status, e.seconds,
                )
            )  # fmt: skip
    return out, "" if todo else f"no graph of at most {max_ops} ops moves bytes"


def exact_misses(rows: list[ExactRow]) -> list[str]:
    """A line per pair where the exact eviction moves more than the policy (it starts from the
    policy's), or its lower bound is above its traffic."""
    misses = []
    for e in rows:
        at = f"{e.model} at {fmt_bytes(e.sram)}, {e.order} order"
        if e.exact > e.policy:
            misses.append(f"{at}: exact eviction moves {e.exact:,} B, above the policy's {e.policy:,} B")
        if e.lower_bound > e.exact:
            misses.append(f"{at}: exact lower bound {e.lower_bound:,} B above its traffic {e.exact:,} B")
    return misses


def kib(n: int | None) -> str:
    return "" if n is None else f"{n / 1024:,.1f}"


def traffic_table(rows: list[Row]) -> Table:
    title = "off-chip traffic in KiB (written + read) of the listed, the peak-optimal and the optimal order"
    table = Table(title=title)
    shown = [r for r in rows if r.optimal is not None]  # where no order runs: nofit_table
    notes = any(r.note for r in shown)
    cols = ("model", "ops", "SRAM", "peak listed", "peak min", "listed", "min-peak", "optimal", "bound",
            "proven", "chosen", "reduction", "s") + (("note",) if notes else ())  # fmt: skip
    for col in cols:
        left = col in ("model", "chosen", "note")
        table.add_column(col, justify="left" if left else "right", no_wrap=col != "note")
    for r in shown:
        ratio = r.ratio
        red = "" if ratio is None else "all" if math.isinf(ratio) else f"{ratio:.2f}x"
        worse = r.optimal is not None and r.listed is not None and r.optimal > r.listed
        table.add_row(
            r.model, str(r.ops), fmt_bytes(r.sram), kib(r.listed_peak), kib(r.peak), kib(r.listed),
            kib(r.peak_optimal), f"[red]{kib(r.optimal)}[/red]" if worse else kib(r.optimal),
            kib(r.lower_bound), "" if r.optimal is None else "yes" if r.proven else "no", r.chosen, red,
            f"{r.seconds:.2f}", *((r.note,) if notes else ()),
        )  # fmt: skip
    return table


def nofit_table(rows: list[Row]) -> Table | None:
    """The models with budgets where an op alone exceeds the SRAM (no order runs), one line each."""
    by_model: dict[str, list[Row]] = {}
    for r in rows:
        if r.optimal is None:
            by_model.setdefault(r.model, []).append(r)
    if not by_model:
        return None
    table = Table(title="no order runs: an op's inputs and outputs alone exceed the SRAM")
    for col in ("model", "ops", "at", "at the largest of these budgets"):
        table.add_column(col, justify="right" if col == "ops" else "left")
    for model, rs in by_model.items():
        table.add_row(model, str(rs[0].ops), ", ".join(fmt_bytes(r.sram) for r in rs), rs[-1].note)
    return table


def summary_table(sums: list[Summary]) -> Table:
    table = Table(title="traffic reduction, listed / optimal order (geometric mean)")
    cols = ("SRAM", "models", "op > SRAM", "listed moves", "geomean", "max", "optimal moves 0",
            "paper", "peak-opt <= listed")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="right")
    for s in sums:
        table.add_row(
            fmt_bytes(s.sram), str(s.models), str(s.no_fit), str(s.moving),
            "" if math.isnan(s.geomean) else f"{s.geomean:.2f}x ({s.ratios})",
            "" if math.isnan(s.best) else f"{s.best:.2f}x", str(s.eliminated),
            "" if s.paper is None else f"{s.paper:.2f}x",
            f"{s.peak_not_worse}/{s.moving}" if s.moving else "",
        )  # fmt: skip
    return table


def exact_table(rows: list[ExactRow], time_limit: float) -> Table:
    table = Table(title=f"eviction policy vs the exact eviction of the same order (CP-SAT, {time_limit:g} s)")
    cols = ("model", "ops", "SRAM", "order", "policy KiB", "exact KiB", "bound KiB", "proven", "status",
            "policy gap", "s")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="left" if col in ("model", "order", "status") else "right")
    for e in rows:
        table.add_row(
            e.model, str(e.ops), fmt_bytes(e.sram), e.order, kib(e.policy), kib(e.exact), kib(e.lower_bound),
            "yes" if e.proven else "no", e.status, "" if e.gap is None else f"{100 * e.gap:+.1f} %",
            f"{e.seconds:.2f}",
        )  # fmt: skip
    return table


PeerPair = tuple[Row, TigrisTraffic | str]


def peer_rows(rows: list[Row], files: list[Subject], budgets: list[int]) -> tuple[list[PeerPair], str]:
    """TiGrIS on every file at every budget, beside our row; and why it was skipped (or empty)."""
    try:
        peers_python()
    except PeerNotInstalledError as e:
        return [], str(e)
    ours = {(r.model, r.sram): r for r in rows}
    out: list[PeerPair] = []
    for s in files:
        assert s.path is not None
        for sram in budgets:
            try:
                theirs: TigrisTraffic | str = tigris_traffic(s.path, sram)
            except PeerError as e:
                theirs = str(e)
            out.append((ours[s.name, sram], theirs))
    return out, ""


def peer_table(pairs: list[PeerPair]) -> Table:
    table = Table(title="Serenity and TiGrIS 0.12.1 (KiB written + read per inference)")
    cols = ("model", "SRAM", "listed", "optimal", "TiGrIS", "TiGrIS less I/O", "TiGrIS stages",
            "halo re-read", "TiGrIS fast peak", "note")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="left" if col in ("model", "note") else "right")
    for r, t in pairs:
        if isinstance(t, str):
            ours = (r.model, fmt_bytes(r.sram), kib(r.listed), kib(r.optimal))
            table.add_row(*ours, "[red]error[/red]", "", "", "", "", t[:80])
            continue
        stages = f"{t.stages} ({t.tiled_stages} tiled)" if t.fits else ""
        note = f"ours: op '{r.blocking_op}' needs {fmt_bytes(r.blocking_needs)}" if r.blocking_op else ""
        table.add_row(
            r.model, fmt_bytes(r.sram), kib(r.listed), kib(r.optimal),
            kib(t.traffic) if t.fits else "no plan",
            kib(t.traffic_without_io), stages, kib(t.halo_read), kib(t.fast_peak) if t.fits else "", note,
        )  # fmt: skip
    return table


PEER_NOTE = (
    "TiGrIS runs its own order (a depth-first sort of its ONNX conversion), spills every stage's "
    "outputs and reloads every stage's inputs, tiles ops larger than the budget (halo rows re-read) "
    "and runs on its own runtime (32-byte aligned); its traffic counts loading the model's input and "
    "spilling its output, ours starts inputs on chip and leaves outputs in place ('less I/O' drops "
    "them). Weights stay in flash for both."
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = ap.add_argument
    add("--quick", action="store_true", help="fewer models (2 zoo cells, 4 CIFAR cells, the files)")
    add("--sram", type=byte_sizes, default=list(BUDGETS), help="budgets (default 32K,64K,128K,256K)")
    add("--time-limit", type=float, default=10.0, help="seconds per schedule (default 10)")
    add("--element-size", type=int, default=1, choices=(1, 2, 4), help="zoo bytes/element (default 1)")
    add("--memory-model", choices=("tflm", "inplace"), default="tflm", help="default tflm")
    add("--exact-max-ops", type=int, default=60, help="largest graph for offchip_exact (default 60)")
    add("--exact-cases", type=int, default=16, help="(model, budget) pairs for offchip_exact (default 16)")
    add("--exact-limit", type=float, default=20.0, help="CP-SAT seconds per pair (default 20)")
    add("--no-peers", action="store_true", help="skip the TiGrIS table")
    add("--only", metavar="TEXT", help="only the models whose name contains TEXT")
    add("--json", type=Path, metavar="FILE", help="also write every row and summary")
    args = ap.parse_args(argv)
    console = Console(width=190)
    budgets = sorted(args.sram)
    todo = [s for s in subjects(args.quick) if not args.only or args.only in s.name]
    if not todo:
        console.print(f"no model's name contains '{args.only}'")
        return 1
    wall = time.perf_counter()

    # 1. Every model at every budget: listed, peak-optimal and traffic-optimal orders.
    rows: list[Row] = []
    graphs: dict[str, Graph] = {}
    orders: dict[tuple[str, int], list[int]] = {}
    for s in todo:
        g = load_subject(s, args.element_size, args.memory_model)
        graphs[s.name] = g
        got, by_sram = measure(s, g, budgets, args.time_limit)
        rows += got
        orders.update({(s.name, sram): order for sram, order in by_sram.items()})
    console.print(traffic_table(rows))
    nofit = nofit_table(rows)
    if nofit is not None:
        console.print(nofit)
    clocked = [r for r in rows if r.stopped and "no move" not in r.stopped and "bound" not in r.stopped]
    if clocked:
        console.print(
            f"{len(clocked)} local searches stopped by their time or evaluation cap (the time limit makes "
            f"an order irreproducible): {', '.join(f'{r.model} at {fmt_bytes(r.sram)}' for r in clocked)}"
        )
    sums = summarize(rows, budgets)
    console.print(summary_table(sums))
    console.print(
        "geomean over the models whose listed and optimal orders both move bytes (count in brackets); "
        "'optimal moves 0': the optimal order removes all traffic (ratio unbounded). "
        f"Zoo activations at {args.element_size} byte(s), memory model {args.memory_model}."
    )
    misses = misses_of(rows)

    # 2. The eviction policy against the exact eviction, on the smallest graphs.
    ex, why = exact_rows(graphs, orders, rows, args.exact_max_ops, args.exact_cases, args.exact_limit)
    if ex:
        console.print(exact_table(ex, args.exact_limit))
    if why:
        console.print(f"offchip_exact: {why}")
    misses += exact_misses(ex)

    # 3. TiGrIS on the files.
    pairs: list[PeerPair] = []
    files = [s for s in todo if s.path is not None]
    if args.no_peers:
        console.print("TiGrIS table skipped (--no-peers)")
    elif not files:
        console.print("TiGrIS table skipped: no .tflite file among the models")
    else:
        pairs, why = peer_rows(rows, files, budgets)
        if why:
            console.print(f"TiGrIS table skipped: {why}")
        else:
            console.print(peer_table(pairs))
            console.print(PEER_NOTE)
    wall = time.perf_counter() - wall
    console.print(
        f"{len(todo)} models x {len(budgets)} budgets in {wall:.1f} s (time limit {args.time_limit:g} s per "
        "schedule); target: the optimal order's traffic never above the listed order's"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "budgets": budgets,
                    "time_limit": args.time_limit,
                    "element_size": args.element_size,
                    "memory_model": args.memory_model,
                    "wall_seconds": round(wall, 3),
                    "rows": [{**asdict(r), "ratio": _finite(r.ratio)} for r in rows],
                    "summary": [{k: _finite(v) for k, v in asdict(s).items()} for s in sums],
                    "exact": [{**asdict(e), "gap": e.gap} for e in ex],
                    "tigris": [
                        {
                            "model": r.model,
                            "sram": r.sram,
                            "listed": r.listed,
                            "optimal": r.optimal,
                            "tigris": t if isinstance(t, str) else t.as_dict(),
                        }
                        for r, t in pairs
                    ],
                    "misses": misses,
                },
                indent=1,
            ),
            encoding="utf-8",
        )
    return verdict(console, misses)


def _finite(v: Any) -> Any:
    """``v`` with ``inf`` as the string ``"inf"`` and ``nan`` as None (JSON has neither)."""
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return v


if __name__ == "__main__":
    sys.exit(main())
