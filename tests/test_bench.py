"""The bench: its columns, its ratios, and optimal never above a baseline."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from serenity import bench
from serenity.bench_report import csv_text, table_rows, write_plot
from serenity.ir import Graph
from serenity.memory import simulate
from serenity.schedulers import BASELINES, SCHEDULERS
from serenity.schedulers.result import ScheduleResult, make_result

SMALL = ["swiftnet_cell_a", "swiftnet_cell_c"]


def _exact_by_downsets(graph: Graph, *, time_limit: float | None = None) -> ScheduleResult:
    """Serenity's DP over downsets, written independently here for graphs of a few dozen ops.

    Stands in for the exact scheduler while none is registered, so the bench's plumbing of an
    ``optimal`` column is tested either way.
    """
    d = graph.dense
    n = d.n_ops
    owner = [set(c) for c in d.consumers]

    def live(done: frozenset[int]) -> int:
        total = sum(d.sizes[t] for t in d.initial if d.pinned[t] or not owner[t] <= done)
        for u in done:
            total += sum(d.sizes[t] for t in d.op_out[u] if d.pinned[t] or not owner[t] <= done)
        return total

    layer: dict[frozenset[int], tuple[int, tuple[int, ...]]] = {frozenset(): (0, ())}
    for _ in range(n):
        nxt: dict[frozenset[int], tuple[int, tuple[int, ...]]] = {}
        for done, (peak, order) in layer.items():
            base = live(done)
            for v in range(n):
                if v in done or not set(d.preds[v]) <= done:
                    continue
                cand = (max(peak, base + sum(d.sizes[t] for t in d.op_out[v])), (*order, v))
                key = done | {v}
                if key not in nxt or cand < nxt[key]:
                    nxt[key] = cand
        layer = nxt
    ((peak, order),) = layer.values()
    assert simulate(graph, order).peak == peak
    return make_result(graph, order, method="optimal", seconds=0.0, lower_bound=peak, proven=True)


@pytest.fixture
def with_optimal(monkeypatch: pytest.MonkeyPatch) -> None:
    if "optimal" not in SCHEDULERS:
        monkeypatch.setitem(SCHEDULERS, "optimal", _exact_by_downsets)


def test_bench_on_two_small_networks(with_optimal: None) -> None:
    report = bench.run_bench(SMALL, time_limit=30)
    assert report.methods[: len(BASELINES)] == list(BASELINES)
    assert "optimal" in report.methods
    assert [r.network for r in report.rows] == SMALL
    for row in report.rows:
        opt = row.runs["optimal"].peak
        assert all(opt <= row.runs[b].peak for b in BASELINES), row.network
        assert row.lower_bound <= opt
        assert row.proven and row.runs["optimal"].proven
    # On these cells the framework's order is not optimal (checked by the independent DP).
    assert any(row.runs["optimal"].peak < row.runs["listed"].peak for row in report.rows)
    assert report.reference == bench.REWRITE
    assert report.vs_listed["optimal"] >= 1.0
    # Rewriting never raises a peak, and the optimal order's peak op is recorded.
    assert report.rewrite_gain is not None and report.rewrite_gain >= 1.0
    for row in report.rows:
        assert row.runs[bench.REWRITE].peak <= row.runs["optimal"].peak
        assert row.runs["optimal"].peak_op
    assert all(v >= 1.0 for v in report.vs_baselines.values())
    # The CSV has one header and one line per network with every method's columns.
    lines = list(csv.DictReader(io.StringIO(csv_text(report))))
    assert [line["network"] for line in lines] == SMALL
    for m in report.methods:
        assert all(f"peak_{m}" in line and f"seconds_{m}" in line for line in lines)
    assert {"lower_bound", "proven", "listed_over_optimal"} <= set(lines[0])
    cols, rows = table_rows(report)
    assert len(cols) == len(rows[0]) and "optimal" in cols
    json.dumps(report.as_dict())


@pytest.mark.parametrize("name", SMALL)
def test_registered_optimal_matches_an_independent_dp(name: str) -> None:
    if "optimal" not in SCHEDULERS:
        pytest.skip("no exact scheduler registered")
    graph, _ = bench.load_zoo_graph(name)
    assert SCHEDULERS["optimal"](graph, time_limit=30).peak == _exact_by_downsets(graph).peak


def test_int8_accounting_divides_every_peak_by_four() -> None:
    f32 = bench.run_bench(["swiftnet_cell_a"], methods=["listed", "greedy"]).rows[0]
    i8 = bench.run_bench(["swiftnet_cell_a"], methods=["listed", "greedy"], element_bytes=1).rows[0]
    assert all(f32.runs[m].peak == 4 * i8.runs[m].peak for m in ("listed", "greedy"))


def test_rewrite_column_lowers_swiftnet() -> None:
    # SwiftNet's cell A peaks at a concatenation feeding convolutions: rewriting lowers it.
    row = bench.run_bench(["swiftnet_cell_a"], methods=["listed", "optimal", bench.REWRITE]).rows[0]
    assert row.runs[bench.REWRITE].peak < row.runs["optimal"].peak
    assert bench.REWRITE in bench.methods_available()


def test_unknown_network_and_method_are_user_errors() -> None:
    from serenity.errors import SerenityError

    with pytest.raises(SerenityError, match="no zoo network"):
        bench.run_bench(["nope"])
    with pytest.raises(SerenityError, match="not registered"):
        bench.run_bench(["swiftnet_cell_a"], methods=["listed", "magic"])


def test_cli_bench_writes_csv_plot_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from serenity.cli import main

    out_csv, out_png = tmp_path / "b.csv", tmp_path / "b.png"
    rc = main(["bench", "--only", "swiftnet_cell_a", "--int8", "--time-limit", "10",
               "--csv", str(out_csv), "--plot", str(out_png), "--json"])  # fmt: skip
    assert rc == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["rows"][0]["network"] == "swiftnet_cell_a" and obj["rows"][0]["element_bytes"] == 1
    assert out_csv.read_text().startswith("network,family,ops,element_bytes,peak_listed")
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_zoo_list_and_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from serenity.cli import main
    from serenity.formats import load

    assert main(["zoo", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["networks"]
    assert any(e["name"] == "darts_imagenet" and e["cells"] == 14 for e in listed)
    out = tmp_path / "cell.onnx"
    assert main(["zoo", "export", "swiftnet_cell_a", "-o", str(out)]) == 0
    assert len(load(out).graph.ops) == 27
    assert main(["zoo", "export", "nope", "-o", str(out)]) == 2


def test_plot_is_written_atomically(tmp_path: Path) -> None:
    report = bench.run_bench(["darts_reduction_cell"], methods=["listed", "dfs"])
    write_plot(report, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]


def test_cli_bench_on_model_files(capsys: pytest.CaptureFixture[str]) -> None:
    from serenity.cli import main

    examples = Path(__file__).resolve().parents[1] / "examples"
    files = [str(examples / "fan_concat_int8.tflite"), str(examples / "inception_block_int8.tflite")]
    assert main(["bench", *files, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    rows = {Path(r["network"]).name: r for r in d["rows"]}
    assert set(rows) == {"fan_concat_int8.tflite", "inception_block_int8.tflite"}
    for r in rows.values():
        assert r["proven"] and r["peaks"]["optimal"] == r["lower_bound"]
        assert all(r["peaks"]["optimal"] <= p for p in r["peaks"].values())
    assert rows["fan_concat_int8.tflite"]["peaks"]["listed"] == 73728  # the converter's order
    assert main(["bench", "no/such/model.onnx"]) == 2


def test_bench_reports_offchip_traffic_per_budget(capsys: pytest.CaptureFixture[str]) -> None:
    from serenity.planning.offchip import offchip_traffic

    report = bench.run_bench(["swiftnet_cell_c"], element_bytes=1, time_limit=10, sram=[32 * 1024, 1 << 20])
    row = report.rows[0]
    small, big = row.traffic[32 * 1024], row.traffic[1 << 20]
    assert big == {"listed": 0, "optimal": 0, "traffic": 0}  # everything fits: nothing moves
    assert small["traffic"] is not None and small["listed"] is not None
    assert 0 < small["traffic"] <= small["listed"]  # the traffic order never loses to the listed one
    g, _ = bench.load_zoo_graph("swiftnet_cell_c", element_bytes=1)
    assert small["listed"] == offchip_traffic(g, g.listed_order, 32 * 1024).traffic
    summary = report.traffic_vs_listed[32 * 1024]
    assert summary["networks"] == 1 and summary["ours"] == small["listed"] / small["traffic"]
    doc = report.as_dict()
    assert doc["traffic_vs_listed"][0]["paper"] == 1.52
    assert doc["rows"][0]["traffic"][0] == {"sram": 32 * 1024, **small}
    assert "traffic_listed_32768" in csv_text(report).splitlines()[0]


def test_cli_bench_sram_and_inplace(capsys: pytest.CaptureFixture[str]) -> None:
    from serenity.cli import main

    assert main(["bench", "--only", "swiftnet_cell_c", "--int8", "--sram", "32K", "--memory-model",
                 "inplace", "--time-limit", "10"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "Off-chip traffic" in out and "inplace memory model" in out and "paper 1.52×" in out
