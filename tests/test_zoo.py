"""The zoo: every network is a valid, runnable ONNX model of the advertised size and shape."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from serenity import zoo
from serenity.zoo import cells, randwire


def _feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in model.graph.input:
        shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _cells(model: onnx.ModelProto, entry: zoo.ZooEntry) -> set[str]:
    scopes = {node.name.split("/")[0] for node in model.graph.node}
    return {s for s in scopes if re.fullmatch(entry.cell_scope + r"[0-9A-Z]+", s)}


@pytest.mark.parametrize("name", zoo.names())
def test_model_checks_runs_and_has_expected_size(name: str) -> None:
    # Whole ImageNet networks run at their full 224×224 here: each takes well under a second.
    entry = zoo.info(name)
    model = zoo.build(name)
    onnx.checker.check_model(model, full_check=True)
    assert len(model.graph.node) == entry.ops
    assert len(_cells(model, entry)) == entry.cells
    # The listed order is the exporter's order, so it must be topological.
    seen = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer} | {""}
    for node in model.graph.node:
        assert all(x in seen for x in node.input), node.name
        seen.update(node.output)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = session.run(None, _feeds(model))
    declared = [tuple(d.dim_value for d in o.type.tensor_type.shape.dim) for o in model.graph.output]
    assert [o.shape for o in outputs] == declared
    assert all(np.isfinite(o).all() for o in outputs)


def test_darts_op_counts_follow_from_the_genotype() -> None:
    # Hand count. sep_conv = ReLU, DW, PW, ReLU, DW, PW (6); 1×1 preprocess = ReLU, Conv (2);
    # factorized reduce = ReLU, Conv, Slice, Conv, Concat, BN (6); 4 Adds and a Concat per cell.
    normal = 2 + 2 + 5 * 6 + 4 + 1  # five sep_convs, three identity skips
    reduction = 2 + 2 + 5 + 4 + 1  # five pools, three identity skips on node 2
    assert zoo.info("darts_normal_cell").ops == normal == 39
    assert zoo.info("darts_reduction_cell").ops == reduction == 14
    after_reduction = normal - 2 + 6  # cells 0, 5, 10 read a reduced s0 through a factorized reduce
    stem_and_head = 3 + 2 + 3  # stem0: Conv ReLU Conv; stem1: ReLU Conv; head: GAP Flatten Gemm
    assert zoo.info("darts_imagenet").ops == 3 * after_reduction + 9 * normal + 2 * reduction + stem_and_head


def test_darts_imagenet_plan_matches_the_paper() -> None:
    plans = cells.plan_cells("darts", "imagenet")
    assert [p.index for p in plans if p.reduction] == [4, 9]
    assert (plans[0].hw_p, plans[13].hw_p, plans[13].c) == (28, 7, 192)


@pytest.mark.parametrize("kind", ["ws", "er", "ba"])
def test_randwire_graphs_are_reproducible_from_their_seed(kind: str) -> None:
    a, b, c = randwire.random_dag(kind, 7), randwire.random_dag(kind, 7), randwire.random_dag(kind, 8)
    assert a == b
    assert a.edges != c.edges
    assert all(u < v for u, v in a.edges)
    assert randwire.stage_dags(kind, "c10") == randwire.stage_dags(kind, "c10")


def test_randwire_generators_have_the_published_edge_counts() -> None:
    # WS keeps the ring lattice's N*K/2 edges through rewiring; BA adds M edges per new node.
    assert len(randwire.random_dag("ws", 0).edges) == 32 * 4 // 2
    assert len(randwire.random_dag("ba", 0).edges) == (32 - 5) * 5
    er = [len(randwire.random_dag("er", s).edges) for s in range(20)]
    assert abs(np.mean(er) - 0.2 * 32 * 31 / 2) < 10


def test_builds_are_deterministic_and_seed_changes_only_weights() -> None:
    a = zoo.build("randwire_ws_stage")
    assert a.SerializeToString() == zoo.build("randwire_ws_stage").SerializeToString()
    b = zoo.build("randwire_ws_stage", seed=1)
    assert [n.SerializeToString() for n in a.graph.node] == [n.SerializeToString() for n in b.graph.node]
    assert a.graph.initializer[0].raw_data != b.graph.initializer[0].raw_data


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(zoo.UnknownModelError, match="darts_imagenet"):
        zoo.info("darts_v3")
