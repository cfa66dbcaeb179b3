"""The exact arena planner (``plan_exact``, its search) and minimalloc's CSV format."""

from __future__ import annotations

import itertools
import random
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serenity.errors import InfeasibleError, ModelFormatError, SerenityError
from serenity.planning import PLANNERS, Buffer, check_plan, peak_of, plan_exact, read_csv, write_csv
from serenity.planning import exact as ex

SETTINGS = settings(max_examples=120, deadline=None, derandomize=True)

#: Ten buffers whose peak (14) no placement reaches: the optimum is 15, first fit gives 18.
GAPPY = [
    Buffer("b0", 1, 3, 4), Buffer("b1", 3, 7, 3), Buffer("b2", 3, 5, 2), Buffer("b3", 1, 4, 6),
    Buffer("b4", 4, 7, 4), Buffer("b5", 2, 4, 3), Buffer("b6", 6, 10, 6), Buffer("b7", 1, 2, 4),
    Buffer("b8", 4, 5, 1), Buffer("b9", 8, 12, 6),
]  # fmt: skip


@st.composite
def instances(
    draw: st.DrawFn, max_buffers: int = 6, sizes: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 7, 8, 12)
) -> list[Buffer]:
    """Up to ``max_buffers`` buffers with short, overlapping lifetimes."""
    n = draw(st.integers(0, max_buffers))
    out = []
    for i in range(n):
        lower = draw(st.integers(0, 6))
        out.append(Buffer(f"b{i}", lower, lower + draw(st.integers(1, 5)), draw(st.sampled_from(sizes))))
    return out


def brute_force(buffers: list[Buffer]) -> int:
    """The smallest arena: first fit over every order of the buffers. (Some order reaches the
    optimum: first fit in the order of an optimal plan's offsets puts each buffer no higher.)"""
    n = len(buffers)
    best = None
    for perm in itertools.permutations(range(n)):
        off: list[int | None] = [None] * n
        for k in perm:
            b = buffers[k]
            used = sorted(
                (o, o + buffers[j].size) for j, o in enumerate(off)
                if o is not None and buffers[j].lower < b.upper and b.lower < buffers[j].upper
            )  # fmt: skip
            at = 0
            for lo, hi in used:
                if lo - at >= b.size:
                    break
                at = max(at, hi)
            off[k] = at
        top = max((o + b.size for o, b in zip(off, buffers, strict=True) if o is not None), default=0)
        best = top if best is None else min(best, top)
    return best or 0


def first_fit(buffers: list[Buffer]) -> int:
    """A simple greedy the exact planner must never lose to: first fit by decreasing size."""
    off: dict[int, int] = {}
    for k in sorted(range(len(buffers)), key=lambda i: (-buffers[i].size, i)):
        b = buffers[k]
        used = sorted(
            (o, o + buffers[j].size) for j, o in off.items()
            if buffers[j].lower < b.upper and b.lower < buffers[j].upper
        )  # fmt: skip
        at = 0
        for lo, hi in used:
            if lo - at >= b.size:
                break
            at = max(at, hi)
        off[k] = at
    return max((off[k] + b.size for k, b in enumerate(buffers)), default=0)


# --- plans -------------------------------------------------------------------------------------


@SETTINGS
@given(instances())
def test_exact_equals_brute_force(buffers: list[Buffer]) -> None:
    plan = plan_exact(buffers)
    assert len(plan.offsets) == len(buffers)
    assert check_plan(buffers, plan.offsets) == plan.arena  # every buffer placed, no overlap
    assert plan.arena >= peak_of(buffers)
    assert plan.arena == brute_force(buffers)
    assert plan.proven and plan.lower_bound == plan.arena and plan.planner == "exact"


@SETTINGS
@given(instances(sizes=(1, 2, 3, 4, 5, 7, 8, 12)))
def test_search_decides_capacity_exactly(buffers: list[Buffer]) -> None:
    # The search alone (no greedy in front): a plan at the optimum, a proof that none is below it.
    for part in ex.split(buffers, 1):
        sub = [buffers[i] for i in part.index]
        best = brute_force(sub)
        assert ex.decide(part, best - 1, None, {}) is None
        found = ex.decide(part, best, None, {})
        assert found is not None
        assert check_plan(sub, found, capacity=best) <= best


@SETTINGS
@given(instances(max_buffers=7, sizes=(1, 2, 3, 5, 8)))
def test_python_search_equals_compiled(buffers: list[Buffer]) -> None:
    # One search, two ways to run it: same placements, same node counts.
    for part in ex.split(buffers, 1):
        cap = part.peak + 1
        jit_stats: dict[str, int] = {}
        py_stats: dict[str, int] = {}
        compiled = ex.decide(part, cap, None, jit_stats)
        saved = ex.INT64_SAFE
        ex.INT64_SAFE = 0  # every sum is now "too large": the Python ints path
        try:
            python = ex.decide(part, cap, None, py_stats)
        finally:
            ex.INT64_SAFE = saved
        assert python == compiled
        assert py_stats["nodes"] == jit_stats["nodes"] and py_stats["compiled"] is False


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.integers(0, 10_000))
def test_exact_never_worse_than_greedy(seed: int) -> None:
    rng = random.Random(seed)
    buffers = []
    for i in range(rng.randint(10, 40)):
        lower = rng.randint(0, 30)
        buffers.append(Buffer(f"t{i}", lower, lower + rng.randint(1, 8), rng.randint(1, 64) * 16))
    plan = plan_exact(buffers, time_limit=2.0)
    assert check_plan(buffers, plan.offsets) == plan.arena
    assert peak_of(buffers) <= plan.lower_bound <= plan.arena <= first_fit(buffers)
    assert not plan.proven or plan.arena == plan.lower_bound
    tflm = PLANNERS["tflm-greedy"](buffers)  # TensorFlow Lite Micro's own planner, modelled
    assert check_plan(buffers, tflm.offsets) == tflm.arena >= plan.arena


def test_gap_is_proven_by_search() -> None:
    plan = plan_exact(GAPPY)
    assert (peak_of(GAPPY), plan.arena, plan.lower_bound, plan.proven) == (14, 15, 15, True)
    assert check_plan(GAPPY, plan.offsets) == 15
    assert plan.gap == 0 and plan.stats["greedy"] == 18 and plan.stats["nodes"] > 0
    assert PLANNERS["exact"] is plan_exact


def test_time_limit_returns_best_so_far() -> None:
    plan = plan_exact(GAPPY, time_limit=0)
    assert (plan.arena, plan.lower_bound, plan.proven) == (18, 14, False)
    assert check_plan(GAPPY, plan.offsets) == 18
    assert plan.stats["stopped"] == "time limit of 0 s reached"
    with pytest.raises(SerenityError, match="not proven infeasible") as info:
        plan_exact(GAPPY, capacity=15, time_limit=0)
    assert not isinstance(info.value, InfeasibleError)


def test_time_limit_is_honoured_on_a_hard_instance() -> None:
    rng = random.Random(3)
    buffers = []
    for i in range(300):
        lower = rng.randint(0, 200)
        buffers.append(Buffer(f"t{i}", lower, lower + rng.randint(1, 40), rng.randint(1, 1000)))
    t0 = time.perf_counter()
    plan = plan_exact(buffers, time_limit=0.3)
    assert time.perf_counter() - t0 < 2.0
    assert check_plan(buffers, plan.offsets) == plan.arena
    assert plan.proven or plan.stats["stopped"] == "time limit of 0.3 s reached"


def test_capacity_mode() -> None:
    plan = plan_exact(GAPPY, capacity=16)
    assert check_plan(GAPPY, plan.offsets, capacity=16) <= 16
    for cap, why in ((14, "exhaustive search"), (13, "at least 14 bytes live at one step")):
        with pytest.raises(InfeasibleError, match=why) as info:
            plan_exact(GAPPY, capacity=cap)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("scale", [2**62, 2**70])
def test_huge_sizes_are_exact(scale: int) -> None:
    # Multiples of a huge unit run compiled after the gcd; adding 1 leaves no common divisor,
    # so the sums pass int64 and the search runs on Python ints. Either way: exact, never a
    # false proof.
    small = [Buffer(b.id, b.lower, b.upper, b.size % 5 + 1) for b in GAPPY[:6]]
    best = brute_force(small)
    scaled = [Buffer(b.id, b.lower, b.upper, b.size * scale) for b in small]
    plan = plan_exact(scaled)
    assert (plan.arena, plan.proven, plan.stats["compiled"]) == (best * scale, True, True)
    assert check_plan(scaled, plan.offsets) == plan.arena
    odd = [Buffer(b.id, b.lower, b.upper, b.size * scale + 1) for b in small]
    plan = plan_exact(odd, time_limit=5)
    assert check_plan(odd, plan.offsets) == plan.arena
    assert plan.arena == brute_force(odd) and plan.lower_bound <= plan.arena
    if plan.stats["nodes"]:
        assert plan.stats["compiled"] is False


def test_bad_buffers_are_refused() -> None:
    with pytest.raises(SerenityError, match="'x' has size -1"):
        plan_exact([Buffer("x", 0, 1, -1)])
    with pytest.raises(SerenityError, match=r"lifetime \[2, 2\)"):
        plan_exact([Buffer("x", 2, 2, 1)])
    assert plan_exact([]).arena == 0 and plan_exact([]).proven


# --- CSV ---------------------------------------------------------------------------------------


@SETTINGS
@given(instances(max_buffers=8))
def test_csv_round_trip(tmp_path_factory: pytest.TempPathFactory, buffers: list[Buffer]) -> None:
    path = tmp_path_factory.mktemp("csv") / "in.csv"
    write_csv(path, buffers)
    assert read_csv(path) == buffers
    plan = plan_exact(buffers)
    write_csv(path, buffers, plan.offsets)
    text = path.read_text().splitlines()
    assert text[0] == "id,lower,upper,size,offset"
    assert [int(line.rsplit(",", 1)[1]) for line in text[1:]] == list(plan.offsets)
    assert read_csv(path) == buffers  # the offset column is ignored on reading


BAD_CSV = {
    "missing column": ("id,lower,size\n0,0,4\n", "row 1: missing column(s) upper"),
    "not an integer": ("id,lower,upper,size\n0,0,2,4\n1,0,x,4\n", "row 3: upper 'x' is not an integer"),
    "negative size": ("id,lower,upper,size\n0,0,2,-4\n", "row 2: negative size -4"),
    "empty lifetime": ("id,lower,upper,size\n0,3,3,4\n", "row 2: upper 3 <= lower 3"),
    "reversed lifetime": ("id,lower,upper,size\n0,5,3,4\n", "row 2: upper 3 <= lower 5"),
    "duplicate id": (
        "id,lower,upper,size\na,0,2,4\nb,0,2,4\na,1,2,4\n",
        "row 4: duplicate id 'a' (first on row 2)",
    ),
    "short row": ("id,lower,upper,size\n0,0,2\n", "row 2: 3 fields, the header has 4"),
    "empty file": ("", "empty file"),
}


@pytest.mark.parametrize("case", sorted(BAD_CSV))
def test_bad_csv(tmp_path: Path, case: str) -> None:
    text, message = BAD_CSV[case]
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ModelFormatError) as info:
        read_csv(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_csv_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="cannot read"):
        read_csv(tmp_path / "nope.csv")


def test_csv_columns_in_any_order(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("size,upper,id,lower,gaps\n4,2,a,0,\n\n3,3,b,1,\n")
    assert read_csv(path) == [Buffer("a", 0, 2, 4), Buffer("b", 1, 3, 3)]
