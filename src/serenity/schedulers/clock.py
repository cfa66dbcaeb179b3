"""One time limit shared by every phase of a scheduler run.

A limit holds only if every phase that can take long looks at the clock: splitting, baselines,
bounds, windows and the search each ask :meth:`Deadline.expired` (or pass :meth:`Deadline.left`
on) between steps of bounded cost, and a run cut short returns the best order found so far with
``stats["stopped"]`` saying why.
"""

from __future__ import annotations

import time


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
        return None if self.end is None else max(0.0, self.end - time.perf_counter())

    def expired(self) -> bool:
        """Whether the limit has passed."""
        return self.end is not None and time.perf_counter() >= self.end

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.start

    def message(self) -> str:
        """The ``stats["stopped"]`` text of a run this limit cut short."""
        return f"time limit of {self.limit:g} s reached"
