"""The command line under adversarial use: every bad input exits 2 with one line naming the file
or option, no input is ever overwritten, nothing is left behind, Ctrl-C exits 130.

Each test is named after the problem it guards against (issue: "Reliability").
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnx_graphs as G
from serenity.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SERENITY = [sys.executable, "-m", "serenity"]


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> bool:
    lines = [line for line in err.splitlines() if line.strip()]
    return len(lines) == 1 and lines[0].startswith("serenity") and "Traceback" not in err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def tflite(tmp_path: Path) -> Path:
    p = tmp_path / "m.tflite"
    shutil.copy(EXAMPLES / "fan_concat_int8.tflite", p)
    return p


@pytest.fixture
def onnx_model(tmp_path: Path) -> Path:
    p = tmp_path / "m.onnx"
    onnx.save(G.branchy(), p)
    return p


def external_model(folder: Path, location: str = "w.bin") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "m.onnx"
    onnx.save(
        G.branchy(),
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=0,
    )
    return path


def json_graph(tmp_path: Path, **patch: object) -> Path:
    doc: dict[str, object] = {
        "format": "serenity-graph",
        "version": 1,
        "tensors": [
            {"name": "x", "shape": [4], "dtype": "int8"},
            {"name": "w", "shape": [4], "dtype": "int8", "constant": True},
            {"name": "a", "shape": [8], "dtype": "int8"},
            {"name": "b", "shape": [2], "dtype": "int8"},
        ],
        "ops": [
            {"name": "A", "type": "R", "inputs": ["x", "w"], "outputs": ["a"]},
            {"name": "B", "type": "R", "inputs": ["a"], "outputs": ["b"]},
        ],
        "inputs": ["x"],
        "outputs": ["b"],
    }
    doc.update(patch)
    p = tmp_path / "g.json"
    p.write_text(json.dumps(doc))
    return p


# -- 2. inputs are never destroyed -------------------------------------------------------------


def test_analyze_plot_onto_the_model_is_refused(capsys, tflite: Path) -> None:
    before = snapshot(tflite.parent)
    code, _, err = run(capsys, "analyze", tflite, "--plot", tflite)
    assert code == 2 and one_error_line(err) and str(tflite) in err
    assert snapshot(tflite.parent) == before


def test_bench_csv_onto_the_model_is_refused(capsys, tflite: Path) -> None:
    before = snapshot(tflite.parent)
    code, _, err = run(capsys, "bench", tflite, "--csv", tflite)
    assert code == 2 and one_error_line(err) and "--csv" in err
    assert snapshot(tflite.parent) == before


def test_bench_plot_onto_the_onnx_model_is_refused(capsys, onnx_model: Path) -> None:
    before = snapshot(onnx_model.parent)
    code, _, err = run(capsys, "bench", onnx_model, "--plot", onnx_model)
    assert code == 2 and one_error_line(err) and "--plot" in err
    assert snapshot(onnx_model.parent) == before


def test_output_onto_the_inputs_own_external_data_is_refused(capsys, tmp_path: Path) -> None:
    model = external_model(tmp_path / "m", location="w.onnx")
    before = snapshot(model.parent)
    code, _, err = run(capsys, "schedule", model, "-o", model.parent / "w.onnx")
    assert code == 2 and one_error_line(err) and "w.onnx" in err
    assert snapshot(model.parent) == before
    # --in-place allows overwriting the model itself, never its data
    code, _, err = run(capsys, "schedule", model, "-o", model.parent / "w.onnx", "--in-place")
    assert code == 2 and snapshot(model.parent) == before


def test_two_outputs_naming_one_file_are_refused(capsys, tflite: Path, tmp_path: Path) -> None:
    code, _, err = run(capsys, "bench", tflite, "--csv", tmp_path / "r", "--plot", tmp_path / "r")
    assert code == 2 and one_error_line(err) and not (tmp_path / "r").exists()


# -- 3. exit 2, not 3 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [("offset", "999999", "has"), ("length", "999999", "has"), ("offset", "12abc", "not a number")],
)
def test_external_data_beyond_its_file_or_not_a_number(capsys, tmp_path: Path, key, value, why) -> None:
    model = external_model(tmp_path / "m")
    proto = onnx.load(model, load_external_data=False)
    for entry in proto.graph.initializer[0].external_data:
        if entry.key == key:
            entry.value = value
    model.write_bytes(proto.SerializeToString())
    code, _, err = run(capsys, "analyze", model)
    assert code == 2 and one_error_line(err) and str(model) in err and why in err


@pytest.mark.parametrize("option", ["-o", "--plot", "--csv"])
def test_output_that_is_a_directory(capsys, tflite: Path, tmp_path: Path, option: str) -> None:
    folder = tmp_path / "out.tflite"
    folder.mkdir()
    cmd = {"-o": ["schedule", tflite, "-o"], "--plot": ["analyze", tflite, "--plot"],
           "--csv": ["bench", tflite, "--csv"]}[option]  # fmt: skip
    code, _, err = run(capsys, *cmd, folder)
    assert code == 2 and one_error_line(err) and "directory" in err
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_output_in_an_unwritable_place(capsys, tflite: Path) -> None:
    code, _, err = run(capsys, "schedule", tflite, "-o", "/proc/x.tflite")
    assert code == 2 and one_error_line(err) and "/proc/x.tflite" in err


def test_a_legal_250_character_output_name_is_written(capsys, tflite: Path, tmp_path: Path) -> None:
    out = tmp_path / ("o" * 243 + ".tflite")
    assert len(out.name) == 250
    code, _, err = run(capsys, "schedule", tflite, "-o", out, "--json")
    assert code == 0, err
    assert out.is_file() and sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.tflite", out.name])


def test_an_output_name_longer_than_the_file_system_allows(capsys, tflite: Path, tmp_path: Path) -> None:
    code, _, err = run(capsys, "schedule", tflite, "-o", tmp_path / ("o" * 300 + ".tflite"))
    assert code == 2 and one_error_line(err) and "longer" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["verify", "{m}", "{m}", "--seed", "-1"],
        ["analyze", "{m}", "--dim", "N=99999999999999999999"],
        ["analyze", "{m}", "--dim", "N=０"],
        ["schedule", "{m}", "-o", "{t}/o.onnx", "--time-limit", "nan"],
        ["schedule", "{m}", "-o", "{t}/o.onnx", "--time-limit", "-1"],
        ["schedule", "{m}", "-o", "{t}/o.onnx", "--max-states", "0"],
        ["bench", "{m}", "--time-limit", "inf"],
        ["zoo", "export", "darts_normal_cell", "-o", "{t}/z.onnx", "--seed", "-5"],
    ],
)
def test_bad_option_values_are_one_line_and_exit_2(capsys, onnx_model: Path, tmp_path: Path, argv) -> None:
    args = [a.format(m=onnx_model, t=tmp_path) for a in argv]
    before = snapshot(tmp_path)
    code, _, err = run(capsys, *args)
    assert code == 2 and one_error_line(err), err
    assert "--help" in err or "--dim" in err
    assert snapshot(tmp_path) == before


def test_json_attributes_that_are_a_list(capsys, tmp_path: Path) -> None:
    op = {"name": "A", "type": "R", "inputs": ["x"], "outputs": ["b"], "attributes": [1]}
    p = json_graph(tmp_path, ops=[op])
    code, _, err = run(capsys, "analyze", p)
    assert code == 2 and one_error_line(err) and "attributes" in err and str(p) in err


def test_json_nested_100000_levels_deep(capsys, tmp_path: Path) -> None:
    p = tmp_path / "deep.json"
    p.write_text("[" * 100_000 + "]" * 100_000)
    code, _, err = run(capsys, "analyze", p)
    assert code == 2 and one_error_line(err) and str(p) in err


def test_json_names_that_are_not_strings(capsys, tmp_path: Path) -> None:
    p = json_graph(tmp_path, inputs=[["x"]])
    code, _, err = run(capsys, "analyze", p)
    assert code == 2 and one_error_line(err) and "inputs" in err


def test_huge_dimensions_are_exact_or_refused(capsys, tmp_path: Path) -> None:
    big = [1_000_000, 1_000_000, 10_000_000]  # 4e19 bytes each: past int64
    tensors = [
        {"name": "x", "shape": big, "dtype": "float32"},
        {"name": "a", "shape": big, "dtype": "float32"},
        {"name": "b", "shape": [4], "dtype": "float32"},
        {"name": "c", "shape": big, "dtype": "float32"},
    ]
    ops = [
        {"name": "A", "type": "R", "inputs": ["x"], "outputs": ["a"]},
        {"name": "B", "type": "R", "inputs": ["x"], "outputs": ["b"]},
        {"name": "C", "type": "Add", "inputs": ["a", "b"], "outputs": ["c"]},
    ]
    p = json_graph(tmp_path, tensors=tensors, ops=ops, outputs=["c"])
    code, out, err = run(capsys, "schedule", p, "-o", tmp_path / "o.json", "--json")
    assert code in (0, 2), err
    if code == 0:
        d = json.loads(out)
        assert d["peak_after"] == 2 * 4 * 10**19 + 16  # x, a, b while the later of A, B runs
    else:
        assert one_error_line(err)


# -- 5. messages name the file ----------------------------------------------------------------


def test_verify_of_a_float8_model_names_the_file(capsys, tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT8E4M3FN, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT8E4M3FN, [4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"], name="id")], "f8", [x], [y])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    m.ir_version = 9
    p = tmp_path / "f8.onnx"
    onnx.save(m, p)
    code, _, err = run(capsys, "verify", p, p)
    assert code == 2 and one_error_line(err) and str(p) in err


def test_an_onnxruntime_failure_names_the_file_and_prints_no_log(tmp_path: Path) -> None:
    # Gather with random indices in [0, 4) into an axis of 2: onnxruntime fails while running.
    data = numpy_helper.from_array(np.ones((2, 3), np.float32), "data")
    idx = helper.make_tensor_value_info("idx", TensorProto.INT64, [5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 3])
    gather = helper.make_node("Gather", ["data", "idx"], ["y"], name="g")
    graph = helper.make_graph([gather], "g", [idx], [y], [data])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    p = tmp_path / "gather.onnx"
    onnx.save(m, p)
    r = subprocess.run([*SERENITY, "verify", str(p), str(p)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and one_error_line(r.stderr), r.stderr
    assert str(p) in r.stderr and "\x1b[" not in r.stderr


# -- 6. schema holes --------------------------------------------------------------------------


def test_json_constant_must_be_a_boolean(capsys, tmp_path: Path) -> None:
    tensors = [
        {"name": "x", "shape": [4], "dtype": "int8"},
        {"name": "w", "shape": [4096], "dtype": "int8", "constant": "no"},
        {"name": "a", "shape": [8], "dtype": "int8"},
        {"name": "b", "shape": [2], "dtype": "int8"},
    ]
    code, _, err = run(capsys, "analyze", json_graph(tmp_path, tensors=tensors))
    assert code == 2 and one_error_line(err) and "'constant'" in err


def test_json_version_true_is_not_1(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "analyze", json_graph(tmp_path, version=True))
    assert code == 2 and one_error_line(err) and "version" in err


def test_json_listed_out_of_order_is_accepted_and_reported(capsys, tmp_path: Path) -> None:
    ops = [
        {"name": "B", "type": "R", "inputs": ["a"], "outputs": ["b"]},
        {"name": "A", "type": "R", "inputs": ["x", "w"], "outputs": ["a"]},
    ]
    p = json_graph(tmp_path, ops=ops)
    code, out, _ = run(capsys, "analyze", p, "--order", "all", "--json")
    d = json.loads(out)
    assert code == 0 and d["peak_bytes"] is None and "before op 'A'" in d["listed_order_invalid"]
    assert d["methods"]["optimal"]["peak_bytes"] == 12 and d["methods"]["optimal"]["proven_optimal"]
    code, out, _ = run(capsys, "analyze", p)
    assert code == 0 and "invalid order" in out
    code, out, _ = run(capsys, "schedule", p, "-o", tmp_path / "o.json", "--json")
    d = json.loads(out)
    assert code == 0 and d["peak_before"] is None and d["peak_after"] == 12 and d["listed_order_invalid"]
    written = json.loads((tmp_path / "o.json").read_text())
    assert [o["name"] for o in written["ops"]] == ["A", "B"]


# -- 7. graph-only ONNX models ----------------------------------------------------------------


def test_graph_only_onnx_is_scheduled_with_a_warning_and_verify_refuses(capsys, tmp_path: Path) -> None:
    model = external_model(tmp_path / "m")
    (model.parent / "w.bin").unlink()  # weights stripped: only the architecture is shared
    code, out, err = run(capsys, "analyze", model, "--json")
    assert code == 0 and json.loads(out)["peak_bytes"] > 0
    assert one_error_line(err) and "warning" in err and "w.bin" in err
    out_dir = tmp_path / "o"
    out_dir.mkdir()
    code, _, err = run(capsys, "schedule", model, "-o", out_dir / "s.onnx", "--json")
    assert code == 0 and one_error_line(err)
    written = onnx.load(out_dir / "s.onnx", load_external_data=False)
    locations = {e.value for t in written.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"w.bin"} and sorted(p.name for p in out_dir.iterdir()) == ["s.onnx"]
    code, _, err = run(capsys, "verify", model, out_dir / "s.onnx")
    assert code == 2 and "verify needs the weights" in err


def test_escaping_references_stay_refused_even_without_data(capsys, tmp_path: Path) -> None:
    model = tmp_path / "m" / "b.onnx"
    model.parent.mkdir()
    model.write_bytes(G.point_weights_at(G.branchy(), "../gone.bin").SerializeToString())
    code, _, err = run(capsys, "analyze", model)
    assert code == 2 and one_error_line(err) and "outside" in err


def test_copied_external_data_is_removed_when_the_model_cannot_be_written(capsys, tmp_path: Path) -> None:
    model = external_model(tmp_path / "m")
    out_dir = tmp_path / "o"
    out_dir.mkdir()
    (out_dir / "w.bin").mkdir()  # the data copy cannot go there: nothing may be left behind
    code, _, err = run(capsys, "schedule", model, "-o", out_dir / "s.onnx")
    assert code == 2 and one_error_line(err)
    assert sorted(p.name for p in out_dir.iterdir()) == ["w.bin"] and not any((out_dir / "w.bin").iterdir())


# -- Ctrl-C -----------------------------------------------------------------------------------


def _slow_graph(path: Path, n: int = 100, window: int = 24, seed: int = 0) -> None:
    """A random layered DAG whose exact search takes many seconds without a limit."""
    rng = np.random.default_rng(seed)
    tensors = [{"name": "x", "shape": [64], "dtype": "int8"}]
    ops = []
    for i in range(n):
        k = int(rng.integers(1, 3))
        srcs = sorted({f"t{int(j)}" for j in rng.integers(max(0, i - window), i, k)}) if i else ["x"]
        tensors.append({"name": f"t{i}", "shape": [int(rng.integers(1, 64)) * 64], "dtype": "int8"})
        ops.append({"name": f"op{i}", "type": "R", "inputs": srcs, "outputs": [f"t{i}"]})
    read = {s for o in ops for s in o["inputs"]}
    outs = [t["name"] for t in tensors[1:] if t["name"] not in read]
    path.write_text(json.dumps({"format": "serenity-graph", "version": 1, "tensors": tensors, "ops": ops,
                                "inputs": ["x"], "outputs": outs}))  # fmt: skip


@pytest.mark.parametrize("delay", [0.05, 0.15, 0.6, 3.0])
def test_ctrl_c_at_any_moment_prints_one_line_and_exits_130(tmp_path: Path, delay: float) -> None:
    src = tmp_path / "g.json"
    _slow_graph(src)
    out = tmp_path / "o.json"
    proc = subprocess.Popen(
        [*SERENITY, "schedule", str(src), "-o", str(out), "--max-states", "100000000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    time.sleep(delay)
    if proc.poll() is not None:
        pytest.fail(f"the search ended before Ctrl-C: {proc.communicate()}")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == "serenity: interrupted", err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.json"]
