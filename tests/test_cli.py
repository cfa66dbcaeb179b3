"""The command line: JSON keys, tables, exit codes, and one test per kind of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

import onnx_graphs as G
from serenity.cli import main
from serenity.formats.json_io import to_dict
from serenity.ir import Graph, Op, Tensor


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def branchy(tmp_path: Path) -> Path:
    p = tmp_path / "branchy.onnx"
    onnx.save(G.branchy(), p)
    return p


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_analyze_json_and_table(capsys, branchy: Path) -> None:
    code, out, _ = run(capsys, "analyze", str(branchy), "--order", "all", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["ops"] == 8 and d["peak_bytes"] == 6144 and set(d["methods"]) >= {"listed", "bfs", "greedy"}
    code, out, _ = run(capsys, "analyze", str(branchy), "--order", "bfs,greedy")
    assert code == 0 and "Peak by order" in out and "greedy" in out


def test_analyze_plot(capsys, branchy: Path, tmp_path: Path) -> None:
    png = tmp_path / "tl.png"
    code, _, _ = run(capsys, "analyze", str(branchy), "--order", "greedy", "--plot", str(png))
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_schedule_and_verify(capsys, branchy: Path, tmp_path: Path) -> None:
    out_path = tmp_path / "out.onnx"
    code, out, _ = run(capsys, "schedule", str(branchy), "-o", str(out_path), "--json")
    assert code == 0
    d = json.loads(out)
    assert {"method", "peak_before", "peak_after", "lower_bound", "proven_optimal", "seconds"} <= set(d)
    assert d["peak_after"] <= d["peak_before"]
    code, out, _ = run(capsys, "verify", str(branchy), str(out_path), "--json")
    assert code == 0 and json.loads(out)["outputs_identical"] is True
    code, out, _ = run(capsys, "verify", str(branchy), str(out_path))
    assert code == 0 and "identical" in out


def test_verify_fails_with_exit_1_on_a_different_model(capsys, branchy: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.onnx"
    onnx.save(G.branchy(seed=9), other)
    code, out, _ = run(capsys, "verify", str(branchy), str(other), "--json")
    assert code == 1 and json.loads(out)["ok"] is False


def test_json_graph_format_round_trip(capsys, tmp_path: Path) -> None:
    g = Graph(
        "j",
        [Op("A", "R", ("x",), ("a",)), Op("B", "R", ("x",), ("b",)), Op("C", "Add", ("a", "b"), ("c",))],
        [
            Tensor("x", (10,), "int8", 10),
            Tensor("a", (20,), "int8", 20),
            Tensor("b", (30,), "int8", 30),
            Tensor("c", (5,), "int8", 5),
        ],
        ["x"],
        ["c"],
    )
    src = tmp_path / "g.json"
    src.write_text(json.dumps(to_dict(g)))
    code, out, _ = run(
        capsys, "schedule", str(src), "-o", str(tmp_path / "g2.json"), "--method", "bfs", "--json"
    )
    assert code == 0 and json.loads(out)["peak_after"] == 60
    code, out, _ = run(capsys, "verify", str(src), str(tmp_path / "g2.json"), "--json")
    assert code == 0 and json.loads(out)["runtime"] == "none"


# -- bad input: one line on stderr naming the file and problem, exit 2, nothing written --------


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    data = G.branchy().SerializeToString()
    cases: dict[str, tuple[Path, str]] = {}
    p = tmp_path / "truncated.onnx"
    p.write_bytes(data[: len(data) // 2])
    cases["truncated"] = (p, "truncated.onnx")
    p = tmp_path / "corrupt.onnx"
    p.write_bytes(b"\xff" * 64)
    cases["corrupt"] = (p, "not a valid ONNX file")
    cyc = G.branchy()
    cyc.graph.node[0].input[0] = "y"
    p = tmp_path / "cycle.onnx"
    p.write_bytes(cyc.SerializeToString())
    cases["cycle"] = (p, "graph has a cycle: conv -> ")
    undef = G.branchy()
    undef.graph.node[1].input[0] = "ghost"
    p = tmp_path / "undefined.onnx"
    p.write_bytes(undef.SerializeToString())
    cases["undefined"] = (p, "ghost")
    p = tmp_path / "symbolic.onnx"
    onnx.save(G.symbolic(), p)
    cases["symbolic"] = (p, "--dim N=VALUE")
    p = tmp_path / "strings.onnx"
    onnx.save(G.strings(), p)
    cases["dtype"] = (p, "unsupported element type STRING")
    ext = G.point_weights_at(G.branchy(), "../outside.bin")
    (tmp_path / "outside.bin").write_bytes(b"\0" * 1024)
    sub = tmp_path / "sub"
    sub.mkdir()
    p = sub / "escape.onnx"
    p.write_bytes(ext.SerializeToString())
    cases["external"] = (p, "outside the model's folder")
    p = tmp_path / "missing.onnx"
    cases["missing"] = (p, "no such file")
    p = tmp_path / "model.txt"
    p.write_text("hello")
    cases["suffix"] = (p, "unknown model format")
    p = tmp_path / "badjson.json"
    p.write_text("{not json")
    cases["json"] = (p, "not a valid JSON graph")
    return cases


@pytest.mark.parametrize(
    "case",
    [
        "truncated",
        "corrupt",
        "cycle",
        "undefined",
        "symbolic",
        "dtype",
        "external",
        "missing",
        "suffix",
        "json",
    ],
)
def test_bad_input_gives_one_line_exit_2_and_no_output(capsys, tmp_path: Path, case: str) -> None:
    path, needle = _bad_files(tmp_path)[case]
    folder = path.parent
    before = set(p.name for p in folder.iterdir())
    out_path = folder / f"out{path.suffix}"
    for argv in (["analyze", str(path)], ["schedule", str(path), "-o", str(out_path)]):
        code, _, err = run(capsys, *argv)
        assert code == 2, (case, argv, err)
        assert err.count("\n") == 1 and needle in err, err
        assert str(path.name) in err or case in ("corrupt",), err
        assert not out_path.exists()
        assert set(p.name for p in folder.iterdir()) == before  # no temp files left either


def test_symbolic_dims_are_fixed_with_dim(capsys, tmp_path: Path) -> None:
    p = tmp_path / "s.onnx"
    onnx.save(G.symbolic(), p)
    code, out, _ = run(capsys, "analyze", str(p), "--dim", "N=4", "--json")
    assert code == 0 and json.loads(out)["peak_bytes"] == 2 * 4 * 3 * 4
    code, _, err = run(capsys, "analyze", str(p), "--dim", "N=x")
    assert code == 2 and "--dim" in err
    code, _, err = run(capsys, "analyze", str(p), "--dim", "M=3")
    assert code == 2 and "M" in err


def test_output_over_input_is_refused_unless_in_place(capsys, branchy: Path) -> None:
    original = branchy.read_bytes()
    code, _, err = run(capsys, "schedule", str(branchy), "-o", str(branchy))
    assert code == 2 and "--in-place" in err and branchy.read_bytes() == original
    code, _, _ = run(capsys, "schedule", str(branchy), "-o", str(branchy), "--in-place", "--json")
    assert code == 0


def test_usage_errors_exit_2(capsys, branchy: Path, tmp_path: Path) -> None:
    code, _, err = run(capsys, "schedule", str(branchy), "-o", str(tmp_path / "x.onnx"), "--method", "nope")
    assert code == 2 and "unknown" in err and not (tmp_path / "x.onnx").exists()
    code, _, err = run(capsys, "schedule", str(branchy), "-o", str(tmp_path / "x.tflite"))
    assert code == 2 and "format" in err
    code, _, err = run(capsys, "analyze")
    assert code == 2 and err.count("\n") == 1 and "--help" in err


def test_entry_point_help_on_every_command() -> None:
    for cmd in ([], ["analyze"], ["schedule"], ["verify"]):
        r = subprocess.run(
            [sys.executable, "-m", "serenity.cli", *cmd, "--help"], capture_output=True, text=True
        )
        assert r.returncode == 0 and "usage:" in r.stdout


def test_outputs_get_the_umask_mode_not_mkstemps_0600(capsys, branchy: Path, tmp_path: Path) -> None:
    import os
    import stat

    out_path = tmp_path / "mode.onnx"
    old = os.umask(0o022)
    try:
        assert run(capsys, "schedule", str(branchy), "-o", str(out_path), "--json")[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out_path.stat().st_mode) == 0o644


def test_exact_search_caps_report_unproven_and_still_write(capsys, tmp_path: Path) -> None:
    from serenity import zoo

    src = tmp_path / "rw.onnx"
    onnx.save(zoo.build("randwire_ws_stage"), src)
    for flags in (["--max-states", "50"], ["--time-limit", "0"]):
        out_path = tmp_path / f"capped{flags[0]}.onnx"
        code, out, _ = run(capsys, "schedule", str(src), "-o", str(out_path), "--json", *flags)
        d = json.loads(out)
        assert code == 0 and out_path.exists()
        assert d["proven_optimal"] is False and d["stats"]["stopped"]
        assert d["lower_bound"] < d["peak_after"] <= d["peak_before"]
    code, out, _ = run(capsys, "schedule", str(src), "-o", str(tmp_path / "full.onnx"), "--json")
    d = json.loads(out)
    assert d["proven_optimal"] is True and d["peak_after"] == d["lower_bound"] < d["peak_before"]
