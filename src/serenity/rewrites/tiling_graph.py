"""The tiled graph: a :class:`~serenity.rewrites.tiling_records.TilePlan` applied to the IR, the
graph the scheduler judges and a format adapter's file must match."""

from __future__ import annotations

import math

from serenity.ir import Graph, Op, Tensor
from serenity.rewrites.tiling_records import AXES, Box, Layout, SpatialDialect, TilePlan, TilingError
from serenity.rewrites.tiling_records import spatial_size as _hw


def _resized(t: Tensor, name: str, box: Box, layout: Layout) -> Tensor:
    """A fresh activation like ``t`` covering ``box``, sized by ``t``'s element size."""
    h, w, _ = AXES[layout]
    shape = list(t.shape)
    shape[h], shape[w] = box.rows, box.cols
    numel = math.prod(t.shape)
    bits = t.nbytes * 8 // numel if numel else 0
    return Tensor(name, tuple(shape), t.dtype, (math.prod(shape) * bits + 7) // 8)


def tiled_graph(graph: Graph, plan: TilePlan, dialect: SpatialDialect) -> Graph:
    """The graph with the prefix replaced by ``plan``'s per-tile copies, exact shapes and sizes.

    Per step, the ``Slice`` and ``Pad`` ops its inputs need (types from ``dialect.op_types``:
    ``"slice"``, ``"pad"``, and ``"pad_lowest"`` for a max pool's padding when the format has
    such an op; one op per distinct tensor name: readers wanting the same region share it),
    then the op's
    copy (``f"{op.name}@{i}_{j}"``, same type, constants and attributes: the format adapter
    writes its padding as VALID); a row's concat after its last tile, the final concat last.
    The new ops take the place of the split's producer in the (topological) listed order;
    every other op and tensor is unchanged. Only activation inputs of the new ops appear here:
    a format adapter writes slice bounds and pad amounts as constants of its own, and must
    write exactly these tensors (:func:`serenity.rewrites.apply.structure_difference`).

    Raises:
        TilingError: the plan does not match the graph (another graph's plan).
    """
    t_of = graph.tensors
    if (
        plan.split not in t_of
        or t_of[plan.split].producer is None
        or not set(plan.prefix) <= set(range(len(graph)))
    ):
        raise TilingError(f"the plan for '{plan.split}' does not match graph '{graph.name}'")
    layout = plan.layout
    h_ax, w_ax, _ = AXES[layout]
    new_ops: list[Op] = []
    new_tensors: dict[str, Tensor] = {}
    n, m = plan.grid
    # With rows and columns, row i's concat follows its last tile; the final one comes last.
    concat_after = {f"{plan.split}@{i}_{m - 1}": i for i in range(n)} if n > 1 and m > 1 else {}

    def concat(k: int) -> None:
        out, ins, axis = plan.concats[k]
        name = f"{out}/concat" if out == plan.split else out
        new_ops.append(
            Op(name, dialect.op_types["concat"], ins, (out,), attributes={"axis": (h_ax, w_ax)[axis]})
        )
        if out != plan.split:
            first = t_of[plan.split]
            sizes = [new_tensors[x] for x in ins]
            rows = sum(_hw(s, layout)[0] for s in sizes) if axis == 0 else _hw(sizes[0], layout)[0]
            cols = sum(_hw(s, layout)[1] for s in sizes) if axis == 1 else _hw(sizes[0], layout)[1]
            new_tensors[out] = _resized(first, out, Box(0, rows, 0, cols), layout)

    for s in plan.steps:
        op = graph.ops[s.op]
        i, j = s.tile
        ins = list(op.inputs)
        for ti in s.inputs:
            src = t_of[ti.tensor]
            if ti.sliced and ti.sliced not in new_tensors:
                b, sb = ti.inside, ti.source_box
                bounds = {
                    "starts": (b.r0 - sb.r0, b.c0 - sb.c0),
                    "ends": (b.r1 - sb.r0, b.c1 - sb.c0),
                    "axes": (h_ax, w_ax),
                }
                new_ops.append(
                    Op(ti.sliced, dialect.op_types["slice"], (ti.source,), (ti.sliced,), attributes=bounds)
                )
                new_tensors[ti.sliced] = _resized(src, ti.sliced, b, layout)
            if ti.padded and ti.padded not in new_tensors:
                # A format whose plain pad holds only zeros names another op for the lowest value
                # (TFLite: PAD and PADV2).
                kind = "pad_lowest" if ti.fill == "lowest" and "pad_lowest" in dialect.op_types else "pad"
                pad = {"pads": ti.pads, "fill": ti.fill}
                new_ops.append(
                    Op(
                        ti.padded,
                        dialect.op_types[kind],
                        (ti.sliced or ti.source,),
                        (ti.padded,),
                        attributes=pad,
                    )
                )
                new_tensors[ti.padded] = _resized(src, ti.padded, ti.need, layout)
            ins[ti.position] = ti.read
        new_ops.append(
            Op(f"{op.name}@{i}_{j}", op.type, tuple(ins), (s.output,), attributes=dict(op.attributes))
        )
        new_tensors[s.output] = _resized(t_of[op.outputs[0]], s.output, s.out_box, layout)
        if s.output in concat_after:
            concat(concat_after[s.output])
    concat(len(plan.concats) - 1)
    # Splice: the new ops replace the prefix, at the split producer's place.
    drop = set(plan.prefix)
    at = t_of[plan.split].producer
    ops: list[Op] = []
    for k in graph.topological_order:
        if k == at:
            ops.extend(new_ops)
        elif k not in drop:
            ops.append(graph.ops[k])
    gone = {graph.ops[k].outputs[0] for k in drop} - {plan.split}
    tensors = [t for t in t_of.values() if t.name not in gone]
    return Graph(
        graph.name, ops, [*tensors, *new_tensors.values()], graph.inputs, graph.outputs,
        memory_model=graph.memory_model,
    )  # fmt: skip


__all__ = ["tiled_graph"]
