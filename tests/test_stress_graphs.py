"""The RandWire stress graphs (``serenity.zoo.randwire.stress_network``): valid, runnable ONNX of
the advertised shape, deterministic, and scheduled by the exact DP to the true optimum.

The graphs here are small (8 nodes a stage, 8 channels, 16×16) but keep every aggregation and node
chain of the benchmark (``benchmarks/bench_randwire.py``). The optimum they are checked against
is an exhaustive search over every downset of the graph (every set of ops closed under
predecessors: the states any order passes through), independent of the scheduler's reductions.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import pytest

from serenity.formats.onnx_io import from_proto
from serenity.ir import Graph
from serenity.memory import simulate
from serenity.runtime import onnxrt
from serenity.schedulers.dp import schedule_dp
from serenity.zoo.randwire import AGGREGATIONS, CHAINS, random_dag, stress_network

#: (generator, graph seed, downsample, stem): two configurations whose downsets the exhaustive
#: search enumerates in well under a second each: three downsampling stages, and three flat
#: stages behind the stem with the head.
CONFIGS = {"ws-downsample": ("ws", 1, True, False), "er-flat-stem": ("er", 2, False, True)}
COMBOS = [(a, c) for a in AGGREGATIONS for c in CHAINS]


def exhaustive_optimum(g: Graph) -> tuple[int, list[int]]:
    """The smallest peak over all topological orders, and an order reaching it, by dynamic
    programming over downsets (bit masks of done ops), layer by layer.

    The cost model is :func:`serenity.memory.simulate`'s: while op ``v`` runs, the live tensors
    and ``v``'s outputs are resident; afterwards every tensor whose consumers have all run is
    freed, unless it is a graph output.
    """
    d = g.dense
    n = d.n_ops
    preds = [sum(1 << p for p in ps) for ps in d.preds]
    readers = [sum(1 << c for c in cs) for cs in d.consumers]
    out_bytes = [sum(d.sizes[t] for t in d.op_out[v]) for v in range(n)]
    touched = [dict.fromkeys((*d.op_in[v], *d.op_out[v])) for v in range(n)]
    # state -> (peak so far, live bytes, previous state, last op)
    best: dict[int, tuple[int, int, int, int]] = {0: (0, sum(d.sizes[t] for t in d.initial), -1, -1)}
    layer = [0]
    for _ in range(n):
        nxt: dict[int, tuple[int, int, int, int]] = {}
        for s in layer:
            peak, live, _, _ = best[s]
            for v in range(n):
                if s >> v & 1 or preds[v] & ~s:
                    continue
                s2 = s | 1 << v
                running = live + out_bytes[v]
                freed = sum(d.sizes[t] for t in touched[v] if not d.pinned[t] and not readers[t] & ~s2)
                cand = (max(peak, running), running - freed, s, v)
                if s2 not in nxt or cand[0] < nxt[s2][0]:
                    nxt[s2] = cand
        best.update(nxt)
        layer = list(nxt)
    order: list[int] = []
    s = (1 << n) - 1
    while s:
        _, _, s, v = best[s]
        order.append(v)
    return best[(1 << n) - 1][0], order[::-1]


def _model(config: str, aggregate: str, chain: str, graph_seed: int | None = None) -> onnx.ModelProto:
    """A small network (8 nodes a stage, 8 channels, 16×16) of the configuration."""
    kind, seed, downsample, stem = CONFIGS[config]
    return stress_network(
        kind, seed if graph_seed is None else graph_seed, aggregate=aggregate, chain=chain,
        downsample=downsample, stem=stem, nodes=8, channels=8, resolution=16,
    )  # fmt: skip


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize(("aggregate", "chain"), COMBOS)
def test_checks_and_runs_in_onnxruntime(config: str, aggregate: str, chain: str) -> None:
    model = _model(config, aggregate, chain)
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    outputs = onnxrt.run(data, onnxrt.random_inputs(onnxrt.session(data), seed=3))
    declared = [tuple(d.dim_value for d in o.type.tensor_type.shape.dim) for o in model.graph.output]
    assert [o.shape for o in outputs] == declared
    assert all(np.isfinite(o).all() for o in outputs)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize(("aggregate", "chain"), COMBOS)
def test_dp_proves_the_exhaustive_optimum(config: str, aggregate: str, chain: str) -> None:
    g = from_proto(_model(config, aggregate, chain)).graph
    opt, witness = exhaustive_optimum(g)
    assert simulate(g, witness).peak == opt  # the reference agrees with the cost model
    r = schedule_dp(g)
    assert g.is_topological(r.order)
    assert simulate(g, r.order).peak == r.peak == opt
    assert r.proven_optimal
    assert r.lower_bound == opt


def test_output_shapes_follow_the_stages() -> None:
    # Stage s has channels * 2^s channels and halves the resolution (stage 1 keeps it without a
    # stem); flat stages keep both; with the stem, the head classifies 10 ways.
    def out_shape(resolution: int, downsample: bool = True, stem: bool = False) -> tuple[int, ...]:
        m = stress_network(
            "ba", 5, resolution=resolution, downsample=downsample, stem=stem, nodes=6, channels=8
        )
        return tuple(d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim)

    assert out_shape(32) == (1, 32, 8, 8)
    assert out_shape(32, downsample=False) == (1, 8, 32, 32)
    assert out_shape(64, stem=True) == (1, 10)


def test_aggregations_and_chains_build_what_they_name() -> None:
    ops = {(a, c): [n.op_type for n in _model("ws-downsample", a, c).graph.node] for a, c in COMBOS}
    edges = sum(len(random_dag("ws", 1 + s, 8).edges) for s in range(3))
    for c in CHAINS:
        # One Mul per edge weighs the inputs; the few others average a stage's sinks.
        assert ops["weighted", c].count("Mul") == ops["sum", c].count("Mul") + edges
        assert "Sum" in ops["sum", c] and "Add" not in ops["sum", c]
        assert "Concat" in ops["concat", c] and "Concat" not in ops["sum", c]
        assert "Add" in ops["add-chain", c] and "Sum" not in ops["add-chain", c]
    for a in AGGREGATIONS:
        assert all("BatchNormalization" in ops[a, c] for c in CHAINS)
        # Depthwise and pointwise against one 3×3 conv: one more Conv a node (3 stages × 8 nodes).
        assert ops[a, "relu-sep-bn"].count("Conv") == ops[a, "conv-bn-relu"].count("Conv") + 3 * 8


@pytest.mark.parametrize(("aggregate", "chain"), COMBOS)
def test_deterministic(aggregate: str, chain: str) -> None:
    a = _model("ws-downsample", aggregate, chain).SerializeToString()
    assert a == _model("ws-downsample", aggregate, chain).SerializeToString()
    assert a != _model("ws-downsample", aggregate, chain, graph_seed=2).SerializeToString()


def test_unknown_names_raise() -> None:
    with pytest.raises(ValueError, match="aggregation 'mean'"):
        stress_network("ws", 1, aggregate="mean")
    with pytest.raises(ValueError, match="node chain 'bn-relu'"):
        stress_network("ws", 1, chain="bn-relu")
    with pytest.raises(ValueError, match="generator 'grid'"):
        stress_network("grid", 1)


def _bench() -> ModuleType:
    """``benchmarks/bench_randwire.py`` as a module (it imports its sibling ``verdict``)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_randwire.py"
    spec = importlib.util.spec_from_file_location("bench_randwire", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_randwire"] = module  # spawned children unpickle its classes by this name
    spec.loader.exec_module(module)
    return module


def test_benchmark_grid_covers_every_combination() -> None:
    bench = _bench()
    full, quick = bench.cases(), bench.cases(quick=True)
    assert len({c.name for c in full}) == len(full) >= 100
    assert set(quick) <= set(full)
    grid = {(c.kind, c.aggregate, c.chain, c.shape) for c in full}
    shapes = {"32 flat", "224"}
    assert {
        (k, a, c, s) for k in ("ws", "er", "ba") for a in AGGREGATIONS for c in CHAINS for s in shapes
    } <= grid
    assert {c.kind for c in full if c.stem} == {"ws", "er", "ba"}


def test_benchmark_child_reports_a_result_an_error_or_a_kill(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _bench()
    ok = bench.run_case(bench.Case("ba", 0, "sum", "conv-bn-relu", 224, True), time_limit=30.0, warm=True)
    assert not ok.error and ok.proven and ok.peak == ok.lower_bound > 0 and ok.rss_mb > 0 < ok.warm_seconds
    failed = bench.run_case(bench.Case("grid", 0, "sum", "conv-bn-relu", 32, False), time_limit=30.0)
    assert "unknown random graph generator 'grid'" in failed.error and not failed.proven
    monkeypatch.setattr(bench, "SLACK", 0.0)
    hung = bench.run_case(bench.Case("ws", 0, "sum", "conv-bn-relu", 32, False), time_limit=0.01)
    assert hung.error == "killed after 0 s" and not bench.RUNNING
