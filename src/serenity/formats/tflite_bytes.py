"""Byte-level work on a ``.tflite`` file: the operator vector of subgraph 0.

A flatbuffer vector of tables is an array of 4-byte *forward* offsets, one per slot, each
pointing at a table that lies after the whole vector. Re-pointing slot ``j`` at the table of op
``order[j]`` keeps every offset positive and every other byte in place, which is how
:func:`serenity.formats.tflite_io.save_tflite` reorders a model, and how
:func:`structure_problem` checks that two files differ in nothing else.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

from serenity.formats import Model


@dataclass(frozen=True, slots=True)
class TFLiteSource:
    """What ``save_tflite`` needs to write a model back: the file's bytes and one position.

    Attributes:
        data: The whole file, unchanged.
        operators_vector: Byte position of the first slot of subgraph 0's operator vector.
        n_ops: Number of operators in subgraph 0.
        offline_plan: The file carries ``OfflineMemoryAllocation`` metadata (arena offsets
            computed for the listed order).
    """

    data: bytes
    operators_vector: int
    n_ops: int
    offline_plan: bool

    def model_t(self) -> Any:
        """The schema's object-API ``ModelT`` of the file (built on demand; copies buffers)."""
        return fb.ModelT.InitFromObj(fb.Model.GetRootAs(self.data, 0))


def permute_operators(src: TFLiteSource, order: Sequence[int]) -> bytes:
    """The file's bytes with subgraph 0's operator slots re-pointed into ``order``.

    Slot ``j`` at byte ``s_j`` holds ``table - s_j``; we keep each op's table where it is and
    store ``table[order[j]] - s_j``. Every table lies after the vector, so offsets stay positive.
    """
    out = bytearray(src.data)
    vec = src.operators_vector
    tables = operator_tables(src)
    for j, i in enumerate(order):
        slot = vec + 4 * j
        assert tables[i] > slot + 3, "flatbuffer offsets always point forward"
        struct.pack_into("<I", out, slot, tables[i] - slot)
    return bytes(out)


def structure_problem(a: Model, b: Model) -> str | None:
    """How ``b``'s file differs from ``a``'s beyond subgraph 0's operator order, or ``None``.

    Files written by ``save_tflite`` differ from their source only in the slots of the operator
    vector, and those slots point at the same operator tables; anything else is a difference
    (reported at its first byte).

    Args:
        a: The original model.
        b: The reordered model.

    Returns:
        One line describing the first difference, or ``None`` when there is none.
    """
    sa, sb = a.source, b.source
    if not isinstance(sa, TFLiteSource) or not isinstance(sb, TFLiteSource):
        return "a model was not loaded from a .tflite file"
    if len(sa.data) != len(sb.data):
        return f"the files differ in size ({len(sa.data)} vs {len(sb.data)} bytes)"
    if (sa.operators_vector, sa.n_ops) != (sb.operators_vector, sb.n_ops):
        return "subgraph 0's operator vector is at a different place or has a different length"
    lo, hi = sa.operators_vector, sa.operators_vector + 4 * sa.n_ops
    for start, end in ((0, lo), (hi, len(sa.data))):
        at = first_difference(sa.data, sb.data, start, end)
        if at is not None:
            return f"the files differ at byte {at}, outside subgraph 0's operator order"
    if sorted(operator_tables(sa)) != sorted(operator_tables(sb)):
        return "subgraph 0's operator slots point at different operator tables"
    return None


def first_difference(a: bytes, b: bytes, start: int, end: int, chunk: int = 1 << 20) -> int | None:
    """The first position in ``[start, end)`` where ``a`` and ``b`` differ (compared by chunks)."""
    for lo in range(start, end, chunk):
        hi = min(end, lo + chunk)
        if a[lo:hi] != b[lo:hi]:
            return next(k for k in range(lo, hi) if a[k] != b[k])
    return None


def operator_tables(src: TFLiteSource) -> list[int]:
    """Absolute byte positions of subgraph 0's operator tables, in slot order."""
    vec = src.operators_vector
    return [vec + 4 * k + struct.unpack_from("<I", src.data, vec + 4 * k)[0] for k in range(src.n_ops)]


__all__ = ["TFLiteSource", "first_difference", "operator_tables", "permute_operators", "structure_problem"]
