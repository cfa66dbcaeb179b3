"""SwiftNet, the human-presence-detection network Serenity (Ahn et al., MLSys 2020) evaluates.

SwiftNet (Cheng, Zhang, Yang et al., "SwiftNet: Using Graph Propagation as Meta-knowledge to
Search Highly Representative Neural Architectures", 2019) was found by GRAM, a node-wise search
over a complete DAG per cell followed by structure-level pruning of edges. Its exact cells were
not released. **What is reconstructed here** (and what is not):

* Published and kept: three cells (Serenity evaluates SwiftNet's Cell A, B and C); each cell a
  DAG in which a node may read any earlier node of the cell (GRAM's complete-DAG search space)
  with some edges pruned; a two-class (person / no person) head; a microcontroller-sized model.
* Reconstructed (assumptions, not published facts): the input (3×128×128) and stem; every
  cell's wiring, op choice (1×1 conv, 3×3 / 5×5 depthwise-separable conv, from the usual mobile
  search space) and per-node widths (``CELLS`` below, written by hand, about 0.2 M weights in
  all); aggregation of several inputs by concatenation; each cell halving the resolution, with
  the nodes that read the cell input reading it alone, with stride 2. The paper's MAC and weight
  counts for its model are not matched. Memory numbers on this model are therefore comparable
  in kind, not in value, to the paper's.

Concatenation feeding a convolution is the pattern Serenity's graph rewriting (channel-wise
partitioning) targets, so the reconstruction keeps it wherever a node has several inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from serenity.zoo._onnx_builder import NetBuilder


@dataclass(frozen=True, slots=True)
class SwiftCell:
    """One reconstructed cell.

    Attributes:
        nodes: Per node ``1..``: ``(op, inputs, channels)``; input 0 is the cell input, which a
            node reads alone and with stride 2 (every node of the cell then runs at half the
            input's resolution).
        concat: Nodes concatenated into the cell output.
    """

    nodes: tuple[tuple[str, tuple[int, ...], int], ...]
    concat: tuple[int, ...]


# Reconstructed wiring (see module docstring): several nodes read the cell input (GRAM's complete
# DAG keeps input edges), node widths differ (structure-level pruning), multi-input nodes concat.
CELLS: dict[str, SwiftCell] = {
    "A": SwiftCell(
        (("sep3", (0,), 24), ("conv1", (0,), 48), ("sep5", (0,), 16), ("sep3", (1, 2), 24),
         ("conv1", (2, 3), 32), ("sep3", (1, 4), 24), ("sep5", (3, 5), 16), ("conv1", (4, 6, 7), 32)),
        (5, 8),
    ),
    "B": SwiftCell(
        (("sep3", (0,), 48), ("conv1", (0,), 96), ("sep3", (1,), 32), ("sep5", (2, 3), 48),
         ("conv1", (1, 4), 64), ("sep3", (2, 5), 32), ("sep5", (3, 4, 6), 48), ("conv1", (5, 7), 64)),
        (6, 8),
    ),
    "C": SwiftCell(
        (("sep3", (0,), 96), ("conv1", (0,), 128), ("sep5", (0,), 64), ("sep3", (1, 2), 96),
         ("conv1", (3, 4), 128), ("sep3", (2, 5), 64), ("conv1", (4, 6), 128)),
        (6, 7),
    ),
}  # fmt: skip

INPUT_SHAPE = (1, 3, 128, 128)
STEM_C = 16


def _node_op(b: NetBuilder, op: str, x: str, c: int, stride: int) -> str:
    if op == "conv1":
        return b.relu(b.conv(x, c, 1, stride=stride))
    k = int(op[-1])
    return b.relu(b.conv(b.dwconv(x, k, stride=stride), c))


def swift_cell(b: NetBuilder, x: str, spec: SwiftCell) -> str:
    """Emit one cell reading ``x``; nodes in index order, output concatenation last."""
    states = [x]
    for i, (op, inputs, width) in enumerate(spec.nodes, start=1):
        with b.scope(f"node{i}"):
            assert inputs == (0,) or 0 not in inputs, "the cell input is read alone, with stride 2"
            agg = b.concat([states[j] for j in inputs])
            states.append(_node_op(b, op, agg, width, 2 if inputs == (0,) else 1))
    return b.concat([states[j] for j in spec.concat])


def _cell_input_shape(name: str) -> tuple[int, int, int, int]:
    c, hw = STEM_C, INPUT_SHAPE[2] // 2
    for key, spec in CELLS.items():
        if key == name:
            return (1, c, hw, hw)
        c, hw = sum(spec.nodes[j - 1][2] for j in spec.concat), hw // 2
    raise ValueError(f"unknown SwiftNet cell '{name}' (known: {', '.join(CELLS)})")


def network(*, seed: int = 0) -> onnx.ModelProto:
    """The whole reconstructed SwiftNet: stem, cells A, B, C, two-class head."""
    b = NetBuilder("swiftnet", seed)
    x = b.input("image", INPUT_SHAPE)
    with b.scope("stem"):
        x = b.relu(b.conv(x, STEM_C, 3, stride=2))
    for key, spec in CELLS.items():
        with b.scope(f"cell{key}"):
            x = swift_cell(b, x, spec)
    with b.scope("head"):
        logits = b.classifier(b.relu(b.conv(x, 128)), 2)
    return b.finish([logits], doc="SwiftNet (reconstructed, see serenity.zoo.swiftnet)")


def single_cell(name: str, *, seed: int = 0) -> onnx.ModelProto:
    """Cell ``"A"``, ``"B"`` or ``"C"`` as a model of its own, at its place in the network."""
    shape = _cell_input_shape(name)
    b = NetBuilder(f"swiftnet_cell_{name.lower()}", seed)
    x = b.input("x", shape)
    with b.scope(f"cell{name}"):
        out = swift_cell(b, x, CELLS[name])
    return b.finish([out], doc=f"SwiftNet cell {name} (reconstructed)")
