"""An arena plan inside the ``.tflite`` file: TFLite Micro's ``OfflineMemoryAllocation`` metadata.

TensorFlow Lite Micro looks for a model metadata entry named ``OfflineMemoryAllocation``
(``micro_allocation_info.cc``, ``GetOfflinePlannedOffsets``; format in
``micro/docs/memory_management.md``). Its buffer holds little-endian int32s
``[version=0, number of subgraphs, n, offset_0 .. offset_{n-1}]``, one offset per tensor of all
subgraphs together (subgraph 0's tensors first, constants included); ``-1`` lets the greedy
planner place the tensor itself. TFLM refuses the model when ``n`` differs from its tensor count,
and places the given tensors at exactly those offsets from the start of the arena's head,
fitting every other buffer (kernel scratch buffers included) around them. Only ``n`` is read;
we write the header as Vela does (``0, subgraphs, n``).

A plan is valid only for one operator order, so :func:`embed_plan` writes both together: the
operators in ``order`` (:func:`~serenity.formats.tflite_bytes.permute_operators`) and the
offsets. A file that already holds a plan of the right length is patched in place, byte for
byte; otherwise the file is re-serialised through the schema's object API with every buffer's
data aligned to 16 bytes (the schema's ``force_align: 16``, which the Python builder ignores
unless asked, and what TFLM's own ``tflite_flatbuffer_align`` tool produces), and any earlier
plan entry is replaced, never duplicated. Re-serialising keeps every field the bundled schema
knows; buffers stored after the flatbuffer (files over 2 GB) are refused.

**In place.** TFLM gives every tensor a buffer of its own, but honours a plan that puts an op's
output at the offset of an input that dies at it: its element-wise kernels (ADD, MUL, RELU,
LOGISTIC, TANH...) read element ``i`` before writing element ``i``, and RESHAPE skips its copy
when both share an address. Under the ``inplace`` memory model (:mod:`serenity.memory`),
:func:`embed_plan` accepts such pairs -- the ones :func:`serenity.memory.inplace_pairs` finds in
the order, from the tensors' raw sizes -- and still refuses any other overlap. Measured on the
shared models and on a hand-built chain of element-wise ops, such files run bit for bit as the
unplanned model, and TFLM's arena is the plan's (``tests/test_inplace_planning.py``).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

from serenity.errors import ModelFormatError, SerenityError, UnsupportedError
from serenity.formats import Model
from serenity.formats.tflite_bytes import TFLiteSource, permute_operators
from serenity.fsutil import atomic_write_bytes
from serenity.ir import with_memory_model
from serenity.planning.buffers import buffers_of, check_plan, inplace_names, merge_inplace

#: The metadata name TFLM looks for.
OFFLINE_PLAN = "OfflineMemoryAllocation"
#: TFLM's buffer alignment (``MicroArenaBufferAlignment()``); also the data alignment we write.
ALIGNMENT = 16
_INT32_MAX = 2**31 - 1


def read_offline_plan(model: bytes | str | os.PathLike[str]) -> list[int] | None:
    """The offsets of a file's ``OfflineMemoryAllocation`` entry, or ``None`` without one.

    Args:
        model: A ``.tflite`` path or its bytes.

    Returns:
        ``n`` offsets (``-1`` for tensors TFLM places itself), one per tensor of all subgraphs.

    Raises:
        ModelFormatError: the file cannot be read, or the entry is malformed (too short, or a
            count that disagrees with the buffer's length), or there are two entries.
    """
    data, label = _read(model)
    m = _root(data, label)
    entries = _plan_entries(m)
    if not entries:
        return None
    if len(entries) > 1:
        raise ModelFormatError(f"{label}: {len(entries)} {OFFLINE_PLAN} metadata entries")
    raw = _buffer_data(m, entries[0][1], label)
    if len(raw) < 12 or len(raw) % 4:
        raise ModelFormatError(f"{label}: {OFFLINE_PLAN} buffer has {len(raw)} bytes")
    words = struct.unpack_from(f"<{len(raw) // 4}i", raw)
    if words[2] != len(words) - 3:
        raise ModelFormatError(f"{label}: {OFFLINE_PLAN} says {words[2]} offsets but holds {len(words) - 3}")
    return list(words[3:])


def offline_offsets(model: Model) -> dict[str, int]:
    """The embedded plan's offsets of subgraph 0's tensors, by tensor name (``-1`` entries left out).

    Raises:
        ModelFormatError: ``model`` is not a ``.tflite`` model, or its plan is malformed or has
            fewer offsets than subgraph 0 has tensors.
    """
    src = _source(model)
    words = read_offline_plan(src.data)
    if words is None:
        return {}
    names = list(model.graph.tensors)
    if len(words) < len(names):
        raise ModelFormatError(
            f"{model.path}: {OFFLINE_PLAN} has {len(words)} offsets for {len(names)} tensors"
        )
    return {name: o for name, o in zip(names, words, strict=False) if o >= 0}


def plan_words(model: Model, offsets: Mapping[str, int]) -> list[int]:
    """The int32s of an ``OfflineMemoryAllocation`` buffer for ``offsets`` (by tensor name).

    Args:
        model: A ``.tflite`` model.
        offsets: Byte offsets of some of subgraph 0's activation tensors.

    Returns:
        ``[0, number of subgraphs, n, offset_0 .. offset_{n-1}]`` with ``-1`` for every tensor
        not in ``offsets`` (constants and other subgraphs' tensors included).

    Raises:
        SerenityError: a name is unknown or not an activation, or an offset is negative, above
            2**31 - 1, or not a multiple of 16.
    """
    src = _source(model)
    m = _root(src.data, str(model.path))
    n_sub = int(m.SubgraphsLength())
    total = sum(int(m.Subgraphs(k).TensorsLength()) for k in range(n_sub))
    index = {name: i for i, name in enumerate(model.graph.tensors)}
    words = [-1] * total
    for name, off in offsets.items():
        t = model.graph.tensors.get(name)
        if t is None or not t.is_activation:
            raise SerenityError(f"{model.path}: '{name}' is not an activation tensor of subgraph 0")
        if not 0 <= off <= _INT32_MAX or off % ALIGNMENT:
            raise SerenityError(
                f"{model.path}: offset {off} of tensor '{name}' must be a multiple of {ALIGNMENT} "
                f"in [0, {_INT32_MAX}]"
            )
        words[index[name]] = int(off)
    return [0, n_sub, total, *words]


def embed_plan(
    model: Model, order: Sequence[int], offsets: Mapping[str, int], *, memory_model: str = "tflm"
) -> bytes:
    """The file of ``model`` with subgraph 0's operators in ``order`` and ``offsets`` as its plan.

    The plan is checked first: under TFLM's 16-byte sizes no two tensors live at the same step
    of ``order`` may share a byte -- except, under ``memory_model="inplace"``, an op's output
    and the input it overwrites in place, at the same offset (see the module docstring).

    Args:
        model: A model from :func:`~serenity.formats.tflite_io.load_tflite`.
        order: A topological permutation of the op indices.
        offsets: Arena offsets of subgraph 0's activation tensors, by name; tensors left out
            are placed by TFLM's greedy planner around the planned ones.
        memory_model: ``"tflm"`` (every tensor its own bytes) or ``"inplace"``.

    Returns:
        The new file's bytes.

    Raises:
        OrderError: ``order`` is not topological.
        SerenityError: the plan is invalid (see :func:`plan_words`), or two planned tensors
            overlap (naming both).
        UnsupportedError: the file stores buffers after the flatbuffer (``offset``/``size``).
        ModelFormatError: ``model`` did not come from a ``.tflite`` file.
    """
    src = _source(model)
    order = model.graph.check_order(order)
    words = plan_words(model, offsets)
    # In-place pairs (raw sizes) that the plan does put at one offset share a buffer.
    pairs = inplace_names(with_memory_model(model.graph, memory_model), order)
    shared = {o: c for o, c in pairs.items() if o in offsets and offsets.get(c) == offsets[o]}
    per_tensor = buffers_of(with_memory_model(model.graph, "tflm"), order, alignment=ALIGNMENT)
    bufs = [b for b in merge_inplace(per_tensor, shared) if b.id in offsets]
    check_plan(bufs, [offsets[b.id] for b in bufs])
    data = permute_operators(src, order)
    payload = struct.pack(f"<{len(words)}i", *words)
    patched = _patch_in_place(data, payload)
    return patched if patched is not None else _reserialise(data, payload, str(model.path))


def save_tflite_with_plan(
    model: Model,
    order: Sequence[int],
    offsets: Mapping[str, int],
    path: Path,
    *,
    memory_model: str = "tflm",
) -> None:
    """Write :func:`embed_plan` to ``path`` (atomically: a temporary file renamed).

    Raises:
        The errors of :func:`embed_plan`.
    """
    atomic_write_bytes(Path(path), embed_plan(model, order, offsets, memory_model=memory_model))


def semantic_problem(a: Model, b: Model) -> str | None:
    """How ``b`` differs from ``a`` in meaning, beyond subgraph 0's operator order and an
    ``OfflineMemoryAllocation`` plan, or ``None``.

    :func:`embed_plan` may re-serialise a file (buffers re-aligned, a metadata buffer added), so a
    planned file is compared through the schema's object API, not byte for byte: every field of
    every table, with each tensor's buffer index replaced by the buffer's bytes, subgraph 0's
    operators as a multiset, and the plan's metadata entry left out.

    Returns:
        One line naming the first part that differs, or ``None``.
    """
    ca, cb = _canonical(_source(a).data), _canonical(_source(b).data)
    for key in ca:
        if ca[key] != cb.get(key):
            return f"the TFLite models differ in {key} (beyond operator order and the arena plan)"
    return None


def _canonical(data: bytes) -> dict[str, Any]:
    """The model as nested tuples (see :func:`semantic_problem`)."""
    mt = fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0))
    buffers = [b"" if b.data is None else np.asarray(b.data, np.uint8).tobytes() for b in mt.buffers or []]

    def buf(i: int) -> bytes:
        return buffers[i] if 0 <= i < len(buffers) else b""

    def plain(x: Any) -> Any:
        if isinstance(x, np.ndarray):
            return ("array", x.dtype.str, tuple(x.ravel().tolist()), x.shape)
        if isinstance(x, (list, tuple)):
            return tuple(plain(v) for v in x)
        if isinstance(x, dict):
            return tuple(sorted((k, plain(v)) for k, v in x.items()))
        if hasattr(x, "__dict__"):
            return (type(x).__name__, tuple(sorted((k, plain(v)) for k, v in vars(x).items())))
        return x

    subgraphs = []
    for k, sg in enumerate(mt.subgraphs or []):
        tensors = []
        for t in sg.tensors or []:
            fields = {k2: v for k2, v in vars(t).items() if k2 != "buffer"}
            tensors.append((plain(fields), buf(t.buffer)))
        ops = [plain(op) for op in sg.operators or []]
        rest = {k2: v for k2, v in vars(sg).items() if k2 not in ("tensors", "operators")}
        subgraphs.append(
            (tuple(tensors), tuple(sorted(ops, key=repr)) if k == 0 else tuple(ops), plain(rest))
        )
    metadata = tuple(
        (md.name, buf(md.buffer))
        for md in mt.metadata or []
        if md.name not in (OFFLINE_PLAN, OFFLINE_PLAN.encode())
    )
    return {
        "version": mt.version,
        "operator codes": plain(mt.operatorCodes),
        "subgraphs": tuple(subgraphs),
        "description": mt.description,
        "metadata": metadata,
        "signature defs": plain(mt.signatureDefs),
    }


# -- internals ----------------------------------------------------------------------------------


def _read(model: bytes | str | os.PathLike[str]) -> tuple[bytes, str]:
    if isinstance(model, bytes):
        return model, "<model bytes>"
    try:
        return Path(model).read_bytes(), str(model)
    except OSError as e:
        raise ModelFormatError(f"{model}: cannot read ({e.strerror or e})") from e


def _root(data: bytes, label: str) -> Any:
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelFormatError(f"{label}: not a TFLite flatbuffer")
    return fb.Model.GetRootAs(data, 0)


def _source(model: Model) -> TFLiteSource:
    if not isinstance(model.source, TFLiteSource):
        raise ModelFormatError(f"{model.path}: model was not loaded from a .tflite file")
    return model.source


def _plan_entries(m: Any) -> list[tuple[int, int]]:
    """``(metadata index, buffer index)`` of every entry named ``OfflineMemoryAllocation``."""
    out = []
    for k in range(m.MetadataLength()):
        md = m.Metadata(k)
        if md.Name() == OFFLINE_PLAN.encode():
            out.append((k, int(md.Buffer())))
    return out


def _buffer_data(m: Any, index: int, label: str) -> bytes:
    if not 0 <= index < m.BuffersLength():
        raise ModelFormatError(f"{label}: {OFFLINE_PLAN} names buffer {index} of {m.BuffersLength()}")
    return bytes(m.Buffers(index).DataAsNumpy()) if m.Buffers(index).DataLength() else b""


def _buffer_users(m: Any) -> dict[int, int]:
    """How many tensors (all subgraphs) and metadata entries name each buffer."""
    users: dict[int, int] = {}
    for k in range(m.SubgraphsLength()):
        sg = m.Subgraphs(k)
        for i in range(sg.TensorsLength()):
            b = int(sg.Tensors(i).Buffer())
            users[b] = users.get(b, 0) + 1
    for k in range(m.MetadataLength()):
        b = int(m.Metadata(k).Buffer())
        users[b] = users.get(b, 0) + 1
    return users


def _patch_in_place(data: bytes, payload: bytes) -> bytes | None:
    """``data`` with the one existing plan's buffer overwritten, when it has exactly the room and
    nothing else reads that buffer; else ``None``."""
    m = fb.Model.GetRootAs(data, 0)
    entries = _plan_entries(m)
    if len(entries) != 1:
        return None
    b = entries[0][1]
    if not 0 <= b < m.BuffersLength() or _buffer_users(m).get(b, 0) != 1:
        return None
    buf = m.Buffers(b)
    if buf.DataLength() != len(payload):
        return None
    start = buf._tab.Vector(buf._tab.Offset(4))  # Buffer.data is field 0 (vtable slot 4)
    if start % 4:
        return None  # TFLM reads the words as uint32: rewrite with alignment instead
    out = bytearray(data)
    out[start : start + len(payload)] = payload
    return bytes(out)


class _AlignedBufferT(fb.BufferT):  # type: ignore[misc]
    """A ``BufferT`` whose data vector starts on a 16-byte boundary when packed."""

    def Pack(self, builder: flatbuffers.Builder) -> int:
        data = None
        if self.data is not None:
            raw = np.asarray(self.data, dtype=np.uint8).tobytes()
            builder.StartVector(1, len(raw), ALIGNMENT)
            builder.head = builder.head - len(raw)
            builder.Bytes[builder.head : builder.head + len(raw)] = raw
            builder.vectorNumElems = len(raw)
            data = builder.EndVector()
        fb.BufferStart(builder)
        if data is not None:
            fb.BufferAddData(builder, data)
        fb.BufferAddOffset(builder, self.offset)
        fb.BufferAddSize(builder, self.size)
        return int(fb.BufferEnd(builder))


def _aligned(buf: Any) -> _AlignedBufferT:
    out = _AlignedBufferT()
    out.data, out.offset, out.size = buf.data, buf.offset, buf.size
    return out


def _reserialise(data: bytes, payload: bytes, label: str) -> bytes:
    """Re-pack ``data`` through the object API with the plan set and buffers 16-byte aligned."""
    m = fb.Model.GetRootAs(data, 0)
    for k in range(m.BuffersLength()):
        if int(m.Buffers(k).Offset()) > 1:
            raise UnsupportedError(
                f"{label}: buffer {k} is stored after the flatbuffer (offset/size); embedding a "
                "plan would re-serialise the file, which does not carry such buffers"
            )
    users = _buffer_users(m)
    entries = _plan_entries(m)
    mt = fb.ModelT.InitFromObj(m)
    words = np.frombuffer(payload, dtype=np.uint8).copy()
    if entries:
        # Keep the first entry, drop the others; reuse its buffer unless something else reads it.
        keep, b = entries[0]
        drop = {k for k, _ in entries[1:]}
        mt.metadata = [md for k, md in enumerate(mt.metadata) if k not in drop]
        if users.get(b, 0) == 1 and 0 <= b < len(mt.buffers):
            mt.buffers[b].data = words
        else:
            mt.buffers.append(fb.BufferT())
            mt.buffers[-1].data = words
            mt.metadata[keep].buffer = len(mt.buffers) - 1
    else:
        mt.buffers.append(fb.BufferT())
        mt.buffers[-1].data = words
        md = fb.MetadataT()
        md.name = OFFLINE_PLAN
        md.buffer = len(mt.buffers) - 1
        mt.metadata = [*(mt.metadata or []), md]
    return pack_model(mt, len(data) + len(payload))


def pack_model(mt: Any, size_hint: int = 0) -> bytes:
    """Serialise an object-API ``ModelT`` with every buffer's data on a 16-byte boundary.

    The schema asks for ``force_align: 16`` on buffer data, which the Python builder ignores;
    TFLM's own ``tflite_flatbuffer_align`` tool aligns it, and so does this. ``mt`` is left as
    it was (its buffers are wrapped only while packing).

    Args:
        mt: The ``ModelT`` to write.
        size_hint: Expected size in bytes, to size the builder once.

    Returns:
        The ``.tflite`` bytes, with the ``TFL3`` identifier.
    """
    saved = mt.buffers
    mt.buffers = [_aligned(b) for b in saved or []]
    try:
        builder = flatbuffers.Builder(size_hint + 1024)
        builder.Finish(mt.Pack(builder), file_identifier=b"TFL3")
    finally:
        mt.buffers = saved
    return bytes(builder.Output())


__all__ = [
    "ALIGNMENT",
    "OFFLINE_PLAN",
    "embed_plan",
    "offline_offsets",
    "pack_model",
    "plan_words",
    "read_offline_plan",
    "save_tflite_with_plan",
]
