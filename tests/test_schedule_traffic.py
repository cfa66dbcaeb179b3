"""``serenity schedule --sram SIZE [--objective traffic]`` (issue 11): the off-chip traffic of the
listed and the written order is reported beside the peak, and the traffic objective writes an
order that moves no more than the listed one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from serenity.formats import load
from serenity.ir import with_memory_model
from serenity.planning.offchip import offchip_traffic


@pytest.fixture(scope="module")
def cell(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("traffic") / "swiftnet_cell_c.onnx"
    subprocess.run([sys.executable, "-m", "serenity", "zoo", "export", "swiftnet_cell_c", "-o", str(path)],
                   check=True, capture_output=True)  # fmt: skip
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serenity", *args], capture_output=True, text=True)


@pytest.mark.parametrize("memory_model", ["tflm", "inplace"])
def test_objective_traffic_writes_an_order_that_moves_less(
    cell: Path, tmp_path: Path, memory_model: str
) -> None:
    out = tmp_path / "out.onnx"
    p = run("schedule", str(cell), "-o", str(out), "--sram", "128K", "--objective", "traffic", "--json",
            "--memory-model", memory_model)  # fmt: skip
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    off = doc["offchip"]
    assert doc["memory_model"] == memory_model and off["objective"] == "traffic"
    written = with_memory_model(load(out).graph, memory_model)
    after = offchip_traffic(written, written.listed_order, 128 * 1024)
    assert off["after"] == after.as_dict()  # the file holds the order whose traffic is reported
    assert off["after"]["traffic"] <= off["before"]["traffic"]
    assert off["lower_bound"] <= off["after"]["traffic"]
    if memory_model == "tflm":
        assert off["before"]["traffic"] == 480 * 1024 and off["after"]["traffic"] < off["before"]["traffic"]


def test_sram_alone_reports_the_traffic_of_the_optimal_peak_order(cell: Path, tmp_path: Path) -> None:
    p = run("schedule", str(cell), "-o", str(tmp_path / "o.onnx"), "--sram", "1M", "--json")
    doc = json.loads(p.stdout)
    assert doc["offchip"]["objective"] == "peak" and doc["proven_optimal"]
    assert doc["offchip"]["after"]["traffic"] == 0  # the peak fits: nothing moves
    table = run("schedule", str(cell), "-o", str(tmp_path / "o.onnx"), "--sram", "128K")
    assert "off-chip traffic at 128.0 KiB" in table.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--objective", "traffic"], "--objective traffic needs --sram"),
        (["--sram", "12Q"], "is not a byte size"),
        (["--sram", "128K", "--objective", "traffic", "--embed-plan"], "--embed-plan"),
    ],
)
def test_bad_traffic_options_are_one_line_errors(
    cell: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    before = cell.read_bytes()
    out = tmp_path / ("o.tflite" if "--embed-plan" in args else "o.onnx")
    p = run("schedule", str(cell), "-o", str(out), *args)
    assert p.returncode == 2 and message in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not out.exists() and cell.read_bytes() == before


def test_a_budget_no_op_fits_is_reported_not_fatal(cell: Path, tmp_path: Path) -> None:
    p = run("schedule", str(cell), "-o", str(tmp_path / "o.onnx"), "--sram", "1K", "--objective", "traffic",
            "--json")  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "alone needs" in json.loads(p.stdout)["offchip"]["error"]
