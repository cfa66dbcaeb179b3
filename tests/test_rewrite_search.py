"""IR-level rewriting: the primitive splits, the passes, and the search's guarantees.

Format adapters (ONNX, TFLite) are tested for numerical equivalence in their own files; here a
format-free dialect (tests/rewrite_toy.py) pins the structure and the search's properties.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewrite_toy import T, ToyDialect, nas_like
from serenity.ir import Graph, Op, with_alignment
from serenity.memory import simulate
from serenity.rewrites import Rejection, Rewrite, apply_all, structure_difference
from serenity.rewrites.match import matches
from serenity.rewrites.passes import PASSES, channel_split, kernel_split
from serenity.rewrites.search import rewrite_for_memory
from serenity.schedulers.dp import schedule_dp

D = ToyDialect()


def brute_force_peak(g: Graph) -> int:
    assert len(g.ops) <= 8, "brute force is for small graphs"
    return min(
        simulate(g, p, check=False).peak
        for p in itertools.permutations(range(len(g.ops)))
        if g.is_topological(p)
    )


def test_channel_split_structure() -> None:
    g = nas_like(3, channels=(3, 5, 8), readers=("Conv",))
    (m,) = matches(g, D)
    assert isinstance(m, Rewrite) and m.kind == "channel" and m.channels == (3, 5, 8)
    r = channel_split(g, D)
    assert r.modified and r.applied == (m,)
    types = [op.type for op in r.graph.ops]
    assert "Concat" not in types  # its only reader was split
    assert types.count("Add") == 2 and types.count("Conv") == 3 + 3
    assert r.graph.tensors["y0"].nbytes == g.tensors["y0"].nbytes
    assert r.graph.tensors[m.acc(1)].nbytes == g.tensors["y0"].nbytes
    assert r.graph.is_topological(r.graph.listed_order)


def test_kernel_split_structure_multiplier() -> None:
    g = nas_like(2, channels=(3, 5), readers=("Dw2",))
    r = kernel_split(g, D)
    (m,) = r.applied
    assert [r.graph.tensors[m.part(i)].shape[1] for i in range(2)] == [6, 10]
    cats = [op for op in r.graph.ops if op.type == "Concat"]
    assert [op.outputs for op in cats] == [("y0",)]  # the old one went, the new one writes y0
    assert not channel_split(r.graph, D).modified  # nothing conv-like reads the new concat


def test_concat_stays_while_a_reader_is_left() -> None:
    g = nas_like(2, readers=("Conv", "Softmax"))
    r = channel_split(g, D)
    assert r.modified and any(op.type == "Concat" for op in r.graph.ops)
    (rej,) = r.rejected
    assert rej.reader == "y1" and "Softmax is not per-channel" in rej.reason
    assert not channel_split(g, ToyDialect(refuse="y0")).modified
    assert "refused by the test" in channel_split(g, ToyDialect(refuse="y0")).rejected[0].reason


def test_not_modified_is_computed() -> None:
    g = Graph("chain", [Op("a", "Relu", ("x",), ("y",))], [T("x", 4), T("y", 4)], ["x"], ["y"])
    for p in PASSES.values():
        r = p(g, D)
        assert not r.modified and r.graph is g


def test_search_lowers_the_peak_and_explains() -> None:
    g = nas_like(4, 8, 4, ("Conv", "Conv"))
    o = rewrite_for_memory(g, D)
    assert o.modified and o.result.peak < o.base.peak
    assert all(s.peak_after < s.peak_before for s in o.steps)
    assert simulate(o.graph, o.result.order).peak == o.result.peak
    assert {c.status for c in o.considered} == {"applied"}


def test_search_keeps_nothing_that_does_not_pay() -> None:
    # A huge input dominates every order: no split can lower the peak, so none is kept.
    g = nas_like(2, 2, 2, ("Conv",))
    big = Graph(
        "big",
        [Op("s", "Relu", ("in",), ("x",)), *g.ops],
        [T("in", 64, 8), *g.tensors.values()],
        ["in"],
        list(g.outputs),
    )
    o = rewrite_for_memory(big, D)
    assert not o.modified and o.graph is big and o.result is o.base
    (c,) = o.considered
    # ... and the search proves it without trying: op 's' keeps its bytes in every rewritten graph.
    assert c.status == "no gain" and "op 's'" in c.reason and "every rewritten graph keeps" in c.reason
    assert o.evaluations == 0


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    st.lists(st.integers(1, 8), min_size=2, max_size=5),
    st.lists(st.sampled_from(["Conv", "Relu", "Dw", "Dw2", "Softmax"]), min_size=1, max_size=2),
    st.sampled_from([1, 16]),
)
def test_search_properties(channels: list[int], readers: list[str], align: int) -> None:
    g = nas_like(len(channels), 4, 2, readers, channels)
    o = rewrite_for_memory(g, D, alignment=align)
    ga = with_alignment(o.graph, align)
    assert ga.is_topological(o.result.order)
    assert simulate(ga, o.result.order).peak == o.result.peak
    assert o.result.peak <= o.base.peak
    assert all(s.peak_after < s.peak_before for s in o.steps)
    assert o.modified == (o.result.peak < o.base.peak)
    # The rewritten graph is what the recorded rewrites give, and its optimum is exact.
    assert structure_difference(apply_all(g, o.rewrites, D), o.graph) is None
    if len(o.graph.ops) <= 8:
        assert o.result.peak == brute_force_peak(ga)
    assert schedule_dp(ga).peak == o.result.peak
    for c in o.considered:
        assert c.reason and c.status in ("applied", "rejected", "no gain")


def test_rejection_records_reason() -> None:
    g = nas_like(2, readers=("Softmax",))
    (m,) = matches(g, D)
    assert isinstance(m, Rejection) and m.reader == "y0" and "Softmax" in m.describe()


def test_stale_rewrite_is_refused() -> None:
    from serenity.errors import GraphError
    from serenity.rewrites import apply_rewrite

    g = nas_like(2)
    (m,) = matches(g, D)
    assert isinstance(m, Rewrite)
    g2 = apply_rewrite(g, m, D)
    with pytest.raises(GraphError, match=r"does not read|no op|cannot be split"):
        apply_rewrite(g2, m, D)
