"""TFLite import/export over the golden corpus: round trips, reordered files in TFLite Micro,
pinned peaks checked by a hand simulation straight from the flatbuffer, and the error paths."""

from __future__ import annotations

import math
import random
from functools import cache
from pathlib import Path

import flatbuffers
import pytest
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

from dags import random_topological_order
from serenity.errors import (
    ModelFormatError,
    OrderError,
    SerenityError,
    ShapeError,
    UnsupportedError,
)
from serenity.formats import Model, load, save
from serenity.formats.tflite_io import load_tflite, structure_problem
from serenity.memory import simulate
from serenity.runtime import tflm
from serenity.schedulers.baselines import schedule_bfs

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "models"
MODELS_DIR = _SHARED if _SHARED.is_dir() else Path(__file__).resolve().parents[1] / "examples"
NAMES = sorted(p.stem for p in MODELS_DIR.glob("*.tflite"))

#: Peak of each file's listed order under serenity.memory.simulate (bytes).
GOLDEN_PEAKS = {
    "fan_concat_float": 294_912,
    "fan_concat_int8": 73_728,
    "inception_block_float": 376_320,
    "inception_block_int8": 94_080,
    "nas_cells_float": 331_776,
    "nas_cells_int8": 82_944,
}
#: TFLM's planned arena ("head") for the listed order, tflite-micro 0.dev20261023182759.
#: Greedy-planner fragmentation: 11.1 % (fan_concat), 33.3 % (inception_block, nas_cells).
TFLM_HEAD = {
    "fan_concat_float": 327_680,
    "fan_concat_int8": 81_920,
    "inception_block_float": 501_760,
    "inception_block_int8": 125_440,
    "nas_cells_float": 442_368,
    "nas_cells_int8": 110_592,
}


def model_path(name: str) -> Path:
    return MODELS_DIR / f"{name}.tflite"


def test_corpus_is_present() -> None:
    assert sorted(GOLDEN_PEAKS) == NAMES


@cache
def original_run(name: str) -> tflm.TFLMResult:
    """Outputs and arena of the original file on seed-0 inputs (one TFLM child per model)."""
    path = model_path(name)
    return tflm.execute(path, tflm.random_inputs(path, seed=0))


# -- golden peaks -------------------------------------------------------------------------------


_ITEMSIZE = {fb.TensorType.FLOAT32: 4, fb.TensorType.INT8: 1, fb.TensorType.INT32: 4, fb.TensorType.INT16: 2}


def hand_peak(path: Path) -> int:
    """TFLM's lifetime rules applied to the raw flatbuffer, by tensor index, without the IR.

    Graph inputs are live from the start; an op's outputs from its step; a tensor dies after its
    last reader unless it is a graph output. The peak is the largest live sum during a step.
    """
    m = fb.ModelT.InitFromObj(fb.Model.GetRootAs(path.read_bytes(), 0))
    sg = m.subgraphs[0]

    def act(i: int) -> bool:
        t = sg.tensors[i]
        data = m.buffers[t.buffer].data
        return i >= 0 and (data is None or len(data) == 0) and not t.isVariable

    def size(i: int) -> int:
        t = sg.tensors[i]
        return math.prod(int(d) for d in t.shape) * _ITEMSIZE[t.type]

    last = {i: k for k, op in enumerate(sg.operators) for i in op.inputs if i >= 0 and act(i)}
    outputs = {int(i) for i in sg.outputs}
    live = {int(i) for i in sg.inputs if act(i)}
    peak = 0
    for k, op in enumerate(sg.operators):
        live |= {int(o) for o in op.outputs if act(o)}
        peak = max(peak, sum(size(i) for i in live))
        live -= {i for i in live if i not in outputs and last.get(i, k) <= k}
    return peak


@pytest.mark.parametrize("name", NAMES)
def test_golden_peak_matches_hand_simulation(name: str) -> None:
    g = load(model_path(name)).graph
    assert simulate(g, g.listed_order).peak == GOLDEN_PEAKS[name] == hand_peak(model_path(name))


# -- round trips --------------------------------------------------------------------------------


def same_graph_modulo_order(a: Model, b: Model, order: list[int] | tuple[int, ...]) -> None:
    ga, gb = a.graph, b.graph
    assert [(op.type, op.inputs, op.outputs) for op in gb.ops] == [
        (ga.ops[i].type, ga.ops[i].inputs, ga.ops[i].outputs) for i in order
    ]
    assert {n: (t.shape, t.dtype, t.nbytes, t.constant) for n, t in ga.tensors.items()} == {
        n: (t.shape, t.dtype, t.nbytes, t.constant) for n, t in gb.tensors.items()
    }
    assert (ga.inputs, ga.outputs) == (gb.inputs, gb.outputs)
    assert a.info == b.info


@pytest.mark.parametrize("name", NAMES)
def test_listed_order_round_trip_is_byte_identical(tmp_path: Path, name: str) -> None:
    m = load_tflite(model_path(name))
    assert m.format == "tflite" and m.info["subgraphs"] == 1 and m.info["version"] == 3
    assert [op.name for op in m.graph.ops][:1] == [f"0:{m.graph.ops[0].type}"]
    out = tmp_path / "same.tflite"
    save(m, m.graph.listed_order, out)
    assert out.read_bytes() == model_path(name).read_bytes()
    same_graph_modulo_order(m, load(out), m.graph.listed_order)


def reordered(m: Model, seed: int) -> list[int]:
    """A seeded random topological order different from the listed one."""
    rng = random.Random(seed)
    for _ in range(100):
        order = random_topological_order(m.graph, rng)
        if order != list(m.graph.listed_order):
            return order
    raise AssertionError("the graph has a single topological order")


@pytest.mark.parametrize("name", NAMES)
def test_reordered_file_runs_bit_identically_in_tflm(tmp_path: Path, name: str) -> None:
    src = model_path(name)
    m = load(src)
    order = reordered(m, seed=len(name))
    out = tmp_path / "reordered.tflite"
    save(m, order, out)
    back = load(out)
    same_graph_modulo_order(m, back, order)
    assert structure_problem(m, back) is None
    # Only the operator vector's 4-byte slots changed; the file keeps its size and alignment.
    a, b = src.read_bytes(), out.read_bytes()
    changed = [k for k in range(len(a)) if a[k] != b[k]]
    lo = m.source.operators_vector
    assert len(a) == len(b) and changed and all(lo <= k < lo + 4 * len(order) for k in changed)
    # TFLM runs the operators in the new order and computes the same bits.
    result = tflm.execute(out, tflm.random_inputs(src, seed=0))
    expected = original_run(name).outputs
    assert len(result.outputs) == len(expected)
    for x, y in zip(result.outputs, expected, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
    assert result.arena.head >= simulate(m.graph, order).peak


def test_bfs_order_round_trip(tmp_path: Path) -> None:
    m = load(model_path("inception_block_int8"))
    order = schedule_bfs(m.graph).order
    assert list(order) != list(m.graph.listed_order)
    save(m, order, tmp_path / "bfs.tflite")
    back = load(tmp_path / "bfs.tflite")
    same_graph_modulo_order(m, back, order)
    assert simulate(back.graph, back.graph.listed_order).peak == simulate(m.graph, order).peak


# -- TFLM arena vs the memory model ---------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_tflm_arena_is_never_below_the_simulated_peak(name: str) -> None:
    head = original_run(name).arena.head
    peak = GOLDEN_PEAKS[name]
    assert head == TFLM_HEAD[name]
    assert peak <= head <= 1.35 * peak


# -- crafted models and error paths ----------------------------------------------------------------


def model_t(name: str = "fan_concat_int8") -> fb.ModelT:
    return fb.ModelT.InitFromObj(fb.Model.GetRootAs(model_path(name).read_bytes(), 0))


def pack(m: fb.ModelT, path: Path) -> Path:
    b = flatbuffers.Builder(0)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    path.write_bytes(bytes(b.Output()))
    return path


def test_truncated_file(tmp_path: Path) -> None:
    data = model_path("fan_concat_int8").read_bytes()
    for cut in (0, 6, 100, len(data) // 2, len(data) - 1000):
        p = tmp_path / f"cut{cut}.tflite"
        p.write_bytes(data[:cut])
        with pytest.raises(ModelFormatError, match=rf"^{p}: .*(truncated|corrupt)") as e:
            load(p)
        assert "\n" not in str(e.value)


def test_wrong_magic(tmp_path: Path) -> None:
    data = bytearray(model_path("fan_concat_int8").read_bytes())
    data[4:8] = b"ONNX"
    p = tmp_path / "magic.tflite"
    p.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match=r"not a TFLite flatbuffer \(file identifier b'ONNX'"):
        load(p)


def test_corrupt_bytes_only_raise_serenity_errors(tmp_path: Path) -> None:
    data = model_path("inception_block_int8").read_bytes()
    rng = random.Random(7)
    p = tmp_path / "fuzz.tflite"
    failures = 0
    for _ in range(150):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            mutated[rng.randrange(8, 4096)] = rng.randrange(256)
        p.write_bytes(bytes(mutated))
        try:
            load(p)
        except SerenityError as e:
            failures += 1
            assert str(e).startswith(str(p)) and "\n" not in str(e)
    assert failures > 0


def test_index_out_of_range(tmp_path: Path) -> None:
    m = model_t()
    op = m.subgraphs[0].operators[3]
    op.inputs = [9999, *op.inputs[1:]]
    with pytest.raises(ModelFormatError, match=r"tensor index in operator 3 9999"):
        load(pack(m, tmp_path / "idx.tflite"))


def test_dynamic_dimension_needs_dims(tmp_path: Path) -> None:
    m = model_t()
    t = m.subgraphs[0].tensors[0]
    t.shape = [-1, *t.shape[1:]]
    p = pack(m, tmp_path / "dyn.tflite")
    with pytest.raises(ShapeError, match=r"tensor 'serving_default_keras_tensor:0' has an unknown dimension"):
        load(p)
    assert load(p, dims={"batch": 1}).graph.tensors["serving_default_keras_tensor:0"].shape == (1, 32, 32, 8)
    assert load(p, dims={"n": 1}).graph.tensors["serving_default_keras_tensor:0"].nbytes == 8192


def test_signature_batch_uses_the_static_shape_tflm_allocates() -> None:
    # The converter marks the batch -1 in shape_signature and 1 in shape; TFLM allocates shape.
    assert model_t().subgraphs[0].tensors[0].shapeSignature[0] == -1
    assert load(model_path("fan_concat_int8"), dims={"batch": 1}).graph.tensors
    with pytest.raises(ShapeError, match=r"has batch 1 in the file and TFLite Micro never resizes"):
        load(model_path("fan_concat_int8"), dims={"batch": 4})
    # Entries other than "batch" only fill unknown dimensions, never override static ones.
    assert (
        load(model_path("fan_concat_int8"), dims={"n": 4})
        .graph.tensors["serving_default_keras_tensor:0"]
        .shape[0]
        == 1
    )


@pytest.mark.parametrize("ttype", ["STRING", "RESOURCE", "VARIANT"])
def test_unsupported_activation_type(tmp_path: Path, ttype: str) -> None:
    m = model_t()
    out = m.subgraphs[0].operators[0].outputs[0]
    m.subgraphs[0].tensors[out].type = getattr(fb.TensorType, ttype)
    name = m.subgraphs[0].tensors[out].name.decode()
    with pytest.raises(UnsupportedError, match=rf"tensor '{name}' has type {ttype}"):
        load(pack(m, tmp_path / "t.tflite"))


def test_dtypes_names_and_variables(tmp_path: Path) -> None:
    m = model_t()
    sg = m.subgraphs[0]
    a, b = sg.operators[0].outputs[0], sg.operators[1].outputs[0]
    sg.tensors[a].type = fb.TensorType.INT4  # TFLM holds int4 activations one byte each
    sg.tensors[b].type = fb.TensorType.INT16
    sg.tensors[b].name = sg.tensors[a].name  # a repeated name gets its index appended
    sg.tensors[sg.inputs[0]].isVariable = True
    sg.tensors[5].name, sg.tensors[6].name = b"", b"#5"  # "" marks absent inputs in the IR
    g = load(pack(m, tmp_path / "t.tflite")).graph
    assert {"#5", "#5#6"} <= set(g.tensors) and "" not in g.tensors
    ta, tb = g.tensors[sg.tensors[a].name.decode()], g.tensors[f"{sg.tensors[a].name.decode()}#{b}"]
    assert (ta.dtype, ta.nbytes) == ("int4", math.prod(ta.shape))
    assert (tb.dtype, tb.nbytes) == ("int16", 2 * math.prod(tb.shape))
    assert g.tensors["serving_default_keras_tensor:0"].constant
    # Constants cost what their buffer stores.
    w = sg.operators[0].inputs[1]
    assert g.tensors[sg.tensors[w].name.decode()].nbytes == len(m.buffers[sg.tensors[w].buffer].data)


def test_other_subgraphs_and_external_buffers_survive(tmp_path: Path) -> None:
    m = model_t()
    m.subgraphs.append(
        fb.SubGraphT.InitFromObj(
            fb.Model.GetRootAs(model_path("fan_concat_int8").read_bytes(), 0).Subgraphs(0)
        )
    )
    # Move the largest constant after the flatbuffer (offset/size), as > 2 GB models do.
    k = max(range(len(m.buffers)), key=lambda i: 0 if m.buffers[i].data is None else len(m.buffers[i].data))
    blob = bytes(m.buffers[k].data)
    m.buffers[k].data, m.buffers[k].offset, m.buffers[k].size = None, 1 << 40, len(blob)
    p = pack(m, tmp_path / "ext.tflite")
    end = -(-p.stat().st_size // 16) * 16
    m.buffers[k].offset = end  # same field width, so the flatbuffer keeps its length
    pack(m, p)
    p.write_bytes(p.read_bytes().ljust(end, b"\0") + blob)
    src = load(p)
    assert src.info["subgraphs"] == 2 and src.info["operators_total"] == 20
    order = reordered(src, seed=3)
    save(src, order, tmp_path / "ext_out.tflite")
    back = load(tmp_path / "ext_out.tflite")
    same_graph_modulo_order(src, back, order)
    assert structure_problem(src, back) is None
    assert (tmp_path / "ext_out.tflite").read_bytes()[end:] == blob


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_failed_saves_write_nothing(tmp_path: Path) -> None:
    m = load(model_path("fan_concat_int8"))
    before = listing(tmp_path)
    bad = list(reversed(m.graph.listed_order))
    with pytest.raises(OrderError):
        save(m, bad, tmp_path / "bad.tflite")
    with pytest.raises(SerenityError, match="does not exist"):
        save(m, m.graph.listed_order, tmp_path / "missing" / "x.tflite")
    # An offline arena plan is only valid for the listed order.
    mt = model_t()
    mt.metadata[0].name = b"OfflineMemoryAllocation"
    planned = load(pack(mt, tmp_path / "planned.tflite"))
    with pytest.raises(UnsupportedError, match="OfflineMemoryAllocation"):
        save(planned, reordered(planned, seed=1), tmp_path / "planned_out.tflite")
    assert listing(tmp_path) == sorted([*before, "planned.tflite"])


def test_loading_a_missing_file() -> None:
    with pytest.raises(ModelFormatError, match="no such file"):
        load(MODELS_DIR / "nope.tflite")


def test_structure_problem_names_the_first_foreign_byte(tmp_path: Path) -> None:
    m = load(model_path("fan_concat_int8"))
    out = tmp_path / "r.tflite"
    save(m, reordered(m, seed=2), out)
    data = bytearray(out.read_bytes())
    data[-1] ^= 0xFF  # the last byte, far from the operator vector
    out.write_bytes(bytes(data))
    assert (
        structure_problem(m, load(out))
        == f"the files differ at byte {len(data) - 1}, outside subgraph 0's operator order"
    )


def test_verify_accepts_a_reordered_tflite(tmp_path: Path) -> None:
    from serenity.verify import verify

    m = load(model_path("inception_block_float"))
    out = tmp_path / "r.tflite"
    save(m, reordered(m, seed=4), out)
    report = verify(model_path("inception_block_float"), out)
    assert report.ok and report.runtime == "tflite-micro" and report.outputs_identical, report.problems
