"""Arena planners: where each activation buffer lives in one contiguous arena.

Every planner shares one signature, ``plan(buffers, *, time_limit=None) -> ArenaPlan``, over the
buffers of :func:`buffers_of` (or a plain buffer list, as minimalloc's CSV gives), and returns
one record, :class:`ArenaPlan`. :func:`check_plan` validates any placement independently.
Under the ``inplace`` memory model an op's output and the dying input it overwrites are one
buffer (:attr:`Buffer.aliases`), so every planner keeps them at one offset.

The exact planner (:mod:`.exact`) is imported on first use: its compiled search imports numba,
which a command that never plans (``serenity schedule`` without ``--embed-plan``) should not pay
for. ``PLANNERS["exact"]`` and ``serenity.planning.plan_exact`` load it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from serenity.planning.buffers import ArenaPlan, Buffer, align_up, buffers_of, check_plan, peak_of
from serenity.planning.csvio import read_csv, write_csv
from serenity.planning.tflm_greedy import plan_tflm_greedy

if TYPE_CHECKING:
    from serenity.planning.exact import plan_exact

#: A planner: ``plan(buffers, *, time_limit=None) -> ArenaPlan``.
Planner = Callable[..., ArenaPlan]


class _Registry(Mapping[str, Planner]):
    """Planners by name; a planner given as ``"module:function"`` is imported when looked up.

    Those are the compiled ones: once one is loaded, a first compile of its kernel says so on
    stderr (:func:`serenity.schedulers.warmup.announce_compiles`).
    """

    def __init__(self, planners: dict[str, Planner | str]) -> None:
        self._planners = planners

    def __getitem__(self, name: str) -> Planner:
        planner = self._planners[name]
        if isinstance(planner, str):
            module, _, attr = planner.partition(":")
            planner = self._planners[name] = getattr(importlib.import_module(module), attr)
            from serenity.schedulers.warmup import announce_compiles

            announce_compiles()
        return planner

    def __iter__(self) -> Iterator[str]:
        return iter(self._planners)

    def __len__(self) -> int:
        return len(self._planners)


#: Every registered planner by name (the name its :class:`ArenaPlan` carries).
PLANNERS: Mapping[str, Planner] = _Registry(
    {"tflm-greedy": plan_tflm_greedy, "exact": "serenity.planning.exact:plan_exact"}
)


def __getattr__(name: str) -> Any:
    if name == "plan_exact":
        return PLANNERS["exact"]
    raise AttributeError(f"module 'serenity.planning' has no attribute {name!r}")


__all__ = ["PLANNERS", "ArenaPlan", "Buffer", "Planner", "align_up", "buffers_of", "check_plan", "peak_of"]
__all__ += ["plan_exact", "read_csv", "write_csv"]
