"""The ``inplace`` memory model in the planners: an in-place chain is one buffer, every plan is
checked against an independent per-tensor simulation, and TFLite Micro runs a plan that puts an
output at its dying input's offset bit for bit as the unplanned model."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dags import random_topological_order
from serenity import zoo
from serenity.errors import SerenityError
from serenity.formats import Model, load
from serenity.formats.tflite_plan import embed_plan
from serenity.ir import Graph, Op, Tensor, with_alignment, with_memory_model
from serenity.memory import inplace_pairs, simulate
from serenity.planning import PLANNERS, ArenaPlan, Buffer, buffers_of, check_plan, peak_of, plan_tflm_greedy
from serenity.planning.buffers import merge_inplace
from serenity.planning.target import target_buffers
from serenity.planning.tflm_greedy import predict_tflm_arena, tflm_buffers
from serenity.schedulers.budget import schedule_budget
from serenity.schedulers.dp import schedule_dp
from test_dp import brute_force
from tflite_graphs import TFLiteBuilder

SETTINGS = settings(
    max_examples=60, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
_SHARED = Path(__file__).resolve().parents[2] / "shared" / "models"
_ROOT = _SHARED if _SHARED.is_dir() else Path(__file__).resolve().parents[1] / "examples"
MODELS = sorted([*_ROOT.glob("*.tflite"), *_ROOT.glob("stem/*.tflite")])

plan_exact: Callable[..., ArenaPlan] = PLANNERS["exact"]


# -- random graphs with element-wise ops -------------------------------------------------------


def inplace_dag(seed: int, n_ops: int, *, model: str = "inplace") -> Graph:
    """A seeded random graph of element-wise ops (Relu, Sigmoid, Reshape, Add, Mul) among
    others (Conv, Concat): sizes from a small set, so that same-size inputs are common; shared
    readers, graph outputs in the middle, dead outputs and a broadcast input now and then."""
    rng = random.Random(seed)
    sizes = (4, 8, 8, 12)
    tensors = [Tensor("in0", (1,), "int8", rng.choice(sizes))]
    inputs = ["in0"]
    if rng.random() < 0.4:
        tensors.append(Tensor("in1", (1,), "int8", rng.choice(sizes)))
        inputs.append("in1")
    size = {t.name: t.nbytes for t in tensors}
    available = list(inputs)
    ops: list[Op] = []
    for i in range(n_ops):
        kind = rng.choice(["Relu", "Sigmoid", "Reshape", "Add", "Mul", "Add", "Conv", "Concat"])
        window = available[-6:] if rng.random() < 0.8 else available
        a = rng.choice(window)
        name = f"t{i}"
        ins: tuple[str, ...]
        if kind in ("Relu", "Sigmoid", "Reshape"):
            ins, out = (a,), size[a]
        elif kind in ("Add", "Mul"):
            b = rng.choice(window)
            ins, out = (a, b), max(size[a], size[b])
        elif kind == "Concat":
            b = rng.choice(window)
            ins, out = (a, b), size[a] + size[b]
        else:
            ins, out = (a,), rng.choice(sizes)
        tensors.append(Tensor(name, (out,), "int8", out))
        size[name] = out
        ops.append(Op(f"op{i}", kind, ins, (name,)))
        available.append(name)
    consumed = {t for op in ops for t in op.inputs}
    produced = [op.outputs[0] for op in ops]
    outputs = [t for t in produced if t not in consumed and rng.random() < 0.85]
    if rng.random() < 0.3:
        outputs.append(rng.choice(produced))
    outputs = list(dict.fromkeys(outputs)) or [produced[-1]]
    return Graph(f"inplace{seed}", ops, tensors, inputs, outputs, memory_model=model)


def inplace_dags(min_ops: int = 1, max_ops: int = 10) -> st.SearchStrategy[Graph]:
    """Hypothesis strategy over :func:`inplace_dag`."""
    return st.builds(inplace_dag, seed=st.integers(0, 2**32 - 1), n_ops=st.integers(min_ops, max_ops))


# -- the independent check ---------------------------------------------------------------------


def overwrites(g: Graph, order: Sequence[int]) -> dict[str, str]:
    """``{output: input}`` written from the rule's prose, not from ``serenity.memory``'s loop:
    at its step, an op with candidates (``Dense.reuse``) writes over the first candidate all of
    whose readers have run by then."""
    if g.memory_model != "inplace":
        return {}
    d = g.dense
    pos = {v: s for s, v in enumerate(order)}
    out = {}
    for v in order:
        for c in d.reuse[v]:
            if max(pos[r] for r in d.consumers[c]) == pos[v]:
                out[d.names[d.op_out[v][0]]] = d.names[c]
                break
    return out


def check_per_tensor(
    g: Graph, order: Sequence[int], buffers: Sequence[Buffer], offsets: Sequence[int]
) -> None:
    """Spread a plan over the tensors and check it step by step: two tensors live at one step
    share a byte only when that step's op writes one over the other at the same offset; the
    bytes counted per step equal ``simulate``'s."""
    at = {name: o for b, o in zip(buffers, offsets, strict=True) for name in b.names}
    pairs = overwrites(g, order)
    pos = {v: s for s, v in enumerate(order)}
    n = len(order)
    live: list[list[str]] = [[] for _ in range(n)]
    for t in g.activations:
        if t.producer is None and not t.consumers and not t.is_output:
            continue
        first = 0 if t.producer is None else pos[t.producer]
        last = n - 1 if t.is_output else max((pos[c] for c in t.consumers), default=first)
        assert t.name in at, f"tensor {t.name} has no offset"
        for s in range(first, last + 1):
            live[s].append(t.name)
    during = simulate(g, order).during
    for s, names in enumerate(live):
        step_pairs = {(o, c) for o, c in pairs.items() if g.tensors[o].producer == order[s]}
        counted = sum(g.tensors[t].nbytes for t in names) - sum(g.tensors[o].nbytes for o, _ in step_pairs)
        assert counted == during[s]
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                sa, sb = g.tensors[a].nbytes, g.tensors[b].nbytes
                if at[a] < at[b] + sb and at[b] < at[a] + sa and sa and sb:
                    assert (a, b) in step_pairs or (b, a) in step_pairs, f"{a} and {b} overlap at step {s}"
                    assert at[a] == at[b]


# -- buffers_of ------------------------------------------------------------------------------


@SETTINGS
@given(inplace_dags(), st.integers(0, 2**32 - 1), st.sampled_from([1, 3, 16]))
def test_buffers_peak_is_the_simulated_peak(g: Graph, seed: int, align: int) -> None:
    order = random_topological_order(g, random.Random(seed))
    for model in ("tflm", "inplace"):
        h = with_alignment(with_memory_model(g, model), align)
        bufs = buffers_of(h, order)
        assert peak_of(bufs) == simulate(h, order).peak
        names = [n for b in bufs for n in b.names]
        assert len(names) == len(set(names))
        assert {b.id: b.aliases for b in bufs if b.aliases} == _chains(overwrites(h, order))
        for plan in (plan_tflm_greedy(bufs), plan_exact(bufs, time_limit=2)):
            assert check_plan(bufs, plan.offsets) == plan.arena >= peak_of(bufs)
            check_per_tensor(h, order, bufs, plan.offsets)
            if plan.proven and plan.lower_bound == peak_of(bufs):
                assert plan.arena == peak_of(bufs)


def _chains(pairs: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """``{first tensor: (the tensors written over it, in turn)}``."""
    first = {}
    for o in pairs:
        c = o
        while c in pairs:
            c = pairs[c]
        first[o] = c
    out: dict[str, list[str]] = {}
    for o in sorted(pairs, key=lambda o: _depth(pairs, o)):
        out.setdefault(first[o], []).append(o)
    return {k: tuple(v) for k, v in out.items()}


def _depth(pairs: dict[str, str], o: str) -> int:
    k = 0
    while o in pairs:
        o, k = pairs[o], k + 1
    return k


def test_a_chain_is_one_buffer() -> None:
    """x -> Relu a -> Sigmoid b -> Add(b, y) c: a, b, c are written over x in turn."""
    t = [Tensor(n, (8,), "int8", 8) for n in "xabcy"]
    ops = [Op("A", "Relu", ("x",), ("a",)), Op("B", "Sigmoid", ("a",), ("b",)),
           Op("Y", "Conv", ("x",), ("y",)), Op("C", "Add", ("b", "y"), ("c",))]  # fmt: skip
    g = Graph("chain", ops, t, ["x"], ["c"], memory_model="inplace")
    # Y reads x after A: x dies at Y, so A cannot overwrite it; B overwrites a, C overwrites b.
    assert [(b.id, b.lower, b.upper, b.size, b.aliases) for b in buffers_of(g, [0, 1, 2, 3])] == [
        ("x", 0, 3, 8, ()),
        ("a", 0, 4, 8, ("b", "c")),
        ("y", 2, 4, 8, ()),
    ]
    # Y first: x dies at A, and the chain runs from x to c.
    assert [(b.id, b.lower, b.upper, b.aliases) for b in buffers_of(g, [2, 0, 1, 3])] == [
        ("x", 0, 4, ("a", "b", "c")),
        ("y", 0, 4, ()),
    ]
    assert peak_of(buffers_of(g, [2, 0, 1, 3])) == simulate(g, [2, 0, 1, 3]).peak == 16


def test_merge_refuses_bad_pairs() -> None:
    bufs = [Buffer("x", 0, 2, 8), Buffer("y", 1, 3, 8), Buffer("z", 1, 3, 4)]
    with pytest.raises(SerenityError, match="sizes 8 and 4"):
        merge_inplace(bufs, {"z": "x"})
    with pytest.raises(SerenityError, match="no buffer 'w'"):
        merge_inplace(bufs, {"w": "x"})
    with pytest.raises(SerenityError, match="twice"):
        merge_inplace(bufs, {"y": "x", "z": "x"})
    with pytest.raises(SerenityError, match="cycle"):
        merge_inplace(bufs, {"y": "x", "x": "y"})
    assert merge_inplace(bufs, {}) == bufs


def test_alignment_never_makes_a_broadcast_input_a_candidate_of_the_plan() -> None:
    """Add(a, y) with a 1-byte ``a`` broadcast into 16 bytes: once aligned to 16 both are 16
    bytes, but a runtime must not write the output over ``a``; the target's buffers take their
    pairs from the raw sizes."""
    t = [Tensor("x", (1,), "int8", 1), Tensor("a", (1,), "int8", 1), Tensor("y", (16,), "int8", 16),
         Tensor("o", (16,), "int8", 16)]  # fmt: skip
    ops = [Op("r", "Relu", ("x",), ("a",)), Op("A", "Add", ("a", "y"), ("o",))]
    g = Graph("bcast", ops, t, ["x", "y"], ["o"], memory_model="inplace")
    tb = target_buffers(g, [0, 1], fmt="onnx", alignment=16)
    assert {b.id: b.aliases for b in tb.buffers} == {"x": ("a",), "y": ("o",)}
    assert tb.tensor_offsets([0, 16]) == {"x": 0, "a": 0, "y": 16, "o": 16}


# -- schedulers under inplace -----------------------------------------------------------------


@settings(max_examples=40, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inplace_dags(1, 8))
def test_budget_dp_equals_brute_force(g: Graph) -> None:
    r = schedule_budget(g)
    assert r.peak == simulate(g, r.order).peak
    assert r.proven_optimal and r.peak == brute_force(g) == schedule_dp(g).peak


def test_inplace_never_needs_more_than_tflm() -> None:
    for seed in range(30):
        g = inplace_dag(seed, 8)
        assert brute_force(g) <= brute_force(with_memory_model(g, "tflm"))


# -- real graphs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["nasnet_a_normal_cell", "darts_normal_cell", "swiftnet_cell_a", "randwire_ws_stage"]
)
def test_zoo_plans_under_inplace(name: str) -> None:
    g = with_memory_model(zoo.graph(name), "inplace")
    r = schedule_dp(g, time_limit=20)
    tflm = schedule_dp(with_memory_model(g, "tflm"), time_limit=20)
    assert r.peak <= tflm.peak
    bufs = buffers_of(g, r.order)
    assert peak_of(bufs) == r.peak
    plan = plan_exact(bufs, time_limit=5)
    assert check_plan(bufs, plan.offsets) == plan.arena >= r.peak
    check_per_tensor(g, r.order, bufs, plan.offsets)


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_tflite_target_buffers_under_inplace(path: Path) -> None:
    m = load(path)
    g = with_memory_model(m.graph, "inplace")
    order = schedule_dp(with_alignment(g, 16), time_limit=10).order
    tb = target_buffers(m.graph, order, fmt="tflite", alignment=16, memory_model="inplace")
    assert tb.buffers == tflm_buffers(g, order).buffers
    plan = plan_tflm_greedy(list(tb.buffers))
    assert check_plan(tb.buffers, plan.offsets) == plan.arena >= peak_of(tb.buffers)
    offsets = tb.tensor_offsets(plan.offsets)
    pairs = inplace_pairs(g.dense, order)
    assert all(offsets[g.dense.names[o]] == offsets[g.dense.names[c]] for o, c in pairs.items())
    assert len(offsets) == sum(1 for t in m.graph.activations if t.nbytes)


# -- TensorFlow Lite Micro ---------------------------------------------------------------------


def elementwise_model() -> bytes:
    """Convolutions feeding a chain of element-wise ops (RELU, LOGISTIC, ADD, TANH, MUL,
    RESHAPE) whose steps set the peak: in place, each writes over the input it consumes."""
    b = TFLiteBuilder(0)
    x = b.input("x", (1, 16, 16, 2))
    c1 = b.conv(x, 16, "c1")
    r = b.unary("RELU", c1, "r")
    lg = b.unary("LOGISTIC", r, "l")
    c2 = b.conv(x, 16, "c2", k=1)
    b.op("ADD", [lg, c2], [b.tensor("a", (1, 16, 16, 16))])
    b.unary("TANH", "a", "t")
    b.op("MUL", ["t", "a"], [b.tensor("m", (1, 16, 16, 16))])
    b.op("RESHAPE", ["m", b.const("shape", [1, 4096], "int32")], [b.tensor("rs", (1, 4096))])
    b.output("rs")
    return b.build()


@pytest.fixture(scope="module")
def handmade(tmp_path_factory: pytest.TempPathFactory) -> Model:
    path = tmp_path_factory.mktemp("inplace") / "elementwise.tflite"
    path.write_bytes(elementwise_model())
    return load(path)


def _planned(m: Model, order: Sequence[int], memory_model: str) -> tuple[bytes, int]:
    """The file with an exact plan over TFLM's buffers under ``memory_model``, and its arena."""
    tb = target_buffers(m.graph, order, fmt="tflite", alignment=16, memory_model=memory_model)
    plan = plan_exact(list(tb.buffers), time_limit=10)
    check_plan(tb.buffers, plan.offsets)
    return embed_plan(m, order, tb.tensor_offsets(plan.offsets), memory_model=memory_model), plan.arena


@pytest.mark.parametrize(
    "which", ["elementwise", "nas_cells_int8", "nas_cells_float", "mobilenet_v2_035_96_int8"]
)
def test_tflm_runs_an_inplace_plan_bit_for_bit(which: str, handmade: Model) -> None:
    tflm = pytest.importorskip("serenity.runtime.tflm")
    if which == "elementwise":
        m = handmade
    else:
        found = [p for p in MODELS if p.stem == which]
        if not found:
            pytest.skip(f"{which}.tflite is not in the corpus")
        m = load(found[0])
    g = with_memory_model(m.graph, "inplace")
    order = list(schedule_dp(with_alignment(g, 16), time_limit=10).order)
    assert inplace_pairs(g.dense, order), "the test needs in-place pairs"
    data, arena = _planned(m, order, "inplace")
    inputs = tflm.random_inputs(m.path, 1)
    expected = [y.tobytes() for y in tflm.run(m.path, inputs)]
    run = tflm.execute_planned(data, inputs)
    assert [y.tobytes() for y in run.result.outputs] == expected
    assert run.measured == run.predicted  # TFLM does what its model says, scratch included
    if which == "elementwise":
        assert (
            run.honoured and run.measured == arena
        )  # the element-wise steps set the peak: in place is smaller
        flat, flat_arena = _planned(m, order, "tflm")
        assert tflm.execute_planned(flat).measured == flat_arena == 49152
        assert arena == 34816 == simulate(with_alignment(g, 16), order).peak


def test_embed_plan_allows_exactly_the_inplace_pairs(handmade: Model) -> None:
    m = handmade
    order = list(m.graph.listed_order)
    tb = target_buffers(m.graph, order, fmt="tflite", alignment=16, memory_model="inplace")
    offsets = tb.tensor_offsets(plan_exact(list(tb.buffers), time_limit=5).offsets)
    assert offsets["r"] == offsets["c1"]  # RELU writes over the convolution's output
    embed_plan(m, order, offsets, memory_model="inplace")
    with pytest.raises(SerenityError, match="overlap"):
        embed_plan(m, order, offsets)  # every tensor its own bytes under "tflm"
    bad = dict(offsets, c2=offsets["x"])  # x and c2 are live together and are no pair
    with pytest.raises(SerenityError, match="overlap"):
        embed_plan(m, order, bad, memory_model="inplace")
    # TFLM plans a buffer per tensor whatever the graph's model: the prediction is the same.
    assert predict_tflm_arena(with_memory_model(m.graph, "inplace"), order) == predict_tflm_arena(
        m.graph, order
    )


def test_plan_command_gives_every_tensor_of_a_chain_its_offset(
    handmade: Model, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from serenity.cli import build_parser

    m = handmade
    args = build_parser().parse_args(["plan", str(m.path), "--json"])
    args.memory_model = "inplace"
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    offsets = out["offsets"]
    assert len(offsets) == len(m.graph.activations)
    assert offsets["c1"] == offsets["r"] == offsets["l"] == offsets["a"]
    assert out["arena_bytes"] == out["peak_bytes"] == 34816


def test_verify_accepts_an_inplace_plan(handmade: Model, tmp_path: Path) -> None:
    """``serenity verify``'s checks on the written file: same model, bit-identical outputs in
    TFLite Micro, and TFLM's arena is the embedded plan's, below the file's own."""
    pytest.importorskip("serenity.runtime.tflm")
    from serenity.verify import verify

    order = list(handmade.graph.listed_order)
    data, arena = _planned(handmade, order, "inplace")
    out = tmp_path / "planned.tflite"
    out.write_bytes(data)
    rep = verify(handmade.path, out, memory_model="inplace")
    assert rep.ok and rep.outputs_identical and rep.plan_honoured, rep.problems
    assert rep.runtime == "tflite-micro" and rep.relation == "reordering"
    assert rep.arena_reordered == rep.arena_planned == arena == 34816
    assert rep.arena_original == 49152
