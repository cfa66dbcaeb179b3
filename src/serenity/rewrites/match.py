"""Pattern and check: which ops reading a concatenation can be split, and why not.

The pattern is an op ``R`` whose activation input is the output of a concatenation ``C``. The
checks, in order, each rejecting with its reason:

1. ``R`` has a role its dialect can split (a group-1 convolution, or a per-channel op);
2. ``R`` writes one tensor (an op with optional extra outputs, e.g. ``MaxPool`` indices, stays);
3. ``C`` concatenates along ``R``'s channel axis, every part an activation whose channels sum to
   the concatenation's;
4. the format can write the split (quantization, fused options: :meth:`Dialect.check`).
"""

from __future__ import annotations

from serenity.ir import Graph, Op
from serenity.rewrites.records import Dialect, Rejection, Rewrite


def readers_of_concats(graph: Graph, dialect: Dialect) -> list[tuple[Op, Op]]:
    """Every ``(concat, reader)`` pair of the pattern, in op order (readers of one concat by
    their index): the ops a rewrite could split."""
    pairs = []
    for c_op in graph.ops:
        role = dialect.role(graph, c_op)
        if isinstance(role, str) or role.kind != "concat":
            continue
        out = c_op.outputs[0]
        for r in graph.tensors[out].consumers:
            pairs.append((c_op, graph.ops[r]))
    return pairs


def make_rewrite(graph: Graph, dialect: Dialect, c_op: Op, r_op: Op) -> Rewrite | Rejection:
    """The rewrite splitting ``r_op`` over the parts of the concatenation ``c_op``, or the
    rejection naming the check that failed."""
    x = c_op.outputs[0]
    outs = [o for o in r_op.outputs if o]
    reader = outs[0] if outs else ""

    def no(reason: str) -> Rejection:
        return Rejection(concat=x, reader=reader or r_op.name, reason=reason)

    # 1. A role the dialect can split.
    role = dialect.role(graph, r_op)
    if isinstance(role, str):
        return no(role)
    if role.kind == "concat":
        return no(f"{r_op.type} is itself a concatenation (nothing to split)")
    if r_op.inputs[role.data_input] != x:
        return no(f"{r_op.type} reads '{x}' as a weight or parameter, not as its data")
    # 2. One output.
    if len(outs) != 1:
        return no(f"{r_op.type} writes {len(outs)} tensors")
    if graph.tensors[reader].is_input:
        return no(f"'{reader}' is a graph input")
    # 3. The concat's axis is the reader's channel axis; parts are activations.
    c_role = dialect.role(graph, c_op)
    assert not isinstance(c_role, str)
    if c_role.axis != role.axis:
        return no(
            f"the concatenation joins axis {c_role.axis}, "
            f"{r_op.type} computes per channel on axis {role.axis}"
        )
    parts = tuple(n for n in c_op.inputs if n)
    if len(parts) < 2:
        return no("the concatenation has fewer than two parts")
    const = next((p for p in parts if graph.tensors[p].constant), None)
    if const is not None:
        return no(f"part '{const}' of the concatenation is a constant")
    channels = tuple(graph.tensors[p].shape[role.axis] for p in parts)
    if sum(channels) != graph.tensors[x].shape[role.axis] or 0 in channels:
        return no(f"the parts' channels {channels} do not add up to the concatenation's")
    rw = Rewrite(
        kind="channel" if role.kind == "conv" else "kernel",
        concat=x,
        reader=reader,
        parts=parts,
        channels=channels,
        axis=role.axis,
        out_axis=role.out_axis,
        multiplier=role.multiplier,
    )
    taken = [
        n
        for n in (*(rw.part(i) for i in range(len(parts))), *(rw.acc(i) for i in range(1, len(parts) - 1)))
        if n in graph.tensors
    ]
    if taken:
        return no(f"tensor name '{taken[0]}' is already taken")
    # 4. The format can write it.
    reason = dialect.check(graph, rw)
    return no(reason) if reason else rw


def matches(graph: Graph, dialect: Dialect) -> list[Rewrite | Rejection]:
    """Every pattern match of ``graph``, as a rewrite or a rejection, in op order."""
    return [make_rewrite(graph, dialect, c, r) for c, r in readers_of_concats(graph, dialect)]


__all__ = ["make_rewrite", "matches", "readers_of_concats"]
