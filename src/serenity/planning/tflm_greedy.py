"""A faithful model of TensorFlow Lite Micro's ``GreedyMemoryPlanner`` and of the arena it plans.

What TFLM does (tflite-micro, ``tensorflow/lite/micro``):

1. **Lifetimes** (``micro_allocation_info.cc``, ``MarkAllocationLifetimes``). An *allocation
   scope* counter starts at 0; graph inputs are created and used at scope 0; operator ``i`` of
   the file runs at scope ``i + 1``, creates its outputs there and is the last user of its inputs
   there; graph outputs live until the last scope. Lifetimes are inclusive
   ``[first_created, last_used]``. A tensor needs a buffer when it has no data in the file, is
   not a variable (variables go to the persistent tail) and has ``bytes != 0``; a tensor no
   operator or subgraph edge mentions keeps the lifetime ``[-1, -1]`` and is planned all the same.
   Scratch buffers that kernels request in ``Prepare`` follow the tensors, in request order, each
   living during its operator's scope only.
2. **Sizes** (``micro_allocator.cc``, ``CreatePlan``): every buffer is rounded up to
   ``MicroArenaBufferAlignment()`` = 16 bytes (``micro_arena_constants.h``).
3. **Placement** (``memory_planner/greedy_memory_planner.cc``, ``CalculateOffsetsIfNeeded``).
   Offline-planned buffers (an ``OfflineMemoryAllocation`` metadata entry) come first, in id
   order, at their given offsets. The others are written into the sort array *from its tail*
   while ids ascend, so before sorting they stand in descending id order; a stable bubble sort
   by descending size then leaves equal sizes in **descending id** order. Each buffer in turn
   walks the placed buffers in offset order, looks only at those whose lifetime intersects its
   own, and takes the first gap (from offset 0, or the end of the previous such buffer) that
   holds it, else the end of the last one.
4. **The reported arena** (``single_arena_buffer_allocator.cc``, ``GetNonPersistentUsedBytes``;
   ``CommitStaticMemoryPlan`` reserves ``GetMaximumMemorySize()`` as the head). The "head" that
   ``print_allocations`` reports after ``AllocateTensors`` is exactly the plan's
   ``max(offset + aligned size)`` over all planned buffers, tensors and scratch buffers alike.

This module reproduces 1-4 in Python (never copying the C++): :func:`plan_tflm_greedy` is the
planner over any buffer list, :func:`tflm_buffers` builds TFLM's own buffer list for a graph and
an order (subgraph 0, scratch buffers included), and :func:`predict_tflm_arena` is the head
TFLM will report. Scratch buffers come from the reference kernels' ``Prepare`` functions (see
:func:`scratch_requests`); ops whose requests are not modelled are refused rather than guessed.

TFLM never runs an op in place on its own: it gives every tensor a buffer. Under the
``inplace`` memory model :func:`tflm_buffers` merges each in-place pair into one buffer (as
:func:`~serenity.planning.buffers.buffers_of` does), which only an offline plan can give TFLM:
its element-wise kernels (ADD, MUL, RELU, LOGISTIC, TANH...) read element ``i`` before they
write element ``i``, and RESHAPE skips its copy when input and output share the address, so a
plan that puts an output at its dying input's offset runs bit for bit as the unplanned model
(checked in ``tests/test_inplace_planning.py``).
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from serenity.errors import SerenityError, UnsupportedError
from serenity.ir import Graph, with_memory_model
from serenity.planning.buffers import ArenaPlan, Buffer, align_up, inplace_names, merge_inplace, peak_of

#: ``MicroArenaBufferAlignment()`` in ``micro_arena_constants.h``.
TFLM_ALIGNMENT = 16
#: Ops that run other subgraphs; their allocation scopes nest (not modelled here).
_CONTROL_FLOW = frozenset({"WHILE", "IF", "CALL_ONCE"})
#: Ops whose reference kernels request scratch buffers in ways :func:`scratch_requests` does not
#: model (``RequestScratchBufferInArena`` in ``kernels/*.cc``).
_UNMODELLED_SCRATCH = frozenset(
    {"ADD_N", "DETECTION_POSTPROCESS", "MIRROR_PAD", "SVDF", "TRANSPOSE_CONV",
     "UNIDIRECTIONAL_SEQUENCE_LSTM", "TFLite_Detection_PostProcess"}
)  # fmt: skip


def greedy_offsets(
    sizes: Sequence[int],
    firsts: Sequence[int],
    lasts: Sequence[int],
    offline: Sequence[int | None] | None = None,
) -> list[int]:
    """The offsets ``GreedyMemoryPlanner`` gives buffers ``0..n-1`` (step 3 of the module docstring).

    Args:
        sizes: Bytes of each buffer, as added to the planner (already aligned).
        firsts: First scope each buffer is live (inclusive).
        lasts: Last scope each buffer is live (inclusive).
        offline: Per buffer, a fixed offset, or ``None`` to let the planner place it.

    Returns:
        One offset per buffer.

    Example:
        >>> greedy_offsets([32, 32, 16], [0, 1, 2], [1, 2, 2])   # equal sizes: higher id first
        [32, 0, 32]
    """
    n = len(sizes)
    fixed = list(offline) if offline is not None else [None] * n
    # 1. Placement order: offline buffers in id order, then the rest by size, ties by higher id.
    head = [i for i in range(n) if fixed[i] is not None]
    rest = sorted((i for i in range(n) if fixed[i] is None), key=lambda i: (-sizes[i], -i))
    offsets = [-1] * n
    by_offset: list[tuple[int, int]] = []  # (offset, insertion sequence), ascending
    placed: list[int] = []  # buffer of each insertion sequence number
    for i in head + rest:
        f = fixed[i]
        if f is not None:
            at = f
        else:
            # 2. First fit among placed buffers that share a scope with buffer i.
            at = 0
            for off, seq in by_offset:
                j = placed[seq]
                if firsts[j] > lasts[i] or firsts[i] > lasts[j]:
                    continue
                if off - at >= sizes[i]:
                    break
                at = max(at, off + sizes[j])
        offsets[i] = at
        # 3. Keep the list in offset order; an equal offset goes after the ones already there.
        k = bisect.bisect_right(by_offset, (at, len(placed)))
        by_offset.insert(k, (at, len(placed)))
        placed.append(i)
    return offsets


def plan_tflm_greedy(
    buffers: Sequence[Buffer],
    *,
    time_limit: float | None = None,
    offline: Sequence[int | None] | None = None,
) -> ArenaPlan:
    """Place ``buffers`` as TFLite Micro's greedy planner would (planner name ``"tflm-greedy"``).

    Buffers are taken in TFLM's id order (the order given: tensors by file index, then scratch
    buffers); a buffer ``[lower, upper)`` is TFLM's inclusive ``[lower, upper - 1]``. The
    buffers of :func:`~serenity.planning.buffers.buffers_of` on
    ``with_alignment(graph, 16)`` get exactly the offsets TFLM gives those tensors when no
    scratch buffer or unused tensor joins them; :func:`tflm_buffers` adds those.

    Args:
        buffers: The buffers, sizes already rounded as the target rounds them.
        time_limit: Ignored (the planner is a single greedy pass); kept for the shared signature.
        offline: Per buffer, a fixed offset (``OfflineMemoryAllocation``), or ``None``.

    Returns:
        The plan; ``lower_bound`` is the peak, ``proven`` says the arena reaches it.

    Raises:
        SerenityError: ``offline`` does not have one entry per buffer.

    Example:
        >>> plan_tflm_greedy([Buffer("a", 0, 2, 32), Buffer("b", 1, 3, 32), Buffer("c", 2, 3, 16)]).offsets
        (32, 0, 32)
    """
    del time_limit
    t0 = time.perf_counter()
    if offline is not None and len(offline) != len(buffers):
        raise SerenityError(f"{len(offline)} offline offsets for {len(buffers)} buffers")
    offsets = greedy_offsets(
        [b.size for b in buffers], [b.lower for b in buffers], [b.upper - 1 for b in buffers], offline
    )
    arena = max((o + b.size for o, b in zip(offsets, buffers, strict=True)), default=0)
    peak = peak_of(buffers)
    return ArenaPlan(
        offsets=tuple(offsets),
        arena=arena,
        lower_bound=peak,
        proven=arena == peak,
        planner="tflm-greedy",
        seconds=time.perf_counter() - t0,
        stats={"buffers": len(buffers), "offline": sum(o is not None for o in offline or ())},
    )


@dataclass(frozen=True, slots=True)
class TFLMBuffers:
    """The buffers TFLite Micro plans for subgraph 0 run in a given order, in its id order.

    Times are TFLM's allocation scopes (graph inputs at 0, the op at position ``s`` at
    ``s + 1``), as half-open ``[lower, upper)``; a tensor no op mentions lives at ``[-1, 0)``.

    Attributes:
        buffers: Tensors needing a buffer (file order), then scratch buffers (request order);
            sizes rounded up to 16 bytes. Under ``inplace`` an in-place chain is one buffer,
            in its first tensor's place, the others in its :attr:`~.Buffer.aliases`.
        tensors: Per buffer, the name of its (first) tensor, or ``None`` for a scratch buffer.
    """

    buffers: tuple[Buffer, ...]
    tensors: tuple[str | None, ...]


def scratch_requests(graph: Graph, op: int) -> tuple[int, ...]:
    """The bytes op ``op``'s reference kernel requests with ``RequestScratchBufferInArena``.

    Modelled (``kernels/reduce_common.cc``, ``conv_common.cc``, ``depthwise_conv_common.cc``,
    ``fully_connected.cc``): ``MEAN``/``SUM`` ask ``4 * output elements`` for int8/int16 input,
    then ``4 * input rank`` and ``4 * axis elements``; ``REDUCE_MAX``/``REDUCE_MIN``/
    ``REDUCE_ALL`` ask the last two; ``CONV_2D``/``DEPTHWISE_CONV_2D``/``FULLY_CONNECTED`` with
    an int4 filter ask the filter's element count. Other builtin kernels ask nothing.

    Args:
        graph: The graph (sizes need not be aligned).
        op: An op index.

    Returns:
        The requested byte counts, in request order (unaligned).

    Raises:
        UnsupportedError: the op's kernel requests scratch memory this model does not size.
    """
    o = graph.ops[op]
    t = graph.tensors

    def elements(name: str) -> int:
        return math.prod(t[name].shape)

    if o.type in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_ALL"):
        x, axis = o.inputs[0], o.inputs[1]
        out: list[int] = []
        if o.type in ("MEAN", "SUM") and t[x].dtype in ("int8", "int16"):
            out.append(4 * elements(o.outputs[0]))
        return (*out, 4 * len(t[x].shape), 4 * elements(axis))
    if o.type in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        w = o.inputs[1] if len(o.inputs) > 1 else ""
        return (elements(w),) if w and t[w].dtype == "int4" else ()
    if o.type in _UNMODELLED_SCRATCH:
        raise UnsupportedError(
            f"op '{o.name}': the TFLite Micro kernel of {o.type} requests scratch memory that "
            "Serenity does not model, so its arena cannot be predicted"
        )
    return ()


def tflm_buffers(graph: Graph, order: Sequence[int]) -> TFLMBuffers:
    """TFLM's buffer list for subgraph 0 of ``graph`` when the file lists its ops in ``order``.

    Args:
        graph: A graph loaded from a ``.tflite`` file (tensors in file order; raw sizes). Under
            its ``inplace`` memory model, each in-place pair of ``order`` shares a buffer (the
            pairs come from the raw sizes, before TFLM rounds them).
        order: The op order of the file TFLM will run.

    Returns:
        The buffers and their tensors (see :class:`TFLMBuffers`).

    Raises:
        OrderError: ``order`` is not topological.
        UnsupportedError: the graph runs other subgraphs, or an op's scratch is not modelled.
    """
    order = graph.check_order(order)
    flow = [graph.ops[i].name for i in order if graph.ops[i].type in _CONTROL_FLOW]
    if flow:
        raise UnsupportedError(
            f"op '{flow[0]}' runs another subgraph; TFLM's nested allocation scopes are not modelled"
        )
    n = len(order)
    scope = {v: s + 1 for s, v in enumerate(order)}
    buffers: list[Buffer] = []
    names: list[str | None] = []
    for name, tensor in graph.tensors.items():
        if not tensor.is_activation or tensor.nbytes == 0:
            continue
        first = last = -1
        if tensor.is_input:
            first = last = 0
        if tensor.producer is not None:
            first = last = scope[tensor.producer]
        if tensor.consumers:
            last = max(last, *(scope[c] for c in tensor.consumers))
        if tensor.is_output:
            first = n if first < 0 else first
            last = n
        buffers.append(Buffer(name, first, last + 1, align_up(tensor.nbytes, TFLM_ALIGNMENT)))
        names.append(name)
    for s, v in enumerate(order):
        for k, size in enumerate(scratch_requests(graph, v)):
            sid = f"scratch:{graph.ops[v].name}:{k}"
            buffers.append(Buffer(sid, s + 1, s + 2, align_up(size, TFLM_ALIGNMENT)))
            names.append(None)
    pairs = inplace_names(graph, order)
    if pairs:  # a tensor's buffer is named after it; scratch buffers are in no pair
        tensor_of = dict(zip((b.id for b in buffers), names, strict=True))
        buffers = merge_inplace(buffers, pairs)
        names = [tensor_of[b.id] for b in buffers]
    return TFLMBuffers(tuple(buffers), tuple(names))


def predict_tflm_arena(
    graph: Graph, order: Sequence[int], *, offline: Mapping[str, int] | None = None
) -> int:
    """The arena head TFLite Micro reports for ``graph`` listed in ``order`` (step 4).

    Args:
        graph: A graph loaded from a ``.tflite`` file (raw sizes; TFLM rounds them itself).
            Its memory model does not matter: TFLM plans a buffer per tensor, and an in-place
            pair shares bytes only where ``offline`` gives both the same offset.
        order: The file's op order.
        offline: Offsets of an embedded ``OfflineMemoryAllocation`` plan by tensor name; tensors
            not named are placed by the planner.

    Returns:
        ``max(offset + size)`` over every planned buffer, scratch buffers included.

    Raises:
        The errors of :func:`tflm_buffers`.

    Example:
        >>> from serenity.ir import Graph, Op, Tensor
        >>> g = Graph("g", [Op("a", "Relu", ("x",), ("y",)), Op("b", "Relu", ("y",), ("z",))],
        ...           [Tensor("x", (20,), "int8", 20), Tensor("y", (5,), "int8", 5),
        ...            Tensor("z", (20,), "int8", 20)], ["x"], ["z"])
        >>> predict_tflm_arena(g, [0, 1])   # x and z (32 B each) share offset 0, y sits above
        48
    """
    tb = tflm_buffers(with_memory_model(graph, "tflm"), order)
    fixed = None
    if offline:
        fixed = [None if t is None else offline.get(t) for t in tb.tensors]
    return plan_tflm_greedy(tb.buffers, offline=fixed).arena


__all__ = [
    "TFLM_ALIGNMENT",
    "TFLMBuffers",
    "greedy_offsets",
    "plan_tflm_greedy",
    "predict_tflm_arena",
    "scratch_requests",
    "tflm_buffers",
]
