"""The ``inplace`` memory model (issue 11): an element-wise or reshape-like op may write its
output over an input of the same size that dies at it. Every scheduler and bound must stay exact
under it: checked against brute force over all topological orders and against a reference
simulation written here from the rule's prose, by lifetime intervals."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serenity.ir import Graph, Op, Tensor, with_alignment, with_memory_model
from serenity.memory import inplace_pairs, simulate
from serenity.schedulers import BASELINES, schedule
from serenity.schedulers.bounds import static_lower_bound
from serenity.schedulers.dp import schedule_dp
from serenity.schedulers.reduce import build_items, inclusion_exclusion
from serenity.schedulers.result import op_lower_bound
from serenity.schedulers.search import best_first

#: The in-place types the generators use, as the reference rule spells them out.
ELEMENTWISE = {"Add", "Mul", "Relu", "Sum", "Reshape", "Sigmoid"}


def inplace_dag(seed: int, n_ops: int) -> Graph:
    """A random DAG whose ops mix element-wise types (often of their input's size) with others,
    over shared inputs, graph outputs in the middle and dead outputs."""
    rng = random.Random(seed)
    sizes = (4, 8, 8, 16)
    tensors = [Tensor("x", (1,), "int8", rng.choice(sizes)), Tensor("w", (1,), "int8", 0, constant=True)]
    size = {"x": tensors[0].nbytes}
    avail = ["x"]
    ops = []
    for i in range(n_ops):
        ty = rng.choice(["Add", "Mul", "Relu", "Sum", "Reshape", "Sigmoid", "Conv", "Concat"])
        k = {"Relu": 1, "Sigmoid": 1, "Reshape": 1, "Conv": 1}.get(ty, rng.randint(2, 3))
        ins = [rng.choice(avail[-6:]) for _ in range(min(k, len(avail)))]
        if ty in ("Mul", "Conv") and rng.random() < 0.5:
            ins.append("w")
        first = ins[0]
        out_size = size[first] if ty in ELEMENTWISE and rng.random() < 0.8 else rng.choice(sizes)
        name = f"t{i}"
        tensors.append(Tensor(name, (1,), "int8", out_size))
        size[name] = out_size
        ops.append(Op(f"op{i}", ty, tuple(ins), (name,)))
        avail.append(name)
    consumed = {t for op in ops for t in op.inputs}
    outs = [op.outputs[0] for op in ops if op.outputs[0] not in consumed and rng.random() < 0.8]
    if rng.random() < 0.3:
        outs.append(rng.choice(ops).outputs[0])
    outs = list(dict.fromkeys(outs)) or [ops[-1].outputs[0]]
    return Graph(f"inplace{seed}", ops, tensors, ["x"], outs, memory_model="inplace")


def reference_inplace_peak(g: Graph, order: list[int]) -> int:
    """Lifetime intervals: a tensor occupies steps [first, last]; an output written over an input
    starts one step later (the input's bytes hold it during its op). The input taken is the
    first in argument order, of the output's size, not a graph output, whose last reader this is."""
    n = len(order)
    pos = {v: k for k, v in enumerate(order)}
    acts = {name: t for name, t in g.tensors.items() if not t.constant}

    def last(t: Tensor) -> int:
        if t.is_output:
            return n - 1
        return max(pos[c] for c in t.consumers) if t.consumers else pos[t.producer]  # type: ignore[index]

    delayed = set()
    for op in g.ops:
        outs = [o for o in op.outputs if o in acts]
        if op.type not in ELEMENTWISE or len(outs) != 1:
            continue
        out = acts[outs[0]]
        for name in dict.fromkeys(op.inputs):
            t = acts.get(name)
            if t is None or t.is_output or t.nbytes != out.nbytes or t.nbytes == 0:
                continue
            if last(t) == pos[op.index]:
                delayed.add(out.name)
                break
    usage = [0] * n
    for t in acts.values():
        if t.producer is None and not t.consumers and not t.is_output:
            continue
        first = 0 if t.producer is None else pos[t.producer] + (t.name in delayed)
        for k in range(first, last(t) + 1):
            usage[k] += t.nbytes
    return max(usage)


def orders(g: Graph) -> list[list[int]]:
    return [list(p) for p in itertools.permutations(range(len(g.ops))) if g.is_topological(p)]


def brute_force(g: Graph) -> int:
    return min(simulate(g, o).peak for o in orders(g))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 7))
def test_simulation_matches_the_interval_reference(seed: int, n_ops: int) -> None:
    g = inplace_dag(seed, n_ops)
    tflm = with_memory_model(g, "tflm")
    for o in orders(g)[:20]:
        assert simulate(g, o).peak == reference_inplace_peak(g, o)
        assert simulate(g, o).peak <= simulate(tflm, o).peak  # a saving never costs
        assert simulate(tflm, o).peak == simulate(g, o, memory_model="tflm").peak


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10**6), st.integers(2, 7))
def test_every_exact_scheduler_equals_brute_force(seed: int, n_ops: int) -> None:
    g = inplace_dag(seed, n_ops)
    best = brute_force(g)
    assert op_lower_bound(g) <= best
    assert static_lower_bound(g.dense) <= best
    for fuse in (True, False):
        r = schedule_dp(g, fuse=fuse, split=fuse)
        assert r.proven_optimal and r.peak == best and r.lower_bound <= best
        items = build_items(g.dense, fuse=fuse)
        assert best_first(items, ub=10**12).peak == best
    auto = schedule(g, "auto")
    assert auto.peak == best and auto.lower_bound <= best
    for name in BASELINES:
        r = schedule(g, name)
        assert r.peak == simulate(g, r.order).peak >= best


def test_the_compiled_kernels_are_exact_too() -> None:
    pytest.importorskip("numba")
    from serenity.schedulers.search_jit import best_first_jit
    from serenity.schedulers.search_wide import best_first_wide

    for seed in range(40):
        g = inplace_dag(seed, 7)
        best = brute_force(g)
        items = build_items(g.dense)
        assert best_first_jit(items, ub=10**12).peak == best
        assert best_first_wide(items, ub=10**12).peak == best


def randwire_like(seed: int, nodes: int) -> Graph:
    """Nodes (Relu -> Conv) joined by edge-scaling Muls into Sum/Add aggregations: the shape
    where a node output is read by several in-place ops and the last one may take its bytes."""
    rng = random.Random(seed)
    tensors = [Tensor("x", (1,), "int8", 8), Tensor("w", (1,), "int8", 0, constant=True)]
    size = {"x": 8}
    outs, ops = ["x"], []

    def add(name: str, n: int) -> None:
        tensors.append(Tensor(name, (1,), "int8", n))
        size[name] = n

    for i in range(nodes):
        parts = []
        for j, src in enumerate(rng.sample(outs, min(len(outs), rng.randint(1, 3)))):
            add(f"m{i}_{j}", size[src])
            ops.append(Op(f"mul{i}_{j}", "Mul", (src, "w"), (f"m{i}_{j}",)))
            parts.append(f"m{i}_{j}")
        add(f"s{i}", max(size[p] for p in parts))
        ops.append(Op(f"sum{i}", rng.choice(["Sum", "Add"]), tuple(parts), (f"s{i}",)))
        add(f"r{i}", size[f"s{i}"])
        ops.append(Op(f"relu{i}", "Relu", (f"s{i}",), (f"r{i}",)))
        add(f"c{i}", rng.choice((4, 8, 16)))
        ops.append(Op(f"conv{i}", "Conv", (f"r{i}", "w"), (f"c{i}",)))
        outs.append(f"c{i}")
    consumed = {t for op in ops for t in op.inputs}
    graph_outs = [o for o in outs[1:] if o not in consumed] or [outs[-1]]
    return Graph(f"rw{seed}", ops, tensors, ["x"], graph_outs, memory_model="inplace")


@pytest.mark.parametrize("seed", range(25))
def test_edge_muls_still_sink_and_stay_exact(seed: int) -> None:
    g = randwire_like(seed, 2)
    if len(g.ops) > 9:
        g = randwire_like(seed, 1)
    assert schedule_dp(g).peak == brute_force(g)


def test_rule_r3_still_fuses_edge_muls_under_inplace() -> None:
    g = randwire_like(7, 3)
    items = build_items(g.dense)
    assert any(len(ops) > 1 and g.ops[ops[0]].type == "Mul" for ops in items.ops)


def test_inclusion_exclusion_frees_z_once_any_mask_is_done() -> None:
    masks = [0b0011, 0b0101, 0b1001, 0b0111]  # the last is implied by the first
    terms = inclusion_exclusion(10, masks)
    for done in range(16):
        freed = sum(size for size, m in terms if m & done == m)
        assert freed == (10 if any(m & done == m for m in masks) else 0)


def test_an_op_with_three_candidates_read_elsewhere() -> None:
    # a, b, c are each read by the Sum and by one other op: which dies at the Sum depends on order.
    T = lambda n, b: Tensor(n, (b,), "int8", b)  # noqa: E731
    ops = [Op("A", "Conv", ("x",), ("a",)), Op("B", "Conv", ("x",), ("b",)), Op("C", "Conv", ("x",), ("c",)),
           Op("S", "Sum", ("a", "b", "c"), ("s",)), Op("P", "Conv", ("a",), ("p",)),
           Op("Q", "Conv", ("b",), ("q",)), Op("R", "Conv", ("c", "s"), ("r",))]  # fmt: skip
    tensors = [T("x", 8), T("a", 16), T("b", 16), T("c", 16), T("s", 16), T("p", 4), T("q", 4), T("r", 4)]
    g = Graph("three", ops, tensors, ["x"], ["p", "q", "r"], memory_model="inplace")
    assert len(g.dense.reuse[3]) == 3
    assert schedule_dp(g).peak == schedule_dp(g, fuse=False, split=False).peak == brute_force(g)


def test_model_is_carried_and_checked() -> None:
    g = inplace_dag(1, 5)
    assert g.memory_model == "inplace" and g.dense.inplace
    t = with_memory_model(g, "tflm")
    assert t.memory_model == "tflm" and not t.dense.inplace and t.dense.reuse == ()
    assert with_memory_model(g, "inplace") is g
    assert with_alignment(g, 16).memory_model == "inplace"
    with pytest.raises(ValueError, match="unknown memory model 'hmcos'"):
        with_memory_model(g, "hmcos")
    # Graph outputs are never written over; the pairs name outputs that took an input's bytes.
    for o in orders(g)[:5]:
        for out, inp in inplace_pairs(g.dense, o).items():
            assert not g.dense.pinned[inp] and g.dense.sizes[out] == g.dense.sizes[inp]


def test_cli_reports_the_inplace_peak(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from serenity.formats.json_io import to_dict

    g = with_memory_model(randwire_like(3, 3), "tflm")
    path = tmp_path / "rw.json"
    path.write_text(json.dumps(to_dict(g)))
    res = {}
    for mm in ("tflm", "inplace"):
        cmd = [sys.executable, "-m", "serenity", "analyze", str(path), "--order", "optimal", "--json",
               "--memory-model", mm]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        doc = json.loads(out.stdout)
        assert doc["memory_model"] == mm
        res[mm] = doc["methods"]["optimal"]["peak_bytes"]
    assert res["inplace"] == schedule_dp(with_memory_model(g, "inplace")).peak < res["tflm"]
    bad = subprocess.run([sys.executable, "-m", "serenity", "analyze", str(path), "--memory-model", "x"],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
