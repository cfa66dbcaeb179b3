"""Off-chip traffic under an SRAM budget: the eviction policy against an independent reference, the
exact eviction against brute force, the lower bound against every order, and ``schedule_traffic``
never worse than the listed order."""

from __future__ import annotations

import contextlib
import functools
import itertools
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dags import random_dag, random_topological_order
from serenity import zoo
from serenity.errors import OrderError, UnsupportedError
from serenity.formats import load
from serenity.ir import Graph, Op, Tensor, with_alignment, with_memory_model
from serenity.memory import simulate
from serenity.planning import offchip_exact as exact_module
from serenity.planning.offchip import OpDoesNotFit, Traffic, offchip_traffic, traffic_lower_bound
from serenity.planning.offchip_exact import offchip_exact
from serenity.schedulers import BASELINES
from serenity.schedulers.traffic import schedule_traffic

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
INT8_MODELS = sorted(EXAMPLES.glob("*_int8.tflite"))
MODELS = ("tflm", "inplace")

# -- graphs -------------------------------------------------------------------------------------


def T(name: str, size: int) -> Tensor:
    return Tensor(name, (size,), "int8", size)


def example() -> Graph:
    """The worked example of the module docstring."""
    return Graph(
        "ex",
        [
            Op("A", "Relu", ("x",), ("a",)),
            Op("B", "Relu", ("x",), ("b",)),
            Op("C", "Add", ("a", "b"), ("c",)),
        ],
        [T("x", 10), T("a", 20), T("b", 30), T("c", 5)],
        ["x"],
        ["c"],
    )


def inplace_variant(g: Graph, seed: int) -> Graph:
    """``g`` with element-wise op types and sizes from a small set, so that under ``inplace``
    many ops may overwrite an input (sizes equal often)."""
    rng = random.Random(seed)
    ops = [Op(op.name, rng.choice(("Add", "Relu", "Mul", "Conv")), op.inputs, op.outputs) for op in g.ops]
    tensors = [
        t if t.constant else Tensor(t.name, t.shape, t.dtype, rng.choice((0, 8, 8, 16, 16, 24)))
        for t in g.tensors.values()
    ]
    return Graph(g.name, ops, tensors, g.inputs, g.outputs, memory_model="inplace")


def make_graph(seed: int, n_ops: int, model: str) -> Graph:
    g = random_dag(seed, n_ops)
    return inplace_variant(g, seed) if model == "inplace" else g


graphs = st.builds(
    make_graph, seed=st.integers(0, 2**32 - 1), n_ops=st.integers(1, 12), model=st.sampled_from(MODELS)
)
tiny_graphs = st.builds(
    make_graph, seed=st.integers(0, 2**32 - 1), n_ops=st.integers(1, 6), model=st.sampled_from(MODELS)
)

# -- an independent reference ---------------------------------------------------------------------


def lifetimes(g: Graph, order: Sequence[int]) -> dict[int, tuple[int, int]]:
    """Tensor id -> [first, last] step it occupies memory (-1: before the first op), from the
    memory model's prose rules; graph inputs nobody reads (and not outputs) never live."""
    d = g.dense
    pos = {v: k for k, v in enumerate(order)}
    n = len(order)
    out = {}
    for t in range(len(d.sizes)):
        if d.producer[t] < 0:
            if not d.consumers[t] and not d.pinned[t]:
                continue
            first = -1
        else:
            first = pos[d.producer[t]]
        if d.pinned[t]:
            last = n - 1
        elif d.consumers[t]:
            last = max(pos[c] for c in d.consumers[t])
        else:
            last = first
        out[t] = (first, max(first, last))
    return out


def saving(g: Graph, order: Sequence[int], k: int) -> int:
    """Bytes step ``k`` saves in place: the first candidate input whose readers all ran by ``k``."""
    d = g.dense
    if not d.reuse:
        return 0
    pos = {v: i for i, v in enumerate(order)}
    for s in d.reuse[order[k]]:
        if max(pos[c] for c in d.consumers[s]) == k:
            return d.sizes[s]
    return 0


def reference_traffic(g: Graph, order: Sequence[int], sram: int) -> Traffic:
    """The policy by brute rescans: at each step, evict (sorting every candidate by the rule)
    until the step fits; next uses found by scanning the order forward."""
    d = g.dense
    life = lifetimes(g, order)
    n = len(order)

    def next_use(t: int, k: int) -> int:
        for j in range(k, n):
            if t in d.op_in[order[j]]:
                return j
        return n  # never (a graph output)

    on = {t for t, (b, _) in life.items() if b == -1}
    copy: set[int] = set()
    written = read = spills = reloads = 0

    def evict_until(limit: int, k: int, keep: set[int]) -> None:
        nonlocal written, spills
        while sum(d.sizes[t] for t in on) > limit:
            victims = sorted(
                (t for t in on if t not in keep),
                key=lambda t: (-next_use(t, max(k, 0)), t not in copy, -d.sizes[t], t),
            )
            t = victims[0]
            on.discard(t)
            if t not in copy:
                copy.add(t)
                written += d.sizes[t]
                spills += 1

    evict_until(sram, -1, set())
    for k, v in enumerate(order):
        need = {*d.op_in[v], *d.op_out[v]}
        if sum(d.sizes[t] for t in need) - saving(g, order, k) > sram:
            raise OpDoesNotFit(g.ops[v].name, 0, sram)
        # Tensors past their life leave; then make room for what the step needs.
        on.intersection_update(t for t, (b, e) in life.items() if b <= k <= e)
        extra = sum(d.sizes[t] for t in need if t not in on) - saving(g, order, k)
        evict_until(sram - extra, k, set(d.op_in[v]))
        for t in d.op_in[v]:
            if t not in on:
                read += d.sizes[t]
                reloads += 1
        on.update(need)
    return Traffic(sram, written, read, spills, reloads)


def brute_force(g: Graph, order: Sequence[int], sram: int) -> int | None:
    """The least traffic of ``order`` over every eviction (every subset of the live tensors kept
    on chip at every step), ``None`` when some step cannot fit."""
    d = g.dense
    life = lifetimes(g, order)
    n = len(order)
    alive = [sorted(t for t, (b, e) in life.items() if b <= k <= e) for k in range(-1, n)]
    need = [set()] + [{*d.op_in[v], *d.op_out[v]} for v in order]
    cap = [sram] + [sram + saving(g, order, k) for k in range(n)]

    @functools.cache
    def best(i: int, on: frozenset[int], copy: frozenset[int]) -> float:
        # i indexes alive/need/cap: step i - 1. `on` is the state of the previous step.
        if i == n + 1:
            return 0
        optional = [t for t in alive[i] if t not in need[i]]
        result = float("inf")
        for r in range(len(optional) + 1):
            for keep in itertools.combinations(optional, r):
                x = need[i] | set(keep)
                if sum(d.sizes[t] for t in x) > cap[i]:
                    continue
                cost, new_copy = 0, set(copy)
                for t in alive[i]:
                    if t not in x and t not in new_copy:  # off chip: written once
                        cost += d.sizes[t]
                        new_copy.add(t)
                    if t in x and t not in on and life[t][0] < i - 1:  # back on chip: a read
                        cost += d.sizes[t]
                kept = frozenset(new_copy.intersection(alive[i]))
                result = min(result, cost + best(i + 1, frozenset(x), kept))
        return result

    start = frozenset(t for t, (b, _) in life.items() if b == -1)
    value = best(0, start, frozenset())
    return None if value == float("inf") else int(value)


def topological_orders(g: Graph) -> list[tuple[int, ...]]:
    d = g.dense
    out: list[tuple[int, ...]] = []

    def walk(prefix: list[int], done: set[int]) -> None:
        if len(prefix) == d.n_ops:
            out.append(tuple(prefix))
            return
        for v in range(d.n_ops):
            if v not in done and all(p in done for p in d.preds[v]):
                done.add(v)
                prefix.append(v)
                walk(prefix, done)
                prefix.pop()
                done.discard(v)

    walk([], set())
    return out


def budgets(g: Graph, order: Sequence[int]) -> list[int]:
    peak = simulate(g, order).peak
    return sorted({max(1, peak * f // 8) for f in (2, 3, 4, 5, 6, 7)} | {max(1, peak - 1), peak})


# -- the worked example and hand-built graphs -----------------------------------------------------


def test_worked_example() -> None:
    g = example()
    assert offchip_traffic(g, [0, 1, 2], 55) == Traffic(55, 20, 20, 1, 1)
    assert offchip_traffic(g, [1, 0, 2], 55) == Traffic(55, 30, 30, 1, 1)
    assert offchip_traffic(g, [0, 1, 2], 60).traffic == 0
    assert offchip_traffic(g, [0, 1, 2], 55).as_dict()["traffic"] == 40
    assert traffic_lower_bound(g, 55, 60) == 5 and traffic_lower_bound(g, 60, 60) == 0


def test_op_does_not_fit_names_the_op_and_the_bytes() -> None:
    with pytest.raises(OpDoesNotFit) as e:
        offchip_traffic(example(), [0, 1, 2], 54)
    assert (e.value.op, e.value.needs, e.value.sram) == ("C", 55, 54)
    assert str(e.value) == (
        "op 'C' alone needs 55 B of on-chip memory (inputs and outputs), more than the 54 B budget"
    )


def test_a_bad_order_is_refused() -> None:
    with pytest.raises(OrderError):
        offchip_traffic(example(), [2, 0, 1], 100)


def test_graph_output_read_again_is_written_not_reloaded_at_the_end() -> None:
    # a (an output, 40 B) is read by B early, then nobody reads it: it is evicted first (never
    # used again) and written once; nothing reads it back.
    g = Graph(
        "out",
        [Op("A", "X", ("x",), ("a",)), Op("B", "X", ("a",), ("b",)), Op("C", "X", ("b",), ("c",))],
        [T("x", 10), T("a", 40), T("b", 30), T("c", 30)],
        ["x"],
        ["a", "c"],
    )
    assert offchip_traffic(g, [0, 1, 2], 70) == Traffic(70, 40, 0, 1, 0)
    assert offchip_exact(g, [0, 1, 2], 70).traffic.traffic == 40


def test_graph_inputs_that_do_not_fit_are_evicted_before_the_first_op() -> None:
    # x and y start on chip (50 B) with 40 B: y (read last) is written before A runs.
    g = Graph(
        "in",
        [Op("A", "X", ("x",), ("a",)), Op("B", "X", ("a", "y"), ("b",))],
        [T("x", 25), T("y", 25), T("a", 10), T("b", 5)],
        ["x", "y"],
        ["b"],
    )
    assert offchip_traffic(g, [0, 1], 40) == Traffic(40, 25, 25, 1, 1)
    assert brute_force(g, [0, 1], 40) == 50 == offchip_exact(g, [0, 1], 40).traffic.traffic


def test_clean_tensors_are_dropped_before_dirty_ones_at_equal_next_use() -> None:
    # A evicts p (written); B reloads it (now clean) and writes q; C's output needs room, and p
    # and q are both next read by D: the clean p is dropped for free rather than q written.
    g = Graph(
        "clean",
        [
            Op("P", "X", ("x",), ("p",)),
            Op("A", "X", ("x",), ("a",)),
            Op("B", "X", ("p",), ("q",)),
            Op("C", "X", (), ("c",)),
            Op("D", "X", ("p", "q"), ("d",)),
        ],
        [T("x", 10), T("p", 5), T("a", 10), T("q", 5), T("c", 15), T("d", 5)],
        ["x"],
        ["d"],
    )
    order = [0, 1, 2, 3, 4]
    assert offchip_traffic(g, order, 20) == Traffic(20, 5, 10, 1, 2) == reference_traffic(g, order, 20)
    assert brute_force(g, order, 20) == 15
    assert offchip_traffic(g, order, 25).traffic == 0


def test_inplace_saving_lets_an_op_fit() -> None:
    g = Graph("relu", [Op("A", "Relu", ("x",), ("y",))], [T("x", 16), T("y", 16)], ["x"], ["y"])
    with pytest.raises(OpDoesNotFit):
        offchip_traffic(g, [0], 16)
    assert offchip_traffic(with_memory_model(g, "inplace"), [0], 16).traffic == 0


def test_exact_python_integers() -> None:
    big = 1 << 70
    sizes = [T("x", big), T("a", 2 * big + 1), T("b", 3 * big), T("c", 1)]
    g = Graph("big", example().ops, sizes, ["x"], ["c"])
    assert offchip_traffic(g, [0, 1, 2], 5 * big + 2).traffic == 4 * big + 2
    with pytest.raises(UnsupportedError, match="too large"):
        offchip_exact(g, [0, 1, 2], 5 * big + 2)


def test_exact_refuses_a_program_above_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exact_module, "MAX_RESIDENCY", 3)
    with pytest.raises(UnsupportedError, match="offchip_traffic"):
        offchip_exact(example(), [0, 1, 2], 55)


# -- properties -----------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(graphs, st.integers(0, 2**32 - 1))
def test_policy_equals_the_reference(g: Graph, seed: int) -> None:
    order = random_topological_order(g, random.Random(seed))
    for sram in budgets(g, order):
        try:
            got = offchip_traffic(g, order, sram)
        except OpDoesNotFit:
            with pytest.raises(OpDoesNotFit):
                reference_traffic(g, order, sram)
            continue
        assert got == reference_traffic(g, order, sram)
        if sram >= simulate(g, order).peak:
            assert got.traffic == 0
        assert got.traffic >= traffic_lower_bound(g, sram, simulate(g, order).peak)


@settings(max_examples=60, deadline=None)
@given(tiny_graphs, st.integers(0, 2**32 - 1))
def test_exact_equals_brute_force_and_never_loses_to_the_policy(g: Graph, seed: int) -> None:
    order = random_topological_order(g, random.Random(seed))
    for sram in budgets(g, order)[::2]:
        try:
            policy = offchip_traffic(g, order, sram)
        except OpDoesNotFit:
            assert brute_force(g, order, sram) is None
            continue
        x = offchip_exact(g, order, sram)
        assert x.proven and x.lower_bound == x.traffic.traffic <= policy.traffic
        assert x.traffic.traffic == brute_force(g, order, sram)
        assert x.traffic.sram == sram and x.traffic.traffic == x.traffic.written + x.traffic.read


@settings(max_examples=40, deadline=None)
@given(tiny_graphs)
def test_the_lower_bound_holds_for_every_order(g: Graph) -> None:
    orders = topological_orders(g)
    peak = min(simulate(g, o).peak for o in orders)
    for sram in budgets(g, min(orders, key=lambda o: simulate(g, o).peak))[::2]:
        costs = [c for o in orders if (c := brute_force(g, o, sram)) is not None]
        if costs:
            assert traffic_lower_bound(g, sram, peak) <= min(costs)


@settings(max_examples=40, deadline=None)
@given(graphs)
def test_schedule_traffic_never_loses_to_a_baseline(g: Graph) -> None:
    listed = g.topological_order
    for sram in budgets(g, listed)[1::3]:
        try:
            r = schedule_traffic(g, sram, time_limit=2.0)
        except OpDoesNotFit:
            continue  # no candidate fits (tflm: no order fits)
        s = r.stats
        assert g.is_topological(r.order)
        assert offchip_traffic(g, r.order, sram).as_dict() == s["traffic"]
        for name, fn in BASELINES.items():
            with contextlib.suppress(OpDoesNotFit):
                assert s["traffic"]["traffic"] <= offchip_traffic(g, fn(g).order, sram).traffic, name
        assert s["traffic_lower_bound"] <= s["traffic"]["traffic"]
        assert s["traffic_proven"] == (s["traffic"]["traffic"] == s["traffic_lower_bound"])
        assert r.peak == simulate(g, r.order).peak >= s["peak_optimal"]
        if s["peak_optimal"] <= sram:
            assert s["traffic"]["traffic"] == 0 and s["traffic_proven"] and s["chosen"] == "min-peak"


def test_schedule_traffic_is_reproducible() -> None:
    g = zoo.graph("swiftnet_cell_c", element_bytes=1)
    a, b = (schedule_traffic(g, 32 * 1024, time_limit=30) for _ in range(2))
    assert a.order == b.order and a.stats["traffic"] == b.stats["traffic"]
    assert a.stats["search"]["stopped"] == "no move improves"


def test_schedule_traffic_raises_when_no_order_fits() -> None:
    with pytest.raises(OpDoesNotFit):
        schedule_traffic(example(), 54)


# -- real models ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", INT8_MODELS, ids=lambda p: p.name)
@pytest.mark.parametrize("model", MODELS)
def test_real_models(path: Path, model: str) -> None:
    g = with_memory_model(with_alignment(load(path).graph, 16), model)
    listed = g.listed_order
    for sram in (48 * 1024, 64 * 1024, 80 * 1024, 96 * 1024):
        try:
            before = offchip_traffic(g, listed, sram)
        except OpDoesNotFit:
            continue
        assert before == reference_traffic(g, listed, sram)
        after = schedule_traffic(g, sram, time_limit=5).stats["traffic"]
        assert after["traffic"] <= before.traffic
        x = offchip_exact(g, listed, sram, time_limit=20)
        assert x.traffic.traffic <= before.traffic and x.lower_bound <= x.traffic.traffic


def test_zoo_cell_order_matters() -> None:
    # SwiftNet cell C at int8 with 32 KiB: the listed order spills 2.3x what the chosen one does.
    g = zoo.graph("swiftnet_cell_c", element_bytes=1)
    sram = 32 * 1024
    before = offchip_traffic(g, g.listed_order, sram)
    assert before == reference_traffic(g, g.listed_order, sram)
    r = schedule_traffic(g, sram, time_limit=10)
    assert 0 < r.stats["traffic"]["traffic"] * 2 < before.traffic
    x = offchip_exact(g, r.order, sram, time_limit=20)
    assert x.traffic.traffic <= r.stats["traffic"]["traffic"]
