"""The buffers an arena plan must place for a model run on its runtime.

A ``.tflite`` model runs in TensorFlow Lite Micro, which plans its own buffer list
(:func:`~serenity.planning.tflm_greedy.tflm_buffers`: 16-byte sizes, kernel scratch buffers
live during their op); any other graph plans one buffer per activation
(:func:`~serenity.planning.buffers.buffers_of`) at the requested alignment. Either way every
buffer that holds a tensor names it, so offsets map back to tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from serenity.ir import Graph, with_alignment
from serenity.planning.buffers import Buffer, buffers_of
from serenity.planning.tflm_greedy import tflm_buffers


@dataclass(frozen=True, slots=True)
class TargetBuffers:
    """Buffers to plan and, per buffer, its tensor's name (``None`` for a scratch buffer)."""

    buffers: tuple[Buffer, ...]
    tensors: tuple[str | None, ...]

    def tensor_offsets(self, offsets: Sequence[int]) -> dict[str, int]:
        """Offsets by tensor name (scratch buffers left out)."""
        return {t: o for t, o in zip(self.tensors, offsets, strict=True) if t is not None}


def target_buffers(graph: Graph, order: Sequence[int], *, fmt: str, alignment: int) -> TargetBuffers:
    """The buffers of ``graph`` run in ``order`` on the runtime of format ``fmt``.

    Args:
        graph: The graph (raw sizes).
        order: A topological order.
        fmt: ``"tflite"`` (TFLite Micro's own list) or any other format.
        alignment: Bytes each buffer is rounded up to (TFLite Micro always uses 16).

    Raises:
        OrderError: ``order`` is not topological.
        UnsupportedError: a TFLite op whose scratch memory is not modelled.
    """
    if fmt == "tflite" and alignment == 16:
        tb = tflm_buffers(graph, order)
        return TargetBuffers(tb.buffers, tb.tensors)
    bufs = buffers_of(with_alignment(graph, alignment), order)
    return TargetBuffers(tuple(bufs), tuple(b.id for b in bufs))
