"""``serenity batch``: the same rows from one process, a spawn pool and Ray; failures stay in their row."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serenity import zoo
from serenity.batch import COLUMNS, BatchOptions, run_local, run_ray, same_rows, schedule_file
from serenity.cli import main

EXAMPLES = sorted(str(p) for p in (Path(__file__).parents[1] / "examples").glob("*.tflite"))
ZOO = ("darts_normal_cell", "darts_reduction_cell", "swiftnet_cell_a", "amoebanet_a_normal_cell")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A few small zoo networks as ONNX files, a corrupt file, then the example .tflite files."""
    folder = tmp_path_factory.mktemp("batch")
    paths = []
    for name in ZOO:
        path = folder / f"{name}.onnx"
        path.write_bytes(zoo.build(name).SerializeToString())
        paths.append(str(path))
    bad = folder / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07 this is not a protobuf")
    return [*paths, str(bad), *EXAMPLES]


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    """One local Ray instance for the module (starting one takes seconds)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_rows_are_identical_with_one_worker_two_workers_and_ray(models: list[str], ray_local: Any) -> None:
    options = BatchOptions()
    one = run_local(models, options, workers=1)
    two = run_local(models, options, workers=2)
    on_ray = run_ray(models, options)
    assert ray_local.is_initialized()  # a Ray it did not start is left running
    assert [r.model for r in one] == models  # input order, whatever order the tasks finished in
    assert same_rows(one, two) and same_rows(one, on_ray)
    for r in one:
        if r.model.endswith("corrupt.onnx"):
            assert r.error and "\n" not in r.error and r.peak_after is None
            continue
        assert r.error is None and r.method == "auto"
        assert r.peak_after is not None and r.lower_bound is not None and r.peak_before is not None
        # The default method proves these small graphs; an optimal order never loses to the listed one.
        assert r.proven_optimal and r.lower_bound == r.peak_after <= r.peak_before


def test_row_agrees_with_serenity_schedule(
    models: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = models[2]  # swiftnet_cell_a: its listed order is not optimal
    code, out, _ = _run(["schedule", src, "-o", str(tmp_path / "s.onnx"), "--json"], capsys)
    assert code == 0
    want = json.loads(out)
    row = schedule_file(src, BatchOptions())
    assert row.peak_before is not None and row.peak_after is not None
    assert row.peak_after < row.peak_before
    got = row.as_dict()
    for key in ("peak_before", "peak_after", "lower_bound", "proven_optimal", "method"):
        assert got[key] == want[key], key


def test_inplace_memory_model_never_raises_a_peak(models: list[str]) -> None:
    paths = [m for m in models if not m.endswith("corrupt.onnx")][:3]
    tflm = run_local(paths, BatchOptions(memory_model="tflm"))
    inplace = run_local(paths, BatchOptions(memory_model="inplace"))
    for a, b in zip(tflm, inplace, strict=True):
        assert a.peak_after is not None and b.peak_after is not None
        assert b.peak_after <= a.peak_after


def test_json_shape_and_failures_counted(models: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["batch", "--json", *models], capsys)
    assert code == 0  # the batch ran; the corrupt file failed in its row only
    doc = json.loads(out)
    assert list(doc) == ["results"]
    rows = doc["results"]
    assert [r["model"] for r in rows] == models
    assert all(list(r) == list(COLUMNS) for r in rows)
    failed = [r for r in rows if r["error"]]
    assert [r["model"] for r in failed] == [m for m in models if m.endswith("corrupt.onnx")]
    assert "corrupt.onnx" in failed[0]["error"] and "\n" not in failed[0]["error"]
    assert f"1 of {len(models)} models failed" in err


def test_cli_ray_gives_the_same_rows(
    models: list[str], ray_local: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # `--ray MODEL ...`: argparse hands the first model to --ray; it is taken back as a model.
    code, out, _ = _run(["batch", "--ray", *models[:3], "--json"], capsys)
    assert code == 0
    got = json.loads(out)["results"]
    code, out, _ = _run(["batch", "--workers", "2", *models[:3], "--json"], capsys)
    assert code == 0
    want = json.loads(out)["results"]
    for r in [*got, *want]:
        r.pop("seconds")
    assert got == want and [r["model"] for r in got] == models[:3]


def test_csv_is_written(models: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_csv = tmp_path / "rows.csv"
    code, out, err = _run(["batch", *models[3:6], "--csv", str(out_csv)], capsys)
    assert code == 0 and "Batch" in out and f"written: {out_csv}" in err
    assert "failed: " in out  # the corrupt file's error, below the table
    with out_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == models[3:6]
    assert list(rows[0]) == list(COLUMNS)
    assert rows[1]["error"] and not rows[1]["peak_after"]
    assert rows[0]["proven_optimal"] == "True" and int(rows[0]["peak_after"]) > 0
    assert [p.name for p in tmp_path.iterdir()] == ["rows.csv"]  # no temporary file left


@pytest.mark.parametrize(
    "argv",
    [
        ["batch"],
        ["batch", "--workers", "0", "m.onnx"],
        ["batch", "--workers", "two", "m.onnx"],
        ["batch", "--time-limit", "-1", "m.onnx"],
        ["batch", "--memory-model", "huge", "m.onnx"],
        ["batch", "--workers", "2", "--ray", "auto", "m.onnx"],
        ["batch", "m.onnx", "--csv", "/no/such/folder/rows.csv"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(argv, capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "error" in err


def test_csv_must_not_overwrite_a_model(models: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["batch", models[0], "--csv", models[0]], capsys)
    assert code == 2 and "would overwrite the input" in err


def test_ray_missing_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    code, out, err = _run(["batch", "--ray", "m.onnx"], capsys)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["serenity: error: --ray needs Ray: pip install 'serenity-sched[ray]'"]
