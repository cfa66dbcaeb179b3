"""The paper's evaluation: peak memory of every zoo network under every registered order.

For each network the bench imports the zoo's ONNX model into the IR (optionally re-accounted at
one byte per element, as int8 on a microcontroller), runs every baseline in
:data:`serenity.schedulers.BASELINES`, the exact scheduler ``"optimal"`` when one is registered,
and ``optimal+rewrite`` when a graph-rewriting pass is available (:func:`find_rewriter`), and
records each peak (recomputed by :func:`serenity.memory.simulate`), the best lower bound, whether
optimality was proven, and the scheduling time.

The summary is the paper's headline: the geometric mean over networks of ``peak(listed) /
peak(method)`` -- how much lower than the framework's own order each method goes (Ahn et al.
report 1.68× with the DP and 1.86× with rewriting against TensorFlow Lite's order) -- and, for
the best method, the geomean of ``peak(baseline) / peak(best)`` against each baseline.

With SRAM budgets (``serenity bench --sram 32K,64K,128K,256K``) each network also gets its
off-chip traffic per budget (:mod:`serenity.planning.offchip`): of the listed order, of the
peak-optimal order, and of the order :func:`serenity.schedulers.traffic.schedule_traffic`
chooses for that budget; the summary is the geomean of ``traffic(listed) / traffic(ours)`` per
budget beside the paper's (:data:`PAPER_TRAFFIC`). Every figure follows the graphs' memory model
(``--memory-model``).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from serenity.ir import Graph, with_alignment, with_element_size, with_memory_model
from serenity.schedulers import BASELINES, SCHEDULERS
from serenity.schedulers.result import ScheduleResult, op_lower_bound

#: Networks of ``serenity bench --quick`` (and ``make demo``): small cells, well under a minute.
QUICK = (
    "darts_normal_cell",
    "swiftnet_cell_a",
    "swiftnet_cell_c",
    "nasnet_a_cifar",
    "randwire_ws_stage",
    "nasfpn_body",
    "resnet18",
)
OPTIMAL = "optimal"
REWRITE = "optimal+rewrite"
#: Ahn et al. (MLSys 2020), off-chip traffic of TensorFlow Lite's order over Serenity's, by
#: on-chip budget in bytes.
PAPER_TRAFFIC = {32 * 1024: 1.52, 64 * 1024: 1.49, 128 * 1024: 1.51, 256 * 1024: 1.76}
#: Orders whose traffic the bench reports per budget (``traffic`` = :func:`schedule_traffic`).
TRAFFIC_ORDERS = ("listed", "optimal", "traffic")
#: Seconds :func:`schedule_traffic`'s local search gets per network and budget.
TRAFFIC_SECONDS = 2.0

#: Rewrites and schedules a network within a time limit: the schedule and the rewritten graph.
Rewriter = Callable[[float | None], "tuple[ScheduleResult, Graph]"]
Progress = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class MethodRun:
    """One method on one network: its peak, bound, proof and time."""

    method: str
    peak: int
    lower_bound: int
    proven: bool
    seconds: float
    peak_op: str = ""  #: "name (type)" of the op the schedule peaks at (optimal, rewrite)


@dataclass(frozen=True, slots=True)
class BenchRow:
    """One network.

    Attributes:
        network: Zoo name.
        family: Zoo family.
        ops: Ops in the imported graph.
        element_bytes: Bytes per activation element the peaks are accounted at.
        runs: Per method, in column order.
        lower_bound: The best lower bound any method (or the op bound) established.
        proven: Some method proved its peak optimal.
    """

    network: str
    family: str
    ops: int
    element_bytes: int
    runs: dict[str, MethodRun]
    lower_bound: int
    proven: bool
    #: Per SRAM budget, per order of :data:`TRAFFIC_ORDERS`, the off-chip bytes moved (``None``:
    #: an op alone does not fit that budget).
    traffic: dict[int, dict[str, int | None]] = field(default_factory=dict)

    @property
    def best(self) -> MethodRun:
        """The run with the lowest peak (ties: earliest column)."""
        return min(self.runs.values(), key=lambda r: r.peak)

    def ratio(self, method: str, against: str = "listed") -> float:
        """``peak(against) / peak(method)``: above 1 means ``method`` needs less memory."""
        return self.runs[against].peak / max(1, self.runs[method].peak)


@dataclass(frozen=True, slots=True)
class BenchReport:
    """Rows plus the headline geometric means.

    Attributes:
        rows: One per network.
        methods: Column order of the methods run.
        vs_listed: Per method, geomean over networks of ``peak(listed) / peak(method)``.
        reference: The method compared against each baseline (``optimal+rewrite``, else
            ``optimal``, else the best baseline per network, named ``best``).
        vs_baselines: Per baseline, geomean of ``peak(baseline) / peak(reference)``.
        rewrite_gain: Geomean of ``peak(optimal) / peak(optimal+rewrite)``: what rewriting adds
            to scheduling alone (``None`` without the rewrite column).
    """

    rows: list[BenchRow]
    methods: list[str]
    vs_listed: dict[str, float]
    reference: str
    vs_baselines: dict[str, float] = field(default_factory=dict)
    rewrite_gain: float | None = None
    #: Per budget: ``{"ours": geomean traffic(listed)/traffic(traffic order), "optimal": the same
    #: for the peak-optimal order, "networks": how many rows had listed traffic > 0, "zeroed":
    #: how many of them the traffic order brought to 0}``; the geomeans are over the rows where
    #: both are > 0.
    traffic_vs_listed: dict[int, dict[str, float]] = field(default_factory=dict)
    memory_model: str = "tflm"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "methods": self.methods,
            "reference": self.reference,
            "geomean_vs_listed": {k: round(v, 4) for k, v in self.vs_listed.items()},
            "geomean_reference_vs_baseline": {k: round(v, 4) for k, v in self.vs_baselines.items()},
            "geomean_rewrite_over_optimal": None
            if self.rewrite_gain is None
            else round(self.rewrite_gain, 4),
            "memory_model": self.memory_model,
            "traffic_vs_listed": [
                {"sram": b, **{k: round(v, 4) for k, v in v.items()}, "paper": PAPER_TRAFFIC.get(b)}
                for b, v in self.traffic_vs_listed.items()
            ],
            "rows": [
                {
                    "network": r.network,
                    "family": r.family,
                    "ops": r.ops,
                    "element_bytes": r.element_bytes,
                    "lower_bound": r.lower_bound,
                    "proven": r.proven,
                    "peaks": {m: run.peak for m, run in r.runs.items()},
                    "seconds": {m: round(run.seconds, 4) for m, run in r.runs.items()},
                    "proven_by": [m for m, run in r.runs.items() if run.proven],
                    "peak_op": {m: run.peak_op for m, run in r.runs.items() if run.peak_op},
                    **({"traffic": [{"sram": b, **t} for b, t in r.traffic.items()]} if r.traffic else {}),
                }
                for r in self.rows
            ],
        }


def find_rewriter() -> Callable[..., Any] | None:
    """The rewrite search (:func:`serenity.rewrites.search.rewrite_for_memory`), or ``None`` in an
    install without it; only then is there no ``optimal+rewrite`` column."""
    try:
        mod = importlib.import_module("serenity.rewrites.search")
    except ModuleNotFoundError:
        return None
    fn = getattr(mod, "rewrite_for_memory", None)
    return fn if callable(fn) else None


def rewriter(graph: Graph, dialect: Any = None, alignment: int = 1) -> Rewriter:
    """The ``optimal+rewrite`` method for ``graph`` (unaligned sizes): the rewrite search with
    ``dialect`` (default: ONNX op roles from the graph alone, as the zoo's graphs are ONNX),
    judged at ``alignment``."""

    def run(time_limit: float | None) -> tuple[ScheduleResult, Graph]:
        search = find_rewriter()
        assert search is not None
        d = dialect
        if d is None:
            from serenity.formats.onnx_rewrite import OnnxDialect

            d = OnnxDialect()
        out = search(graph, d, alignment=alignment, time_limit=time_limit)
        return out.result, with_alignment(out.graph, alignment)

    return run


def peak_op(graph: Graph, order: Sequence[int]) -> str:
    """``"name (type)"`` of the op at which ``order`` first reaches its peak."""
    from serenity.memory import simulate

    step = simulate(graph, order).peak_step
    if step < 0:
        return ""
    op = graph.ops[order[step]]
    return f"{op.name} ({op.type})"


def methods_available() -> list[str]:
    """Column order: every baseline, then ``optimal`` and ``optimal+rewrite`` when available."""
    methods = list(BASELINES)
    if OPTIMAL in SCHEDULERS:
        methods.append(OPTIMAL)
        if find_rewriter() is not None:
            methods.append(REWRITE)
    return methods


def is_model_file(name: str) -> bool:
    """Whether a bench name is a model file (``.onnx``/``.tflite``/``.json``) rather than a zoo name."""
    from serenity.formats import FORMATS

    return Path(name).suffix.lower() in FORMATS


def load_zoo_graph(name: str, *, element_bytes: int = 4) -> tuple[Graph, str]:
    """Zoo network ``name`` (or a model file's path) in the IR, and its family.

    A model file is loaded with :func:`serenity.formats.load` and re-accounted at
    ``element_bytes`` only when that is not its own element size (float32 files at 4 B are
    left as they are; an int8 ``.tflite`` keeps its 1-byte tensors unless asked otherwise). A
    ``.tflite`` file is accounted as TFLite Micro allocates, every buffer rounded up to 16 bytes.

    Raises:
        UnknownModelError: no such zoo network.
        SerenityError: the model file cannot be loaded.
    """
    from serenity import zoo

    if is_model_file(name):
        from serenity.formats import load

        model = load(name)
        graph = model.graph if element_bytes == 4 else with_element_size(model.graph, element_bytes)
        if model.format == "tflite":
            graph = with_alignment(graph, 16)
        return graph, f"{model.format} file"
    return zoo.graph(name, element_bytes=element_bytes), zoo.info(name).family


def bench_graph(
    name: str,
    graph: Graph,
    *,
    family: str = "",
    element_bytes: int = 4,
    methods: Sequence[str] | None = None,
    time_limit: float | None = 60.0,
    progress: Progress | None = None,
    rewrite: Rewriter | None = None,
    sram: Sequence[int] = (),
) -> BenchRow:
    """Run every method on one graph.

    Args:
        name: Row label.
        graph: The graph (already accounted at ``element_bytes``).
        family: Zoo family, for the table.
        element_bytes: Recorded in the row.
        methods: Column order (default :func:`methods_available`).
        time_limit: Seconds each method may take (the exact search reports what it proved).
        progress: Called with ``(network, method)`` before each method runs.
        rewrite: The ``optimal+rewrite`` method (default: :func:`rewriter` of ``graph``).
        sram: On-chip budgets at which to report off-chip traffic (:attr:`BenchRow.traffic`).

    Returns:
        The row.
    """
    methods = list(methods or methods_available())
    runs: dict[str, MethodRun] = {}
    results: dict[str, ScheduleResult] = {}
    for m in methods:
        if progress:
            progress(name, m)
        where = ""
        if m == REWRITE:
            r, g = (rewrite or rewriter(graph))(time_limit)
            where = peak_op(g, r.order)
        else:
            r = SCHEDULERS[m](graph, time_limit=time_limit)
            results[m] = r
            if m == OPTIMAL:
                where = peak_op(graph, r.order)
        runs[m] = MethodRun(m, r.peak, r.lower_bound, r.proven_optimal and m != REWRITE, r.seconds, where)
    # A rewritten graph has a different op set: its bound does not bound the original graph.
    plain = [r for m, r in runs.items() if m != REWRITE]
    bound = max([op_lower_bound(graph), *(r.lower_bound for r in plain)])
    best_plain = min(r.peak for r in plain)
    proven = any(r.proven for r in plain) or best_plain == bound
    traffic = {b: _traffic(graph, b, results, name, progress) for b in sram}
    return BenchRow(name, family, len(graph.ops), element_bytes, runs, bound, proven, traffic)


def _traffic(
    graph: Graph, sram: int, results: dict[str, ScheduleResult], name: str, progress: Progress | None
) -> dict[str, int | None]:
    """Off-chip bytes of each order of :data:`TRAFFIC_ORDERS` at ``sram`` (``None``: no fit)."""
    from serenity.planning.offchip import OpDoesNotFit, offchip_traffic
    from serenity.schedulers.traffic import schedule_traffic

    if progress:
        progress(name, f"traffic {sram // 1024} KiB")
    out: dict[str, int | None] = {}
    listed = results.get("listed")
    optimal = results.get(OPTIMAL)
    for key, r in (("listed", listed), ("optimal", optimal)):
        if r is None:
            continue
        try:
            out[key] = offchip_traffic(graph, r.order, sram).traffic
        except OpDoesNotFit:
            out[key] = None
    try:
        chosen = schedule_traffic(graph, sram, time_limit=TRAFFIC_SECONDS, peak_result=optimal)
        out["traffic"] = int(chosen.stats["traffic"]["traffic"])
    except OpDoesNotFit:
        out["traffic"] = None
    return out


def summarize_traffic(rows: Sequence[BenchRow]) -> dict[int, dict[str, float]]:
    """Per budget, the geomean traffic reductions over ``rows`` (see :class:`BenchReport`)."""
    budgets = sorted({b for r in rows for b in r.traffic})
    out: dict[int, dict[str, float]] = {}
    for b in budgets:
        entry: dict[str, float] = {}
        cells = [r.traffic[b] for r in rows if b in r.traffic and r.traffic[b].get("listed")]
        entry["networks"] = len(cells)
        entry["zeroed"] = sum(1 for c in cells if c.get("traffic") == 0)
        for key, col in (("ours", "traffic"), ("optimal", "optimal")):
            ratios = [c["listed"] / c[col] for c in cells if c.get(col)]  # type: ignore[operator]
            entry[key] = geomean(ratios)
        out[b] = entry
    return out


def geomean(values: Sequence[float]) -> float:
    """Geometric mean (1.0 for no values).

    >>> round(geomean([1.0, 4.0]), 6)
    2.0
    """
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else 1.0


def summarize(rows: list[BenchRow], methods: Sequence[str]) -> BenchReport:
    """The headline geomeans over ``rows``."""
    vs_listed = {m: geomean([r.ratio(m) for r in rows]) for m in methods if m != "listed"}
    reference = REWRITE if REWRITE in methods else OPTIMAL if OPTIMAL in methods else "best"
    vs_baselines = {}
    for b in BASELINES:
        if b in methods:
            vals = [
                r.runs[b].peak / max(1, r.best.peak if reference == "best" else r.runs[reference].peak)
                for r in rows
            ]
            vs_baselines[b] = geomean(vals)
    gain = geomean([r.ratio(REWRITE, OPTIMAL) for r in rows]) if {REWRITE, OPTIMAL} <= set(methods) else None
    return BenchReport(rows, list(methods), vs_listed, reference, vs_baselines, gain, summarize_traffic(rows))


def run_bench(
    names: Sequence[str],
    *,
    element_bytes: int = 4,
    time_limit: float | None = 60.0,
    methods: Sequence[str] | None = None,
    progress: Progress | None = None,
    sram: Sequence[int] = (),
    memory_model: str = "tflm",
) -> BenchReport:
    """Benchmark zoo networks ``names``.

    Args:
        names: Zoo names.
        element_bytes: 4 (float32) or 1 (int8-sized accounting).
        time_limit: Per method and network, in seconds.
        methods: Column order (default :func:`methods_available`).
        progress: Called with ``(network, method)`` before each step.
        sram: On-chip budgets at which to report off-chip traffic.
        memory_model: ``"tflm"`` or ``"inplace"`` (:mod:`serenity.memory`), for every figure.

    Returns:
        The report.

    Raises:
        UnknownModelError: a name is not in the zoo.
        SerenityError: a requested method is not registered.
    """
    from serenity import zoo
    from serenity.errors import SerenityError

    for n in names:
        if not is_model_file(n):
            zoo.info(n)
    methods = list(methods or methods_available())
    for m in methods:
        if m not in SCHEDULERS and not (m == REWRITE and find_rewriter()):
            raise SerenityError(f"bench: method '{m}' is not registered (known: {', '.join(SCHEDULERS)})")
    rows = []
    for n in names:
        if progress:
            progress(n, "import")
        graph, family = load_zoo_graph(n, element_bytes=element_bytes)
        graph = with_memory_model(graph, memory_model)
        rewrite = (
            rewriter_for_file(n, element_bytes, memory_model)
            if is_model_file(n) and REWRITE in methods
            else None
        )
        rows.append(
            bench_graph(
                n,
                graph,
                family=family,
                element_bytes=element_bytes,
                methods=methods,
                time_limit=time_limit,
                progress=progress,
                rewrite=rewrite,
                sram=sram,
            )
        )
    report = summarize(rows, methods)
    return replace(report, memory_model=memory_model)


def rewriter_for_file(path: str, element_bytes: int, memory_model: str = "tflm") -> Rewriter:
    """The ``optimal+rewrite`` method for a model file: its own format's dialect, its sizes
    before alignment, judged at its runtime's alignment (16 B for ``.tflite``)."""
    from serenity.formats import dialect_for, load

    model = load(path)
    graph = model.graph if element_bytes == 4 else with_element_size(model.graph, element_bytes)
    graph = with_memory_model(graph, memory_model)
    return rewriter(graph, dialect_for(model), 16 if model.format == "tflite" else 1)
