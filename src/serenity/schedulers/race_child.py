"""``python -m serenity.schedulers.race_child IN OUT``: the integer program's side of the race of
:mod:`.auto` (the ``auto`` method), in a process of its own."""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import time
from pathlib import Path

from serenity.fsutil import atomic_write_bytes

#: Niceness added to the child, so that on a busy machine the DP (which proves most pieces)
#: keeps its speed.
NICE = 10


def main(argv: list[str] | None = None) -> int:
    """Read the pickled ``(graph, end, workers)`` from ``IN`` (``end``: the ``time.time()`` to
    stop by, or ``None``), solve with CP-SAT at a lower priority, and write the pickled
    :class:`.ScheduleResult` (or the error text) to ``OUT``, through a temporary file renamed
    into place (:func:`.fsutil.atomic_write_bytes`) so that the parent never reads half of it."""
    src, dst = argv if argv is not None else sys.argv[1:3]
    with contextlib.suppress(AttributeError, OSError):  # platforms without nice
        os.nice(NICE)
    with open(src, "rb") as f:
        graph, end, workers = pickle.load(f)
    # ``end`` is a wall-clock instant (both processes share the clock), so the child's own start-up
    # counts against it.
    time_limit = None if end is None else max(0.0, end - time.time())
    try:
        from serenity.schedulers.ilp import schedule_ilp

        got: object = schedule_ilp(graph, time_limit=time_limit, workers=workers)
    except Exception as e:  # reported to the parent, which decides
        got = f"{type(e).__name__}: {e}"
    atomic_write_bytes(Path(dst), pickle.dumps(got))
    return 0


if __name__ == "__main__":
    sys.exit(main())
