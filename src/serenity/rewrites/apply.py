"""Apply primitive rewrites to the IR: the graph the scheduler judges and the file must match.

Constants keep their names here (they cost no activation memory, so the scheduler never sees
them); a format adapter slices them into new constants when it writes the file. New ops take
the split op's place in the listed order, which stays topological: every part of the concat is
produced before the concat, hence before its reader.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace

from serenity.errors import GraphError
from serenity.ir import Graph, Op, Tensor
from serenity.rewrites.records import Dialect, Rewrite


def _with_channels(t: Tensor, name: str, axis: int, channels: int) -> Tensor:
    """A fresh activation like ``t`` with ``channels`` along ``axis``, sized by ``t``'s element."""
    shape = list(t.shape)
    shape[axis] = channels
    numel = math.prod(t.shape)
    elem = t.nbytes // numel if numel else 0
    return Tensor(name, tuple(shape), t.dtype, math.prod(shape) * elem)


def apply_rewrite(graph: Graph, rw: Rewrite, dialect: Dialect) -> Graph:
    """``graph`` with the op writing ``rw.reader`` split across the parts of ``rw.concat``.

    Raises:
        GraphError: the rewrite does not match the graph (stale record).
    """
    tensors = graph.tensors
    if rw.reader not in tensors or tensors[rw.reader].producer is None:
        raise GraphError(f"rewrite names '{rw.reader}', which no op of '{graph.name}' writes")
    r_op = graph.ops[tensors[rw.reader].producer]  # type: ignore[index]
    role = dialect.role(graph, r_op)
    if isinstance(role, str):
        raise GraphError(f"rewrite names op '{r_op.name}', which cannot be split: {role}")
    if r_op.inputs[role.data_input] != rw.concat:
        raise GraphError(f"op '{r_op.name}' does not read '{rw.concat}'")
    y = tensors[rw.reader]
    new_tensors: list[Tensor] = []
    new_ops: list[Op] = []

    def branch_inputs(i: int) -> tuple[str, ...]:
        ins = list(r_op.inputs)
        ins[role.data_input] = rw.parts[i]
        return tuple(ins)

    # 1. One copy of the reader per part.
    for i, c in enumerate(rw.channels):
        if rw.kind == "kernel":
            t = _with_channels(y, rw.part(i), rw.out_axis, c * rw.multiplier)
        else:
            t = replace(y, name=rw.part(i), producer=None, consumers=(), is_input=False, is_output=False)
        new_tensors.append(t)
        new_ops.append(
            Op(
                f"{r_op.name}/{rw.kind[0]}w{i}",
                r_op.type,
                branch_inputs(i),
                (rw.part(i),),
                attributes=dict(r_op.attributes),
            )
        )
    # 2. Join the branches: a concat after them, or a chain of additions.
    n = len(rw.parts)
    if rw.kind == "kernel":
        new_ops.append(
            Op(
                f"{r_op.name}/concat",
                dialect.concat_type,
                tuple(rw.part(i) for i in range(n)),
                (rw.reader,),
                attributes={"axis": rw.out_axis},
            )
        )
    else:
        prev = rw.part(0)
        for i in range(1, n):
            out = rw.reader if i == n - 1 else rw.acc(i)
            if i < n - 1:
                new_tensors.append(replace(new_tensors[0], name=out))
            new_ops.append(Op(f"{r_op.name}/acc{i}", dialect.add_type, (prev, rw.part(i)), (out,)))
            prev = out
    # 3. Splice: the new ops take the reader's place; the concat goes when nothing reads X.
    concat_op = graph.ops[tensors[rw.concat].producer]  # type: ignore[index]
    readers_left = [c for c in tensors[rw.concat].consumers if c != r_op.index]
    drop_concat = not readers_left and not tensors[rw.concat].is_output
    ops: list[Op] = []
    for op in graph.ops:
        if op.index == r_op.index:
            ops.extend(new_ops)
        elif not (drop_concat and op.index == concat_op.index):
            ops.append(op)
    kept = {n for op in ops for n in (*op.inputs, *op.outputs)} | set(graph.inputs) | set(graph.outputs)
    out_tensors = [t for t in graph.tensors.values() if t.name in kept]
    taken = {t.name for t in out_tensors}
    for t in new_tensors:
        if t.name in taken:
            raise GraphError(f"rewrite would create tensor '{t.name}', which '{graph.name}' already has")
        out_tensors.append(t)
    # Acyclic by construction: the new ops read only the concat's parts (which precede the
    # concat) and each other, and feed only the split op's former readers.
    return Graph(
        graph.name,
        ops,
        out_tensors,
        graph.inputs,
        graph.outputs,
        acyclic=True,
        memory_model=graph.memory_model,
    )


def apply_all(graph: Graph, rewrites: Iterable[Rewrite], dialect: Dialect) -> Graph:
    """``graph`` with ``rewrites`` applied in sequence."""
    for rw in rewrites:
        graph = apply_rewrite(graph, rw, dialect)
    return graph


def structure_difference(a: Graph, b: Graph) -> str | None:
    """How two graphs differ as the scheduler sees them, or ``None``: the same ops (type,
    activation inputs and outputs, as a multiset) over the same activations (name, size), the
    same graph inputs and outputs. Constant names and op names are ignored, so a file written
    by a format adapter can be compared with :func:`apply_all` of the same rewrites."""

    def acts(g: Graph) -> dict[str, int]:
        return {t.name: t.nbytes for t in g.tensors.values() if t.is_activation}

    def ops(g: Graph) -> Counter[tuple[str, tuple[str, ...], tuple[str, ...]]]:
        act = acts(g)
        return Counter((op.type, tuple(n for n in op.inputs if n in act), op.outputs) for op in g.ops)

    if (a.inputs, a.outputs) != (b.inputs, b.outputs):
        return f"graph inputs/outputs differ: {a.inputs}->{a.outputs} vs {b.inputs}->{b.outputs}"
    ta, tb = acts(a), acts(b)
    if ta != tb:
        diff = sorted(set(ta.items()) ^ set(tb.items()))[:3]
        return f"activations differ (name, bytes): {diff}"
    oa, ob = ops(a), ops(b)
    if oa != ob:
        extra = list((oa - ob).elements())[:2]
        missing = list((ob - oa).elements())[:2]
        return f"ops differ: only in the first {extra}, only in the second {missing}"
    return None


__all__ = ["apply_all", "apply_rewrite", "structure_difference"]
