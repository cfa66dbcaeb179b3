"""``serenity plan`` and ``schedule --embed-plan``: arena plans on real models, embedded plans that
TensorFlow Lite Micro honours with identical outputs, order and placement chosen together."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import onnx_graphs as G
from dags import random_dag
from serenity.cli import main
from serenity.formats import load
from serenity.formats.tflite_plan import read_offline_plan
from serenity.ir import with_alignment
from serenity.planning import PLANNERS, buffers_of, check_plan, peak_of
from serenity.planning.joint import plan_with_order
from serenity.planning.tflm_greedy import predict_tflm_arena
from serenity.schedulers import schedule

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MODELS = sorted(p.name for p in EXAMPLES.glob("*.tflite"))


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", MODELS)
def test_plan_tflm_greedy_is_the_arena_tflm_plans(capsys, name: str) -> None:
    path = EXAMPLES / name
    code, out, err = run(capsys, "plan", path, "--planner", "tflm-greedy", "--json")
    assert code == 0, err
    d = json.loads(out)
    model = load(path)
    assert d["arena_bytes"] == predict_tflm_arena(model.graph, model.graph.listed_order)
    assert d["alignment"] == 16 and d["arena_bytes"] >= d["peak_bytes"] == d["lower_bound"]
    assert set(d["offsets"]) == {t.name for t in model.graph.activations if t.nbytes}


@pytest.mark.parametrize("name", MODELS)
def test_plan_exact_reaches_the_peak_of_the_optimal_order(capsys, name: str) -> None:
    code, out, err = run(capsys, "plan", EXAMPLES / name, "--order", "optimal", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["planner"] == "exact" and d["proven"] and d["arena_bytes"] == d["peak_bytes"]
    assert d["fragmentation"] == 0


def test_plan_order_from_a_json_file_and_a_plot(capsys, tmp_path: Path) -> None:
    path = EXAMPLES / "nas_cells_int8.tflite"
    model = load(path)
    order = list(schedule(model.graph, "dfs").order)
    names = tmp_path / "order.json"
    names.write_text(json.dumps({"order": [model.graph.ops[i].name for i in order]}))
    png = tmp_path / "arena.png"
    code, out, err = run(capsys, "plan", path, "--order", names, "--plot", png, "--json")
    assert code == 0, err
    assert json.loads(out)["order"] == "order.json" and png.read_bytes()[:4] == b"\x89PNG"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(list(reversed(order))))
    code, _, err = run(capsys, "plan", path, "--order", bad)
    assert code == 2 and "bad.json" in err and "before" in err


@pytest.mark.parametrize("name", MODELS)
def test_embedded_plan_is_honoured_by_tflm_with_identical_outputs(capsys, tmp_path: Path, name: str) -> None:
    src, dst = EXAMPLES / name, tmp_path / name
    code, out, err = run(capsys, "schedule", src, "-o", dst, "--embed-plan", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["objective"] == "arena" and d["plan_embedded"] and d["proven_optimal"]
    # the arena meets the proven optimal peak (16-byte accounting): no fragmentation at all
    assert d["arena"]["proven"] and d["arena"]["arena_bytes"] == d["peak_after"] == d["lower_bound"]
    assert d["tflm_arena_after"] == d["peak_after"] <= d["tflm_arena_before"]
    assert read_offline_plan(dst) is not None
    code, out, err = run(capsys, "verify", src, dst, "--json")
    v = json.loads(out)
    assert code == 0, err
    assert v["outputs_identical"] and v["plan_honoured"] and v["arena_reordered"] == d["peak_after"]


def test_a_planned_file_is_replanned_not_refused(capsys, tmp_path: Path) -> None:
    once, twice = tmp_path / "once.tflite", tmp_path / "twice.tflite"
    src = EXAMPLES / "inception_block_int8.tflite"
    assert run(capsys, "schedule", src, "-o", once, "--embed-plan", "--planner", "tflm-greedy")[0] == 0
    code, _, err = run(capsys, "schedule", once, "-o", tmp_path / "plain.tflite", "--method", "bfs")
    assert code == 2 and "--embed-plan" in err
    code, out, err = run(capsys, "schedule", once, "-o", twice, "--embed-plan", "--json")
    assert code == 0, err
    assert json.loads(out)["arena"]["proven"]
    code, out, _ = run(capsys, "verify", once, twice, "--json")
    assert code == 0 and json.loads(out)["plan_honoured"]


def test_embed_plan_is_for_tflite_only(capsys, tmp_path: Path) -> None:
    src = tmp_path / "b.onnx"
    onnx.save(G.branchy(), src)
    code, _, err = run(capsys, "schedule", src, "-o", tmp_path / "o.onnx", "--embed-plan")
    assert code == 2 and ".tflite only" in err and not (tmp_path / "o.onnx").exists()
    code, out, err = run(capsys, "schedule", src, "-o", tmp_path / "o.onnx", "--objective", "arena", "--json")
    d = json.loads(out)
    assert code == 0 and d["arena"]["arena_bytes"] >= d["peak_after"] and "plan_embedded" in d


def test_unknown_planner_and_misplaced_options(capsys, tmp_path: Path) -> None:
    path = EXAMPLES / "fan_concat_int8.tflite"
    assert run(capsys, "plan", path, "--planner", "nope")[0] == 2
    assert run(capsys, "plan", path, "--capacity", "10")[0] == 2
    assert run(capsys, "plan")[0] == 2
    code, _, err = run(capsys, "plan", path, "--plot", path)
    assert code == 2 and "overwrite" in err


@settings(max_examples=40, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 14), align=st.sampled_from([1, 16]))
def test_joint_choice_is_a_valid_optimal_order_with_a_valid_plan(seed: int, n: int, align: int) -> None:
    graph = with_alignment(random_dag(seed, n), align)
    result = schedule(graph)
    joint = plan_with_order(
        graph, result, lambda order: buffers_of(graph, order), PLANNERS["exact"], time_limit=5.0
    )
    bufs = buffers_of(graph, joint.order)
    assert graph.is_topological(joint.order) and joint.peak <= result.peak
    assert check_plan(bufs, joint.plan.offsets) == joint.plan.arena
    assert peak_of(bufs) == joint.peak  # the one memory model, independently of the planner
    assert joint.plan.lower_bound == result.lower_bound <= joint.plan.arena
    assert joint.plan.proven == (joint.plan.arena == result.lower_bound)
    own = PLANNERS["exact"](buffers_of(graph, result.order), time_limit=5.0)
    assert joint.plan.arena <= own.arena  # never worse than planning the schedule's own order


MINIMALLOC = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "minimalloc"


def test_plan_buffers_csv_round_trip(capsys, tmp_path: Path) -> None:
    src = tmp_path / "b.csv"
    src.write_text("id,lower,upper,size\na,0,2,10\nb,1,3,30\nc,2,3,5\nd,0,3,4\n")
    out = tmp_path / "planned.csv"
    code, stdout, err = run(capsys, "plan", "--buffers", src, "-o", out, "--json")
    assert code == 0, err
    d = json.loads(stdout)
    assert d["arena_bytes"] == d["peak_bytes"] == 44 and d["proven"]
    lines = out.read_text().splitlines()
    assert lines[0] == "id,lower,upper,size,offset" and len(lines) == 5
    # the written plan reads back as the same buffers, and its offsets are a valid placement
    from serenity.planning.csvio import read_csv

    back = read_csv(out)
    assert [(b.id, b.lower, b.upper, b.size) for b in back] == [("a", 0, 2, 10), ("b", 1, 3, 30),
                                                                ("c", 2, 3, 5), ("d", 0, 3, 4)]  # fmt: skip
    offsets = [int(line.rsplit(",", 1)[1]) for line in lines[1:]]
    assert check_plan(back, offsets) == 44


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("id,lower,size\na,0,4\n", "upper"),
        ("id,lower,upper,size\na,0,2,-4\n", "size"),
        ("id,lower,upper,size\na,3,3,4\n", "upper"),
        ("id,lower,upper,size\na,0,2,x\n", "size"),
        ("", "empty"),
    ],
)
def test_bad_buffer_csv_is_one_line_and_exit_2(capsys, tmp_path: Path, text: str, why: str) -> None:
    src = tmp_path / "bad.csv"
    src.write_text(text)
    code, _, err = run(capsys, "plan", "--buffers", src, "-o", tmp_path / "o.csv")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "bad.csv" in err, err
    assert why in err.lower() and not (tmp_path / "o.csv").exists()


def test_capacity_too_small_is_exit_2(capsys, tmp_path: Path) -> None:
    src = tmp_path / "b.csv"
    src.write_text("id,lower,upper,size\na,0,2,10\nb,1,3,30\n")
    code, _, err = run(capsys, "plan", "--buffers", src, "--capacity", "39")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "capacity" in err
    code, out, _ = run(capsys, "plan", "--buffers", src, "--capacity", "40", "--json")
    assert code == 0 and json.loads(out)["arena_bytes"] == 40


@pytest.mark.skipif(not MINIMALLOC.is_dir(), reason="needs ../shared/benchmarks/minimalloc")
def test_plan_a_minimalloc_instance_at_its_capacity(capsys, tmp_path: Path) -> None:
    out = tmp_path / "K.csv"
    src = MINIMALLOC / "K.1048576.csv"
    code, stdout, err = run(capsys, "plan", "--buffers", src, "--capacity", "1048576", "-o", out, "--json")
    assert code == 0, err
    assert json.loads(stdout)["arena_bytes"] <= 1048576 and out.is_file()


def test_align_rounds_every_activation_in_every_command(capsys, tmp_path: Path) -> None:
    doc = {"format": "serenity-graph", "version": 1,
           "tensors": [{"name": n, "shape": [k], "dtype": "int8"} for n, k in (("x", 4), ("a", 8), ("b", 2))],
           "ops": [{"name": "A", "type": "R", "inputs": ["x"], "outputs": ["a"]},
                   {"name": "B", "type": "R", "inputs": ["a"], "outputs": ["b"]}],
           "inputs": ["x"], "outputs": ["b"]}  # fmt: skip
    src = tmp_path / "g.json"
    src.write_text(json.dumps(doc))
    for align, peak in ((None, 12), ("16", 32)):
        flags = ["--align", align] if align else []
        code, out, _ = run(capsys, "analyze", src, "--json", *flags)
        assert code == 0 and json.loads(out)["peak_bytes"] == peak
        code, out, _ = run(capsys, "schedule", src, "-o", tmp_path / "o.json", "--json", *flags)
        assert code == 0 and json.loads(out)["peak_after"] == peak
        code, out, _ = run(capsys, "plan", src, "--json", *flags)
        assert code == 0 and json.loads(out)["arena_bytes"] == peak
