"""Fuzzing the three readers through the command line: random bytes, truncations and mutations of
real files. Whatever the bytes, ``analyze`` and ``schedule`` exit 0 or 2 (never 3, never a
traceback), a refusal is one line naming the file, and the input is never changed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import onnx_graphs as G
from serenity.cli import main
from serenity.formats.json_io import to_dict
from serenity.formats.tflite_io import load_tflite

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _seeds() -> dict[str, bytes]:
    tflite = (EXAMPLES / "nas_cells_int8.tflite").read_bytes()
    graph = load_tflite(EXAMPLES / "fan_concat_int8.tflite").graph
    return {
        ".tflite": tflite,
        ".onnx": G.branchy().SerializeToString(),
        ".json": json.dumps(to_dict(graph)).encode(),
    }


SEEDS = _seeds()


@st.composite
def corrupted(draw: st.DrawFn, suffix: str) -> bytes:
    """Random bytes, a truncation, or a few byte mutations of a real file."""
    seed = SEEDS[suffix]
    kind = draw(st.sampled_from(["random", "truncate", "mutate", "mutate_header"]))
    if kind == "random":
        return draw(st.binary(max_size=4096))
    if kind == "truncate":
        return seed[: draw(st.integers(0, len(seed) - 1))]
    data = bytearray(seed)
    top = min(len(data), 64) if kind == "mutate_header" else len(data)
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, top - 1))] = draw(st.integers(0, 255))
    return bytes(data)


def _check(capsys: pytest.CaptureFixture[str], folder: Path, suffix: str, data: bytes) -> None:
    path = folder / f"fuzz{suffix}"
    path.write_bytes(data)
    out = folder / f"out{suffix}"
    schedule = ["schedule", str(path), "-o", str(out), "--time-limit", "1"]
    commands = (["analyze", str(path), "--json"], schedule)
    for argv in commands:
        code = main(argv)
        _, err = capsys.readouterr()
        assert code in (0, 2), f"{argv[0]} exited {code}: {err}"
        assert "Traceback" not in err and "internal error" not in err, err
        if code == 2:
            lines = [line for line in err.splitlines() if line.strip() and "warning" not in line]
            assert len(lines) == 1 and str(path) in lines[0], err
        assert path.read_bytes() == data, "the input was changed"
    out.unlink(missing_ok=True)
    leftovers = sorted(p.name for p in folder.iterdir() if p.name != path.name)
    assert leftovers == [], leftovers


FUZZ = settings(
    max_examples=int(os.environ.get("SERENITY_FUZZ_EXAMPLES", "150")),
    deadline=None,
    derandomize="SERENITY_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("suffix", sorted(SEEDS))
def test_readers_never_crash_on_corrupt_input(capsys, tmp_path_factory, suffix: str) -> None:
    @FUZZ
    @given(data=corrupted(suffix))
    def fuzz(data: bytes) -> None:
        _check(capsys, tmp_path_factory.mktemp("fuzz"), suffix, data)

    fuzz()


def test_seed_files_are_valid(capsys, tmp_path: Path) -> None:
    """The unmutated seeds load and schedule (so the fuzz starts from real files)."""
    for suffix, data in SEEDS.items():
        path = tmp_path / f"seed{suffix}"
        path.write_bytes(data)
        assert main(["analyze", str(path), "--json"]) == 0, capsys.readouterr().err
        capsys.readouterr()
    assert onnx.load_from_string(SEEDS[".onnx"]).graph.node
