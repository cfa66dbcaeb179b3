"""ExecuTorch adapter: an exported program to a ``.pte`` in Serenity's order and arena plan.

:func:`to_executorch` reorders the program (:func:`serenity.torch_export.reorder`), lowers it
with ``to_edge(...).to_executorch(...)`` and hands ExecuTorch's ``MemoryPlanningPass`` our
planner, :class:`ExactPlanner`. ExecuTorch calls a planning algorithm as
``algo(alignment, specs, graph_module, graph_signature, extra_padding) -> bufsizes``
(``apply_algo`` in ``executorch/exir/memory_planning.py``) after it has computed every spec's
lifetime: ``spec.lifetime = [first, last]``, node indices of the lowered graph, inclusive, views
sharing their base's spec and in-place results their input's. We plan exactly those lifetimes,
each spec at its aligned size (``spec.realign(alignment)``), with the exact arena planner, check
the plan for overlaps ourselves (:func:`~serenity.planning.check_plan`), write ``mem_id = 1``,
``mem_offset`` and ``mem_obj_id`` into each spec, and return ``[0, arena]`` (buffer 0 is the
constants', as in ExecuTorch's own ``greedy``).

The report compares the arena of ExecuTorch's own planner (``greedy``) in the export order with
ours, both as ``execution_plan[0].non_const_buffer_sizes`` of the program written.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serenity.errors import SerenityError, UnsupportedError
from serenity.ir import Order, with_alignment
from serenity.planning import PLANNERS, ArenaPlan, Buffer, check_plan

if TYPE_CHECKING:
    from torch.export import ExportedProgram

#: ExecuTorch's default alignment of planned buffers (``executorch.exir.tensor.ALIGNMENT``).
ALIGNMENT = 16


@dataclass
class ExactPlanner:
    """A ``memory_planning_algo`` for ExecuTorch's ``MemoryPlanningPass``: the exact arena
    planner over the lifetimes ExecuTorch computed (see the module docstring).

    Attributes:
        time_limit: Seconds the exact planner may search per call.
        buffers: The buffers of the last call, one per spec planned on its own (a spec that
            lives inside another's storage, ``spec.storage_base``, is placed with its base).
        offsets: Their offsets, checked free of overlaps.
        plan: The planner's record of the last call.
    """

    time_limit: float | None = None
    buffers: list[Buffer] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    plan: ArenaPlan | None = None

    def __call__(
        self, alignment: int, specs: Any, graph_module: Any, graph_signature: Any, extra_padding: int = 0
    ) -> list[int]:
        """Place ``specs`` (ExecuTorch's ``TensorSpec`` objects) and return the buffer sizes.

        Raises:
            UnsupportedError: a spec is pre-assigned a memory other than the default (``mem_id``
                other than 1), which this planner does not model.
            SerenityError: the plan overlaps (a bug; never silently written).
        """
        specs = list(specs)
        reserved = list(getattr(graph_module, "input_mem_buffer_sizes", None) or [])
        start = reserved[1] if len(reserved) > 1 else 0  # submodules' arenas come first
        own = []
        for spec in specs:
            if spec.mem_id not in (None, 1):
                raise UnsupportedError(
                    f"a tensor is pre-assigned memory {spec.mem_id}; only memory 1 is planned"
                )
            spec.realign(alignment)
            if spec.storage_base is None:
                own.append(spec)
        # 1. Lifetimes [first, last] inclusive are buffers [first, last + 1).
        self.buffers = [
            Buffer(f"spec{i}", int(s.lifetime[0]), int(s.lifetime[1]) + 1, int(s.allocated_memory))
            for i, s in enumerate(own)
        ]
        # 2. Plan exactly, and check the placement independently of the planner.
        self.plan = PLANNERS["exact"](self.buffers, time_limit=self.time_limit)
        self.offsets = list(self.plan.offsets)
        arena = check_plan(self.buffers, self.offsets)
        # 3. Write the placement into the specs; a storage-backed spec sits inside its base.
        groups = shared_objects(self.buffers, self.offsets)
        for spec, offset, group in zip(own, self.offsets, groups, strict=True):
            spec.mem_id, spec.mem_offset, spec.mem_obj_id = 1, start + offset, group
        for spec in specs:
            if spec.storage_base is not None:
                base, extra = spec.storage_base, spec.storage_base_offset
                while base.storage_base is not None:
                    base, extra = base.storage_base, extra + base.storage_base_offset
                if base.mem_offset is None:
                    raise SerenityError("a storage-backed tensor's base was not planned")
                spec.mem_id, spec.mem_offset, spec.mem_obj_id = 1, base.mem_offset + extra, base.mem_obj_id
        return [0, start + arena + extra_padding]


def shared_objects(buffers: Sequence[Buffer], offsets: Sequence[int]) -> list[int]:
    """ExecuTorch's ``mem_obj_id`` of each buffer: buffers whose address ranges overlap (at any
    time) belong to one shared object, numbered by address; its verifier requires that tensors
    sharing bytes share the id.

    >>> shared_objects([Buffer("a", 0, 1, 8), Buffer("b", 1, 2, 4), Buffer("c", 0, 2, 4)], [0, 4, 8])
    [0, 0, 1]
    """
    idx = sorted(range(len(buffers)), key=lambda i: (offsets[i], i))
    group = [0] * len(buffers)
    current, end = -1, -1
    for i in idx:
        if current < 0 or offsets[i] >= end:
            current += 1
        group[i] = current
        end = max(end, offsets[i] + buffers[i].size)
    return group


@dataclass(frozen=True)
class ExecutorchReport:
    """What :func:`to_executorch` did.

    Attributes:
        order: The op order of the program written (indices of :func:`~serenity.torch_export.graph_of`).
        executorch_arena: Bytes ExecuTorch's own planner plans in the export order.
        arena: Bytes planned in the program written (``non_const_buffer_sizes[1]``).
        peak_before: The cost model's peak of the export order (buffers aligned to 16 bytes).
        peak_after: The cost model's peak of ``order``.
        planner: ``"exact"`` (ours) or ``"executorch"`` (ExecuTorch's greedy).
        proven: The exact planner proved its arena smallest for ExecuTorch's lifetimes.
        seconds: Wall time of scheduling and planning.
    """

    order: Order
    executorch_arena: int
    arena: int
    peak_before: int
    peak_after: int
    planner: str
    proven: bool
    seconds: float

    def summary(self) -> str:
        """One line, before -> after."""
        return (
            f"ExecuTorch arena {self.executorch_arena:,} B (export order, its planner) -> "
            f"{self.arena:,} B ({self.planner} planner, peak {self.peak_after:,} B) in {self.seconds:.2f} s"
        )


def lower(program: ExportedProgram, planner: Any = None) -> Any:
    """``to_edge(program).to_executorch(...)`` with ``planner`` as the memory planning algorithm
    (``None``: ExecuTorch's default). Returns the ``ExecutorchProgramManager``."""
    from executorch.exir import ExecutorchBackendConfig, to_edge
    from executorch.exir.passes import MemoryPlanningPass

    config = ExecutorchBackendConfig(memory_planning_pass=MemoryPlanningPass(memory_planning_algo=planner))
    return to_edge(program).to_executorch(config)


def planned_bytes(manager: Any) -> int:
    """The activation arena of a lowered program: ``non_const_buffer_sizes`` past buffer 0."""
    return int(sum(manager.executorch_program.execution_plan[0].non_const_buffer_sizes[1:]))


def to_executorch(
    program: ExportedProgram,
    order: Sequence[int] | None = None,
    *,
    planner: str = "exact",
    method: str | None = None,
    time_limit: float | None = None,
) -> tuple[bytes, ExecutorchReport]:
    """Write ``program`` as an ExecuTorch ``.pte`` with its ops in ``order``.

    Args:
        program: An exported program :func:`~serenity.torch_export.graph_of` reads.
        order: Op order; default the schedule of ``method`` over the graph with buffers aligned
            as ExecuTorch aligns them, or the export order when, planned in ExecuTorch, that
            schedule would need more than ExecuTorch's own planner in the export order (its
            lifetimes can differ from the cost model's by copies the edge dialect adds).
        planner: ``"exact"`` (ours, :class:`ExactPlanner`) or ``"executorch"`` (its greedy).
        method: Scheduler name; default :data:`~serenity.schedulers.DEFAULT_METHOD`.
        time_limit: Seconds for the scheduler and for the exact planner, each.

    Returns:
        ``(pte_bytes, report)``.

    Raises:
        OrderError: ``order`` is not topological.
        SerenityError: ``planner`` is unknown.
    """
    from serenity.memory import simulate
    from serenity.schedulers import DEFAULT_METHOD, schedule
    from serenity.torch_export import graph_of, reorder

    if planner not in ("exact", "executorch"):
        raise SerenityError(f"unknown planner {planner!r}; choose exact or executorch")
    t0 = time.perf_counter()
    graph = with_alignment(graph_of(program), ALIGNMENT)
    if order is None:
        order = schedule(graph, method or DEFAULT_METHOD, time_limit=time_limit).order
        chosen = True
    else:
        chosen = False
    order = graph.check_order(order)
    baseline = planned_bytes(lower(program))
    algo = ExactPlanner(time_limit=time_limit) if planner == "exact" else None
    manager = lower(reorder(program, order), algo)
    if chosen and planned_bytes(manager) > baseline:
        # ExecuTorch's lifetimes differ from the model's (scalar copies, see torch_export), and
        # the chosen order lost: the export order with an exact plan is never above its greedy.
        order = graph.listed_order
        algo = ExactPlanner(time_limit=time_limit) if planner == "exact" else None
        manager = lower(program, algo)
    report = ExecutorchReport(
        order=order,
        executorch_arena=baseline,
        arena=planned_bytes(manager),
        peak_before=simulate(graph, graph.listed_order).peak,
        peak_after=simulate(graph, order).peak,
        planner=planner,
        proven=bool(algo is not None and algo.plan is not None and algo.plan.proven),
        seconds=time.perf_counter() - t0,
    )
    return bytes(manager.buffer), report


def save_pte(
    program: ExportedProgram, path: str | Path, order: Sequence[int] | None = None, **options: Any
) -> ExecutorchReport:
    """:func:`to_executorch`, written to ``path`` atomically; ``options`` go to it.

    Raises:
        OrderError: ``order`` is not topological.
        SerenityError: ``path`` cannot be written.
    """
    from serenity.fsutil import atomic_write_bytes

    pte, report = to_executorch(program, order, **options)
    atomic_write_bytes(Path(path), pte)
    return report


def run_pte(pte: bytes, inputs: Sequence[Any]) -> list[Any]:
    """Run a ``.pte``'s ``forward`` in ExecuTorch's runtime (``executorch.runtime``) and return
    its outputs."""
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(pte).load_method("forward")
    return list(method.execute(list(inputs)))


__all__ = [
    "ALIGNMENT",
    "ExactPlanner",
    "ExecutorchReport",
    "lower",
    "planned_bytes",
    "run_pte",
    "shared_objects",
    "to_executorch",
]
