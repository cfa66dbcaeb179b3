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

Example:
    >>> Window("conv", kernel=(3, 3), stride=(2, 2), pads=(1, 1, 1, 1)).need(Box(0, 4, 4, 8))
    Box(r0=-1, r1=8, c0=7, c1=16)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from serenity.errors import SerenityError
from serenity.ir import Graph, Op, Tensor

Layout = Literal["NCHW", "NHWC"]
#: What explicit padding holds: ``"zero"`` (convolutions; the zero point in int8) or
#: ``"lowest"`` (max pooling: ``-inf`` for floats, the type's minimum for integers).
Fill = Literal["zero", "lowest"]
#: Axes of (H, W, C) per layout.
AXES: Mapping[str, tuple[int, int, int]] = {"NCHW": (2, 3, 1), "NHWC": (1, 2, 3)}


class TilingError(SerenityError):
    """A prefix or grid cannot be tiled; the message says why and names the op or tensor."""


@dataclass(frozen=True, slots=True)
class Box:
    """Half-open rows ``[r0, r1)`` x columns ``[c0, c1)`` in a tensor's own pixel coordinates.

    A *need* may extend outside the image (where the op pads); a tensor's box never does.
    """

    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def rows(self) -> int:
        """Number of rows."""
        return self.r1 - self.r0

    @property
    def cols(self) -> int:
        """Number of columns."""
        return self.c1 - self.c0

    def union(self, other: Box) -> Box:
        """The bounding box of both."""
        return Box(
            min(self.r0, other.r0), max(self.r1, other.r1), min(self.c0, other.c0), max(self.c1, other.c1)
        )

    def clip(self, h: int, w: int) -> Box | None:
        """The part inside an ``h x w`` image, or ``None`` when nothing is."""
        b = Box(max(self.r0, 0), min(self.r1, h), max(self.c0, 0), min(self.c1, w))
        return b if b.rows > 0 and b.cols > 0 else None

    def __str__(self) -> str:
        return f"[{self.r0}:{self.r1},{self.c0}:{self.c1}]"


@dataclass(frozen=True, slots=True)
class Window:
    """How one op maps spatial positions (H, W) of its data inputs to its output.

    Attributes:
        kind: ``"conv"``, ``"maxpool"``, ``"avgpool"`` or ``"pointwise"`` (output pixel
            ``(r, c)`` reads only pixel ``(r, c)`` of every data input: batch norm,
            activations, adds of same-size tensors, channel concatenation).
        kernel: ``(kh, kw)``.
        stride: ``(sh, sw)``.
        dilation: ``(dh, dw)``.
        pads: ``(top, left, bottom, right)`` implicit padding.
        groups: Convolution groups (depthwise: the input channels).
        data_inputs: Positions in ``op.inputs`` of the spatial activation inputs (same H, W as
            each other); every other input must be a constant.
    """

    kind: Literal["conv", "maxpool", "avgpool", "pointwise"]
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    groups: int = 1
    data_inputs: tuple[int, ...] = (0,)

    def need(self, out: Box) -> Box:
        """The input box the output box ``out`` reads (may leave the image where the op pads)."""
        if self.kind == "pointwise":
            return out
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        top, left = self.pads[0], self.pads[1]
        return Box(
            out.r0 * sh - top,
            (out.r1 - 1) * sh - top + (kh - 1) * dh + 1,
            out.c0 * sw - left,
            (out.c1 - 1) * sw - left + (kw - 1) * dw + 1,
        )

    @property
    def fill(self) -> Fill:
        """What explicit padding for this op holds."""
        return "lowest" if self.kind == "maxpool" else "zero"


class SpatialDialect(Protocol):
    """What a format tells the tiler: where H and W are, its op types, and each op's window."""

    #: Where H and W are.
    layout: Layout
    #: Op types of the new ops: ``{"slice": ..., "pad": ..., "concat": ...}``.
    op_types: Mapping[str, str]

    def window(self, graph: Graph, op: Op) -> Window | str:
        """The op's window, or why it cannot be tiled."""
        ...


@dataclass(frozen=True, slots=True)
class TileInput:
    """How one tile's copy of an op gets one data input.

    Attributes:
        tensor: The original input tensor.
        source: The tensor of the tiled graph holding this tile's copy of it (for a graph
            input, the input itself, uncut).
        source_box: What ``source`` covers (original coordinates, inside the image).
        need: What the op reads (may leave the image where the op pads).
        sliced: Name of the ``Slice`` output when ``need`` clipped to the image differs from
            ``source_box``, else ``None``.
        padded: Name of the ``Pad`` output when ``need`` leaves the image, else ``None``.
        pads: ``(top, left, bottom, right)``: how far ``need`` leaves the image.
        position: Position of the input in ``op.inputs`` (added to the spec).
        fill: What the padding holds (added to the spec).
    """

    tensor: str
    source: str
    source_box: Box
    need: Box
    sliced: str | None
    padded: str | None
    pads: tuple[int, int, int, int]
    position: int = 0
    fill: Fill = "zero"

    @property
    def inside(self) -> Box:
        """``need`` clipped to the image: what the slice (or the source) holds."""
        return Box(
            self.need.r0 + self.pads[0],
            self.need.r1 - self.pads[2],
            self.need.c0 + self.pads[1],
            self.need.c1 - self.pads[3],
        )

    @property
    def read(self) -> str:
        """The tensor the op copy reads: the padded, else the sliced, else the source tensor."""
        return self.padded or self.sliced or self.source


@dataclass(frozen=True, slots=True)
class TileStep:
    """One tile's copy of one prefix op (same type, constants and options, padding VALID).

    Attributes:
        op: The original op's index.
        tile: ``(row, col)`` in the grid.
        out_box: The output region this copy computes.
        inputs: One per data input, in :attr:`Window.data_inputs` order.
        output: ``f"{out}@{i}_{j}"`` for the op's output ``out``.
    """

    op: int
    tile: tuple[int, int]
    out_box: Box
    inputs: tuple[TileInput, ...]
    output: str


@dataclass(frozen=True)
class TilePlan:
    """A tiling of the prefix ending at ``split`` over a ``grid``.

    Attributes:
        split: The tensor ending the patch stage.
        grid: ``(n, m)``: tile rows and columns.
        layout: Where H and W are.
        prefix: The original ops replaced, in topological order.
        steps: Tile by tile (row-major), in prefix order within a tile.
        concats: ``(output, inputs, spatial axis)`` with axis 0 for H, 1 for W: one concat per
            tile row along W named ``f"{split}@row{i}"`` (omitted when ``m == 1``), then the
            final one along H writing ``split`` (when ``n == 1`` the row concat is the final one
            and writes ``split``).
        macs_before: Multiply-accumulates of the prefix's convolutions.
        macs_after: The same over every tile's copies (halos recomputed).
    """

    split: str
    grid: tuple[int, int]
    layout: Layout
    prefix: tuple[int, ...]
    steps: tuple[TileStep, ...]
    concats: tuple[tuple[str, tuple[str, ...], int], ...]
    macs_before: int
    macs_after: int
    #: Boxes of every prefix tensor per tile (added to the spec; for reports and tests).
    boxes: Mapping[tuple[int, int], Mapping[str, Box]] = field(default_factory=dict, compare=False)

    def overhead(self) -> float:
        """Extra compute of the tiled prefix: ``macs_after / macs_before - 1`` (0 without MACs)."""
        return self.macs_after / self.macs_before - 1 if self.macs_before else 0.0

    def tile_steps(self, tile: tuple[int, int]) -> tuple[TileStep, ...]:
        """The steps of one tile, in prefix order."""
        return tuple(s for s in self.steps if s.tile == tile)


# -- the prefix ------------------------------------------------------------------------------


def _hw(t: Tensor, layout: Layout) -> tuple[int, int]:
    h, w, _ = AXES[layout]
    return t.shape[h], t.shape[w]


def _ancestors(graph: Graph, split: str) -> set[int]:
    """The split's producer and every op it depends on through activations."""
    start = graph.tensors[split].producer
    assert start is not None
    seen = {start}
    stack = [start]
    while stack:
        op = graph.ops[stack.pop()]
        for name in op.inputs:
            if not name or graph.tensors[name].constant:
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
    graph: Graph, dialect: SpatialDialect, split: str, cache: dict[int, Window | str] | None = None
) -> tuple[tuple[int, ...], dict[int, Window]]:
    """The prefix ending at ``split`` (topological order) and its windows.

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
    anc = _ancestors(graph, split)
    order = tuple(i for i in graph.topological_order if i in anc)
    windows: dict[int, Window] = {}
    cache = {} if cache is None else cache
    for i in order:
        op = graph.ops[i]
        outs = [o for o in op.outputs if o]
        if len(outs) != 1:
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
                    f"'{split}'; split later, or before '{op.name}'"
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


def split_candidates(graph: Graph, dialect: SpatialDialect) -> list[tuple[str, str | None]]:
    """Every op output that could end a patch stage, in topological order, with ``None`` or the
    reason it cannot (the first problem of its prefix)."""
    cache: dict[int, Window | str] = {}
    out: list[tuple[str, str | None]] = []
    for i in graph.topological_order:
        for name in graph.ops[i].outputs:
            if not name or graph.tensors[name].constant:
                continue
            try:
                _prefix(graph, dialect, name, cache)
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


def plan_tiles(graph: Graph, dialect: SpatialDialect, split: str, grid: tuple[int, int]) -> TilePlan:
    """Plan running the prefix ending at ``split`` tile by tile over an ``n x m`` grid.

    Args:
        graph: The graph.
        dialect: The format's reading of ops (layout, windows, new op types).
        split: The tensor ending the patch stage.
        grid: ``(n, m)`` tile rows and columns; not ``(1, 1)``, at most the split's size.

    Returns:
        The plan (steps per tile, concats, MACs before and after).

    Raises:
        TilingError: the prefix cannot be tiled (an op without a window, a prefix tensor read
            after the split, average pooling with padding...) or the grid does not fit.
    """
    prefix, windows = _prefix(graph, dialect, split)
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
                ins = tuple(_tile_input(graph, op, win, p, box, (i, j), layout) for p in win.data_inputs)
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
    graph: Graph, op: Op, win: Window, p: int, box: Mapping[str, Box], tile: tuple[int, int], layout: Layout
) -> TileInput:
    t = graph.tensors[op.inputs[p]]
    h, w = _hw(t, layout)
    i, j = tile
    need = win.need(box[op.outputs[0]])
    pads = (max(0, -need.r0), max(0, -need.c0), max(0, need.r1 - h), max(0, need.c1 - w))
    if t.producer is None:  # a graph input: sliced from the uncut input
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


# -- the tiled graph -------------------------------------------------------------------------


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

    Per step, the ``Slice`` and ``Pad`` ops its inputs need (types from ``dialect.op_types``;
    one op per distinct tensor name: readers wanting the same region share it), then the op's
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
                new_ops.append(
                    Op(ti.padded, dialect.op_types["pad"], (ti.sliced or ti.source,), (ti.padded,),
                       attributes={"pads": ti.pads, "fill": ti.fill})
                )  # fmt: skip
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
