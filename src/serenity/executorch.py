"""``serenity.executorch``: the names the ExecuTorch back end is documented under (the
``[torch]`` extra). The code lives in :mod:`serenity.executorch_io`; this module re-exports it,
so ``serenity.executorch.to_executorch(program)`` reads as the issue and the README write it."""

from __future__ import annotations

from serenity.executorch_io import ExactPlanner, ExecutorchReport, run_pte, save_pte, to_executorch

__all__ = ["ExactPlanner", "ExecutorchReport", "run_pte", "save_pte", "to_executorch"]
