"""Serenity: memory-optimal scheduling of irregularly wired neural networks.

>>> import serenity
>>> from serenity.ir import Graph, Op, Tensor
>>> T = lambda n, b: Tensor(n, (b,), "int8", b)
>>> g = Graph("ex", [Op("A", "Relu", ("x",), ("a",)), Op("B", "Relu", ("x",), ("b",)),
...                  Op("C", "Add", ("a", "b"), ("c",))],
...           [T("x", 10), T("a", 20), T("b", 30), T("c", 5)], ["x"], ["c"])
>>> r = serenity.schedule(g, "greedy")
>>> r.peak, g.is_topological(r.order)
(60, True)

Files: ``model = serenity.load("net.onnx")``, ``r = serenity.schedule(model.graph)``,
``serenity.save(model, r.order, "net.sched.onnx")``.
"""

from __future__ import annotations

from serenity.errors import SerenityError
from serenity.formats import Model, load, save
from serenity.ir import Graph, Op, Tensor
from serenity.memory import MemoryProfile, simulate
from serenity.schedulers import ScheduleResult, schedule

__version__ = "0.1.0"

__all__ = [
    "Graph",
    "MemoryProfile",
    "Model",
    "Op",
    "ScheduleResult",
    "SerenityError",
    "Tensor",
    "__version__",
    "load",
    "save",
    "schedule",
    "simulate",
]
