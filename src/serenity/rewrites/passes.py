"""The two rewrite passes as whole-graph passes: apply every match of one kind, unconditionally.

``kernel_split`` and ``channel_split`` are pattern -> check -> rewrite over the IR and return a
:class:`PassResult` (``modified`` computed from what was applied). They rewrite *everywhere*
they can; the optimizer (:mod:`serenity.rewrites.search`) instead keeps a rewrite only where it
lowers the peak, and is what ``serenity optimize`` runs. The passes serve tests, experiments and
users who want every concatenation split.
"""

from __future__ import annotations

from dataclasses import dataclass

from serenity.ir import Graph
from serenity.rewrites.apply import apply_rewrite
from serenity.rewrites.match import matches
from serenity.rewrites.records import Dialect, Kind, Rejection, Rewrite


@dataclass(frozen=True, slots=True)
class PassResult:
    """A pass's output: the graph, the rewrites applied in order, and the rejected matches."""

    graph: Graph
    applied: tuple[Rewrite, ...]
    rejected: tuple[Rejection, ...]

    @property
    def modified(self) -> bool:
        """Whether the pass changed the graph (computed from what it applied)."""
        return bool(self.applied)


def _split_all(graph: Graph, dialect: Dialect, kind: Kind) -> PassResult:
    applied: list[Rewrite] = []
    rejected: dict[tuple[str, str], Rejection] = {}
    while True:
        # Pattern and check on the current graph; rewrite the first match, then match again
        # (a rewrite renames what later matches would refer to).
        found = matches(graph, dialect)
        for m in found:
            if isinstance(m, Rejection):
                rejected.setdefault((m.concat, m.reader), m)
        nxt = next((m for m in found if isinstance(m, Rewrite) and m.kind == kind), None)
        if nxt is None:
            return PassResult(graph, tuple(applied), tuple(rejected.values()))
        graph = apply_rewrite(graph, nxt, dialect)
        applied.append(nxt)


def kernel_split(graph: Graph, dialect: Dialect) -> PassResult:
    """Kernel-wise partitioning wherever it applies: ``Concat(x_i) -> f`` becomes
    ``Concat(f_i(x_i))`` for every per-channel ``f`` (see :mod:`serenity.rewrites.records`)."""
    return _split_all(graph, dialect, "kernel")


def channel_split(graph: Graph, dialect: Dialect) -> PassResult:
    """Channel-wise partitioning wherever it applies: ``Concat(x_i) -> Conv`` becomes
    ``Σ_i Conv(x_i, W_i)`` accumulated in a chain (see :mod:`serenity.rewrites.records`)."""
    return _split_all(graph, dialect, "channel")


#: The registry of passes by name.
PASSES = {"kernel-split": kernel_split, "channel-split": channel_split}

__all__ = ["PASSES", "PassResult", "channel_split", "kernel_split"]
