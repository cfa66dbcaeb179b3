"""SwiftNet, the human-presence-detection network Serenity (Ahn et al., MLSys 2020) evaluates.

SwiftNet (Cheng, Zhang, Yang et al., "SwiftNet: Using Graph Propagation as Meta-knowledge to
Search Highly Representative Neural Architectures", 2019) was found by GRAM, a node-wise search
over a complete DAG per cell followed by structure-level pruning of edges. Its exact cells were
not released. **What is reconstructed here** (and what is not):

* Published and kept: three cells (Serenity's Cell A, B, C); each cell a DAG in which a node may
  read any earlier node of the cell (GRAM's complete-DAG search space) and several pruned inputs
  are concatenated before the node's operation; ops from the mobile search space (1×1 conv,
  3×3 / 5×5 depthwise-separable conv); each cell halves the resolution; a tiny two-class head;
  a budget of tens of MMACs and a few hundred thousand weights (Serenity's Table 1: 57.4 M MACs,
  249.7 K weights).
* Reconstructed: the input (3×128×128), the stem, every cell's wiring, op choice and widths
  (``CELLS`` below, written by hand to the properties above, not taken from a released model).
  Memory numbers on this model are therefore comparable in kind, not in value, to the paper's.

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
        width: Channels each node writes.
        nodes: Per node ``1..``: ``(op, inputs)``; input 0 is the cell input. The first node has
            stride 2.
        concat: Nodes concatenated into the cell output.
    """

    width: int
    nodes: tuple[tuple[str, tuple[int, ...]], ...]
    concat: tuple[int, ...]


# Reconstructed wiring (see module docstring): dense-ish early nodes, pruned long edges.
CELLS: dict[str, SwiftCell] = {
    "A": SwiftCell(
        24,
        (("sep3", (0,)), ("conv1", (1,)), ("sep3", (1,)), ("sep5", (1, 2)), ("conv1", (2, 3)),
         ("sep3", (3, 4, 5)), ("conv1", (1, 4, 6))),
        (5, 6, 7),
    ),
    "B": SwiftCell(
        48,
        (("sep3", (0,)), ("sep3", (1,)), ("conv1", (1,)), ("sep5", (2, 3)), ("sep3", (1, 3)),
         ("conv1", (2, 4, 5)), ("sep3", (4, 6)), ("conv1", (5, 6, 7))),
        (6, 7, 8),
    ),
    "C": SwiftCell(
        96,
        (("sep3", (0,)), ("conv1", (1,)), ("sep3", (1, 2)), ("sep5", (1, 2)), ("conv1", (3, 4)),
         ("sep3", (2, 3, 5)), ("conv1", (4, 5, 6))),
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
    for i, (op, inputs) in enumerate(spec.nodes, start=1):
        with b.scope(f"node{i}"):
            agg = b.concat([states[j] for j in inputs])
            states.append(_node_op(b, op, agg, spec.width, 2 if i == 1 else 1))
    return b.concat([states[j] for j in spec.concat])


def _cell_input_shape(name: str) -> tuple[int, int, int, int]:
    c, hw = STEM_C, INPUT_SHAPE[2] // 2
    for key, spec in CELLS.items():
        if key == name:
            return (1, c, hw, hw)
        c, hw = spec.width * len(spec.concat), hw // 2
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
