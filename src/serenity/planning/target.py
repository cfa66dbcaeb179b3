"""The buffers an arena plan must place for a model run on its runtime.

A ``.tflite`` model runs in TensorFlow Lite Micro, which plans its own buffer list
(:func:`~serenity.planning.tflm_greedy.tflm_buffers`: 16-byte sizes, kernel scratch buffers
live during their op); any other graph plans one buffer per activation
(:func:`~serenity.planning.buffers.buffers_of`) at the requested alignment. Either way every
buffer that holds a tensor names it, so offsets map back to tensors. Under the ``inplace``
memory model a buffer may hold an in-place chain of tensors (:attr:`.Buffer.aliases`); each of
them gets the buffer's offset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from serenity.ir import Graph, with_memory_model
from serenity.planning.buffers import Buffer, buffers_of
from serenity.planning.tflm_greedy import tflm_buffers


@dataclass(frozen=True, slots=True)
class TargetBuffers:
    """Buffers to plan and, per buffer, its (first) tensor's name (``None`` for a scratch buffer)."""

    buffers: tuple[Buffer, ...]
    tensors: tuple[str | None, ...]

    def tensor_offsets(self, offsets: Sequence[int]) -> dict[str, int]:
        """Offsets by tensor name, every tensor of an in-place chain at its buffer's (scratch
        buffers left out)."""
        return {
            name: o
            for b, t, o in zip(self.buffers, self.tensors, offsets, strict=True)
            if t is not None
            for name in b.names
        }


def target_buffers(
    graph: Graph, order: Sequence[int], *, fmt: str, alignment: int, memory_model: str | None = None
) -> TargetBuffers:
    """The buffers of ``graph`` run in ``order`` on the runtime of format ``fmt``.

    Args:
        graph: The graph (raw sizes).
        order: A topological order.
        fmt: ``"tflite"`` (TFLite Micro's own list) or any other format.
        alignment: Bytes each buffer is rounded up to (TFLite Micro always uses 16).
        memory_model: ``"tflm"`` or ``"inplace"`` (:mod:`serenity.memory`); ``None`` for the
            graph's own. Under ``inplace`` each in-place chain of ``order`` is one buffer; the
            pairs come from the raw sizes, before alignment.

    Raises:
        OrderError: ``order`` is not topological.
        UnsupportedError: a TFLite op whose scratch memory is not modelled.
    """
    if memory_model is not None:
        graph = with_memory_model(graph, memory_model)
    if fmt == "tflite" and alignment == 16:
        tb = tflm_buffers(graph, order)
        return TargetBuffers(tb.buffers, tb.tensors)
    bufs = buffers_of(graph, order, alignment=alignment)
    return TargetBuffers(tuple(bufs), tuple(b.id for b in bufs))
