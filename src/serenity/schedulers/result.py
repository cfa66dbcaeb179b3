"""The record every scheduler returns, and the bound every scheduler can quote."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from serenity.ir import Graph, Order
from serenity.memory import op_footprint, simulate


@dataclass(frozen=True, slots=True)
class ScheduleResult:
    """What a scheduler found.

    Attributes:
        order: The schedule, a topological permutation of op indices.
        peak: Its peak activation bytes under :func:`serenity.memory.simulate`.
        lower_bound: No order of this graph has a smaller peak.
        proven_optimal: ``peak == lower_bound`` was established (by a bound or an exhaustive
            search); never set by a search that was cut short.
        method: The registered name of the scheduler.
        seconds: Wall-clock time the scheduler took.
        stats: Method-specific counters (states explored, budget rounds...), JSON-friendly.
    """

    order: Order
    peak: int
    lower_bound: int
    proven_optimal: bool
    method: str
    seconds: float
    stats: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the order as a list of op indices)."""
        return {
            "method": self.method,
            "peak_bytes": self.peak,
            "lower_bound": self.lower_bound,
            "proven_optimal": self.proven_optimal,
            "seconds": round(self.seconds, 6),
            "order": list(self.order),
            "stats": dict(self.stats),
        }


class Scheduler(Protocol):
    """The signature every scheduler shares."""

    def __call__(self, graph: Graph, *, time_limit: float | None = None) -> ScheduleResult: ...


def op_lower_bound(graph: Graph) -> int:
    """A peak no order can beat, from facts every order shares.

    * Each op needs its inputs and outputs live at once while it runs (less the output's bytes
      where the ``inplace`` memory model lets it overwrite an input: :func:`.memory.op_footprint`).
    * After the last op, every graph output is live, and during that last op so are its inputs;
      at the very least all graph outputs are live together at the last step.
    * Before the first op, every consumed graph input is live.
    """
    d = graph.dense
    best = sum(d.sizes[t] for t in d.initial)
    for v in range(d.n_ops):
        best = max(best, op_footprint(d, v))
    if d.n_ops:
        best = max(best, sum(s for s, p in zip(d.sizes, d.pinned, strict=True) if p))
    return best


def make_result(
    graph: Graph,
    order: Sequence[int],
    *,
    method: str,
    seconds: float,
    lower_bound: int | None = None,
    proven: bool = False,
    stats: Mapping[str, Any] | None = None,
) -> ScheduleResult:
    """Build a :class:`ScheduleResult`, recomputing the peak with the shared memory model.

    ``proven_optimal`` is true when the caller proved it, or when the peak meets the bound.
    """
    checked = graph.check_order(order)
    peak = simulate(graph, checked, check=False).peak
    bound = op_lower_bound(graph) if lower_bound is None else lower_bound
    assert bound <= peak, f"{method}: lower bound {bound} above peak {peak}"
    return ScheduleResult(
        order=checked,
        peak=peak,
        lower_bound=bound,
        proven_optimal=proven or peak == bound,
        method=method,
        seconds=seconds,
        stats=dict(stats or {}),
    )
