"""``serenity optimize`` end to end on real files, and ``verify`` of rewritten graphs."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from serenity import zoo
from serenity.cli import main
from serenity.formats import load
from serenity.verify import verify

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NAS_FLOAT = EXAMPLES / "nas_cells_float.tflite"
NAS_INT8 = EXAMPLES / "nas_cells_int8.tflite"


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def optimize_json(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> dict:
    code, out, err = run(capsys, "optimize", *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_nas_cells_float_goes_below_its_proven_optimum(capsys, tmp_path: Path) -> None:
    out = tmp_path / "opt.tflite"
    d = optimize_json(capsys, NAS_FLOAT, "-o", out, "--embed-plan")
    assert d["peak_scheduled"] == 331_776 and d["proven_optimal_scheduled"]
    assert d["peak_rewritten"] < d["peak_scheduled"] and d["proven_optimal_rewritten"]
    assert d["ops_after"] > d["ops_before"] and d["rewrites"]
    assert all(s["peak_after"] < s["peak_before"] for s in d["steps"])
    # TFLite Micro allocates exactly the new peak, and computes the same outputs.
    assert d["tflm_arena_after"] == d["peak_rewritten"] < d["tflm_arena_before"]
    rep = verify(NAS_FLOAT, out)
    assert rep.ok and rep.relation == "rewritten" and not rep.structure_equal
    assert rep.plan_honoured and rep.arena_reordered == d["peak_rewritten"]
    assert 0 < rep.max_abs_diff < 1e-4
    # Every considered match has an outcome and a reason.
    assert {c["status"] for c in d["considered"]} >= {"applied"}
    assert all(c["reason"] for c in d["considered"])


def test_explain_table_and_verify_cli(capsys, tmp_path: Path) -> None:
    out = tmp_path / "opt.tflite"
    code, text, err = run(capsys, "optimize", NAS_FLOAT, "-o", out, "--explain")
    assert code == 0, err
    assert "Matches considered" in text and "applied" in text and "no gain" in text
    assert "peak, rewritten" in text
    code, text, _ = run(capsys, "verify", NAS_FLOAT, out)
    assert code == 0 and "rewritten graph (not a reordering)" in text


def test_no_rewrite_is_a_reordering(capsys, tmp_path: Path) -> None:
    out = tmp_path / "opt.tflite"
    d = optimize_json(capsys, NAS_FLOAT, "-o", out, "--no-rewrite")
    assert not d["rewritten"] and d["ops_after"] == d["ops_before"]
    assert d["peak_rewritten"] == d["peak_scheduled"]
    rep = verify(NAS_FLOAT, out)
    assert rep.ok and rep.relation == "reordering" and rep.outputs_identical


def test_int8_channel_split_needs_allow_requantize(capsys, tmp_path: Path) -> None:
    out = tmp_path / "opt.tflite"
    d = optimize_json(capsys, NAS_INT8, "-o", out)
    assert not any(rw["kind"] == "channel" for rw in d["rewrites"])
    rejected = [c for c in d["considered"] if c["status"] == "rejected"]
    assert rejected and all("--allow-requantize" in c["reason"] for c in rejected)
    d = optimize_json(capsys, NAS_INT8, "-o", out, "--allow-requantize", "--seed", "3")
    assert any(rw["kind"] == "channel" for rw in d["rewrites"])
    assert d["peak_rewritten"] < d["peak_scheduled"]
    diff = d["requantize_max_abs_diff"]
    assert 0 <= diff <= 4  # int8 steps: rounding moved into the partial sums
    if diff:  # a requantized file is not bit-identical, so verify needs a tolerance
        assert not verify(NAS_INT8, out, seed=3).ok
    assert verify(NAS_INT8, out, seed=3, atol=diff).ok


def test_int8_kernel_wise_is_bit_identical(tmp_path: Path) -> None:
    from serenity.formats import dialect_for
    from serenity.formats.tflite_io import save_tflite
    from serenity.rewrites.passes import kernel_split

    model = load(NAS_INT8)
    r = kernel_split(model.graph, dialect_for(model))
    assert r.modified
    rewritten = dialect_for(model).materialize(r.applied)
    out = tmp_path / "kw.tflite"
    save_tflite(rewritten, rewritten.graph.listed_order, out)
    rep = verify(NAS_INT8, out)
    assert rep.ok and rep.relation == "rewritten" and rep.outputs_identical


def test_onnx_zoo_cell_in_onnxruntime(capsys, tmp_path: Path) -> None:
    src, out = tmp_path / "cell.onnx", tmp_path / "opt.onnx"
    onnx.save(zoo.build("swiftnet_cell_a"), src)
    d = optimize_json(capsys, src, "-o", out)
    assert d["peak_rewritten"] < d["peak_scheduled"] and d["alignment"] == 1
    rep = verify(src, out)
    assert rep.ok and rep.relation == "rewritten" and rep.runtime == "onnxruntime"


def test_nothing_is_rewritten_where_it_does_not_pay(capsys, tmp_path: Path) -> None:
    out = tmp_path / "opt.tflite"
    d = optimize_json(capsys, EXAMPLES / "fan_concat_float.tflite", "-o", out, "--tiles", "off")
    assert not d["rewritten"] and d["ops_after"] == d["ops_before"]
    assert d["considered"] and {c["status"] for c in d["considered"]} <= {"no gain", "rejected"}


def test_bad_input_is_one_line_exit_2(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "optimize", NAS_FLOAT, "-o", NAS_FLOAT)
    assert code == 2 and err.count("\n") == 1 and "overwrite" in err
    code, _, err = run(capsys, "optimize", NAS_FLOAT, "-o", tmp_path / "x.onnx")
    assert code == 2 and "format" in err
    js = tmp_path / "g.json"
    from serenity.formats.json_io import to_dict

    js.write_text(json.dumps(to_dict(load(NAS_FLOAT).graph)))
    code, _, err = run(capsys, "optimize", js, "-o", tmp_path / "o.json")
    assert code == 2 and "no weights to rewrite" in err and str(js) in err
    code, _, err = run(capsys, "optimize", js, "-o", tmp_path / "o.json", "--no-rewrite")
    assert code == 0, err
