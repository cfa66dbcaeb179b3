"""The TFLite adapter: ``.tflite`` flatbuffer <-> :class:`~serenity.ir.Graph`.

Subgraph 0 is the scheduled graph; TFLite Micro runs its operators in the order the file lists
them, so that list *is* the schedule. Other subgraphs (``WHILE``/``IF`` bodies) are carried along
untouched.

Export permutes the bytes of subgraph 0's operator vector and nothing else (see
:mod:`serenity.formats.tflite_bytes`): every other byte stays where it was, so tensors, buffers
and their alignment (16 bytes after TFLM's align tool), metadata, signature defs, other
subgraphs, fields newer than the bundled schema, and buffers stored after the flatbuffer
(``offset``/``size``, models > 2 GB) all survive. Re-serialising through the schema's object API
would instead drop unknown fields and repack buffer data at 4-byte alignment (its
``BufferStartDataVector`` ignores the schema's ``force_align: 16``).

Dynamic dimensions: TFLite Micro never resizes tensors; it allocates every tensor from its
static ``shape``. The converter writes ``shape_signature`` with ``-1`` for a dynamic batch and a
concrete ``shape`` (usually 1) beside it; the static ``shape`` is what the arena holds, so it is
what we use. Only a dimension that is negative in ``shape`` itself is unknown. ``dims`` fills
those: TFLite dimensions have no names, so a ``dims`` with a single entry (any name) supplies
every unknown dimension, and otherwise the entry ``"batch"`` supplies axis 0. A ``"batch"`` that
contradicts a static axis 0 the signature marks dynamic is an error (TFLite Micro would still run
the file at its static batch); other entries never override a static dimension.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

from serenity.errors import (
    GraphError,
    ModelFormatError,
    OrderError,
    SerenityError,
    ShapeError,
    UnsupportedError,
)
from serenity.formats import Model
from serenity.formats.tflite_bytes import TFLiteSource, permute_operators, structure_problem
from serenity.fsutil import atomic_write_bytes
from serenity.ir import Graph, Op, Tensor

_IDENTIFIER = b"TFL3"
_CUSTOM = fb.BuiltinOperator.CUSTOM
_OPCODE_NAMES = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
_T = fb.TensorType
#: TensorType -> (numpy-style dtype name, bits per element).
_DTYPES: dict[int, tuple[str, int]] = {
    _T.FLOAT32: ("float32", 32), _T.FLOAT16: ("float16", 16), _T.FLOAT64: ("float64", 64),
    _T.INT8: ("int8", 8), _T.INT16: ("int16", 16), _T.INT32: ("int32", 32), _T.INT64: ("int64", 64),
    _T.UINT8: ("uint8", 8), _T.UINT16: ("uint16", 16), _T.UINT32: ("uint32", 32),
    _T.UINT64: ("uint64", 64), _T.BOOL: ("bool", 8), _T.COMPLEX64: ("complex64", 64),
    _T.COMPLEX128: ("complex128", 128), _T.BFLOAT16: ("bfloat16", 16), _T.INT4: ("int4", 4),
    _T.UINT4: ("uint4", 4), _T.INT2: ("int2", 2), _T.FLOAT8_E4M3FN: ("float8_e4m3fn", 8),
    _T.FLOAT8_E5M2: ("float8_e5m2", 8),
}  # fmt: skip
#: Metadata naming a precomputed arena plan; it is only valid for the listed order.
_OFFLINE_PLAN = b"OfflineMemoryAllocation"


def load_tflite(path: Path, *, dims: Mapping[str, int] | None = None) -> Model:
    """Load subgraph 0 of a ``.tflite`` file into the IR.

    Op names are invented as ``"{index}:{OPCODE}"`` (TFLite ops have none); op types are the
    builtin operator name or the custom code. Tensors with buffer data are constants, and so are
    variable tensors: TFLite Micro allocates those in the persistent part of the arena, outside
    the planned activation memory that schedules change.

    Args:
        path: The file.
        dims: Values for unknown (negative) dimensions; see the module docstring.

    Returns:
        A :class:`Model` with ``format="tflite"`` and a :class:`TFLiteSource` as ``source``.

    Raises:
        ModelFormatError: missing, truncated or corrupt file, or an index out of range.
        ShapeError: a dimension is unknown and ``dims`` does not supply it.
        UnsupportedError: an activation has a type Serenity cannot size (STRING, RESOURCE...).
        GraphError: the operators do not form a valid DAG.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelFormatError(f"{path}: cannot read ({e.strerror or e})") from e
    return parse_tflite(data, path, dims=dims)


def parse_tflite(data: bytes, path: Path, *, dims: Mapping[str, int] | None = None) -> Model:
    """:func:`load_tflite` on bytes already read; ``path`` is only used in messages."""
    _check_header(data, path)
    try:
        return _parse(data, path, dims or {})
    except SerenityError:
        raise
    except Exception as e:  # the generated readers raise anything on garbage: struct, index...
        detail = " ".join(str(e).split())[:160]
        raise ModelFormatError(
            f"{path}: corrupt or truncated TFLite flatbuffer ({type(e).__name__}: {detail})"
        ) from e


def save_tflite(model: Model, order: Sequence[int], path: Path) -> None:
    """Write ``model`` to ``path`` with subgraph 0's operators in ``order``; nothing else changes.

    Only the ``4 * n_ops`` bytes of the operator vector's slots are rewritten (see the module
    docstring), so the output has the input's size and every other byte. The file is written to
    a temporary name beside ``path`` and renamed; on failure nothing is left behind.

    Args:
        model: A model from :func:`load_tflite`.
        order: A topological permutation of the op indices.
        path: The output file.

    Raises:
        OrderError: ``order`` is not topological.
        UnsupportedError: the file carries an offline arena plan, valid only for its own order.
        ModelFormatError: ``model`` did not come from :func:`load_tflite`.
    """
    path = Path(path)
    src = model.source
    if not isinstance(src, TFLiteSource):
        raise ModelFormatError(f"{path}: model was not loaded from a .tflite file")
    order = model.graph.check_order(order)
    if src.offline_plan and order != model.graph.listed_order:
        raise UnsupportedError(
            f"{path}: the model carries an OfflineMemoryAllocation plan made for its listed op "
            "order; reordering would make planned tensors overlap (re-plan it with "
            "'serenity schedule --embed-plan')"
        )
    atomic_write_bytes(path, permute_operators(src, order))


# -- parsing --------------------------------------------------------------------------------------


def _check_header(data: bytes, path: Path) -> None:
    if len(data) < 8:
        raise ModelFormatError(f"{path}: truncated TFLite file ({len(data)} bytes)")
    if data[4:8] != _IDENTIFIER:
        raise ModelFormatError(
            f"{path}: not a TFLite flatbuffer (file identifier {bytes(data[4:8])!r}, expected b'TFL3')"
        )
    (root,) = struct.unpack_from("<I", data, 0)
    if not 8 <= root <= len(data) - 4:
        raise ModelFormatError(f"{path}: corrupt or truncated TFLite flatbuffer (root offset {root})")


def _count(n: int, data: bytes, what: str, path: Path) -> int:
    """A vector length read from the file, checked against the file size so loops stay bounded."""
    if not 0 <= n <= len(data) // 4:
        raise ModelFormatError(f"{path}: corrupt TFLite flatbuffer ({what} count {n})")
    return n


def _index(i: int, n: int, what: str, path: Path) -> int:
    if not 0 <= i < n:
        raise ModelFormatError(f"{path}: corrupt TFLite flatbuffer ({what} {i}, expected 0..{n - 1})")
    return i


def _ints(get: Any, n: int, data: bytes) -> list[int]:
    """The ``n`` ints of a vector accessor; ``n`` comes from the file, so bound it first."""
    if not 0 <= n <= len(data) // 4:
        raise ValueError(f"vector length {n} exceeds the file")
    return [int(get(j)) for j in range(n)]


def _opcode_name(code: Any) -> str:
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if builtin == _CUSTOM:
        custom = code.CustomCode()
        return custom.decode("utf-8", "replace") if custom else "CUSTOM"
    return _OPCODE_NAMES.get(builtin, f"BUILTIN_{builtin}")


def _buffer_bytes(buf: Any, data: bytes, path: Path, index: int) -> int:
    """Bytes of data buffer ``index`` holds, inline or (offset > 1) after the flatbuffer."""
    offset, size = int(buf.Offset()), int(buf.Size())
    if offset > 1:
        if offset + size > len(data):
            raise ModelFormatError(
                f"{path}: buffer {index} points outside the file (offset {offset}, size {size})"
            )
        return size
    return int(buf.DataLength())


def _parse(data: bytes, path: Path, dims: Mapping[str, int]) -> Model:
    m = fb.Model.GetRootAs(data, 0)
    n_sub = _count(m.SubgraphsLength(), data, "subgraph", path)
    if n_sub == 0:
        raise ModelFormatError(f"{path}: TFLite model has no subgraphs")
    n_codes = _count(m.OperatorCodesLength(), data, "operator code", path)
    opcodes = [_opcode_name(m.OperatorCodes(k)) for k in range(n_codes)]
    n_buf = _count(m.BuffersLength(), data, "buffer", path)
    stored = [_buffer_bytes(m.Buffers(k), data, path, k) for k in range(n_buf)]
    metadata = [m.Metadata(k) for k in range(_count(m.MetadataLength(), data, "metadata", path))]
    for md in metadata:
        _index(md.Buffer(), n_buf, "metadata buffer index", path)
    sg = m.Subgraphs(0)
    graph = _subgraph(sg, data, path, opcodes, stored, dims)
    try:
        graph.check_order(graph.listed_order)
    except OrderError as e:
        raise ModelFormatError(f"{path}: operators are not listed in execution order: {e}") from e
    other_ops = 0
    for k in range(1, n_sub):
        other = m.Subgraphs(k)
        n_t = _count(other.TensorsLength(), data, "tensor", path)
        for i in range(_count(other.OperatorsLength(), data, "operator", path)):
            op = other.Operators(i)
            _index(op.OpcodeIndex(), n_codes, "opcode index", path)
            for t in (
                *_ints(op.Inputs, op.InputsLength(), data),
                *_ints(op.Outputs, op.OutputsLength(), data),
            ):
                if t != -1:
                    _index(t, n_t, f"subgraph {k} tensor index", path)
            other_ops += 1
    # The operator vector's position, for the byte-level permutation on export. ``_tab`` is the
    # flatbuffers runtime's Table; field 10 is SubGraph.operators.
    field = sg._tab.Offset(10)
    vec = sg._tab.Vector(field) if field else 0
    description = m.Description()
    info = {
        "subgraphs": n_sub,
        "operators": len(graph.ops),
        "operators_total": len(graph.ops) + other_ops,
        "version": int(m.Version()),
        "description": description.decode("utf-8", "replace") if description else "",
        "buffers": n_buf,
        "metadata": [md.Name().decode("utf-8", "replace") for md in metadata if md.Name()],
        "signature_defs": int(m.SignatureDefsLength()),
    }
    offline = any(md.Name() == _OFFLINE_PLAN for md in metadata)
    source = TFLiteSource(bytes(data), vec, len(graph.ops), offline)
    return Model(graph=graph, format="tflite", path=path, source=source, info=info)


def _subgraph(
    sg: Any,
    data: bytes,
    path: Path,
    opcodes: list[str],
    stored: list[int],
    dims: Mapping[str, int],
) -> Graph:
    # 1. Tensors: unique names, static shapes, sizes as TFLite Micro allocates them.
    n_t = _count(sg.TensorsLength(), data, "tensor", path)
    names: list[str] = []
    tensors: list[Tensor] = []
    seen: set[str] = set()
    for i in range(n_t):
        t = sg.Tensors(i)
        raw = t.Name()
        name = raw.decode("utf-8", "replace") if raw else ""
        # "" means "absent input" in the IR, and names must be unique: suffix the index.
        while not name or name in seen:
            name = f"{name}#{i}"
        seen.add(name)
        names.append(name)
        buf = _index(t.Buffer(), len(stored), f"buffer index of tensor '{name}'", path)
        shape = _shape(t, name, path, dims, data)
        # Variable tensors (LSTM state) live in the persistent arena, not the planned one.
        tensors.append(_tensor(name, shape, int(t.Type()), stored[buf], bool(t.IsVariable()), path))
    # 2. Operators, reading tensors by index; -1 is an absent optional input or output.
    ops: list[Op] = []
    for i in range(_count(sg.OperatorsLength(), data, "operator", path)):
        op = sg.Operators(i)
        code = _index(op.OpcodeIndex(), len(opcodes), f"opcode index of operator {i}", path)

        def ref(t: int, i: int = i) -> str:
            return "" if t == -1 else names[_index(t, n_t, f"tensor index in operator {i}", path)]

        ops.append(
            Op(
                name=f"{i}:{opcodes[code]}",
                type=opcodes[code],
                inputs=tuple(ref(t) for t in _ints(op.Inputs, op.InputsLength(), data)),
                outputs=tuple(ref(t) for t in _ints(op.Outputs, op.OutputsLength(), data)),
                attributes={"opcode_index": code},
            )
        )
    inputs = [
        names[_index(t, n_t, "subgraph input", path)] for t in _ints(sg.Inputs, sg.InputsLength(), data)
    ]
    outputs = [
        names[_index(t, n_t, "subgraph output", path)] for t in _ints(sg.Outputs, sg.OutputsLength(), data)
    ]
    raw_name = sg.Name()
    gname = raw_name.decode("utf-8", "replace") if raw_name else path.stem
    try:
        return Graph(gname, ops, tensors, inputs, outputs)
    except GraphError as e:
        raise GraphError(f"{path}: {e}") from e


def _shape(t: Any, name: str, path: Path, dims: Mapping[str, int], data: bytes) -> tuple[int, ...]:
    shape = _ints(t.Shape, t.ShapeLength(), data)
    sig = _ints(t.ShapeSignature, t.ShapeSignatureLength(), data)
    if len(sig) != len(shape):
        sig = []
    out = []
    batch = dims.get("batch")
    for axis, s in enumerate(shape):
        if s < 0:
            given = _dim_from(dims, axis)
            if given is None:
                raise ShapeError(
                    f"{path}: tensor '{name}' has an unknown dimension at axis {axis} (shape "
                    f"{shape}); give its value with dims (e.g. batch=1)"
                )
            s = given
        elif axis == 0 and sig and sig[0] < 0 and batch is not None and batch != s:
            raise ShapeError(
                f"{path}: tensor '{name}' has batch {s} in the file and TFLite Micro never "
                f"resizes tensors, so dims cannot set it to {batch}"
            )
        if s < 0:
            raise ShapeError(f"{path}: tensor '{name}': dims gives a negative dimension {s}")
        out.append(s)
    return tuple(out)


def _dim_from(dims: Mapping[str, int], axis: int) -> int | None:
    """The value ``dims`` gives an unknown dimension at ``axis`` (see the module docstring)."""
    if len(dims) == 1:
        return int(next(iter(dims.values())))
    if axis == 0 and "batch" in dims:
        return int(dims["batch"])
    return None


def _tensor(name: str, shape: tuple[int, ...], ttype: int, stored: int, variable: bool, path: Path) -> Tensor:
    """The IR tensor; ``stored`` is its buffer's byte count (0: no data, an activation)."""
    dtype = _DTYPES.get(ttype)
    constant = stored > 0 or variable
    if dtype is None:
        tname = _TYPE_NAMES.get(ttype, str(ttype))
        if not constant:
            raise UnsupportedError(
                f"{path}: tensor '{name}' has type {tname}, which cannot be an activation "
                "Serenity schedules (no fixed size)"
            )
        return Tensor(name, shape, tname.lower(), stored, constant=True)
    dname, bits = dtype
    # Constants cost what their buffer stores (sub-byte types packed). TFLite Micro holds
    # sub-byte activations unpacked, one byte each (TfLiteTypeSizeOf gives int4 one byte).
    nbytes = stored if stored > 0 else math.prod(shape) * max(bits, 8) // 8
    return Tensor(name, shape, dname, nbytes, constant=constant)


__all__ = [
    "TFLiteSource",
    "load_tflite",
    "parse_tflite",
    "permute_operators",
    "save_tflite",
    "structure_problem",
]
