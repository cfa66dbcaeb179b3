"""TFLM's arena: the greedy model predicts the head TFLite Micro reports, and a plan embedded as
``OfflineMemoryAllocation`` metadata is honoured with bit-identical outputs.

Each TFLM run is a child process (~0.2 s); the corpus is the shared models, ``stem/`` included.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from functools import cache
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

from dags import random_dag, random_topological_order
from serenity.errors import SerenityError
from serenity.formats import Model, load, save
from serenity.formats.tflite_io import parse_tflite
from serenity.formats.tflite_plan import (
    OFFLINE_PLAN,
    embed_plan,
    offline_offsets,
    plan_words,
    read_offline_plan,
)
from serenity.ir import Graph, Op, Tensor, with_alignment
from serenity.planning import PLANNERS, ArenaPlan, Buffer, buffers_of, check_plan, peak_of
from serenity.planning.tflm_greedy import (
    greedy_offsets,
    plan_tflm_greedy,
    predict_tflm_arena,
    scratch_requests,
    tflm_buffers,
)
from serenity.runtime import tflm
from serenity.schedulers import schedule
from test_tflm import buffer_alignments

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "models"
_ROOT = _SHARED if _SHARED.is_dir() else Path(__file__).resolve().parents[1] / "examples"
MODELS = sorted([*_ROOT.glob("*.tflite"), *_ROOT.glob("stem/*.tflite")])
IDS = [p.stem for p in MODELS]

plan_exact: Callable[..., ArenaPlan] = PLANNERS["exact"]


@cache
def model(path: Path) -> Model:
    return load(path)


@cache
def original_outputs(path: Path) -> tuple[bytes, ...]:
    return tuple(y.tobytes() for y in tflm.run(path, tflm.random_inputs(path, 0)))


def orders(m: Model) -> list[list[int]]:
    """Listed, optimal, and two seeded random topological orders."""
    g = m.graph
    return [
        list(g.listed_order),
        list(schedule(g).order),
        *(random_topological_order(g, random.Random(seed)) for seed in (1, 2)),
    ]


def reserved_plan(m: Model, order: list[int]) -> tuple[dict[str, int], int]:
    """An exact plan over TFLM's buffers (scratch room reserved), mirrored top-to-bottom so its
    offsets are not the ones TFLM would pick itself."""
    tb = tflm_buffers(m.graph, order)
    plan = plan_exact(list(tb.buffers), time_limit=20)
    check_plan(tb.buffers, plan.offsets)
    top = plan.arena
    offs = {t: top - o - b.size for t, o, b in zip(tb.tensors, plan.offsets, tb.buffers, strict=True) if t}
    return offs, plan.arena


# -- the greedy model on hand-built cases ---------------------------------------------------------


def test_equal_sizes_go_in_descending_id_order() -> None:
    # TFLM fills its sort array from the tail, so among equal sizes the higher id is placed first.
    assert greedy_offsets([32, 32], [0, 0], [0, 0]) == [32, 0]
    assert greedy_offsets([16, 32, 32], [0, 0, 0], [0, 0, 0]) == [64, 32, 0]


def test_first_fit_uses_gaps_among_buffers_live_at_the_same_time() -> None:
    # c (first placed) at 0; a overlaps c in time -> above it; b does not overlap c -> at 0.
    assert greedy_offsets([32, 16, 48], [0, 2, 0], [1, 3, 1]) == [48, 0, 0]
    # A gap between two placed buffers is used when it is large enough.
    assert greedy_offsets([16, 64, 16], [0, 0, 0], [0, 0, 0], [0, None, 48]) == [0, 64, 48]
    assert greedy_offsets([16, 16, 16], [0, 0, 0], [0, 0, 0], [0, None, 48]) == [0, 16, 48]


def test_offline_buffers_are_fixed_and_placed_first() -> None:
    # The online 64-byte buffer would take offset 0, but the offline one is placed first.
    assert greedy_offsets([64, 16], [0, 0], [0, 0], [None, 0]) == [16, 0]
    plan = plan_tflm_greedy([Buffer("a", 0, 1, 16), Buffer("b", 0, 1, 16)], offline=[16, None])
    assert plan.offsets == (16, 0) and plan.arena == 32 and plan.proven
    with pytest.raises(SerenityError, match="1 offline offsets for 2 buffers"):
        plan_tflm_greedy([Buffer("a", 0, 1, 16), Buffer("b", 0, 1, 16)], offline=[None])


@pytest.mark.parametrize("seed", range(30))
def test_greedy_plans_are_valid_and_bounded_by_the_peak(seed: int) -> None:
    g = with_alignment(random_dag(seed, n_ops=12, max_width=4), 16)
    bufs = buffers_of(g, random_topological_order(g, random.Random(seed)))
    plan = PLANNERS["tflm-greedy"](bufs)
    assert plan.planner == "tflm-greedy" and plan.lower_bound == peak_of(bufs)
    assert check_plan(bufs, plan.offsets) == plan.arena >= plan.lower_bound
    assert plan.proven == (plan.arena == plan.lower_bound)


def test_tflm_lifetimes_are_the_memory_model_shifted_by_one_scope() -> None:
    m = model(MODELS[0])
    order = orders(m)[2]
    ours = {b.id: b for b in buffers_of(with_alignment(m.graph, 16), order)}
    tb = tflm_buffers(m.graph, order)
    assert {t for t in tb.tensors if t} == set(ours)
    for b, t in zip(tb.buffers, tb.tensors, strict=True):
        assert t is not None and b.size == ours[t].size and b.upper == ours[t].upper + 1
        assert b.lower == (0 if m.graph.tensors[t].is_input else ours[t].lower + 1)


def test_unused_tensors_and_scratch_buffers_join_the_plan() -> None:
    # "u" is an activation no op mentions: TFLM still plans it (lifetime [-1, -1]).
    g = Graph(
        "g",
        [Op("m", "MEAN", ("x", "axis"), ("y",))],
        [Tensor("x", (1, 4, 4, 8), "int8", 128), Tensor("axis", (2,), "int32", 8, constant=True),
         Tensor("y", (1, 8), "int8", 8), Tensor("u", (300,), "int8", 300)],
        ["x"],
        ["y"],
    )  # fmt: skip
    assert scratch_requests(g, 0) == (32, 16, 8)  # 4 * outputs (int8 accumulators), rank, axes
    tb = tflm_buffers(g, [0])
    assert [(b.id, b.lower, b.upper, b.size) for b in tb.buffers] == [
        ("x", 0, 2, 128), ("y", 1, 2, 16), ("u", -1, 0, 304),
        ("scratch:m:0", 1, 2, 32), ("scratch:m:1", 1, 2, 16), ("scratch:m:2", 1, 2, 16),
    ]  # fmt: skip
    assert predict_tflm_arena(g, [0]) == 304  # the unused tensor is the largest buffer


# -- prediction against TFLite Micro ---------------------------------------------------------------


@pytest.mark.parametrize("path", MODELS, ids=IDS)
def test_greedy_model_predicts_tflm_arena(path: Path, tmp_path: Path) -> None:
    m = model(path)
    for k, order in enumerate(orders(m)):
        out = tmp_path / f"{k}.tflite"
        save(m, order, out)
        assert tflm.arena_bytes(out) == predict_tflm_arena(m.graph, order), f"order #{k}"


# -- plans embedded in the file -------------------------------------------------------------------


@pytest.mark.parametrize("path", MODELS, ids=IDS)
def test_embedded_plan_is_honoured_with_identical_outputs(path: Path) -> None:
    m = model(path)
    order = list(schedule(m.graph).order)
    offsets, arena = reserved_plan(m, order)
    data = embed_plan(m, order, offsets)
    assert read_offline_plan(data) == plan_words(m, offsets)[3:]
    assert buffer_alignments(data) == {0}
    planned = parse_tflite(data, path)
    assert planned.graph.listed_order == tuple(range(len(order)))
    assert [op.name.split(":")[1] for op in planned.graph.ops] == [m.graph.ops[i].type for i in order]
    assert offline_offsets(planned) == offsets
    run = tflm.execute_planned(data, tflm.random_inputs(path, 0))
    assert run.honoured and run.measured == run.planned == run.predicted == arena
    assert tuple(y.tobytes() for y in run.result.outputs) == original_outputs(path)
    assert arena == peak_of(tflm_buffers(m.graph, order).buffers)


def test_plan_without_reuse_is_honoured(tmp_path: Path) -> None:
    # Every tensor in its own place: far above what TFLM's greedy planner would choose.
    path = MODELS[0]
    m = model(path)
    order = list(m.graph.listed_order)
    offsets, top = {}, 0
    for b in buffers_of(with_alignment(m.graph, 16), order):
        offsets[b.id], top = top, top + b.size
    run = tflm.execute_planned(embed_plan(m, order, offsets), tflm.random_inputs(path, 0))
    assert run.honoured and run.measured == top > predict_tflm_arena(m.graph, order)
    assert tuple(y.tobytes() for y in run.result.outputs) == original_outputs(path)


def test_replanning_replaces_the_entry(tmp_path: Path) -> None:
    path = MODELS[-1]  # the stem int8 network when the shared corpus is present
    m = model(path)
    first, second = orders(m)[0], orders(m)[3]
    a, _ = reserved_plan(m, first)
    once = tmp_path / "once.tflite"
    once.write_bytes(embed_plan(m, first, a))
    m1 = load(once)
    b, arena = reserved_plan(m1, second)
    b, arena = {t: o + 16 for t, o in b.items()}, arena + 16  # surely not the first plan
    twice = embed_plan(m1, second, b)
    assert len(twice) == once.stat().st_size  # same plan length: patched in place
    assert read_offline_plan(twice) == plan_words(m1, b)[3:] != read_offline_plan(once)
    root = fb.Model.GetRootAs(twice, 0)
    names = [root.Metadata(k).Name() for k in range(root.MetadataLength())]
    assert names.count(OFFLINE_PLAN.encode()) == 1
    run = tflm.execute_planned(twice, tflm.random_inputs(path, 0))
    assert run.honoured and run.measured == arena
    assert tuple(y.tobytes() for y in run.result.outputs) == original_outputs(path)


def test_a_malformed_old_plan_is_replaced_not_duplicated(tmp_path: Path) -> None:
    path = MODELS[0]
    mt = fb.ModelT.InitFromObj(fb.Model.GetRootAs(path.read_bytes(), 0))
    stale = fb.BufferT()
    stale.data = np.frombuffer(struct.pack("<4i", 0, 1, 1, 0), dtype=np.uint8).copy()
    mt.buffers.append(stale)
    md = fb.MetadataT()
    md.name, md.buffer = OFFLINE_PLAN, len(mt.buffers) - 1
    mt.metadata = [*(mt.metadata or []), md]
    b = flatbuffers.Builder(0)
    b.Finish(mt.Pack(b), file_identifier=b"TFL3")
    crafted = tmp_path / "stale.tflite"
    crafted.write_bytes(bytes(b.Output()))
    m = load(crafted)
    order = orders(m)[1]
    offsets, arena = reserved_plan(m, order)
    data = embed_plan(m, order, offsets)
    root = fb.Model.GetRootAs(data, 0)
    assert [root.Metadata(k).Name() for k in range(root.MetadataLength())].count(OFFLINE_PLAN.encode()) == 1
    assert root.BuffersLength() == len(mt.buffers)  # the stale buffer was reused
    assert read_offline_plan(data) == plan_words(m, offsets)[3:]
    run = tflm.execute_planned(data, tflm.random_inputs(path, 0))
    assert run.honoured and run.measured == arena
    assert tuple(y.tobytes() for y in run.result.outputs) == original_outputs(path)


def test_invalid_plans_are_refused() -> None:
    m = model(MODELS[0])
    order = list(m.graph.listed_order)
    bufs = buffers_of(with_alignment(m.graph, 16), order)
    together = {b.id: 0 for b in bufs}
    with pytest.raises(SerenityError, match="are live at the same step and overlap"):
        embed_plan(m, order, together)
    with pytest.raises(SerenityError, match="must be a multiple of 16"):
        embed_plan(m, order, {bufs[0].id: 8})
    const = next(t.name for t in m.graph.tensors.values() if t.constant)
    with pytest.raises(SerenityError, match=f"'{const}' is not an activation tensor"):
        embed_plan(m, order, {const: 0})
    assert read_offline_plan(MODELS[0]) is None
