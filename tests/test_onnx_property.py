"""Random DAGs as real ONNX models: import, reorder with every baseline and at random, export,
and get bit-identical outputs from onnxruntime."""

from __future__ import annotations

import random
from pathlib import Path

import onnx
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from dags import random_topological_order
from serenity.formats import load, save
from serenity.schedulers import BASELINES
from serenity.verify import verify
from sim_reference import reference_peak


def random_onnx(seed: int, n_ops: int) -> onnx.ModelProto:
    """A DAG of elementwise ops over [1, 8] tensors; listed order is a random topological one."""
    rng = random.Random(seed)
    avail = ["x"]
    nodes = []
    for i in range(n_ops):
        kind = rng.choice(["Sum", "Mul", "Relu", "Sigmoid", "Tanh"])
        if kind in ("Relu", "Sigmoid", "Tanh"):
            ins = [rng.choice(avail[-6:])]
        else:
            ins = [rng.choice(avail) for _ in range(rng.randint(2, 3) if kind == "Sum" else 2)]
        nodes.append(helper.make_node(kind, ins, [f"t{i}"], name=f"n{i}"))
        avail.append(f"t{i}")
    used = {x for n in nodes for x in n.input}
    outs = [n.output[0] for n in nodes if n.output[0] not in used] or [nodes[-1].output[0]]
    # Shuffle node order topologically (Kahn with random picks).
    prod = {n.output[0]: k for k, n in enumerate(nodes)}
    preds = [{prod[x] for x in n.input if x in prod} for n in nodes]
    done: set[int] = set()
    order = []
    while len(order) < len(nodes):
        ready = [k for k in range(len(nodes)) if k not in done and preds[k] <= done]
        k = rng.choice(ready)
        done.add(k)
        order.append(k)
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 8])  # noqa: E731
    g = helper.make_graph([nodes[k] for k in order], f"rand{seed}", [vi("x")], [vi(o) for o in outs])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31), n_ops=st.integers(1, 18))
def test_random_onnx_dags_reorder_to_identical_outputs(tmp_path_factory, seed: int, n_ops: int) -> None:
    d: Path = tmp_path_factory.mktemp("rand")
    src = d / "m.onnx"
    onnx.save(random_onnx(seed, n_ops), src)
    model = load(src)
    g = model.graph
    orders = [fn(g).order for fn in BASELINES.values()]
    orders.append(tuple(random_topological_order(g, random.Random(seed))))
    for k, order in enumerate(orders):
        out = d / f"o{k}.onnx"
        save(model, order, out)
        again = load(out)
        assert reference_peak(again.graph, again.graph.listed_order)[0] == reference_peak(g, order)[0]
        rep = verify(src, out, seed=seed)
        assert rep.ok and rep.outputs_identical, rep.problems
