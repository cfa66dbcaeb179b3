"""Random DAGs for property tests: layered graphs with multi-output ops, shared inputs,
graph outputs in the middle, dead outputs, and constants."""

from __future__ import annotations

import random

from hypothesis import strategies as st

from serenity.ir import Graph, Op, Tensor


def random_dag(seed: int, n_ops: int, *, max_width: int = 4, max_size: int = 64) -> Graph:
    """A seeded random DAG of ``n_ops`` ops over one or two graph inputs."""
    rng = random.Random(seed)
    tensors = [Tensor("in0", (1,), "int8", rng.randint(1, max_size))]
    inputs = ["in0"]
    if rng.random() < 0.3:
        tensors.append(Tensor("in1", (1,), "int8", rng.randint(1, max_size)))
        inputs.append("in1")
    tensors.append(Tensor("w", (1,), "int8", 0, constant=True))
    available = list(inputs)
    ops: list[Op] = []
    for i in range(n_ops):
        k = rng.randint(1, min(3, len(available)))
        # Prefer recent tensors so the graph has depth, but allow long skips.
        window = available[-max_width * 2 :] if rng.random() < 0.8 else available
        ins = [rng.choice(window) for _ in range(k)]
        if rng.random() < 0.2:
            ins.append("w")
        n_out = 2 if rng.random() < 0.15 else 1
        outs = [f"t{i}_{j}" for j in range(n_out)]
        for o in outs:
            tensors.append(Tensor(o, (1,), "int8", rng.randint(0, max_size)))
        ops.append(Op(f"op{i}", "X", tuple(ins), tuple(outs)))
        available.extend(outs)
    consumed = {t for op in ops for t in op.inputs}
    produced = [t for op in ops for t in op.outputs]
    outputs = [t for t in produced if t not in consumed and rng.random() < 0.85]
    if rng.random() < 0.3:
        outputs.append(rng.choice(produced))
    if not outputs:
        outputs = [produced[-1]]
    # Shuffle the listed order while keeping it topological (a random Kahn order).
    g = Graph(f"dag{seed}", ops, tensors, inputs, list(dict.fromkeys(outputs)))
    order = random_topological_order(g, rng)
    return Graph(g.name, [ops[i] for i in order], tensors, inputs, g.outputs)


def random_topological_order(g: Graph, rng: random.Random) -> list[int]:
    indeg = [len(p) for p in g.dense.preds]
    ready = [i for i, d in enumerate(indeg) if d == 0]
    order = []
    while ready:
        v = ready.pop(rng.randrange(len(ready)))
        order.append(v)
        for w in g.dense.succs[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                ready.append(w)
    return order


def dags(min_ops: int = 1, max_ops: int = 12) -> st.SearchStrategy[Graph]:
    """Hypothesis strategy over :func:`random_dag`."""
    return st.builds(
        random_dag,
        seed=st.integers(0, 2**32 - 1),
        n_ops=st.integers(min_ops, max_ops),
        max_width=st.integers(1, 6),
    )
