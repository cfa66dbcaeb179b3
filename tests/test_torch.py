"""The PyTorch and ExecuTorch adapters on the branchy module of issue 13 and small hand-built modules.

torch and executorch are in the test install (the ``[torch]`` extra): these tests run in CI.
"""

from __future__ import annotations

import operator

import pytest
import torch
from torch import nn

from serenity.errors import ModelFormatError, OrderError, UnsupportedError
from serenity.executorch_io import (
    ALIGNMENT,
    ExactPlanner,
    lower,
    planned_bytes,
    run_pte,
    save_pte,
    to_executorch,
)
from serenity.ir import with_alignment
from serenity.memory import simulate
from serenity.planning import check_plan, peak_of
from serenity.schedulers import schedule
from serenity.torch_export import from_torch, graph_of, load_pt2, reorder, save_pt2


class Branchy(nn.Module):
    """Issue 13: four branches (conv 8->64, ReLU, conv 64->4), concatenated, then a 1x1 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(8, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 4, 3, padding=1))
            for _ in range(4)
        )
        self.out = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([b(x) for b in self.branches], 1))


class Views(nn.Module):
    """A view, a permute, an in-place ReLU and a two-output op, for the IR's accounting."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = x * x  # no Python scalars: ExecuTorch copies those into the arena (see torch_export)
        y.relu_()
        flat = y.view(1, -1)
        values, indices = torch.max(x, 1)
        return torch.sigmoid(flat.permute(1, 0)), values, indices.float()


def op_names(program: torch.export.ExportedProgram | torch.fx.GraphModule) -> list[str]:
    graph = program.graph
    return [n.name for n in graph.nodes if n.op == "call_function" and n.target is not operator.getitem]


@pytest.fixture(scope="module")
def branchy() -> tuple[nn.Module, torch.Tensor, torch.export.ExportedProgram]:
    torch.manual_seed(0)
    model = Branchy().eval()
    x = torch.randn(1, 8, 32, 32)
    return model, x, from_torch(model, (x,))[1]


def test_graph_of_branchy_counts_activations_not_weights(branchy):
    program = branchy[2]
    g = graph_of(program)
    assert len(g.ops) == 14 and g.inputs == ("x",)
    assert sum(t.constant for t in g.tensors.values()) == 18  # 9 convs: weight and bias
    assert g.tensors["x"].shape == (1, 8, 32, 32) and g.tensors["x"].nbytes == 8 * 32 * 32 * 4
    assert g.tensors["cat"].nbytes == 16 * 32 * 32 * 4


def test_views_in_place_and_multi_output():
    g, program = from_torch(Views(), (torch.randn(2, 3),))
    # The in-place relu_ was functionalised; the view is no op, its reader reads the base.
    assert not any(n.target is torch.ops.aten.relu_.default for n in program.graph.nodes)
    types = [op.type for op in g.ops]
    assert "view" not in types and "permute" in types
    permute = next(op for op in g.ops if op.type == "permute")
    relu = next(op for op in g.ops if op.type == "relu")
    assert permute.inputs == relu.outputs  # the view's bytes are its base's
    (mx,) = [op for op in g.ops if op.type == "max"]
    assert len(mx.outputs) == 2 and all(
        g.tensors[t].nbytes == 2 * (4 if i == 0 else 8) for i, t in enumerate(mx.outputs)
    )
    with pytest.raises(UnsupportedError, match="relu_"):
        graph_of(torch.export.export(Views(), (torch.randn(2, 3),)))


def test_reorder_keeps_outputs_and_survives_module_and_pt2(branchy, tmp_path):
    model, x, program = branchy
    g = graph_of(program)
    bfs = schedule(g, "bfs").order
    assert bfs != g.listed_order
    moved = reorder(program, bfs)
    want = [g.ops[i].name for i in bfs]
    assert op_names(moved) == want and op_names(program) == [op.name for op in g.ops]  # input untouched
    assert simulate(graph_of(moved), graph_of(moved).listed_order).peak == simulate(g, bfs).peak
    torch.testing.assert_close(moved.module()(x), model(x), rtol=0, atol=0)
    assert op_names(moved.module()) == want
    torch.export.save(moved, tmp_path / "m.pt2")
    loaded = torch.export.load(tmp_path / "m.pt2")
    assert op_names(loaded) == want
    torch.testing.assert_close(loaded.module()(x), model(x), rtol=0, atol=0)
    with pytest.raises(OrderError):
        reorder(program, tuple(reversed(g.listed_order)))


def test_views_reorder_keeps_outputs():
    torch.manual_seed(1)
    x = torch.randn(2, 3)
    g, program = from_torch(Views(), (x,))
    (mx,) = [op.index for op in g.ops if op.type == "max"]
    order = (mx, *(i for i in g.listed_order if i != mx))  # the two-output op first
    assert order != g.listed_order
    moved = reorder(program, order)
    assert op_names(moved)[0] == "max_1" and graph_of(moved).listed_order == g.check_order(range(len(g.ops)))
    for got, want in zip(moved.module()(x), Views()(x), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("model_cls", [Branchy, Views])
def test_cost_model_equals_executorch_lifetimes(model_cls):
    """For several orders, the peak of the lifetimes ExecuTorch computes (aligned sizes) is the
    cost model's peak of the same order on the graph aligned to 16: the IR counts as ExecuTorch."""
    torch.manual_seed(2)
    x = torch.randn(1, 8, 8, 8) if model_cls is Branchy else torch.randn(2, 3)
    g, program = from_torch(model_cls().eval(), (x,))
    aligned = with_alignment(g, ALIGNMENT)
    for method in ("listed", "bfs", "dfs"):
        order = schedule(aligned, method).order
        planner = ExactPlanner()
        lower(reorder(program, order), planner)
        assert peak_of(planner.buffers) == simulate(aligned, order).peak, method


def test_executorch_pte_equal_outputs_and_arena_not_above_its_own(branchy):
    model, x, program = branchy
    pte, report = to_executorch(program)
    torch.testing.assert_close(run_pte(pte, [x])[0], model(x), rtol=1e-5, atol=1e-5)
    # Issue 13: ExecuTorch plans 606,208 B in the export order; ours reaches the peak, proven.
    assert report.executorch_arena == 606_208
    assert report.arena <= report.executorch_arena
    assert report.arena == report.peak_after == 589_824 and report.proven


def test_executorch_plan_free_of_overlaps_by_executorch_verifier(branchy):
    from executorch.exir.memory_planning import Verifier

    model, x, program = branchy
    g = graph_of(program)
    bfs = schedule(with_alignment(g, ALIGNMENT), "bfs").order
    planner = ExactPlanner()
    manager = lower(reorder(program, bfs), planner)
    assert check_plan(planner.buffers, planner.offsets) == planned_bytes(manager)
    # ExecuTorch's own check of the specs written: lifetimes that meet never share bytes.
    ep = manager.exported_program()
    Verifier(ep.graph_module, True, True, True, ep.graph_signature).verify_storage_reuse()
    # Breadth first keeps all four 256 KiB ReLU inputs live: issue 13's 1,310,720 B.
    assert planned_bytes(manager) == planned_bytes(lower(reorder(program, bfs))) == 1_310_720
    torch.testing.assert_close(run_pte(bytes(manager.buffer), [x])[0], model(x), rtol=1e-5, atol=1e-5)


def test_to_executorch_keeps_the_export_order_when_the_schedule_loses(branchy, monkeypatch):
    """Should a chosen schedule plan above ExecuTorch's own export-order arena (its lifetimes can
    differ from the cost model's), the export order with our exact plan is written instead."""
    import types

    import serenity.schedulers

    program = branchy[2]
    g = graph_of(program)
    bfs = schedule(g, "bfs").order
    monkeypatch.setattr(serenity.schedulers, "schedule", lambda *a, **k: types.SimpleNamespace(order=bfs))
    _, report = to_executorch(program)
    assert report.order == g.listed_order and report.arena == 589_824 <= report.executorch_arena
    # An order the caller names is kept, even when it loses.
    _, named = to_executorch(program, bfs)
    assert named.order == bfs and named.arena == 1_310_720


def test_pt2_and_pte_files(branchy, tmp_path):
    model, x, program = branchy
    g = graph_of(program)
    bfs = schedule(g, "bfs").order
    save_pt2(program, bfs, tmp_path / "m.pt2")
    loaded, loaded_program = load_pt2(tmp_path / "m.pt2")
    assert loaded.name == "m" and [op.name for op in loaded.ops] == [g.ops[i].name for i in bfs]
    report = save_pte(loaded_program, tmp_path / "m.pte")
    assert report.arena == 589_824 and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt2", "m.pte"]
    got = run_pte((tmp_path / "m.pte").read_bytes(), [x])[0]
    torch.testing.assert_close(got, model(x), rtol=1e-5, atol=1e-5)
    (tmp_path / "bad.pt2").write_bytes(b"not a zip")
    with pytest.raises(ModelFormatError, match=r"bad\.pt2"):
        load_pt2(tmp_path / "bad.pt2")
    with pytest.raises(ModelFormatError, match="no such file"):
        load_pt2(tmp_path / "missing.pt2")


class ScalarInput(nn.Module):
    """A Python int input (baked in) and a two-output op whose second output nobody reads."""

    def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        values, _ = torch.max(x, 1)
        return torch.sigmoid(values).repeat(k)


def test_scalar_input_and_unread_output_as_executorch_counts_them():
    g, program = from_torch(ScalarInput(), (torch.randn(4, 8), 3))
    assert g.inputs == ("x",) and "k" not in g.tensors
    (mx,) = [op for op in g.ops if op.type == "max"]
    unread = g.tensors[mx.outputs[1]]
    assert unread.consumers == () and unread.dtype == "int64" and unread.nbytes == 4 * 8
    planner = ExactPlanner()
    lower(program, planner)  # ExecuTorch allocates the unread indices too: the peaks agree
    assert peak_of(planner.buffers) == simulate(with_alignment(g, ALIGNMENT), g.listed_order).peak
