"""The DARTS cell language, and the DARTS_V2, NASNet-A and AmoebaNet-A networks written in it.

A genotype lists, for each intermediate node of a cell, two ``(op, input state)`` pairs; the node
is the sum of the two ops' outputs. States 0 and 1 are the two previous cells' outputs (each first
passed through a 1×1 ReLU-Conv-BN, or a factorized reduce when the previous cell halved the
resolution); the cell's output concatenates the states listed in ``concat``. This is the
evaluation network of Liu et al., "DARTS: Differentiable Architecture Search" (ICLR 2019),
``NetworkImageNet`` (14 cells, 224×224, C=48, reduction cells 4 and 9) and ``NetworkCIFAR``
(20 cells, 32×32, C=36, reduction cells 6 and 13), without the auxiliary head and drop-path
(training only).

Nodes are emitted in the order PyTorch's ``forward`` runs them: cell by cell; inside a cell the
two preprocessing branches, then node by node the first op, the second op and the ``Add``.
Batch norms that follow a convolution are folded into it (see ``_onnx_builder``).

NASNet-A (Zoph et al. 2018) and AmoebaNet-A (Real et al. 2019) are built from their genotypes as
transcribed in the DARTS repository, inside the same 14-cell ImageNet skeleton. Their papers'
own ImageNet networks differ (two stem reduction cells, N=4 normal cells per stage); the
skeleton keeps the three families comparable cell for cell, as DARTS' own comparison does.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from serenity.zoo._onnx_builder import NetBuilder


@dataclass(frozen=True, slots=True)
class Genotype:
    """A cell pair in the DARTS notation (``cnn/genotypes.py`` of quark0/darts)."""

    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]


# Transcribed from quark0/darts, cnn/genotypes.py (published genotypes; data, not code).
DARTS_V2 = Genotype(
    normal=(("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)),
    normal_concat=(2, 3, 4, 5),
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)),
    reduce_concat=(2, 3, 4, 5),
)  # fmt: skip

NASNET_A = Genotype(
    normal=(("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 0), ("sep_conv_3x3", 0),
            ("avg_pool_3x3", 1), ("skip_connect", 0), ("avg_pool_3x3", 0), ("avg_pool_3x3", 0),
            ("sep_conv_3x3", 1), ("skip_connect", 1)),
    normal_concat=(2, 3, 4, 5, 6),
    reduce=(("sep_conv_5x5", 1), ("sep_conv_7x7", 0), ("max_pool_3x3", 1), ("sep_conv_7x7", 0),
            ("avg_pool_3x3", 1), ("sep_conv_5x5", 0), ("skip_connect", 3), ("avg_pool_3x3", 2),
            ("sep_conv_3x3", 2), ("max_pool_3x3", 1)),
    reduce_concat=(4, 5, 6),
)  # fmt: skip

AMOEBANET_A = Genotype(
    normal=(("avg_pool_3x3", 0), ("max_pool_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 2),
            ("sep_conv_3x3", 0), ("avg_pool_3x3", 3), ("sep_conv_3x3", 1), ("skip_connect", 1),
            ("skip_connect", 0), ("avg_pool_3x3", 1)),
    normal_concat=(4, 5, 6),
    reduce=(("avg_pool_3x3", 0), ("sep_conv_3x3", 1), ("max_pool_3x3", 0), ("sep_conv_7x7", 2),
            ("sep_conv_7x7", 0), ("avg_pool_3x3", 1), ("max_pool_3x3", 0), ("max_pool_3x3", 1),
            ("conv_7x1_1x7", 0), ("sep_conv_3x3", 5)),
    reduce_concat=(3, 4, 6),
)  # fmt: skip

GENOTYPES: dict[str, Genotype] = {"darts": DARTS_V2, "nasnet_a": NASNET_A, "amoebanet_a": AMOEBANET_A}

#: Initial channels C of the ImageNet mobile setting: DARTS' 48, and the F of NASNet-A (4 @ 1056)
#: and AmoebaNet-A (N=4, F=50) mobile networks.
IMAGENET_C = {"darts": 48, "nasnet_a": 44, "amoebanet_a": 50}


@dataclass(frozen=True, slots=True)
class CellPlan:
    """Where one cell sits in a network: its inputs' shapes and its own width."""

    index: int
    reduction: bool
    reduction_prev: bool
    c_pp: int
    c_p: int
    c: int
    hw_pp: int
    hw_p: int


def _op(b: NetBuilder, name: str, x: str, c: int, stride: int) -> str:
    """One DARTS primitive (``cnn/operations.py`` ``OPS``) applied to ``x``."""
    if name == "skip_connect":
        return x if stride == 1 else factorized_reduce(b, x, c)
    if name == "max_pool_3x3":
        return b.maxpool(x, 3, stride=stride)
    if name == "avg_pool_3x3":
        return b.avgpool(x, 3, stride=stride)
    if name.startswith("sep_conv_"):
        k = int(name[-1])
        y = b.conv(b.dwconv(b.relu(x), k, stride=stride), b.channels(x))
        return b.conv(b.dwconv(b.relu(y), k), c)
    if name.startswith("dil_conv_"):
        return b.conv(b.dwconv(b.relu(x), int(name[-1]), stride=stride, dilation=2), c)
    if name == "conv_7x1_1x7":
        y = b.conv(b.relu(x), c, (1, 7), stride=(1, stride))
        return b.conv(y, c, (7, 1), stride=(stride, 1))
    raise ValueError(f"unknown DARTS primitive '{name}'")


def factorized_reduce(b: NetBuilder, x: str, c: int) -> str:
    """Halve the resolution with two offset stride-2 1×1 convs, concatenated, then batch norm."""
    r = b.relu(x)
    left = b.conv(r, c // 2, 1, stride=2)
    right = b.conv(b.slice_hw(r, 1), c - c // 2, 1, stride=2)
    return b.bn(b.concat([left, right]))


def cell(b: NetBuilder, g: Genotype, s0: str, s1: str, plan: CellPlan) -> str:
    """Emit one cell reading states ``s0``, ``s1``; returns the concatenated output."""
    ops, concat = (g.reduce, g.reduce_concat) if plan.reduction else (g.normal, g.normal_concat)
    with b.scope("pre0"):
        s0 = factorized_reduce(b, s0, plan.c) if plan.reduction_prev else b.conv(b.relu(s0), plan.c)
    with b.scope("pre1"):
        s1 = b.conv(b.relu(s1), plan.c)
    states = [s0, s1]
    for i in range(len(ops) // 2):
        with b.scope(f"node{i + 2}"):
            hs = []
            for name, j in ops[2 * i : 2 * i + 2]:
                stride = 2 if plan.reduction and j < 2 else 1
                hs.append(_op(b, name, states[j], plan.c, stride))
            states.append(b.add(hs[0], hs[1]))
    return b.concat([states[j] for j in concat])


def plan_cells(family: str, setting: str) -> list[CellPlan]:
    """The cells of a network, in order, with their input shapes.

    Args:
        family: ``"darts"``, ``"nasnet_a"`` or ``"amoebanet_a"``.
        setting: ``"imagenet"`` (14 cells, 224×224) or ``"cifar"`` (20 cells, 32×32).
    """
    g = GENOTYPES[family]
    if setting == "imagenet":
        layers, c, hw_pp, hw_p, c_pp, c_p, red_prev = 14, IMAGENET_C[family], 56, 28, 0, 0, True
        c_pp = c_p = c
    else:
        layers, c, hw_pp, hw_p, red_prev = 20, 36, 32, 32, False
        c_pp = c_p = 3 * c
    plans = []
    c_curr = c
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        if reduction:
            c_curr *= 2
        plans.append(CellPlan(i, reduction, red_prev, c_pp, c_p, c_curr, hw_pp, hw_p))
        mult = len(g.reduce_concat if reduction else g.normal_concat)
        c_pp, c_p = c_p, mult * c_curr
        hw_pp, hw_p = hw_p, hw_p // 2 if reduction else hw_p
        red_prev = reduction
    return plans


def network(family: str, setting: str, *, seed: int = 0) -> onnx.ModelProto:
    """A whole DARTS-skeleton network (stem, cells ``cell0..``, classifier head)."""
    g = GENOTYPES[family]
    b = NetBuilder(f"{family}_{setting}", seed)
    plans = plan_cells(family, setting)
    if setting == "imagenet":
        x = b.input("image", (1, 3, 224, 224))
        c = IMAGENET_C[family]
        with b.scope("stem0"):
            s0 = b.conv(b.relu(b.conv(x, c // 2, 3, stride=2)), c, 3, stride=2)
        with b.scope("stem1"):
            s1 = b.conv(b.relu(s0), c, 3, stride=2)
        classes = 1000
    else:
        x = b.input("image", (1, 3, 32, 32))
        with b.scope("stem"):
            s0 = s1 = b.conv(x, 3 * 36, 3)
        classes = 10
    for plan in plans:
        with b.scope(f"cell{plan.index}"):
            s0, s1 = s1, cell(b, g, s0, s1, plan)
    with b.scope("head"):
        logits = b.classifier(s1, classes)
    return b.finish([logits], doc=f"{family} {setting}: {len(plans)} cells (serenity.zoo.cells)")


def single_cell(family: str, reduction: bool, *, seed: int = 0) -> onnx.ModelProto:
    """One cell of the ImageNet network as a model of its own (inputs: the two previous states).

    The normal cell is cell 1 (28×28, after a normal cell); the reduction cell is cell 4, the
    first reduction.
    """
    plans = plan_cells(family, "imagenet")
    plan = next(p for p in plans if p.reduction) if reduction else plans[1]
    kind = "reduction" if reduction else "normal"
    b = NetBuilder(f"{family}_{kind}_cell", seed)
    s0 = b.input("s0", (1, plan.c_pp, plan.hw_pp, plan.hw_pp))
    s1 = b.input("s1", (1, plan.c_p, plan.hw_p, plan.hw_p))
    with b.scope(f"cell{plan.index}"):
        out = cell(b, GENOTYPES[family], s0, s1, plan)
    return b.finish([out], doc=f"{family} {kind} cell {plan.index} of the ImageNet network")
