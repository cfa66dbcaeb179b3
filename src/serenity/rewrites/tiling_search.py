"""Choosing the patch stage: the split tensor and the grid with the lowest proven peak.

:mod:`serenity.rewrites.tiling` rewrites a prefix of the graph into per-tile copies for a given
split tensor ``S`` and grid ``n x m``. This module searches those two choices for the rewritten
graph whose *proven optimal peak* (the exact scheduler on the whole rewritten graph, which
interleaves the tiles so that one tile's activations die before the next starts) is lowest,
subject to the extra compute of overlapping halos staying within ``max_overhead``: the MACs the
tiles recompute, as a fraction of the *whole network's* MACs (:func:`network_macs`), which is
what a deployment pays per inference (MCUNetV2 reports it the same way). The fraction of the
tiled layers' own MACs (``TilePlan.overhead()``) is reported beside it.

**Candidates.** Every tensor :func:`.tiling.split_candidates` accepts, in topological order,
times the grids asked for (``auto``: ``k x k`` for ``k`` = 2 .. 8). For each split the grids are
tried from the coarsest; a finer grid of the same split is skipped once one exceeds the MAC
budget (halos only grow with ``k``).

**Pruning, exact.** Tiling changes nothing after ``S``: every op outside the prefix keeps its
inputs and outputs, and all of them are live while it runs, so the largest such op footprint
(:func:`suffix_bound`) is a peak no tiling at ``S`` can go below; the final concatenation writes
``S`` from its row parts, so ``2 |S|`` is another. A split whose bound is not below the best
proven peak found so far cannot win and is not evaluated (its row in ``--explain`` says why).

Each rewritten graph's static lower bound (:func:`serenity.schedulers.bounds.static_lower_bound`)
is checked before it is scheduled, and a graph that cannot beat the best peak is not scheduled.

**Never worse.** The rewrite is kept only when the tiled graph's peak is strictly below the
untiled optimum; otherwise the graph is left as it is (``TilingChoice.plan is None``), so a
network whose peak is not in its first layers (an irregular NAS cell) keeps its result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from serenity.ir import Graph
from serenity.memory import op_footprint
from serenity.rewrites.tiling import (
    SpatialDialect,
    TilePlan,
    TilingError,
    plan_tiles,
    split_candidates,
    tiled_graph,
)
from serenity.schedulers.bounds import static_lower_bound
from serenity.schedulers.clock import Deadline
from serenity.schedulers.result import ScheduleResult

#: Grids ``tiles=auto`` tries: 2x2 .. 8x8.
AUTO_GRIDS: tuple[tuple[int, int], ...] = tuple((k, k) for k in range(2, 9))
#: Default cap on the extra MACs of the tiled prefix (``--max-overhead``).
MAX_OVERHEAD = 0.20


def network_macs(graph: Graph, dialect: SpatialDialect) -> int:
    """Multiply-accumulates of one inference: every convolution the dialect reads a window of
    (``out_h * out_w * out_c * kh * kw * in_c / groups``) and every fully connected / matrix
    product with a constant 2-D weight (its element count per output row). Pooling and
    element-wise ops count 0, as in :class:`.tiling.TilePlan`."""
    from serenity.rewrites.tiling import AXES, Box, Window, _conv_macs

    h_ax, w_ax, _ = AXES[dialect.layout]
    total = 0
    for op in graph.ops:
        win = dialect.window(graph, op)
        if isinstance(win, Window) and win.kind == "conv" and op.outputs and op.outputs[0] in graph.tensors:
            shape = graph.tensors[op.outputs[0]].shape
            if len(shape) == 4:
                total += _conv_macs(graph, op, win, Box(0, shape[h_ax], 0, shape[w_ax]), dialect.layout)
            continue
        if op.type in ("FULLY_CONNECTED", "Gemm", "MatMul", "BATCH_MATMUL"):
            weights = [graph.tensors[n] for n in op.inputs if n and graph.tensors[n].constant]
            acts = [graph.tensors[n] for n in op.inputs if n and not graph.tensors[n].constant]
            w2 = next((w for w in weights if len(w.shape) == 2), None)
            if w2 is not None and acts:
                rows = 1
                for d in acts[0].shape[:-1]:
                    rows *= d
                total += rows * w2.shape[0] * w2.shape[1]
    return total


@dataclass(frozen=True, slots=True)
class TilingCandidate:
    """One split and grid tried (a row of ``optimize --explain``).

    Attributes:
        split: The split tensor.
        grid: ``(n, m)``.
        status: ``"chosen"``, ``"lower"`` (a lower peak than untiled, not the lowest),
            ``"no gain"``, ``"over budget"`` (overhead above the cap), ``"pruned"`` (its bound
            cannot beat the best found), ``"rejected"`` (the plan failed) or ``"time"`` (the
            time limit came first).
        peak: The rewritten graph's peak (``None`` when not scheduled).
        proven: That peak is proven optimal for the rewritten graph.
        overhead: Extra MACs, a fraction of the network's (``None`` when not planned).
        ops: Ops of the rewritten graph.
        reason: Why it was rejected or pruned.
    """

    split: str
    grid: tuple[int, int]
    status: str
    peak: int | None = None
    proven: bool = False
    overhead: float | None = None
    ops: int = 0
    reason: str = ""

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "split": self.split,
            "grid": f"{self.grid[0]}x{self.grid[1]}",
            "status": self.status,
            "peak": self.peak,
            "proven": self.proven,
            "overhead": None if self.overhead is None else round(self.overhead, 4),
            "ops": self.ops,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class TilingChoice:
    """What :func:`choose_tiling` found.

    Attributes:
        plans: The chosen stages in the order to apply them (each planned on the graph the
            earlier ones made), or ``()`` when no tiling lowers the peak (the graph stays).
        graph: The rewritten graph as counted (aligned, in the memory model), or ``None``.
        result: Its schedule, or ``None``.
        base_peak: The untiled graph's peak the choice had to beat.
        candidates: Every split and grid considered, in the order tried.
        seconds: Time taken.
        network_macs: MACs of one inference of the untiled network (:func:`network_macs`).
    """

    plans: tuple[TilePlan, ...]
    graph: Graph | None
    result: ScheduleResult | None
    base_peak: int
    candidates: tuple[TilingCandidate, ...] = field(default_factory=tuple)
    seconds: float = 0.0
    network_macs: int = 0

    @property
    def overhead(self) -> float:
        """The chosen stages' extra MACs as a fraction of the network's (0 without a plan)."""
        extra = sum(p.macs_after - p.macs_before for p in self.plans)
        return extra / max(1, self.network_macs)


def suffix_bound(counted: Graph, prefix: Sequence[int], split: str) -> int:
    """A peak no tiling of ``prefix`` (ending at ``split``) goes below: the largest footprint of
    an op outside the prefix (its inputs and outputs, all live while it runs, unchanged by the
    rewrite; less an in-place saving under ``inplace``) and twice the split tensor (the final
    concatenation reads its parts and writes it)."""
    d = counted.dense
    inside = set(prefix)
    best = 2 * counted.tensors[split].nbytes
    for v in range(d.n_ops):
        if v not in inside:
            best = max(best, op_footprint(d, v))
    return best


@dataclass
class _Scored:
    """A candidate stage the search scheduled (internal)."""

    plans: tuple[TilePlan, ...]
    raw: Graph  # the rewritten graph with file sizes (the next stage plans on it)
    graph: Graph  # as counted
    result: ScheduleResult
    extra: float
    region: int  # the peak over the steps up to the last stage's split


def choose_tiling(
    graph: Graph,
    dialect: SpatialDialect,
    schedule: Callable[[Graph, float | None], ScheduleResult],
    *,
    counted: Callable[[Graph], Graph] = lambda g: g,
    base_peak: int,
    grids: Sequence[tuple[int, int]] | None = None,
    max_overhead: float = MAX_OVERHEAD,
    time_limit: float | None = None,
    progress: Callable[[str], None] | None = None,
    stages: int = 2,
    second_from: int = 3,
) -> TilingChoice:
    """The patch stages whose rewritten graph has the lowest peak, within ``max_overhead``.

    **One stage**: every split and grid, as the module docstring says. **Two stages** (only when
    one stage lowers the peak, i.e. the first layers hold it): a first stage leaves the layers
    after its split whole; a second stage, starting at that split (read
    whole, :func:`.tiling.plan_tiles` ``start``), tiles them on a grid of its own. The first
    stages tried are the ``second_from`` lowest by the peak over their own steps (up to their
    split), whatever the rest of the graph needs (no suffix pruning: the second stage changes the
    rest); the second stage is searched like one stage on the first one's graph, within what
    is left of the MAC budget, and must beat the best peak so far.

    Args:
        graph: The graph with its file's sizes (plans need shapes, not accounted sizes).
        dialect: The format's spatial dialect.
        schedule: Schedules a counted graph within a time limit (``serenity optimize`` passes
            the exact scheduler).
        counted: The graph as peaks are counted (alignment, memory model).
        base_peak: The untiled graph's peak, to beat strictly.
        grids: Grids to try (default :data:`AUTO_GRIDS`); one grid for ``--tiles NxM`` (both
            stages use it).
        max_overhead: Largest extra MACs of all stages, a fraction of the whole network's.
        time_limit: Seconds for the whole search; candidates not reached are reported.
        progress: Called with a short description before each evaluation.
        stages: 1 or 2.
        second_from: First stages a second stage is searched after.

    Returns:
        A :class:`TilingChoice` (``plans``: the stages in the order to apply them).
    """
    clock = Deadline(time_limit)
    grids = tuple(grids or AUTO_GRIDS)
    total = max(1, network_macs(graph, dialect))
    tried: list[TilingCandidate] = []
    firsts: list[_Scored] = []
    best = _search_stage(
        graph, dialect, schedule, counted, (), 0.0, base_peak, grids, max_overhead, total, clock,
        progress, tried, None,
    )  # fmt: skip
    if stages > 1 and best is not None and not clock.expired():
        # One stage helps, so the first layers hold the peak: look for a second stage. The first
        # stages are scheduled again without pruning (the second changes what stays untiled).
        _search_stage(
            graph, dialect, schedule, counted, (), 0.0, base_peak, grids, max_overhead, total, clock,
            progress, [], firsts,
        )  # fmt: skip
        firsts.sort(key=lambda c: (c.region, c.extra))
        for first in firsts[:second_from]:
            if clock.expired():
                break
            target = min(base_peak, best.result.peak) if best else base_peak
            if first.region >= target:
                continue
            second = _search_stage(
                first.raw, dialect, schedule, counted, first.plans, first.extra, target, grids,
                max_overhead, total, clock, progress, tried, None,
            )  # fmt: skip
            if second is not None and second.result.peak < target:
                best = second
    chosen = best if best and best.result.peak < base_peak else None
    out = []
    for c in tried:
        if c.status != "scored":
            out.append(c)
            continue
        if chosen and _label(chosen.plans) == c.split and c.grid == chosen.plans[-1].grid:
            status = "chosen"
        elif c.peak is not None and c.peak < base_peak:
            status = "lower"
        else:
            status = "no gain"
        out.append(TilingCandidate(c.split, c.grid, status, c.peak, c.proven, c.overhead, c.ops, c.reason))
    if chosen is None:
        return TilingChoice((), None, None, base_peak, tuple(out), clock.elapsed(), total)
    return TilingChoice(
        chosen.plans, chosen.graph, chosen.result, base_peak, tuple(out), clock.elapsed(), total
    )


def _label(plans: Sequence[TilePlan]) -> str:
    """How ``--explain`` names a candidate: its split, after the earlier stages' splits and grids."""
    head = "".join(f"{p.split} {p.grid[0]}x{p.grid[1]} -> " for p in plans[:-1])
    return head + plans[-1].split


def _search_stage(
    graph: Graph,
    dialect: SpatialDialect,
    schedule: Callable[[Graph, float | None], ScheduleResult],
    counted: Callable[[Graph], Graph],
    before: tuple[TilePlan, ...],
    spent: float,
    base_peak: int,
    grids: Sequence[tuple[int, int]],
    max_overhead: float,
    total: int,
    clock: Deadline,
    progress: Callable[[str], None] | None,
    tried: list[TilingCandidate],
    firsts: list[_Scored] | None,
) -> _Scored | None:
    """One stage's splits and grids on ``graph`` (after the stages ``before``, which used
    ``spent`` of the MAC budget); the best candidate below ``base_peak``. With ``firsts``, every
    candidate within the budget is scheduled (none pruned) and collected there."""
    start = {before[-1].split} if before else set()
    base = counted(graph)
    best: _Scored | None = None
    splits = [s for s, why in split_candidates(graph, dialect, start=start) if why is None]
    # Latest splits first: they tile the most of the large early layers, so a good peak is found
    # early and prunes the rest.
    for split in reversed(splits):
        label = _label((*before, TilePlan(split, (1, 1), dialect.layout, (), (), (), 0, 0)))
        for grid in grids:
            if clock.expired():
                tried.append(TilingCandidate(label, grid, "time", reason=clock.message()))
                continue
            try:
                plan = plan_tiles(graph, dialect, split, grid, start=start)
            except TilingError as e:
                tried.append(TilingCandidate(label, grid, "rejected", reason=str(e)))
                continue
            extra = spent + (plan.macs_after - plan.macs_before) / total
            if extra > max_overhead:
                why = f"{extra:.1%} extra MACs > {max_overhead:.0%}"
                tried.append(TilingCandidate(label, grid, "over budget", overhead=extra, reason=why))
                break  # finer grids of this split only overlap more
            floor = suffix_bound(base, plan.prefix, split)
            target = min(base_peak, best.result.peak) if best else base_peak
            if floor >= target and firsts is None:
                tried.append(TilingCandidate(label, grid, "pruned", overhead=extra,
                                             reason=f"what stays untiled needs {floor:,} B"))  # fmt: skip
                break  # the bound does not depend on the grid
            if progress:
                progress(f"tiling {label} {grid[0]}x{grid[1]}")
            raw = tiled_graph(graph, plan, dialect)
            g = counted(raw)
            lb = static_lower_bound(g.dense)
            if lb >= target and firsts is None:
                why = f"the tiled graph needs {lb:,} B in every order"
                tried.append(
                    TilingCandidate(label, grid, "pruned", overhead=extra, ops=len(g.ops), reason=why)
                )
                continue
            r = schedule(g, clock.left())
            tried.append(TilingCandidate(label, grid, "scored", r.peak, r.proven_optimal, extra, len(g.ops)))
            scored = _Scored((*before, plan), raw, g, r, extra, _region_peak(g, r, split))
            if firsts is not None:
                firsts.append(scored)
            if r.peak < target:
                best = scored
    return best


def _region_peak(g: Graph, r: ScheduleResult, split: str) -> int:
    """The peak over the steps of ``r``'s order up to the one writing ``split``."""
    from serenity.memory import simulate

    producer = g.tensors[split].producer
    prof = simulate(g, r.order, check=False)
    k = r.order.index(producer) if producer is not None else len(r.order) - 1
    return max(prof.during[: k + 1], default=0)


def parse_tiles(text: str) -> tuple[int, int] | str:
    """``--tiles``: ``"auto"``, ``"off"``, or ``"NxM"`` (``N, M >= 1``, not both 1)."""
    t = text.strip().lower()
    if t in ("auto", "off"):
        return t
    n, sep, m = t.partition("x")
    if sep and n.isdigit() and m.isdigit() and int(n) >= 1 and int(m) >= 1 and int(n) * int(m) > 1:
        return (int(n), int(m))
    raise ValueError(f"'{text}' is not a tile grid: use auto, off or NxM (e.g. 4x4)")
