"""The records of patch-based execution (:mod:`serenity.rewrites.tiling`): boxes, windows,
the dialect a format implements, and the plan every adapter writes.

A plan names every tensor it creates, so the IR rewrite
(:func:`~serenity.rewrites.tiling.tiled_graph`) and a format's writer produce the same tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    #: Op types of the new ops: ``{"slice": ..., "pad": ..., "concat": ...}``, and optionally
    #: ``"pad_lowest"``, the op padding a max pool's input with the lowest value when ``"pad"``
    #: holds only zeros (TFLite's PADV2 beside PAD).
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


def spatial_size(t: Tensor, layout: Layout) -> tuple[int, int]:
    """``(H, W)`` of a rank-4 tensor in ``layout``."""
    h, w, _ = AXES[layout]
    return t.shape[h], t.shape[w]


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
    "spatial_size",
]
