"""The IR's checks and the memory model, on hand-built graphs and random DAGs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from dags import dags
from serenity.errors import CycleError, GraphError, OrderError
from serenity.ir import Graph, Op, Tensor, with_element_size
from serenity.memory import simulate
from serenity.schedulers import BASELINES, op_lower_bound
from sim_reference import reference_peak


def T(name: str, nbytes: int, **kw) -> Tensor:
    return Tensor(name, (nbytes,), "int8", nbytes, **kw)


def diamond() -> Graph:
    # x(10) -> A -> a(20); x -> B -> b(30); C(a, b) -> c(5, output)
    return Graph(
        "diamond",
        [Op("A", "R", ("x",), ("a",)), Op("B", "R", ("x",), ("b",)), Op("C", "Add", ("a", "b"), ("c",))],
        [T("x", 10), T("a", 20), T("b", 30), T("c", 5)],
        ["x"],
        ["c"],
    )


def test_memory_model_worked_example() -> None:
    p = simulate(diamond(), [1, 0, 2])
    assert p.during == (40, 60, 55)
    assert p.after == (40, 50, 5)
    assert p.peak == 60 and p.peak_step == 1


def test_multi_output_dead_output_and_repeated_input() -> None:
    # S writes (p, q); q is never read (dead): freed right after S. M reads p twice.
    g = Graph(
        "mo",
        [Op("S", "Split", ("x",), ("p", "q")), Op("M", "Mul", ("p", "p"), ("y",))],
        [T("x", 8), T("p", 4), T("q", 4), T("y", 4)],
        ["x"],
        ["y"],
    )
    assert g.tensors["p"].consumers == (1,)
    p = simulate(g, [0, 1])
    assert p.during == (16, 8)  # S: x + p + q ; M: p + y (x and q freed)
    assert p.after == (4, 4)


def test_optional_inputs_constants_and_outputs_in_the_middle() -> None:
    g = Graph(
        "opt",
        [Op("A", "Conv", ("x", "w", ""), ("a",)), Op("B", "R", ("a",), ("b",))],
        [T("x", 8), Tensor("w", (9,), "int8", 0, constant=True), T("a", 6), T("b", 2)],
        ["x"],
        ["a", "b"],
    )
    p = simulate(g, [0, 1])
    assert p.during == (14, 8)  # a is an output: never freed
    assert op_lower_bound(g) <= p.peak


def test_graph_input_that_is_an_output_and_unused_input() -> None:
    g = Graph(
        "io", [Op("A", "R", ("x",), ("y",))], [T("x", 3), T("u", 100), T("y", 4)], ["x", "u"], ["x", "y"]
    )
    assert simulate(g, [0]).peak == 7  # u is never read: not counted


def test_order_errors_name_the_problem() -> None:
    g = diamond()
    with pytest.raises(OrderError, match=r"op 'C' \(#2\) is at position 0, before op 'A'"):
        g.check_order([2, 0, 1])
    with pytest.raises(OrderError, match="twice"):
        g.check_order([0, 0, 2])
    with pytest.raises(OrderError, match="missing"):
        g.check_order([0, 1])
    with pytest.raises(OrderError, match="#7"):
        g.check_order([0, 1, 7])
    assert g.is_topological([1, 0, 2]) and not g.is_topological([2, 1, 0])


def test_cycle_error_prints_the_path() -> None:
    with pytest.raises(CycleError) as e:
        Graph(
            "cyc",
            [
                Op("a", "R", ("in", "tc"), ("ta",)),
                Op("b", "R", ("ta",), ("tb",)),
                Op("c", "R", ("tb",), ("tc",)),
            ],
            [T("in", 1), T("ta", 1), T("tb", 1), T("tc", 1)],
            ["in"],
            ["tc"],
        )
    assert str(e.value) == "graph has a cycle: a -> b -> c -> a"


def test_malformed_graphs() -> None:
    with pytest.raises(GraphError, match="reads tensor 'ghost'"):
        Graph("g", [Op("A", "R", ("ghost",), ("y",))], [T("ghost", 1), T("y", 1)], [], ["y"])
    with pytest.raises(GraphError, match="written by two ops"):
        Graph(
            "g",
            [Op("A", "R", ("x",), ("y",)), Op("B", "R", ("x",), ("y",))],
            [T("x", 1), T("y", 1)],
            ["x"],
            ["y"],
        )
    with pytest.raises(GraphError, match="no declaration"):
        Graph("g", [Op("A", "R", ("x",), ("z",))], [T("x", 1)], ["x"], [])


def test_with_element_size_rescales_activations_only() -> None:
    g = Graph(
        "e",
        [Op("A", "Conv", ("x", "w"), ("y",))],
        [
            Tensor("x", (2, 3), "float32", 24),
            Tensor("w", (3,), "float32", 0, constant=True),
            Tensor("y", (2, 2), "float32", 16),
        ],
        ["x"],
        ["y"],
    )
    g8 = with_element_size(g, 1)
    assert g8.tensors["x"].nbytes == 6 and g8.tensors["y"].nbytes == 4 and g8.tensors["w"].nbytes == 0
    assert simulate(g8, [0]).peak == 10


@settings(max_examples=300, deadline=None, derandomize=True)
@given(dags(1, 14))
def test_baselines_are_topological_and_peaks_match_reference(g: Graph) -> None:
    bound = op_lower_bound(g)
    for name, fn in BASELINES.items():
        r = fn(g)
        assert g.is_topological(r.order), name
        ref_peak, ref_usage = reference_peak(g, r.order)
        prof = simulate(g, r.order)
        assert prof.peak == r.peak == ref_peak, name
        assert list(prof.during) == ref_usage, name
        assert bound <= r.peak
        assert r.method == name
