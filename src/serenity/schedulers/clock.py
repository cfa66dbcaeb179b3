"""One time limit shared by every phase of a scheduler run.

A limit holds only if every phase that can take long looks at the clock: splitting, baselines,
bounds, windows and the search each ask :meth:`Deadline.expired` (or pass :meth:`Deadline.left`
on) between steps of bounded cost, and a run cut short returns the best order found so far with
``stats["stopped"]`` saying why.

A run can also be stopped from outside: inside :func:`stop_when`, every deadline of the thread
(and the search kernels' clock polls, which call :func:`stop_requested`) counts as expired once
the given check returns true. ``--method auto`` uses it to stop the dynamic program when the
integer program proved the optimum first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_local = threading.local()


@contextmanager
def stop_when(check: Callable[[], bool]) -> Iterator[None]:
    """Within the block, this thread's runs stop (as at a time limit) once ``check()`` is true.

    ``check`` is called at every clock poll (between phases, and every few hundred search
    expansions), so it must be cheap; it may also do work of its own at those moments (the
    portfolio starts its second method from there). Blocks nest; the innermost check rules.
    """
    old = getattr(_local, "check", None)
    _local.check = check
    try:
        yield
    finally:
        _local.check = old


def stop_requested() -> bool:
    """Whether the check of the enclosing :func:`stop_when` (if any) asks this thread to stop."""
    check = getattr(_local, "check", None)
    return check is not None and bool(check())


class Deadline:
    """The instant a run must stop, from its time limit (``None``: never).

    >>> Deadline(None).left() is None, Deadline(None).expired()
    (True, False)
    >>> Deadline(0.0).expired()
    True
    """

    __slots__ = ("end", "limit", "start")

    def __init__(self, time_limit: float | None) -> None:
        self.start = time.perf_counter()
        self.limit = time_limit
        self.end = None if time_limit is None else self.start + max(0.0, time_limit)

    def left(self) -> float | None:
        """Seconds left (never negative), or ``None`` without a limit."""
        if stop_requested():
            return 0.0
        return None if self.end is None else max(0.0, self.end - time.perf_counter())

    def expired(self) -> bool:
        """Whether the limit has passed (or a :func:`stop_when` check asks to stop)."""
        return (self.end is not None and time.perf_counter() >= self.end) or stop_requested()

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.start

    def message(self) -> str:
        """The ``stats["stopped"]`` text of a run this limit (or a stop request) cut short."""
        if self.end is None or time.perf_counter() < self.end:
            return "stopped on request (another method finished first)"
        return f"time limit of {self.limit:g} s reached"
