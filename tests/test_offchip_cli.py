"""``serenity offchip``: the table, one JSON object, the plot, order files, and bad input (exit 2,
one line on stderr, the model untouched)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from serenity import zoo
from serenity.cli import main
from serenity.formats import load
from serenity.formats.json_io import to_dict
from serenity.planning.offchip import offchip_traffic

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FAN = EXAMPLES / "fan_concat_int8.tflite"


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def cell(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SwiftNet cell C at int8 as a JSON graph: its listed order spills at 32 KiB."""
    path = tmp_path_factory.mktemp("cell") / "cell.json"
    path.write_text(json.dumps(to_dict(zoo.graph("swiftnet_cell_c", element_bytes=1))))
    return path


def test_table_reports_each_budget(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "offchip", FAN, "--sram", "32K,64K,128K")
    assert code == 0, err
    assert "Off-chip traffic: fan_concat_int8.tflite" in out and "16-byte aligned" in out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    assert "does not fit" in rows["32.0 KiB"]
    assert "16.0 KiB" in rows["64.0 KiB"] and "inf" in rows["64.0 KiB"]  # listed 16 KiB -> 0 B
    assert "1.00x" in rows["128.0 KiB"]
    assert "alone needs 57,344 B" in out  # why 32 KiB does not fit, below the table


def test_json_is_one_object_with_every_budget(capsys: pytest.CaptureFixture[str], cell: Path) -> None:
    code, out, err = run(capsys, "offchip", cell, "--sram", "24K,32K,40K,48K", "--json")
    assert code == 0 and err == ""
    d = json.loads(out)
    assert d["model"] == str(cell) and d["memory_model"] == "tflm" and d["order"] == "optimal"
    assert [b["sram"] for b in d["budgets"]] == [24 * 1024, 32 * 1024, 40 * 1024, 48 * 1024]
    no, *fit = d["budgets"]
    assert not no["fits"] and "alone needs" in no["error"] and not no["listed"]["fits"]
    graph = load(cell).graph
    for b in fit:
        listed = b["listed"]
        assert b["fits"] and listed["fits"]
        assert b["traffic"] == b["written"] + b["read"] <= listed["traffic"]
        assert listed["traffic"] == offchip_traffic(graph, graph.listed_order, b["sram"]).traffic
        assert {"peak", "lower_bound", "proven", "spills", "reloads", "chosen", "candidates"} <= set(b)
        assert b["lower_bound"] <= b["traffic"] and listed["peak"] == d["peak_listed"]
        assert b["reduction"] == (round(listed["traffic"] / b["traffic"], 4) if b["traffic"] else 1.0)
    assert fit[0]["reduction"] > 2  # 120 KiB -> 52 KiB at 32 KiB
    assert fit[-1]["traffic"] == 0 and fit[-1]["proven"]  # the optimal peak (42 KiB) fits


def test_exact_and_inplace(capsys: pytest.CaptureFixture[str], cell: Path) -> None:
    code, out, err = run(
        capsys, "offchip", cell, "--sram", "32K,40K", "--exact", "--memory-model", "inplace", "--json"
    )
    assert code == 0, err
    d = json.loads(out)
    assert d["memory_model"] == "inplace"
    for b in d["budgets"]:
        for rec in (b, b["listed"]):
            x = rec["exact"]
            assert x["lower_bound"] <= x["traffic"] <= rec["traffic"]
            assert x["proven"] and x["status"] in ("OPTIMAL", "BOUND")
    code, out, err = run(capsys, "offchip", cell, "--sram", "32K", "--exact")
    assert code == 0 and "exact listed" in out and "exact optimal" in out


def test_order_files(capsys: pytest.CaptureFixture[str], cell: Path, tmp_path: Path) -> None:
    graph = load(cell).graph
    # the JSON graph `serenity schedule -o` writes
    scheduled = tmp_path / "order.json"
    code, _, err = run(capsys, "schedule", cell, "-o", scheduled)
    assert code == 0, err
    code, out, err = run(capsys, "offchip", cell, "--sram", "32K", "--order", scheduled, "--json")
    assert code == 0, err
    b = json.loads(out)["budgets"][0]
    assert json.loads(out)["order"] == "order.json" and "chosen" not in b
    index = {op.name: op.index for op in graph.ops}
    order = [index[op["name"]] for op in json.loads(scheduled.read_text())["ops"]]
    assert b["traffic"] == offchip_traffic(graph, order, 32 * 1024).traffic
    # a list of op names and {"order": [indices]}
    names = tmp_path / "names.json"
    names.write_text(json.dumps([graph.ops[i].name for i in order]))
    indices = tmp_path / "indices.json"
    indices.write_text(json.dumps({"order": order}))
    for path in (names, indices):
        code, out, err = run(capsys, "offchip", cell, "--sram", "32K", "--order", path, "--json")
        assert code == 0, err
        assert json.loads(out)["budgets"][0]["traffic"] == b["traffic"]
    # listed: before == after
    code, out, err = run(capsys, "offchip", cell, "--sram", "32K", "--order", "listed", "--json")
    b = json.loads(out)["budgets"][0]
    assert code == 0 and b["traffic"] == b["listed"]["traffic"] and b["reduction"] == 1.0


def test_plot_writes_a_png_and_leaves_the_model_alone(
    capsys: pytest.CaptureFixture[str], cell: Path, tmp_path: Path
) -> None:
    before = digest(cell)
    png = tmp_path / "traffic.png"
    code, _, err = run(capsys, "offchip", cell, "--sram", "24K,32K,48K", "--plot", png)
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "traffic chart written" in err
    code, _, err = run(capsys, "offchip", cell, "--plot", cell)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "overwrite" in err
    assert digest(cell) == before


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["missing.tflite"], "missing.tflite"),
        ([str(FAN), "--sram", "12Q"], "12Q"),
        ([str(FAN), "--sram", "0"], "byte size"),
        ([str(FAN), "--order", "nowhere.json"], "nowhere.json"),
        ([str(FAN), "--memory-model", "magic"], "magic"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    code, out, err = run(capsys, "offchip", *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("not json", "not a JSON order"),
        ('["no_such_op"]', "no_such_op"),
        ('{"format": "serenity-graph", "ops": [{"name": "ghost"}]}', "ghost"),
        ("reversed", "before"),
    ],
)
def test_bad_order_file_exits_2_naming_it(
    capsys: pytest.CaptureFixture[str], cell: Path, tmp_path: Path, content: str, needle: str
) -> None:
    path = tmp_path / "bad.json"
    if content == "reversed":
        content = json.dumps([op.name for op in reversed(load(cell).graph.ops)])
    path.write_text(content)
    code, _, err = run(capsys, "offchip", cell, "--order", path)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "bad.json" in err and needle in err
