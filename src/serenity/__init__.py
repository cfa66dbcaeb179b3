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

The names below are imported on first use, so ``import serenity`` (and the command line's start)
loads neither numpy, onnx nor numba until a command needs them.
"""

from __future__ import annotations

# Not ``typing.TYPE_CHECKING``: importing typing (and re) would be the first thing ``python -m
# serenity`` does, before its Ctrl-C handler is in place (:mod:`serenity._entry`).
TYPE_CHECKING = False

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_LAZY = {
    "Graph": "serenity.ir",
    "Op": "serenity.ir",
    "Tensor": "serenity.ir",
    "with_memory_model": "serenity.ir",
    "from_torch": "serenity.torch_export",
    "MemoryProfile": "serenity.memory",
    "simulate": "serenity.memory",
    "Model": "serenity.formats",
    "load": "serenity.formats",
    "save": "serenity.formats",
    "ScheduleResult": "serenity.schedulers",
    "schedule": "serenity.schedulers",
    "SerenityError": "serenity.errors",
}

if TYPE_CHECKING:
    from typing import Any

    from serenity.errors import SerenityError
    from serenity.formats import Model, load, save
    from serenity.ir import Graph, Op, Tensor, with_memory_model
    from serenity.memory import MemoryProfile, simulate
    from serenity.schedulers import ScheduleResult, schedule
    from serenity.torch_export import from_torch


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'serenity' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "Graph",
    "MemoryProfile",
    "Model",
    "Op",
    "ScheduleResult",
    "SerenityError",
    "Tensor",
    "__version__",
    "from_torch",
    "load",
    "save",
    "schedule",
    "simulate",
    "with_memory_model",
]
