"""``schedule_auto``: the default method, two exact methods racing for the first proof.

The dynamic program (:func:`.dp.schedule_dp`) proves almost every network in a fraction of a
second; the integer program (:func:`.ilp.schedule_ilp`, CP-SAT) is slower on those but finds
good orders, and sometimes the proof, where the state space of the dynamic program explodes
(wide random DAGs, densely wired random stages). ``auto`` runs them as a portfolio:

1. **Split** the graph at its universal cuts (:mod:`.hourglass`) and treat every piece below on
   its own, with a share of the time limit in proportion to its ops; a piece's bound raises the
   floor of the pieces after it.
2. **Dynamic program first**, alone, for :data:`GRACE` seconds: it fuses chains, takes the best
   heuristic order as its budget and usually proves the piece before the grace ends, so easy
   graphs pay nothing for the portfolio.
3. **Then both**: once the grace has passed without a proof (and OR-Tools is installed, the piece
   is within the program's limits and the machine has a second core), the integer program starts
   in a child process (one CP-SAT worker, at a lower priority) on the other core while the dynamic
   program goes on here. The first proof
   wins: a proof from the child stops the search at its next clock poll (:func:`.clock.stop_when`),
   a proof here terminates the child.
4. **No proof**: the better order of the two, the larger of the two lower bounds. Without a time
   limit the dynamic program stops at its state cap; the child is then given at most
   :data:`ILP_AFTER_DP` more seconds.

The child is a fresh interpreter (``python -m serenity.schedulers.race_child IN OUT``), so starting
it costs about half a second of the other core; that is why it only starts after the grace.

Every answer is exact in the usual sense: ``proven_optimal`` only from a finished search, a closed
CP-SAT gap, or an order meeting a bound. ``stats["proved_by"]`` names the method(s) that proved
the result (per piece, joined by commas), and ``stats["portfolio"]`` what each method returned.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from serenity.ir import Graph
from serenity.schedulers.clock import Deadline, stop_when
from serenity.schedulers.dp import MAX_STATES, schedule_dp
from serenity.schedulers.hourglass import schedule_in_pieces
from serenity.schedulers.result import ScheduleResult, make_result

#: Seconds the dynamic program runs alone before the integer program joins it.
GRACE = 0.3
#: Seconds the integer program may still take, without a time limit, once the dynamic program
#: stopped unproven (at its state cap).
ILP_AFTER_DP = 10.0
#: Seconds the child stops before the deadline, and the parent waits past it at most, so that the
#: child's order is not lost at a time limit (sending it takes milliseconds).
HANDOVER = 0.5
#: Smallest piece the integer program is started for (smaller ones the dynamic program settles).
ILP_MIN_OPS = 8

METHOD = "auto"


def ilp_available() -> bool:
    """Whether OR-Tools (the ``[ilp]`` extra) is installed."""
    from importlib.util import find_spec  # finding it, not importing it: CP-SAT loads pandas

    return find_spec("ortools") is not None


@dataclass
class _Race:
    """The integer program in a child process, started on demand and read without blocking.

    The child is a fresh interpreter (``subprocess``, fork and exec at once), not a fork of this
    process: the start happens inside the compiled search's clock poll, where a forked copy hangs
    on locks numba holds, and ``multiprocessing``'s fork server or spawn would re-import the
    caller's main module. The graph goes in and the result comes back through files in a private
    temporary directory, so that neither side ever blocks on a pipe.
    """

    graph: Graph
    clock: Deadline
    grace: float
    enabled: bool
    proc: subprocess.Popen[bytes] | None = None
    tmp: tempfile.TemporaryDirectory[str] | None = None
    result: ScheduleResult | None = None
    error: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0

    def check(self) -> bool:
        """The DP's clock poll: start the child once the grace is over; ``True`` (stop the DP)
        once the child has returned a proof."""
        if self.proc is None and self.enabled and self.clock.elapsed() >= self.grace:
            self.start()
        if self.proc is not None and self.pending() and self.proc.poll() is not None:
            self.receive()
        return self.result is not None and self.result.proven_optimal

    def pending(self) -> bool:
        return self.result is None and not self.error

    def start(self) -> None:
        """Start the child with the time left (none: unlimited, the parent bounds the wait)."""
        self.tmp = tempfile.TemporaryDirectory(prefix="serenity-ilp-")
        src = os.path.join(self.tmp.name, "in.pickle")
        # One CP-SAT worker at a lower priority: the DP keeps its core at full speed (it proves
        # most pieces), the program takes the other.
        with open(src, "wb") as f:
            limit = self.child_limit()
            pickle.dump((self.graph, None if limit is None else time.time() + limit, 1), f)
        self.started_at = self.clock.elapsed()
        with open(os.path.join(self.tmp.name, "stderr.txt"), "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "serenity.schedulers.race_child", src, self.out_path()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def out_path(self) -> str:
        assert self.tmp is not None
        return os.path.join(self.tmp.name, "out.pickle")

    def seconds_left(self) -> float | None:
        """The time left by the clock alone (``Deadline.left`` would ask :meth:`check` again)."""
        end = self.clock.end
        return None if end is None else max(0.0, end - time.perf_counter())

    def child_limit(self) -> float | None:
        """The child's own time limit: the time left, less :data:`HANDOVER` (at most a tenth),
        so that its answer (the best order CP-SAT found) reaches the parent before the deadline."""
        left = self.seconds_left()
        return None if left is None else max(0.0, left - min(HANDOVER, left / 10))

    def receive(self) -> None:
        """Read the ended child's answer."""
        self.finished_at = self.clock.elapsed()
        try:
            with open(self.out_path(), "rb") as f:
                got = pickle.load(f)
        except (OSError, EOFError, pickle.UnpicklingError) as e:
            code = None if self.proc is None else self.proc.returncode
            got = f"integer program ended without a result (exit code {code}, {type(e).__name__})"
            assert self.tmp is not None
            with contextlib.suppress(OSError):
                lines = Path(self.tmp.name, "stderr.txt").read_text(errors="replace").strip().splitlines()
                got += f": {lines[-1]}" if lines else ""
        if isinstance(got, ScheduleResult):
            self.result = got
        else:
            self.error = str(got)

    def wait(self, seconds: float | None) -> None:
        """Wait up to ``seconds`` (``None``: until it ends) for the child's answer."""
        if self.proc is None or not self.pending():
            return
        try:
            self.proc.wait(seconds)
        except subprocess.TimeoutExpired:
            return
        self.receive()

    def stop(self) -> None:
        """End the child (if still running) and remove its files."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.tmp is not None:
            self.tmp.cleanup()
            self.tmp = None


def _summary(r: ScheduleResult, seconds: float | None = None) -> dict[str, object]:
    out: dict[str, object] = {
        "peak": r.peak,
        "lower_bound": r.lower_bound,
        "proven": r.proven_optimal,
        "seconds": round(r.seconds if seconds is None else seconds, 4),
    }
    if r.stats.get("stopped"):
        out["stopped"] = r.stats["stopped"]
    return out


def _race(
    graph: Graph, time_limit: float | None, floor: int, max_states: int, grace: float, use_ilp: bool
) -> ScheduleResult:
    """One piece: the DP, joined by the ILP after ``grace`` seconds (see the module docstring)."""
    clock = Deadline(time_limit)
    race = _Race(graph, clock, grace, enabled=use_ilp and len(graph.ops) >= ILP_MIN_OPS)
    try:
        with stop_when(race.check):
            dp = schedule_dp(graph, time_limit=time_limit, max_states=max_states, split=False, floor=floor)
        dp_seconds = clock.elapsed()
        portfolio: dict[str, object] = {"optimal": _summary(dp, dp_seconds)}
        if not dp.proven_optimal and race.proc is not None:
            left = race.seconds_left()
            race.wait(ILP_AFTER_DP if left is None else left + HANDOVER)
        ilp = race.result
    finally:
        race.stop()
    if ilp is not None:
        portfolio["ilp"] = _summary(ilp, race.finished_at - race.started_at)
        portfolio["ilp"]["started_at"] = round(race.started_at, 4)  # type: ignore[index]
    elif race.error:
        portfolio["ilp"] = {"error": race.error}
    elif race.proc is not None:
        why = "the dynamic program proved the optimum first" if dp.proven_optimal else "no answer in time"
        portfolio["ilp"] = {"stopped": why}
    runs = [dp] if ilp is None else [dp, ilp]
    winner = next((r for r in runs if r.proven_optimal), None)
    best = winner or min(runs, key=lambda r: r.peak)
    bound = max(r.lower_bound for r in runs)
    stats: dict[str, object] = {**best.stats, "portfolio": portfolio}
    if winner is not None:
        stats.pop("stopped", None)
        stats["proved_by"] = winner.method
    elif best.peak <= bound:
        stats.pop("stopped", None)
        stats["proved_by"] = "bound"
    else:
        reasons = [f"{r.method}: {r.stats['stopped']}" for r in runs if r.stats.get("stopped")]
        stats["stopped"] = "; ".join(reasons)
    return make_result(
        graph,
        best.order,
        method=METHOD,
        seconds=clock.elapsed(),
        lower_bound=min(bound, best.peak),
        proven=winner is not None,
        stats=stats,
    )


def schedule_auto(
    graph: Graph,
    *,
    time_limit: float | None = None,
    max_states: int = MAX_STATES,
    grace: float = GRACE,
    use_ilp: bool | None = None,
) -> ScheduleResult:
    """The memory-optimal order, proven by whichever exact method gets there first.

    Args:
        graph: The graph to schedule.
        time_limit: Seconds for the whole run; the best order of both methods is returned when
            it runs out, unproven.
        max_states: The dynamic program's state cap (see :func:`.dp.schedule_dp`).
        grace: Seconds the dynamic program runs alone on a piece before the integer program
            joins it (:data:`GRACE`).
        use_ilp: Race the integer program; default: when OR-Tools is installed and the machine
            has more than one core.

    Returns:
        A :class:`ScheduleResult` with method ``"auto"``; ``stats["proved_by"]`` names the
        method that proved it (``"optimal"`` for the dynamic program, ``"ilp"``, or ``"bound"``
        when an order met the lower bound), ``stats["portfolio"]`` what each method returned.

    Example:
        >>> from serenity.ir import Graph, Op, Tensor
        >>> T = lambda n, b: Tensor(n, (b,), "int8", b)
        >>> g = Graph("ex", [Op("A", "Relu", ("x",), ("a",)), Op("B", "Relu", ("x",), ("b",)),
        ...                  Op("C", "Add", ("a", "b"), ("c",))],
        ...           [T("x", 10), T("a", 20), T("b", 30), T("c", 5)], ["x"], ["c"])
        >>> r = schedule_auto(g)
        >>> r.peak, r.proven_optimal, r.stats["proved_by"]
        (60, True, 'optimal')
    """
    t0 = time.perf_counter()
    if use_ilp is None:
        use_ilp = (os.cpu_count() or 1) > 1 and ilp_available()

    def piece(g: Graph, limit: float | None, floor: int) -> ScheduleResult:
        return _race(g, limit, floor, max_states, grace, use_ilp)

    joined = schedule_in_pieces(graph, piece, method=METHOD, time_limit=time_limit, share=True)
    if joined is not None:
        return joined
    left = None if time_limit is None else max(0.0, time_limit - (time.perf_counter() - t0))
    return _race(graph, left, 0, max_states, grace, use_ilp)
