"""Arena planners: where each activation buffer lives in one contiguous arena.

Every planner shares one signature, ``plan(buffers, *, time_limit=None) -> ArenaPlan``, over the
buffers of :func:`buffers_of` (or a plain buffer list, as minimalloc's CSV gives), and returns
one record, :class:`ArenaPlan`. :func:`check_plan` validates any placement independently.
"""

from __future__ import annotations

from collections.abc import Callable

from serenity.planning.buffers import ArenaPlan, Buffer, align_up, buffers_of, check_plan, peak_of
from serenity.planning.csvio import read_csv, write_csv
from serenity.planning.exact import plan_exact
from serenity.planning.tflm_greedy import plan_tflm_greedy

#: A planner: ``plan(buffers, *, time_limit=None) -> ArenaPlan``.
Planner = Callable[..., ArenaPlan]
#: Every registered planner by name (the name its :class:`ArenaPlan` carries).
PLANNERS: dict[str, Planner] = {"tflm-greedy": plan_tflm_greedy}
PLANNERS["exact"] = plan_exact

__all__ = ["PLANNERS", "ArenaPlan", "Buffer", "Planner", "align_up", "buffers_of", "check_plan", "peak_of"]
__all__ += ["plan_exact", "read_csv", "write_csv"]
