"""``serenity optimize --tiles`` (issue 12): patch-based execution chosen by proven peak within a
MAC budget, written so the model's own runtime runs it unchanged with identical outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from serenity import zoo
from serenity.formats import load, spatial_dialect_for
from serenity.rewrites.tiling import TilingError, plan_tiles, tiled_graph
from serenity.rewrites.tiling_search import parse_tiles
from serenity.verify import verify

ROOT = Path(__file__).resolve().parents[1]
_SHARED = ROOT.parent / "shared" / "models" / "stem"
STEM = _SHARED if _SHARED.is_dir() else ROOT / "examples" / "stem"


def optimize(*args: str | Path) -> tuple[int, dict, str]:
    p = subprocess.run([sys.executable, "-m", "serenity", "optimize", *map(str, args), "--json"],
                       capture_output=True, text=True)  # fmt: skip
    return p.returncode, (json.loads(p.stdout) if p.returncode == 0 else {}), p.stderr


@pytest.mark.parametrize("kind", ["int8", "float"])
def test_stem_runs_bit_identical_in_tflm_with_a_third_of_the_arena(kind: str, tmp_path: Path) -> None:
    src, out = STEM / f"mobilenet_v2_035_96_{kind}.tflite", tmp_path / "tiled.tflite"
    code, d, err = optimize(src, "-o", out, "--embed-plan")  # --tiles auto, at most 20 % extra MACs
    assert code == 0, err
    t = d["tiling"]
    assert t["applied"] and t["overhead"] <= 0.20 and len(t["stages"]) == 2
    assert d["tflm_arena_after"] * 3 <= d["tflm_arena_before"]  # the target: >= 3x lower
    rep = verify(src, out)
    assert rep.ok and rep.relation == "rewritten" and rep.outputs_identical and rep.plan_honoured


def test_resnet18_in_onnxruntime(tmp_path: Path) -> None:
    src, out = tmp_path / "r18.onnx", tmp_path / "r18.tiled.onnx"
    onnx.save(zoo.build("resnet18"), src)
    code, d, err = optimize(src, "-o", out, "--tiles", "3x3")
    assert code == 0, err
    assert d["peak_scheduled"] >= 2.5 * d["peak_rewritten"] and d["tiling"]["overhead"] <= 0.2
    onnx.checker.check_model(onnx.load(out), full_check=True)
    rep = verify(src, out)
    assert rep.ok and rep.runtime == "onnxruntime" and rep.max_abs_diff <= 1e-6


def test_irregular_cell_keeps_its_peak(tmp_path: Path) -> None:
    src = tmp_path / "cell.onnx"
    onnx.save(zoo.build("swiftnet_cell_a"), src)
    _, off, _ = optimize(src, "-o", tmp_path / "off.onnx", "--tiles", "off")
    _, auto, _ = optimize(src, "-o", tmp_path / "auto.onnx", "--explain")
    assert auto["peak_rewritten"] <= off["peak_rewritten"]
    assert off["tiling"] is None and "candidates" in auto["tiling"]


def test_no_budget_no_tiling(tmp_path: Path) -> None:
    src = STEM / "mobilenet_v2_035_96_int8.tflite"
    code, d, err = optimize(src, "-o", tmp_path / "o.tflite", "--max-overhead", "0", "--tiles", "4x4")
    assert code == 0, err
    assert not d["tiling"]["applied"] and d["ops_after"] == d["ops_before"]


@pytest.mark.parametrize(
    "args, message",
    [(["--tiles", "0x3"], "is not a tile grid"), (["--tiles", "big"], "is not a tile grid"),
     (["--max-overhead", "-5"], "is not a percentage")],
)  # fmt: skip
def test_bad_options_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    src = STEM / "mobilenet_v2_035_96_int8.tflite"
    out = tmp_path / "o.tflite"
    code, _, err = optimize(src, "-o", out, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and not out.exists()


def test_a_json_graph_has_nothing_to_tile(tmp_path: Path) -> None:
    from serenity.formats.json_io import to_dict

    g = zoo.graph("swiftnet_cell_c")
    src = tmp_path / "g.json"
    src.write_text(json.dumps(to_dict(g)))
    code, _, err = optimize(src, "-o", tmp_path / "o.json", "--tiles", "2x2")
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(src) in err


def test_second_stage_reads_the_first_split_whole() -> None:
    model = load(STEM / "mobilenet_v2_035_96_int8.tflite")
    d = spatial_dialect_for(model)
    g = model.graph
    first = g.ops[5].outputs[0]
    p1 = plan_tiles(g, d, first, (3, 3))
    g1 = tiled_graph(g, p1, d)
    second = g.ops[9].outputs[0]
    p2 = plan_tiles(g1, d, second, (2, 2), start={first})
    assert {g1.ops[k].outputs[0] for k in p2.prefix}.isdisjoint({s.output for s in p1.steps})
    assert all(ti.source == first for s in p2.steps for ti in s.inputs if ti.tensor == first)
    with pytest.raises(TilingError, match="where the patch stage starts"):
        plan_tiles(g1, d, first, (2, 2), start={first})


def test_parse_tiles() -> None:
    assert parse_tiles("auto") == "auto" and parse_tiles("OFF") == "off" and parse_tiles("4x2") == (4, 2)
    for bad in ("1x1", "x", "3", "2x0", "-1x2"):
        with pytest.raises(ValueError):
            parse_tiles(bad)
