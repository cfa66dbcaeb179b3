"""The command line reads and writes ``torch.export`` programs (``.pt2``) like the other formats,
and lowers them to ExecuTorch (``.pte``) with our order and our exact arena plan (issue 13)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch  # the [torch] extra is in the test install (Makefile)


class Branchy(torch.nn.Module):  # the module: 4 x (conv 8->64, ReLU, conv 64->4), concat, 1x1
    def __init__(self) -> None:
        super().__init__()
        self.branches = torch.nn.ModuleList(
            torch.nn.Sequential(
                torch.nn.Conv2d(8, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(64, 4, 3, padding=1)
            )
            for _ in range(4)
        )
        self.out = torch.nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([b(x) for b in self.branches], 1))


@pytest.fixture(scope="module")
def pt2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = Branchy().eval()
    x = torch.randn(1, 8, 32, 32)
    program = torch.export.export(model, (x,))
    path = tmp_path_factory.mktemp("pt2") / "branchy.pt2"
    torch.export.save(program, path)
    return path, x, model(x).detach()


def serenity(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serenity", *map(str, args)], capture_output=True, text=True)


def test_schedule_pt2_to_pt2_keeps_outputs(
    pt2: tuple[Path, torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    src, x, expected = pt2
    out = tmp_path / "sched.pt2"
    p = serenity("schedule", src, "-o", out, "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["proven_optimal"] and doc["peak_after"] <= doc["peak_before"]
    got = torch.export.load(out).module()(x)
    assert torch.allclose(got, expected, atol=1e-5)
    # The written program's own order is the one reported.
    a = json.loads(serenity("analyze", out, "--json").stdout)
    assert a["peak_bytes"] == doc["peak_after"]


def test_schedule_pt2_to_pte_runs_in_executorch(
    pt2: tuple[Path, torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    from serenity.executorch_io import run_pte

    src, x, expected = pt2
    out = tmp_path / "branchy.pte"
    p = serenity("schedule", src, "-o", out, "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["executorch_arena_after"] <= doc["executorch_arena_before"]
    (got,) = run_pte(out.read_bytes(), [x])
    assert torch.allclose(torch.as_tensor(got), expected, atol=1e-5)


def test_bad_outputs_and_files_are_one_line(
    pt2: tuple[Path, torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    src, _, _ = pt2
    p = serenity("schedule", src, "-o", tmp_path / "x.onnx")
    assert p.returncode == 2 and ".pte" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a zip")
    p = serenity("schedule", bad, "-o", tmp_path / "o.pt2")
    assert p.returncode == 2 and str(bad) in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_documented_names() -> None:
    import serenity
    import serenity.executorch
    import serenity.torch

    model, x = Branchy().eval(), torch.randn(1, 8, 16, 16)
    graph, program = serenity.from_torch(model, (x,))
    again = serenity.torch.reorder(program)
    assert torch.allclose(again.module()(x), model(x), atol=1e-5) and len(graph.ops) > 0
    assert serenity.executorch.to_executorch is serenity.executorch_io.to_executorch
