"""An independent peak computation for the tests, written from the memory model's prose rules by
lifetime intervals rather than by the step-by-step loop of ``serenity.memory``."""

from __future__ import annotations

from collections.abc import Sequence

from serenity.ir import Graph


def reference_peak(g: Graph, order: Sequence[int]) -> tuple[int, list[int]]:
    """Peak and per-step live bytes: a tensor occupies steps [first, last] of its lifetime."""
    n = len(order)
    pos = {op: p for p, op in enumerate(order)}
    usage = [0] * n
    for t in g.tensors.values():
        if t.constant:
            continue
        if t.producer is None:  # graph input: from the start
            if not t.consumers and not t.is_output:
                continue
            first = 0
        else:
            first = pos[t.producer]
        if t.is_output:
            last = n - 1
        elif t.consumers:
            last = max(pos[c] for c in t.consumers)
        else:
            last = first  # dead output: only while its op runs
        for s in range(first, last + 1):
            usage[s] += t.nbytes
    if n == 0:
        return sum(t.nbytes for t in g.tensors.values() if t.is_input and (t.consumers or t.is_output)), []
    return max(usage), usage
