"""Exact arithmetic: huge tensor sizes never wrap a kernel's int64 and never fake a proof.

The compiled searches pack ``peak << 8 | item`` (``<< 16`` for the wide kernel) into one int64;
sizes scaled by 2**k are divided back by their gcd before a kernel runs, and sizes that cannot
be (no common factor) go to the pure-Python search. Either way the answer is the unscaled
answer times 2**k (issue 7, item 1).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dags import random_dag
from serenity.ir import Graph
from serenity.schedulers.bounds import static_lower_bound
from serenity.schedulers.dp import schedule_dp
from serenity.schedulers.reduce import build_items
from serenity.schedulers.search import best_first
from serenity.schedulers.search_jit import AVAILABLE, MAX_VALUE, best_first_jit, scale_to_fit
from serenity.schedulers.search_wide import best_first_wide
from test_dp import brute_force


def scaled(g: Graph, k: int, offset: int = 0) -> Graph:
    """``g`` with every activation size ``s`` replaced by ``s << k`` (plus ``offset`` if > 0)."""
    tensors = [
        replace(t, nbytes=(t.nbytes << k) + (offset if t.nbytes else 0)) if t.is_activation else t
        for t in g.tensors.values()
    ]
    return Graph(g.name, g.ops, tensors, g.inputs, g.outputs)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(0, 2**32 - 1), st.integers(1, 24), st.integers(0, 70))
def test_scaled_graph_scales_peak_bound_and_proof(seed: int, n_ops: int, k: int) -> None:
    g = random_dag(seed, n_ops, max_width=5)
    base = schedule_dp(g)
    r = schedule_dp(scaled(g, k))
    assert r.peak == base.peak << k
    assert r.lower_bound == base.lower_bound << k
    assert r.proven_optimal == base.proven_optimal
    assert static_lower_bound(scaled(g, k).dense) == static_lower_bound(g.dense) << k


def test_issue_example_2_to_the_50_is_not_a_false_proof() -> None:
    """The reported failure: k = 48..50 gave wrong peaks with ``proven_optimal`` on 6-24 of 30."""
    for seed in range(30):
        g = random_dag(seed, 20, max_width=5)
        base = schedule_dp(g)
        for k in (48, 50, 62):
            r = schedule_dp(scaled(g, k))
            assert (r.peak, r.lower_bound) == (base.peak << k, base.lower_bound << k), (seed, k)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.integers(0, 2**32 - 1), st.integers(1, 8))
def test_sizes_without_common_factor_fall_back_to_exact_search(seed: int, n_ops: int) -> None:
    """Sizes 2**62 + s share no factor: no kernel can hold them, the Python search is exact."""
    g = scaled(random_dag(seed, n_ops, max_width=4), 0, offset=1 << 62)
    r = schedule_dp(g)
    assert r.peak == brute_force(g)
    assert r.proven_optimal and r.lower_bound == r.peak


@pytest.mark.skipif(not AVAILABLE, reason="numba is not installed")
@pytest.mark.parametrize("kernel", [best_first_jit, best_first_wide])
def test_kernels_scale_or_refuse(kernel: object) -> None:
    g = random_dag(7, 30, max_width=5)
    items = build_items(g.dense)
    ref = best_first(items, ub=10**12, lb=0)
    big = build_items(scaled(g, 60).dense)
    out = kernel(big, ub=ref.peak << 61, lb=0)  # type: ignore[operator]
    assert out.proven and out.peak == ref.peak << 60
    odd = build_items(scaled(g, 0, offset=1 << 62).dense)
    assert scale_to_fit(odd, 0, 1 << 70, MAX_VALUE) is None
    with pytest.raises(ValueError, match="do not fit"):
        kernel(odd, ub=1 << 70, lb=0)  # type: ignore[operator]
