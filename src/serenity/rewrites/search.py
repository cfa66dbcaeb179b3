"""Which rewrites to keep: each judged by the exact scheduler on the whole rewritten graph.

A rewrite is only worth its extra ops where it lowers the peak of the *best order* of the whole
graph, and whether it does depends on the other choices (Ahn et al., MLSys 2020, §4: rewriting
and scheduling are searched together). The search is steepest descent over candidate groups,
each judged by :func:`serenity.schedulers.dp.schedule_dp` on the rewritten graph:

1. **Candidates.** For every match (see :mod:`serenity.rewrites.match`): the rewrite alone; its
   *closure* (a kernel-wise split leaves a concatenation after the split op, so the readers of
   that new concatenation are split too, recursively: ``Concat -> ReLU -> Conv`` becomes one
   candidate); and for every concatenation, the closures of all its readers together (a
   concatenation only disappears when every reader is split).
2. **Step.** Apply the candidate whose rewritten graph has the lowest optimal peak, if that is
   strictly below the current one (ties: the fewest new ops, then the earliest match). Repeat
   on the rewritten graph until no candidate lowers the peak.
3. **Interacting choices.** Identical cells can each reach the peak, so no single candidate
   lowers it. Then all concatenation groups are applied together; if that lowers the peak,
   each group is dropped again unless dropping it raises the peak (so no group stays that does
   not pay for itself), and the rest is one step.

Every kept step strictly lowered the peak of an order the scheduler found (and proved, where
``proven_optimal``), so no rewrite is applied that does not lower the peak. The result records
every match considered, applied or rejected with its reason (``--explain``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from serenity.ir import Graph, with_alignment
from serenity.rewrites.apply import apply_rewrite
from serenity.rewrites.match import make_rewrite, matches
from serenity.rewrites.records import Dialect, Rejection, Rewrite
from serenity.schedulers.clock import Deadline
from serenity.schedulers.dp import schedule_dp
from serenity.schedulers.result import ScheduleResult

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Considered:
    """One match as ``--explain`` lists it.

    Attributes:
        concat: The concatenation's output tensor.
        reader: The reader's output tensor.
        kind: ``"kernel"``, ``"channel"`` or ``""`` (rejected before a kind was known).
        status: ``"applied"``, ``"rejected"`` (a check failed) or ``"no gain"`` (writable, but
            no candidate containing it lowered the peak).
        reason: Why, as text (the check that failed, or the best peak it reached).
    """

    concat: str
    reader: str
    kind: str
    status: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {
            "concat": self.concat,
            "reader": self.reader,
            "kind": self.kind,
            "status": self.status,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Step:
    """One accepted candidate: its rewrites, in order, and the peak before and after."""

    label: str
    rewrites: tuple[Rewrite, ...]
    peak_before: int
    peak_after: int
    proven: bool


@dataclass(frozen=True, slots=True)
class RewriteOutcome:
    """What :func:`rewrite_for_memory` found.

    Attributes:
        graph: The rewritten graph (``original`` when nothing helped).
        rewrites: The primitive rewrites, in the order a format adapter must apply them.
        base: The exact schedule of the original graph.
        result: The exact schedule of the rewritten graph (``base`` when nothing helped).
        steps: The accepted candidates in order.
        considered: Every match seen, with its outcome.
        evaluations: Rewritten graphs scheduled.
        seconds: Wall-clock time of the whole search.
        stopped: Why the search ended early (time limit), else ``""``.
    """

    original: Graph
    graph: Graph
    rewrites: tuple[Rewrite, ...]
    base: ScheduleResult
    result: ScheduleResult
    steps: tuple[Step, ...]
    considered: tuple[Considered, ...]
    evaluations: int
    seconds: float
    stopped: str = ""
    stats: dict[str, object] = field(default_factory=dict)

    @property
    def modified(self) -> bool:
        """Whether any rewrite was kept (computed from the rewrites, not assumed)."""
        return bool(self.rewrites)


@dataclass(slots=True)
class _Candidate:
    label: str
    first: tuple[Rewrite, ...]  # what starts it; the graph and full sequence come from expanding
    graph: Graph
    rewrites: tuple[Rewrite, ...]


def _key(rw: Rewrite | Rejection) -> tuple[str, str]:
    return (rw.concat, rw.reader)


def expand(
    graph: Graph, rw: Rewrite, dialect: Dialect, rejected: list[Rejection] | None = None
) -> tuple[Graph, list[Rewrite]]:
    """Apply ``rw`` and, if it is kernel-wise, split every splittable reader of the concatenation
    it leaves behind, recursively (the closure of step 1); readers that cannot be split are
    added to ``rejected``."""
    graph = apply_rewrite(graph, rw, dialect)
    if rw.kind != "kernel":
        return graph, [rw]
    graph, more = _group(graph, rw.reader, dialect, rejected)
    return graph, [rw, *more]


def _group(
    graph: Graph, concat: str, dialect: Dialect, rejected: list[Rejection] | None = None
) -> tuple[Graph, list[Rewrite]]:
    """Expand every splittable reader of the concatenation writing ``concat`` in turn, matching
    again after each (a split renames what the next match refers to)."""
    seq: list[Rewrite] = []
    tried: set[str] = set()
    while True:
        t = graph.tensors.get(concat)
        if t is None or t.producer is None:
            return graph, seq
        c_op = graph.ops[t.producer]
        nxt = None
        for r in t.consumers:
            m = make_rewrite(graph, dialect, c_op, graph.ops[r])
            if isinstance(m, Rewrite) and m.reader not in tried:
                nxt = m
                break
            if isinstance(m, Rejection) and rejected is not None:
                rejected.append(m)
        if nxt is None:
            return graph, seq
        tried.add(nxt.reader)
        graph, more = expand(graph, nxt, dialect, rejected)
        seq += more


def concat_fed(graph: Graph, dialect: Dialect) -> set[int]:
    """The ops a rewrite may remove: concatenations, and ops splittable by role whose data is a
    concatenation's output, directly or through per-channel ops (``Concat -> ReLU -> Conv``)."""
    removable: set[int] = set()
    concat_like: set[str] = set()  # tensors a concatenation writes, or one may after splits
    for v in graph.topological_order:
        op = graph.ops[v]
        role = dialect.role(graph, op)
        if isinstance(role, str):
            continue
        if role.kind == "concat" or op.inputs[role.data_input] in concat_like:
            removable.add(v)
            if role.kind != "conv":
                concat_like.update(o for o in op.outputs if o)
    return removable


def kept_bound(graph: Graph, dialect: Dialect) -> tuple[int, str]:
    """A peak no rewrite can go below, and the op that sets it.

    Rewrites only remove concatenations and ops that read one, directly or through per-channel
    ops a kernel-wise split moves the concatenation past. Every other op stays in every
    rewritten graph with the same inputs and outputs, all live while it runs, so the largest
    such op bounds every rewritten graph's peak (less its output under the ``inplace`` model
    when it may write over an input). When the current optimum equals it, the
    search can stop at once (the ImageNet NAS networks peak in their stem).
    """
    from serenity.memory import reuse_candidates

    removable = concat_fed(graph, dialect)
    best, where = 0, ""
    for op in graph.ops:
        if op.index in removable:
            continue
        names = dict.fromkeys(n for n in (*op.inputs, *op.outputs) if n)
        b = sum(graph.tensors[n].nbytes for n in names if graph.tensors[n].is_activation)
        if graph.memory_model == "inplace" and reuse_candidates(graph, op):
            b -= graph.tensors[reuse_candidates(graph, op)[0]].nbytes  # may write over that input
        if b > best:
            best, where = b, op.name
    return best, where


def hot_tensors(graph: Graph, order: Sequence[int]) -> set[str]:
    """Activations live at a step where ``order`` reaches its peak: only a rewrite that touches
    one of them can lower that step (the search's focus; see :func:`rewrite_for_memory`)."""
    from serenity.memory import simulate

    prof = simulate(graph, order)
    steps = [s for s, b in enumerate(prof.during) if b == prof.peak]
    pos = {v: i for i, v in enumerate(order)}
    n = len(order)
    hot: set[str] = set()
    for t in graph.tensors.values():
        if not t.is_activation:
            continue
        start = -1 if t.producer is None else pos[t.producer]
        end = n if t.is_output else max((pos[c] for c in t.consumers), default=start)
        if any(start <= s <= end for s in steps):
            hot.add(t.name)
    return hot


def candidates(
    graph: Graph, dialect: Dialect, hot: set[str] | None = None, *, groups_only: bool = False
) -> tuple[list[_Candidate], list[Rejection]]:
    """Step 1: the candidate groups of ``graph`` (deduplicated) and the rejected matches; with
    ``hot``, only candidates whose concatenation, a part of it, or the split op's output is one
    of those tensors; with ``groups_only``, one candidate per concatenation (all its readers)."""
    out: list[_Candidate] = []
    seen: set[tuple[tuple[str, str], ...]] = set()
    rejected: list[Rejection] = []

    def add(label: str, first: tuple[Rewrite, ...], g: Graph, seq: Sequence[Rewrite]) -> None:
        sig = tuple(_key(r) for r in seq)
        if seq and sig not in seen:
            seen.add(sig)
            out.append(_Candidate(label, first, g, tuple(seq)))

    found = matches(graph, dialect)
    concats: list[str] = []
    for m in found:
        if isinstance(m, Rejection):
            rejected.append(m)
            continue
        if hot is not None and not ({m.concat, m.reader, *m.parts} & hot):
            continue
        if m.concat not in concats:
            concats.append(m.concat)
        if groups_only:
            continue
        add(m.describe(), (m,), apply_rewrite(graph, m, dialect), [m])
        if m.kind == "kernel":
            g, seq = expand(graph, m, dialect, rejected)
            add(m.describe() + " and the readers after it", (m,), g, seq)
    for x in concats:
        g, seq = _group(graph, x, dialect)
        add(f"every reader of '{x}'", tuple(seq[:1]), g, seq)
    return out, rejected


def rewrite_for_memory(
    graph: Graph,
    dialect: Dialect,
    *,
    alignment: int = 1,
    time_limit: float | None = None,
    judge: Callable[[Graph, float | None], ScheduleResult] | None = None,
    base: ScheduleResult | None = None,
) -> RewriteOutcome:
    """Rewrite ``graph`` where, and only where, it lowers the optimal peak (module docstring).

    Args:
        graph: The graph as loaded (sizes unaligned: rewrites derive new tensors' sizes).
        dialect: The format's dialect (op roles, what it can write).
        alignment: Bytes every activation is rounded up to when judging (16 for TFLite Micro).
        time_limit: Seconds for the whole search; on expiry the best graph so far is returned.
        judge: Schedules a graph within seconds left (default: the exact scheduler).
        base: The original graph's schedule if the caller already has it (aligned).

    Returns:
        A :class:`RewriteOutcome`; ``outcome.result`` is the schedule of ``outcome.graph``.
    """
    clock = Deadline(time_limit)

    def schedule(g: Graph) -> ScheduleResult:
        aligned = with_alignment(g, alignment)
        if judge is not None:
            return judge(aligned, clock.left())
        return schedule_dp(aligned, time_limit=clock.left())

    if base is None:
        base = schedule(graph)
    floor, floor_op = kept_bound(with_alignment(graph, alignment), dialect)
    cur_g, cur_r = graph, base
    applied: list[Rewrite] = []
    steps: list[Step] = []
    status: dict[tuple[str, str], Considered] = {}
    best_seen: dict[tuple[str, str], tuple[int, str]] = {}  # lowest peak a candidate with it reached
    evaluations = 0
    stopped = ""

    def note_rejections(rejs: Sequence[Rejection]) -> None:
        for rj in rejs:
            if status.get(_key(rj)) is None or status[_key(rj)].status != "applied":
                status[_key(rj)] = Considered(rj.concat, rj.reader, "", "rejected", rj.reason)

    focus = True
    while True:
        if cur_r.peak <= floor:
            # Nothing left to gain: the peak is an op every rewritten graph keeps.
            for m in matches(cur_g, dialect):
                if isinstance(m, Rewrite) and _key(m) not in status:
                    status[_key(m)] = Considered(m.concat, m.reader, m.kind, "no gain",
                        f"the peak {cur_r.peak:,} B is op '{floor_op}' with its inputs and outputs, "
                        "which every rewritten graph keeps")  # fmt: skip
                elif isinstance(m, Rejection):
                    note_rejections([m])
            break
        if clock.expired():
            stopped = clock.message()
            break
        # Focus first on every candidate touching what is live where the current best order
        # peaks; when that finds nothing, one round over every concatenation's group (another
        # optimal order may peak elsewhere).
        hot = hot_tensors(with_alignment(cur_g, alignment), cur_r.order) if focus else None
        cands, rejs = candidates(cur_g, dialect, hot, groups_only=not focus)
        note_rejections(rejs)
        peaks: dict[str, int] = {}
        # 2. The candidate with the lowest peak, if it is below the current one.
        best: tuple[int, int, int, _Candidate, ScheduleResult] | None = None
        for i, c in enumerate(cands):
            if clock.expired():
                stopped = clock.message()
                break
            r = schedule(c.graph)
            evaluations += 1
            for rw in c.rewrites:
                k = _key(rw)
                best_seen[k] = (min(best_seen.get(k, (r.peak, ""))[0], r.peak), rw.kind)
            if c.label.startswith("every reader of"):
                peaks[c.rewrites[0].concat] = r.peak
            key = (r.peak, len(c.graph.ops), i)
            if r.peak < cur_r.peak and (best is None or key < best[:3]):
                best = (*key, c, r)
        if best is None and not stopped:
            # 3. Together: the concatenation groups that did not raise the peak on their own.
            harmless = [x for x, p in peaks.items() if p <= cur_r.peak]
            best = _all_together(cur_g, cur_r, harmless, dialect, schedule)
            evaluations += 1 + len(harmless) if len(harmless) >= 2 else 0
        if best is None and focus and not stopped:
            focus = False
            continue
        if best is None:
            break
        _, _, _, c, r = best
        log.info("rewrite %s: peak %d -> %d B", c.label, cur_r.peak, r.peak)
        steps.append(Step(c.label, c.rewrites, cur_r.peak, r.peak, r.proven_optimal))
        applied += c.rewrites
        for rw in c.rewrites:
            status[_key(rw)] = Considered(
                rw.concat,
                rw.reader,
                rw.kind,
                "applied",
                f"step {len(steps)}: peak {cur_r.peak:,} -> {r.peak:,} B",
            )
        cur_g, cur_r = c.graph, r
        focus = True
        if stopped:
            break
    # Matches never applied: say what the best candidate containing them reached.
    for k, (peak, kind) in best_seen.items():
        if k not in status or status[k].status != "applied":
            status[k] = Considered(
                k[0], k[1], kind, "no gain", f"best peak with it {peak:,} B, not below {cur_r.peak:,} B"
            )
    return RewriteOutcome(
        original=graph,
        graph=cur_g,
        rewrites=tuple(applied),
        base=base,
        result=cur_r,
        steps=tuple(steps),
        considered=tuple(status.values()),
        evaluations=evaluations,
        seconds=clock.elapsed(),
        stopped=stopped,
    )


def _all_together(
    graph: Graph,
    cur: ScheduleResult,
    concats: Sequence[str],
    dialect: Dialect,
    schedule: Callable[[Graph], ScheduleResult],
) -> tuple[int, int, int, _Candidate, ScheduleResult] | None:
    """Step 3: the groups of ``concats`` at once, then drop the groups that do not pay."""
    if len(concats) < 2:
        return None

    def build(keep: Sequence[str]) -> tuple[Graph, list[Rewrite]]:
        g, seq = graph, []
        for x in keep:
            g, more = _group(g, x, dialect)
            seq += more
        return g, seq

    keep = list(concats)
    g, seq = build(keep)
    r = schedule(g)
    if r.peak >= cur.peak:
        return None
    for x in list(keep):
        trial = [y for y in keep if y != x]
        g2, seq2 = build(trial)
        r2 = schedule(g2) if seq2 else cur
        if r2.peak <= r.peak:
            keep, g, seq, r = trial, g2, seq2, r2
    if not seq or r.peak >= cur.peak:
        return None
    label = "together: every reader of " + ", ".join(f"'{x}'" for x in keep)
    return (r.peak, len(g.ops), 0, _Candidate(label, tuple(seq[:1]), g, tuple(seq)), r)


__all__ = [
    "Considered",
    "RewriteOutcome",
    "Step",
    "candidates",
    "concat_fed",
    "expand",
    "kept_bound",
    "rewrite_for_memory",
]
