"""Serenity: memory-optimal scheduling of irregularly wired neural networks."""

from __future__ import annotations

from serenity.errors import SerenityError
from serenity.ir import Graph, Op, Tensor
from serenity.memory import MemoryProfile, simulate
from serenity.schedulers import ScheduleResult, schedule

__version__ = "0.1.0"

__all__ = [
    "Graph",
    "MemoryProfile",
    "Op",
    "ScheduleResult",
    "SerenityError",
    "Tensor",
    "__version__",
    "schedule",
    "simulate",
]
