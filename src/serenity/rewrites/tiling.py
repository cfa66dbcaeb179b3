"""Patch-based execution as an identity rewrite: run the first layers tile by tile.

The first layers of a CNN hold the largest activations. Cutting the graph at a *split* tensor
``S`` and computing the *prefix* (``S``'s producer and all its ancestors) once per tile of an
``n x m`` grid over ``S`` keeps only one tile's intermediates live at a time (Lin et al.,
"MCUNetV2: Memory-Efficient Patch-based Inference for Tiny Deep Learning", NeurIPS 2021).
This module plans that rewrite on the IR and builds the graph the scheduler judges; a format
adapter (:mod:`serenity.formats.onnx_tiling`, ``serenity.formats.tflite_tiling``) writes it.

Construction, for each tile ``(i, j)``:

1. The tile's block of ``S`` is block ``(i, j)`` of an even ``n x m`` partition of its rows and
   columns (remainders go to the first blocks).
2. Boxes go backwards through the prefix in reverse topological order. An op computing the box
   ``[r0, r1) x [c0, c1)`` of its output *needs* from each spatial input the rows
   ``[r0*s - pad_top, (r1-1)*s - pad_top + (k-1)*d + 1)`` (a pointwise op: the same box) and the
   columns alike (:meth:`Window.need`). A tensor's box is the bounding box of what its readers
   in the prefix need, clipped to the image: a branch read by several ops is computed once per
   tile, as large as its largest reader wants, and a reader wanting less reads a ``Slice``.
3. Each op is copied per tile with its padding removed (VALID). Its input is the need: sliced
   from the tile's copy of the input (graph inputs: from the uncut input), and padded
   explicitly only where the need leaves the image, exactly where the original op padded.
4. The tile copies of ``S`` are concatenated back into ``S``: one concat per tile row along
   W, then one along H. Nothing after ``S`` changes.

Why the outputs are identical: every output pixel of every copy is computed by the same kernel
(same weights, same accumulation order over the window) from the same input pixels as in the
original, because the copy's window over the need is the original's window over the image,
shifted. Where the original read implicit padding, the copy reads explicit padding of the same
value: zeros for a convolution (in int8, the input's zero point, which is what TFLite pads
with), the lowest value for max pooling (which ignores padding: ``-inf``, or the type's
minimum). Average pooling with padding is refused: it divides by the number of in-image
elements, which a padded copy would miscount. Pointwise ops (activations, batch norm, residual
adds, channel concatenation) read pixel ``(r, c)`` only, so they commute with slicing.

Costs: halos overlap, so tiles recompute pixels their neighbours also compute; the plan counts
multiply-accumulates of convolutions before and after (pooling and pointwise ops count 0).

The records (:class:`Box`, :class:`Window`, :class:`TilePlan`...) are in
:mod:`serenity.rewrites.tiling_records`, the IR rewrite in :mod:`serenity.rewrites.tiling_graph`;
everything is importable from here.

Example:
    >>> Window("conv", kernel=(3, 3), stride=(2, 2), pads=(1, 1, 1, 1)).need(Box(0, 4, 4, 8))
    Box(r0=-1, r1=8, c0=7, c1=16)
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping

from serenity.ir import Graph, Op
from serenity.rewrites.tiling_graph import tiled_graph
from serenity.rewrites.tiling_records import (
    AXES,
    Box,
    Fill,
    Layout,
    SpatialDialect,
    TileInput,
    TilePlan,
    TileStep,
    TilingError,
    Window,
)
from serenity.rewrites.tiling_records import spatial_size as _hw

# -- the prefix ------------------------------------------------------------------------------


def _ancestors(graph: Graph, split: str, start: Collection[str] = ()) -> set[int]:
    """The split's producer and every op it depends on through activations, not looking past
    the tensors of ``start`` (a patch stage's inputs besides the graph's)."""
    first = graph.tensors[split].producer
    assert first is not None
    seen = {first}
    stack = [first]
    while stack:
        op = graph.ops[stack.pop()]
        for name in op.inputs:
            if not name or graph.tensors[name].constant or name in start:
                continue
            p = graph.tensors[name].producer
            if p is not None and p not in seen:
                seen.add(p)
                stack.append(p)
    return seen


def _check_op(graph: Graph, op: Op, win: Window, layout: Layout) -> str | None:
    """Why ``op`` with window ``win`` cannot be tiled (beyond what the dialect said), or ``None``."""
    out = graph.tensors[op.outputs[0]]
    if len(out.shape) != 4:
        return f"its output '{out.name}' has rank {len(out.shape)}, not 4"
    if not win.data_inputs:
        return "it has no spatial input"
    for p, name in enumerate(op.inputs):
        if name and not graph.tensors[name].constant and p not in win.data_inputs:
            return f"it reads activation '{name}', which is not a spatial input of the same size"
    hw = None
    for p in win.data_inputs:
        t = graph.tensors[op.inputs[p]]
        if len(t.shape) != 4:
            return f"its input '{t.name}' has rank {len(t.shape)}, not 4"
        if hw not in (None, _hw(t, layout)):
            return f"its spatial inputs differ in size ({hw} and {_hw(t, layout)})"
        hw = _hw(t, layout)
    assert hw is not None
    (h, w), (oh, ow) = hw, _hw(out, layout)
    if win.kind == "pointwise":
        if (h, w) != (oh, ow):
            return f"it is pointwise but maps {h}x{w} to {oh}x{ow}"
        return None
    if win.kind == "avgpool" and any(win.pads):
        return "average pooling with padding divides by the in-image elements; a tile cannot"
    # The last output pixel's window must lie inside the padded image (else ceil mode).
    last = win.need(Box(oh - 1, oh, ow - 1, ow))
    if last.r1 > h + win.pads[2] or last.c1 > w + win.pads[3] or min(oh, ow) < 1:
        return f"its {oh}x{ow} output does not fit its window over the {h}x{w} input (ceil mode?)"
    return None


def _prefix(
    graph: Graph,
    dialect: SpatialDialect,
    split: str,
    cache: dict[int, Window | str] | None = None,
    start: Collection[str] = (),
) -> tuple[tuple[int, ...], dict[int, Window]]:
    """The prefix ending at ``split`` (topological order) and its windows; the tensors of
    ``start`` are read whole, like graph inputs (a later patch stage starts at an earlier one's
    split).

    Raises:
        TilingError: the first reason the prefix cannot be tiled.
    """
    t = graph.tensors.get(split)
    if t is None:
        raise TilingError(f"'{graph.name}' has no tensor '{split}'")
    if t.constant:
        raise TilingError(f"'{split}' is a constant")
    if t.producer is None:
        raise TilingError(f"'{split}' is a graph input: no op computes it")
    if len(t.shape) != 4:
        raise TilingError(f"'{split}' has rank {len(t.shape)}, not 4 (no image to tile)")
    if split in start:
        raise TilingError(f"'{split}' is where the patch stage starts")
    anc = _ancestors(graph, split, start)
    order = tuple(i for i in graph.topological_order if i in anc)
    windows: dict[int, Window] = {}
    cache = {} if cache is None else cache
    for i in order:
        op = graph.ops[i]
        outs = [o for o in op.outputs if o]
        if len(outs) != 1 or op.outputs[0] != outs[0]:
            raise TilingError(
                f"op '{op.name}' ({op.type}) writes {len(outs)} tensors; a prefix op writes one"
            )
        o = outs[0]
        if o != split:
            outside = [c for c in graph.tensors[o].consumers if c not in anc]
            if outside:
                reader = graph.ops[outside[0]]
                raise TilingError(
                    f"tensor '{o}' of the prefix is also read by op '{reader.name}' after the split "
                    f"'{split}'; end the patch stage at '{reader.name}' or later, or at '{o}' or earlier"
                )
            if graph.tensors[o].is_output:
                raise TilingError(f"tensor '{o}' of the prefix is a graph output")
        if i not in cache:
            cache[i] = dialect.window(graph, op)
        win = cache[i]
        if isinstance(win, str):
            raise TilingError(f"op '{op.name}' ({op.type}) cannot be tiled: {win}")
        problem = _check_op(graph, op, win, dialect.layout)
        if problem:
            raise TilingError(f"op '{op.name}' ({op.type}) cannot be tiled: {problem}")
        windows[i] = win
    return order, windows


def split_candidates(
    graph: Graph, dialect: SpatialDialect, *, start: Collection[str] = ()
) -> list[tuple[str, str | None]]:
    """Every op output that could end a patch stage, in topological order, with ``None`` or the
    reason it cannot (the first problem of its prefix, as :func:`plan_tiles` would say it).

    Args:
        graph: The graph.
        dialect: The format's reading of ops.

    Returns:
        ``(tensor, None or reason)`` for every activation an op writes. Whether a grid fits is
        not judged here (see :func:`plan_tiles`).
    """
    cache: dict[int, Window | str] = {}
    out: list[tuple[str, str | None]] = []
    for i in graph.topological_order:
        for name in graph.ops[i].outputs:
            if not name or graph.tensors[name].constant:
                continue
            try:
                _prefix(graph, dialect, name, cache, start)
            except TilingError as e:
                out.append((name, str(e)))
            else:
                out.append((name, None))
    return out


# -- the plan --------------------------------------------------------------------------------


def _edges(size: int, parts: int) -> list[int]:
    """Boundaries of an even partition of ``range(size)`` into ``parts`` blocks, remainders to
    the first: ``_edges(10, 3) == [0, 4, 7, 10]``."""
    q, r = divmod(size, parts)
    edges = [0]
    for k in range(parts):
        edges.append(edges[-1] + q + (1 if k < r else 0))
    return edges


def _conv_macs(graph: Graph, op: Op, win: Window, out_box: Box, layout: Layout) -> int:
    """``rows * cols * out_c * kh * kw * in_c / groups`` for a convolution, else 0."""
    if win.kind != "conv":
        return 0
    c = AXES[layout][2]
    in_c = graph.tensors[op.inputs[win.data_inputs[0]]].shape[c]
    out_c = graph.tensors[op.outputs[0]].shape[c]
    return out_box.rows * out_box.cols * out_c * win.kernel[0] * win.kernel[1] * in_c // win.groups


def plan_tiles(
    graph: Graph,
    dialect: SpatialDialect,
    split: str,
    grid: tuple[int, int],
    *,
    start: Collection[str] = (),
) -> TilePlan:
    """Plan running the prefix ending at ``split`` tile by tile over an ``n x m`` grid.

    Args:
        graph: The graph.
        dialect: The format's reading of ops (layout, windows, new op types).
        split: The tensor ending the patch stage.
        grid: ``(n, m)`` tile rows and columns; not ``(1, 1)``, at most the split's size.
        start: Tensors the stage reads whole, like graph inputs, instead of tiling what computes
            them: a second patch stage starts at the first one's split (whose concatenation
            holds it whole), so the two stages can use different grids.

    Returns:
        The plan (steps per tile, concats, MACs before and after).

    Raises:
        TilingError: the prefix cannot be tiled (an op without a window, a prefix tensor read
            after the split, average pooling with padding...) or the grid does not fit.
    """
    prefix, windows = _prefix(graph, dialect, split, start=start)
    n, m = grid
    layout = dialect.layout
    sh, sw = _hw(graph.tensors[split], layout)
    if n < 1 or m < 1 or (n, m) == (1, 1):
        raise TilingError(f"grid {n}x{m}: a grid needs at least two tiles")
    if n > sh or m > sw:
        raise TilingError(f"grid {n}x{m} has more tiles than '{split}' ({sh}x{sw}) has rows or columns")
    rows, cols = _edges(sh, n), _edges(sw, m)
    steps: list[TileStep] = []
    boxes: dict[tuple[int, int], dict[str, Box]] = {}
    macs_before = 0
    for k in prefix:
        oh, ow = _hw(graph.tensors[graph.ops[k].outputs[0]], layout)
        macs_before += _conv_macs(graph, graph.ops[k], windows[k], Box(0, oh, 0, ow), layout)
    macs_after = 0
    for i in range(n):
        for j in range(m):
            box = _tile_boxes(
                graph, prefix, windows, layout, split, Box(rows[i], rows[i + 1], cols[j], cols[j + 1])
            )
            boxes[i, j] = box
            for k in prefix:
                op = graph.ops[k]
                win = windows[k]
                ins = tuple(
                    _tile_input(graph, op, win, p, box, (i, j), layout, start) for p in win.data_inputs
                )
                out = op.outputs[0]
                steps.append(TileStep(k, (i, j), box[out], ins, f"{out}@{i}_{j}"))
                macs_after += _conv_macs(graph, op, win, box[out], layout)
    concats = _concats(split, n, m)
    plan = TilePlan(split, (n, m), layout, prefix, tuple(steps), concats, macs_before, macs_after, boxes)
    _check_names(graph, plan)
    return plan


def _tile_boxes(
    graph: Graph,
    prefix: tuple[int, ...],
    windows: Mapping[int, Window],
    layout: Layout,
    split: str,
    block: Box,
) -> dict[str, Box]:
    """Every prefix tensor's box (and each graph input's, clipped need) for one tile: backwards
    in reverse topological order, each tensor the bounding box of its readers' needs."""
    box = {split: block}
    for k in reversed(prefix):
        op = graph.ops[k]
        win = windows[k]
        need = win.need(box[op.outputs[0]])
        for p in win.data_inputs:
            t = graph.tensors[op.inputs[p]]
            inside = need.clip(*_hw(t, layout))
            if inside is None:
                raise TilingError(
                    f"a tile of op '{op.name}' ({op.type}) would read only padding {need} of '{t.name}'"
                )
            box[t.name] = inside if t.name not in box else box[t.name].union(inside)
    return box


def _tile_input(
    graph: Graph,
    op: Op,
    win: Window,
    p: int,
    box: Mapping[str, Box],
    tile: tuple[int, int],
    layout: Layout,
    start: Collection[str] = (),
) -> TileInput:
    t = graph.tensors[op.inputs[p]]
    h, w = _hw(t, layout)
    i, j = tile
    need = win.need(box[op.outputs[0]])
    pads = (max(0, -need.r0), max(0, -need.c0), max(0, need.r1 - h), max(0, need.c1 - w))
    if t.producer is None or t.name in start:  # a graph input or a start: sliced from it whole
        source, source_box = t.name, Box(0, h, 0, w)
    else:
        source, source_box = f"{t.name}@{i}_{j}", box[t.name]
    inside = need.clip(h, w)
    assert inside is not None  # _tile_boxes checked
    sliced = None if inside == source_box else f"{t.name}@{i}_{j}{inside}"
    padded = None
    if any(pads):
        padded = f"{t.name}@{i}_{j}{need}" + ("/pad" if win.fill == "zero" else "/padmin")
    return TileInput(t.name, source, source_box, need, sliced, padded, pads, p, win.fill)


def _concats(split: str, n: int, m: int) -> tuple[tuple[str, tuple[str, ...], int], ...]:
    tiles = [[f"{split}@{i}_{j}" for j in range(m)] for i in range(n)]
    if n == 1:
        return ((split, tuple(tiles[0]), 1),)
    if m == 1:
        return ((split, tuple(r[0] for r in tiles), 0),)
    rows = tuple((f"{split}@row{i}", tuple(tiles[i]), 1) for i in range(n))
    return (*rows, (split, tuple(r[0] for r in rows), 0))


def _new_names(plan: TilePlan) -> Iterator[str]:
    for s in plan.steps:
        yield s.output
        for ti in s.inputs:
            if ti.sliced:
                yield ti.sliced
            if ti.padded:
                yield ti.padded
    for out, _, _ in plan.concats:
        if out != plan.split:
            yield out


def _check_names(graph: Graph, plan: TilePlan) -> None:
    for name in _new_names(plan):
        if name in graph.tensors:
            raise TilingError(f"tiling needs the tensor name '{name}', which '{graph.name}' already has")
    ops = {op.name for op in graph.ops}
    for name in _op_names(graph, plan):
        if name in ops:
            raise TilingError(f"tiling needs the op name '{name}', which '{graph.name}' already has")


def _op_names(graph: Graph, plan: TilePlan) -> Iterator[str]:
    for s in plan.steps:
        yield f"{graph.ops[s.op].name}@{s.tile[0]}_{s.tile[1]}"
    for out, _, _ in plan.concats:
        yield f"{out}/concat" if out == plan.split else out


__all__ = [
    "AXES",
    "Box",
    "Fill",
    "Layout",
    "SpatialDialect",
    "TileInput",
    "TilePlan",
    "TileStep",
    "TilingError",
    "Window",
    "plan_tiles",
    "split_candidates",
    "tiled_graph",
]
