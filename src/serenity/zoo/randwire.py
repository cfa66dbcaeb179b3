"""RandWire: randomly wired networks (Xie, Kirillov, Girshick, He, "Exploring Randomly Wired
Neural Networks for Image Recognition", ICCV 2019).

Each random stage is an undirected random graph turned into a DAG by orienting every edge from
the lower to the higher node index. A node aggregates its inputs by a weighted sum with positive
weights (``sigmoid(w_i) * x_i``, emitted as one ``Mul`` per input and a ``Sum``), then applies
ReLU-SepConv-BN (3×3 depthwise, 1×1 pointwise with the batch norm folded in). Nodes with no
predecessor read the stage input with stride 2; the stage output is the unweighted average of the
nodes with no successor (``Sum`` then ``Mul`` by 1/k).

The network is the paper's *small regime* (C=78): conv1 (3×3, C/2) and conv2 (3×3, C), then three
random stages of C, 2C and 4C channels, a 1×1 conv to 1280 channels and the classifier. For
CIFAR's 32×32 inputs conv1 and conv2 keep stride 1 (the ImageNet strides would leave 1×1 maps),
so the stages run at 16×16, 8×8 and 4×4.

Graph generators follow the paper's definitions (as networkx implements them) with N=32 nodes:
WS(K=4, P=0.75), ER(P=0.2), BA(M=5). Every stage's graph has its own fixed seed (part of the
network's definition, like the paper's sampled-once graphs); ``build(..., seed=)`` only changes
the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from serenity.zoo._onnx_builder import NetBuilder

#: Number of nodes per random stage and the generator parameters of the paper's Table 2.
N_NODES = 32
GENERATORS = {"ws": "WS(K=4, P=0.75)", "er": "ER(P=0.2)", "ba": "BA(M=5)"}
SMALL_C = 78
#: Graph seeds: one per (generator, dataset); stage ``s`` uses ``base + s``.
GRAPH_SEED_BASE = {"c10": 10_000, "c100": 100_000}


@dataclass(frozen=True, slots=True)
class RandomDag:
    """A random graph oriented low → high index.

    Attributes:
        n: Number of nodes.
        edges: Directed edges ``(u, v)`` with ``u < v``, sorted.
        kind: Generator name (``"ws"``, ``"er"``, ``"ba"``).
        seed: The seed it was generated from.
    """

    n: int
    edges: tuple[tuple[int, int], ...]
    kind: str
    seed: int

    def preds(self, v: int) -> list[int]:
        """Predecessors of ``v``, ascending."""
        return [u for u, w in self.edges if w == v]

    def succs(self, v: int) -> list[int]:
        """Successors of ``v``, ascending."""
        return [w for u, w in self.edges if u == v]


def watts_strogatz(n: int, k: int, p: float, rng: np.random.Generator) -> set[tuple[int, int]]:
    """WS: a ring where each node links to its ``k/2`` neighbours each side; each edge
    ``(u, u+j)`` is rewired with probability ``p`` to a uniformly chosen non-neighbour."""
    adj: list[set[int]] = [set() for _ in range(n)]
    for u in range(n):
        for j in range(1, k // 2 + 1):
            adj[u].add((u + j) % n)
            adj[(u + j) % n].add(u)
    # Rewire in the paper's (and networkx's) order: by distance j, then by node u.
    for j in range(1, k // 2 + 1):
        for u in range(n):
            v = (u + j) % n
            if v in adj[u] and rng.random() < p:
                choices = [w for w in range(n) if w != u and w not in adj[u]]
                if not choices:
                    continue
                w = choices[int(rng.integers(len(choices)))]
                adj[u].discard(v)
                adj[v].discard(u)
                adj[u].add(w)
                adj[w].add(u)
    return {(min(u, v), max(u, v)) for u in range(n) for v in adj[u]}


def erdos_renyi(n: int, p: float, rng: np.random.Generator) -> set[tuple[int, int]]:
    """ER: every pair of nodes is linked independently with probability ``p``."""
    return {(u, v) for u in range(n) for v in range(u + 1, n) if rng.random() < p}


def barabasi_albert(n: int, m: int, rng: np.random.Generator) -> set[tuple[int, int]]:
    """BA: start from ``m`` unlinked nodes; each new node links to ``m`` distinct existing nodes
    chosen with probability proportional to their degree (the first new node links to all)."""
    edges: set[tuple[int, int]] = set()
    targets = list(range(m))
    repeated: list[int] = []
    for v in range(m, n):
        for u in targets:
            edges.add((u, v))
        repeated.extend(targets)
        repeated.extend([v] * m)
        chosen: list[int] = []
        while len(chosen) < m:
            u = repeated[int(rng.integers(len(repeated)))]
            if u not in chosen:
                chosen.append(u)
        targets = chosen
    return edges


def random_dag(kind: str, seed: int, n: int = N_NODES) -> RandomDag:
    """Generate the paper's random graph ``kind`` with ``n`` nodes from ``seed``.

    >>> random_dag("ws", 1) == random_dag("ws", 1)
    True

    Raises:
        ValueError: unknown generator.
    """
    rng = np.random.default_rng(seed)
    if kind == "ws":
        edges = watts_strogatz(n, 4, 0.75, rng)
    elif kind == "er":
        edges = erdos_renyi(n, 0.2, rng)
    elif kind == "ba":
        edges = barabasi_albert(n, 5, rng)
    else:
        raise ValueError(f"unknown random graph generator '{kind}' (known: {', '.join(GENERATORS)})")
    return RandomDag(n, tuple(sorted(edges)), kind, seed)


def stage(b: NetBuilder, x: str, dag: RandomDag, c: int) -> str:
    """Emit one random stage reading ``x``; nodes in index order (the only topological order a
    ``forward`` loop over node ids produces)."""
    outs: list[str] = []
    for v in range(dag.n):
        with b.scope(f"node{v}"):
            preds = dag.preds(v)
            if preds:
                weights = 1.0 / (1.0 + np.exp(-b.rng.standard_normal(len(preds))))
                agg = b.sum([b.scale(outs[u], float(w)) for u, w in zip(preds, weights, strict=True)])
                y = b.conv(b.dwconv(b.relu(agg), 3), c)
            else:
                y = b.conv(b.dwconv(b.relu(x), 3, stride=2), c)
            outs.append(y)
    sinks = [outs[v] for v in range(dag.n) if not dag.succs(v)]
    with b.scope("output"):
        return b.scale(b.sum(sinks), 1.0 / len(sinks)) if len(sinks) > 1 else sinks[0]


def stage_dags(kind: str, dataset: str) -> list[RandomDag]:
    """The three stages' graphs of network ``randwire_{kind}_{dataset}``."""
    base = GRAPH_SEED_BASE[dataset] + 1000 * list(GENERATORS).index(kind)
    return [random_dag(kind, base + s) for s in range(3)]


def network(kind: str, dataset: str, *, seed: int = 0) -> onnx.ModelProto:
    """The small-regime RandWire network for CIFAR-10 (``"c10"``) or CIFAR-100 (``"c100"``)."""
    classes = 10 if dataset == "c10" else 100
    b = NetBuilder(f"randwire_{kind}_{dataset}", seed)
    x = b.input("image", (1, 3, 32, 32))
    with b.scope("conv1"):
        x = b.relu(b.conv(x, SMALL_C // 2, 3))
    with b.scope("conv2"):
        x = b.conv(b.relu(x), SMALL_C, 3)
    for s, dag in enumerate(stage_dags(kind, dataset)):
        with b.scope(f"stage{s + 1}"):
            x = stage(b, x, dag, SMALL_C * 2**s)
    with b.scope("head"):
        logits = b.classifier(b.relu(b.conv(x, 1280)), classes)
    doc = f"RandWire {GENERATORS[kind]} small regime, {classes} classes, 3 random stages"
    return b.finish([logits], doc=doc)


def single_stage(kind: str, dataset: str = "c10", *, seed: int = 0) -> onnx.ModelProto:
    """The first random stage of ``randwire_{kind}_{dataset}`` as a model of its own."""
    b = NetBuilder(f"randwire_{kind}_stage", seed)
    x = b.input("x", (1, SMALL_C, 32, 32))
    with b.scope("stage1"):
        out = stage(b, x, stage_dags(kind, dataset)[0], SMALL_C)
    return b.finish([out], doc=f"RandWire {GENERATORS[kind]} stage 1 (C={SMALL_C}, 32×32 input)")


#: Node aggregations of :func:`stress_network`: the paper's weighted sum (a ``Mul`` per edge, then
#: ``Sum``), an unweighted ``Sum``, a channel concat followed by a 1×1 conv, and pairwise adds.
#: ``add-chain`` is what PyTorch's ``sum(inputs)`` exports: a chain of pairwise ``Add``, which
#: also averages the stage's sinks.
AGGREGATIONS = ("weighted", "sum", "concat", "add-chain")
#: Node op chains of :func:`stress_network`: ReLU → depthwise 3×3 → pointwise 1×1 → BatchNorm
#: (the paper's ReLU-SepConv-BN, batch norm left unfolded), and 3×3 conv → BatchNorm → ReLU.
CHAINS = ("relu-sep-bn", "conv-bn-relu")


def _stress_stage(
    b: NetBuilder, x: str, dag: RandomDag, c: int, aggregate: str, chain: str, stride: int
) -> str:
    outs: list[str] = []
    for v in range(dag.n):
        with b.scope(f"node{v}"):
            preds = dag.preds(v)
            if not preds:
                y, s = x, stride
            else:
                s = 1
                if aggregate == "weighted":
                    weights = 1.0 / (1.0 + np.exp(-b.rng.standard_normal(len(preds))))
                    y = b.sum([b.scale(outs[u], float(w)) for u, w in zip(preds, weights, strict=True)])
                elif aggregate == "sum":
                    y = b.sum([outs[u] for u in preds])
                elif aggregate == "add-chain":
                    y = _add_chain(b, [outs[u] for u in preds])
                else:
                    y = b.concat([outs[u] for u in preds])
                    y = b.conv(y, c) if len(preds) > 1 else y
            if chain == "relu-sep-bn":
                y = b.bn(b.conv(b.dwconv(b.relu(y), 3, stride=s), c))
            else:
                y = b.relu(b.bn(b.conv(y, c, 3, stride=s)))
            outs.append(y)
    sinks = [outs[v] for v in range(dag.n) if not dag.succs(v)]
    with b.scope("output"):
        if len(sinks) == 1:
            return sinks[0]
        total = _add_chain(b, sinks) if aggregate == "add-chain" else b.sum(sinks)
        return b.scale(total, 1.0 / len(sinks))


def _add_chain(b: NetBuilder, xs: list[str]) -> str:
    y = xs[0]
    for x in xs[1:]:
        y = b.add(y, x)
    return y


def stress_network(
    kind: str,
    graph_seed: int,
    *,
    aggregate: str = "weighted",
    chain: str = "relu-sep-bn",
    resolution: int = 32,
    stem: bool = False,
    downsample: bool = True,
    nodes: int = N_NODES,
    channels: int = SMALL_C,
    seed: int = 0,
) -> onnx.ModelProto:
    """Three random stages of the generator ``kind`` built the ways other code bases build
    RandWire (the stress benchmark's graphs, ``benchmarks/bench_randwire.py``).

    Stage ``s`` (``s = 0, 1, 2``) has ``channels · 2^s`` channels and its own graph drawn from
    ``graph_seed + s``; its source nodes read the previous stage's output with stride 2 (stage 1
    with stride 1 without a stem, so it runs at ``resolution``). With ``downsample=False`` every
    stage keeps the resolution and the width of the first (the hardest case for a scheduler:
    every stage can hold the peak). ``stem`` adds the small regime's
    conv1/conv2 in front (stride 2 each at 224×224, stride 1 below) and the 1×1-conv, pooling
    and classifier head behind.

    Raises:
        ValueError: unknown generator, aggregation or chain.
    """
    if aggregate not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation '{aggregate}' (known: {', '.join(AGGREGATIONS)})")
    if chain not in CHAINS:
        raise ValueError(f"unknown node chain '{chain}' (known: {', '.join(CHAINS)})")
    name = f"rw_{kind}{graph_seed}_{aggregate}_{chain}_{resolution}" + ("_stem" if stem else "")
    name += "" if downsample else "_flat"
    b = NetBuilder(name, seed)
    if stem:
        x = b.input("image", (1, 3, resolution, resolution))
        st = 2 if resolution >= 128 else 1
        with b.scope("conv1"):
            x = b.relu(b.conv(x, channels // 2, 3, stride=st))
        with b.scope("conv2"):
            x = b.conv(b.relu(x), channels, 3, stride=st)
    else:
        x = b.input("x", (1, channels, resolution, resolution))
    for s in range(3):
        dag = random_dag(kind, graph_seed + s, nodes)
        with b.scope(f"stage{s + 1}"):
            stride = 2 if downsample and (s > 0 or stem) else 1
            width = channels * 2**s if downsample else channels
            x = _stress_stage(b, x, dag, width, aggregate, chain, stride)
    outputs = [x]
    if stem:
        with b.scope("head"):
            outputs = [b.classifier(b.relu(b.conv(x, 1280)), 10)]
    doc = f"RandWire {GENERATORS[kind]} × 3 stages, {aggregate} aggregation, {chain} nodes, {resolution}²"
    return b.finish(outputs, doc=doc)
