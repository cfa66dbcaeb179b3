"""The model zoo: irregularly wired networks (and two regular controls) as runnable ONNX models.

Every entry is built on demand, deterministically, as a float32 ONNX model (opset 17, batch 1,
random seeded weights) that passes ``onnx.checker`` in full mode and runs in onnxruntime. Node
order is the order a framework exporter would write (PyTorch ``forward`` order), which is the
"listed" baseline schedule. For int8-sized accounting (as on a microcontroller) import the model
and apply :func:`serenity.ir.with_element_size` with 1 byte; the file itself stays float32.

Example:
    >>> from serenity import zoo
    >>> zoo.info("darts_normal_cell").ops
    39
    >>> len(zoo.build("darts_normal_cell").graph.node)
    39
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import onnx

from serenity.errors import SerenityError
from serenity.ir import Graph, with_element_size
from serenity.zoo import cells, controls, multires, randwire, swiftnet


class UnknownModelError(SerenityError):
    """A zoo name that does not exist."""


@dataclass(frozen=True, slots=True)
class ZooEntry:
    """One zoo network.

    Attributes:
        name: The zoo name (``serenity zoo export NAME``).
        family: ``darts``, ``nasnet``, ``amoebanet``, ``randwire``, ``swiftnet``, ``multires`` or
            ``control``.
        description: One line for ``serenity zoo list``.
        cells: Number of cells (or stages, or blocks) the network repeats; its node names start
            with ``cell_scope`` followed by an index or letter.
        cell_scope: The node-name prefix of a cell (``cell``, ``stage``, ``block``).
        ops: Number of ONNX nodes the builder emits.
        whole: True for a whole network, False for one cell or stage cut out of one.
        build: ``build(seed=...) -> onnx.ModelProto``.
    """

    name: str
    family: str
    description: str
    cells: int
    cell_scope: str
    ops: int
    whole: bool
    build: Callable[..., onnx.ModelProto]


def _entries() -> list[ZooEntry]:
    # (name, family, description, cells, cell scope, ops, whole network, builder); the op counts
    # are pinned here so that a change to a builder shows up as a test failure.
    rows: list[tuple[str, str, str, int, str, int, bool, Callable[..., onnx.ModelProto]]] = []
    # fmt: off
    for fam, label, tag, net_ops, cell_ops in (
        ("darts", "DARTS_V2", "darts", (516, 742), (39, 14)),
        ("nasnet_a", "NASNet-A", "nasnet", (624, 874), (43, 44)),
        ("amoebanet_a", "AmoebaNet-A", "amoebanet", (560, 780), (38, 42)),
    ):
        rows += [
            (f"{fam}_imagenet", tag, f"{label}, ImageNet mobile setting (14 cells, 224×224)", 14, "cell",
             net_ops[0], True, partial(cells.network, fam, "imagenet")),
            (f"{fam}_cifar", tag, f"{label}, CIFAR-10 setting (20 cells, 32×32)", 20, "cell",
             net_ops[1], True, partial(cells.network, fam, "cifar")),
            (f"{fam}_normal_cell", tag, f"{label} normal cell (cell 1 of the ImageNet network)", 1, "cell",
             cell_ops[0], False, partial(cells.single_cell, fam, False)),
            (f"{fam}_reduction_cell", tag, f"{label} reduction cell (cell 4 of the ImageNet network)", 1,
             "cell", cell_ops[1], False, partial(cells.single_cell, fam, True)),
        ]
    rw_ops = {("ws", "c10"): 549, ("ws", "c100"): 552, ("er", "c10"): 690, ("er", "c100"): 666,
              ("ba", "c10"): 789, ("ba", "c100"): 789}
    for kind, gen in randwire.GENERATORS.items():
        for ds, label in (("c10", "CIFAR-10"), ("c100", "CIFAR-100")):
            rows.append((f"randwire_{kind}_{ds}", "randwire",
                         f"RandWire {gen}, N=32, small regime, {label}", 3, "stage",
                         rw_ops[kind, ds], True, partial(randwire.network, kind, ds)))
    for kind, gen in randwire.GENERATORS.items():
        rows.append((f"randwire_{kind}_stage", "randwire", f"RandWire {gen}: stage 1 of the CIFAR-10 net",
                     1, "stage", {"ws": 182, "er": 212, "ba": 260}[kind], False,
                     partial(randwire.single_stage, kind, "c10")))
    rows.append(("swiftnet", "swiftnet", "SwiftNet human presence detection (reconstructed), 128×128",
                 3, "cell", 84, True, swiftnet.network))
    for cell, n in (("A", 27), ("B", 27), ("C", 23)):
        rows.append((f"swiftnet_cell_{cell.lower()}", "swiftnet", f"SwiftNet cell {cell} (reconstructed)",
                     1, "cell", n, False, partial(swiftnet.single_cell, cell)))
    rows += [
        ("hrnet_w18_small", "multires", "HRNet-W18-small: 4 parallel resolutions, all-to-all fusion",
         4, "stage", 177, True, multires.hrnet),
        ("nasfpn", "multires", "NAS-FPN: 3 × 7 merging cells over P3-P7, 256×256",
         3, "cell", 151, True, multires.nasfpn),
        ("hrnet_w18_small_body", "multires", "HRNet-W18-small stages 2-4 alone (no stem, no head)",
         3, "stage", 152, False, multires.hrnet_body),
        ("nasfpn_body", "multires", "NAS-FPN's 3 × 7 merging cells alone, reading P3-P7",
         3, "cell", 126, False, multires.nasfpn_body),
        ("resnet18", "control", "ResNet-18 (control: a chain, order barely matters)",
         8, "block", 49, True, controls.resnet18),
        ("mobilenet_v2", "control", "MobileNetV2 1.0 (control: a chain with residual adds)",
         17, "block", 100, True, controls.mobilenet_v2),
    ]
    # fmt: on
    return [ZooEntry(*row) for row in rows]


_ZOO: dict[str, ZooEntry] = {entry.name: entry for entry in _entries()}


def names() -> list[str]:
    """Every zoo name, in listing order (families grouped, whole networks before their cells)."""
    return list(_ZOO)


def info(name: str) -> ZooEntry:
    """The entry for ``name``.

    Raises:
        UnknownModelError: no such network; the message lists the known names.
    """
    entry = _ZOO.get(name)
    if entry is None:
        raise UnknownModelError(f"no zoo network named '{name}' (known: {', '.join(_ZOO)})")
    return entry


def build(name: str, *, seed: int = 0) -> onnx.ModelProto:
    """Build zoo network ``name`` with weights drawn from ``seed``.

    Args:
        name: A name from :func:`names`.
        seed: Seeds the weights (random graph structure is fixed per network).

    Returns:
        The ONNX model, already checked with ``onnx.checker`` (full check).

    Raises:
        UnknownModelError: no such network.
    """
    return info(name).build(seed=seed)


def graph(name: str, *, seed: int = 0, element_bytes: int = 4) -> Graph:
    """Zoo network ``name`` imported into the IR, activations accounted at ``element_bytes``.

    ``element_bytes=1`` gives int8-sized accounting (as on a microcontroller) of the float32 model.

    >>> graph("swiftnet_cell_c", element_bytes=1).tensors["x"].nbytes == 96 * 16 * 16
    True

    Raises:
        UnknownModelError: no such network.
    """
    from serenity.formats.onnx_io import from_proto

    g = from_proto(build(name, seed=seed)).graph
    return g if element_bytes == 4 else with_element_size(g, element_bytes)


__all__ = ["UnknownModelError", "ZooEntry", "build", "graph", "info", "names"]
