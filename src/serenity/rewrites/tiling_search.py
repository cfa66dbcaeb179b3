"""Choosing the patch stage: the split tensor and the grid with the lowest proven peak.

:mod:`serenity.rewrites.tiling` rewrites a prefix of the graph into per-tile copies for a given
split tensor ``S`` and grid ``n x m``. This module searches those two choices for the rewritten
graph whose *proven optimal peak* (the exact scheduler on the whole rewritten graph, which
interleaves the tiles so that one tile's activations die before the next starts) is lowest,
subject to the extra compute of overlapping halos (``TilePlan.overhead``, % of the prefix's
convolution MACs) staying within ``max_overhead``.

**Candidates.** Every tensor :func:`.tiling.split_candidates` accepts, in topological order,
times the grids asked for (``auto``: ``k x k`` for ``k`` = 2 .. 8). For each split the grids are
tried from the coarsest; a finer grid of the same split is skipped once one exceeds the MAC
budget (halos only grow with ``k``).

**Pruning, exact.** Tiling changes nothing after ``S``: every op outside the prefix keeps its
inputs and outputs, and all of them are live while it runs, so the largest such op footprint
(:func:`suffix_bound`) is a peak no tiling at ``S`` can go below; the final concatenation writes
``S`` from its row parts, so ``2 |S|`` is another. A split whose bound is not below the best
proven peak found so far cannot win and is not evaluated (its row in ``--explain`` says why).

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
from serenity.schedulers.clock import Deadline
from serenity.schedulers.result import ScheduleResult

#: Grids ``tiles=auto`` tries: 2x2 .. 8x8.
AUTO_GRIDS: tuple[tuple[int, int], ...] = tuple((k, k) for k in range(2, 9))
#: Default cap on the extra MACs of the tiled prefix (``--max-overhead``).
MAX_OVERHEAD = 0.20


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
        overhead: Extra MACs, a fraction (``None`` when not planned).
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
        plan: The chosen plan, or ``None`` when no tiling lowers the peak (the graph stays).
        graph: The rewritten graph as counted (aligned, in the memory model), or ``None``.
        result: Its schedule, or ``None``.
        base_peak: The untiled graph's peak the choice had to beat.
        candidates: Every split and grid considered, in the order tried.
        seconds: Time taken.
    """

    plan: TilePlan | None
    graph: Graph | None
    result: ScheduleResult | None
    base_peak: int
    candidates: tuple[TilingCandidate, ...] = field(default_factory=tuple)
    seconds: float = 0.0


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
) -> TilingChoice:
    """The split and grid whose rewritten graph has the lowest peak, within ``max_overhead``.

    Args:
        graph: The graph with its file's sizes (plans need shapes, not accounted sizes).
        dialect: The format's spatial dialect.
        schedule: Schedules a counted graph within a time limit (``serenity optimize`` passes
            the exact scheduler).
        counted: The graph as peaks are counted (alignment, memory model).
        base_peak: The untiled graph's peak, to beat strictly.
        grids: Grids to try (default :data:`AUTO_GRIDS`); one grid for ``--tiles NxM``.
        max_overhead: Largest extra MACs, a fraction of the prefix's.
        time_limit: Seconds for the whole search; candidates not reached are reported.
        progress: Called with a short description before each evaluation.

    Returns:
        A :class:`TilingChoice`.
    """
    clock = Deadline(time_limit)
    grids = tuple(grids or AUTO_GRIDS)
    base = counted(graph)
    tried: list[TilingCandidate] = []
    best: tuple[int, TilePlan, Graph, ScheduleResult] | None = None
    splits = [s for s, why in split_candidates(graph, dialect) if why is None]
    # Latest splits first: they tile the most of the large early layers, so a good peak is found
    # early and prunes the rest.
    for split in reversed(splits):
        for grid in grids:
            if clock.expired():
                tried.append(TilingCandidate(split, grid, "time", reason=clock.message()))
                continue
            try:
                plan = plan_tiles(graph, dialect, split, grid)
            except TilingError as e:
                tried.append(TilingCandidate(split, grid, "rejected", reason=str(e)))
                continue
            if plan.overhead() > max_overhead:
                why = f"{plan.overhead():.1%} extra MACs > {max_overhead:.0%}"
                over = TilingCandidate(split, grid, "over budget", overhead=plan.overhead(), reason=why)
                tried.append(over)
                break  # finer grids of this split only overlap more
            floor = suffix_bound(base, plan.prefix, split)
            target = min(base_peak, best[0]) if best else base_peak
            if floor >= target:
                tried.append(TilingCandidate(split, grid, "pruned", overhead=plan.overhead(),
                                             reason=f"what stays untiled needs {floor:,} B"))  # fmt: skip
                break  # the bound does not depend on the grid
            if progress:
                progress(f"tiling {split} {grid[0]}x{grid[1]}")
            g = counted(tiled_graph(graph, plan, dialect))
            r = schedule(g, clock.left())
            tried.append(
                TilingCandidate(split, grid, "scored", r.peak, r.proven_optimal, plan.overhead(), len(g.ops))
            )
            if r.peak < target:
                best = (r.peak, plan, g, r)
    chosen = best if best and best[0] < base_peak else None
    out = []
    for c in tried:
        if c.status != "scored":
            out.append(c)
            continue
        if chosen and (c.split, c.grid) == (chosen[1].split, chosen[1].grid):
            status = "chosen"
        elif c.peak is not None and c.peak < base_peak:
            status = "lower"
        else:
            status = "no gain"
        out.append(TilingCandidate(c.split, c.grid, status, c.peak, c.proven, c.overhead, c.ops, c.reason))
    if chosen is None:
        return TilingChoice(None, None, None, base_peak, tuple(out), clock.elapsed())
    return TilingChoice(chosen[1], chosen[2], chosen[3], base_peak, tuple(out), clock.elapsed())


def parse_tiles(text: str) -> tuple[int, int] | str:
    """``--tiles``: ``"auto"``, ``"off"``, or ``"NxM"`` (``N, M >= 1``, not both 1)."""
    t = text.strip().lower()
    if t in ("auto", "off"):
        return t
    n, sep, m = t.partition("x")
    if sep and n.isdigit() and m.isdigit() and int(n) >= 1 and int(m) >= 1 and int(n) * int(m) > 1:
        return (int(n), int(m))
    raise ValueError(f"'{text}' is not a tile grid: use auto, off or NxM (e.g. 4x4)")
