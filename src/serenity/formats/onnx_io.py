"""ONNX adapter: ``.onnx`` files to the IR and back, changing nothing but the node order.

Shapes come from ``onnx.shape_inference`` (with data propagation) run on a copy; the file written
back is the original proto with its nodes permuted, so value_info, initializers, metadata, opset
and IR version are exactly the input's.

External data is never loaded to build the graph, except integer tensors of at most 64 KiB that
shape inference may need (``Reshape`` targets and the like). References are checked first: a
location that is absolute, escapes the model's folder (``..``, a symlink) or names a missing file
is refused with :class:`ExternalDataError`.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import shutil
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, numpy_helper

from serenity.errors import (
    CycleError,
    ExternalDataError,
    GraphError,
    ModelFormatError,
    SerenityError,
    ShapeError,
    UnsupportedError,
)
from serenity.formats import Model
from serenity.fsutil import atomic_path, commit, staged_path
from serenity.ir import Graph, Op, Tensor, find_cycle

log = logging.getLogger("serenity")

#: Bits per element of each supported ONNX element type.
_BITS: dict[int, int] = {
    TensorProto.FLOAT: 32,
    TensorProto.UINT8: 8,
    TensorProto.INT8: 8,
    TensorProto.UINT16: 16,
    TensorProto.INT16: 16,
    TensorProto.INT32: 32,
    TensorProto.INT64: 64,
    TensorProto.BOOL: 8,
    TensorProto.FLOAT16: 16,
    TensorProto.DOUBLE: 64,
    TensorProto.UINT32: 32,
    TensorProto.UINT64: 64,
    TensorProto.COMPLEX64: 64,
    TensorProto.COMPLEX128: 128,
    TensorProto.BFLOAT16: 16,
    TensorProto.FLOAT8E4M3FN: 8,
    TensorProto.FLOAT8E4M3FNUZ: 8,
    TensorProto.FLOAT8E5M2: 8,
    TensorProto.FLOAT8E5M2FNUZ: 8,
    TensorProto.UINT4: 4,
    TensorProto.INT4: 4,
    TensorProto.FLOAT4E2M1: 4,
}
_SMALL_EXTERNAL = 64 * 1024


def load_onnx(path: Path, *, dims: Mapping[str, int] | None = None, require_data: bool = False) -> Model:
    """Load an ``.onnx`` file (see :func:`from_proto` for what is checked).

    A graph-only model, whose external-data files are absent (weights stripped to share an
    architecture), loads with a warning unless ``require_data``: only shapes are needed to
    schedule it, and the file written back references the same external data.

    Raises:
        ModelFormatError: unreadable, truncated or corrupt file, or a failed ``onnx.checker``.
        ExternalDataError: an external-data reference is missing or leaves the model's folder.
        ShapeError, UnsupportedError, GraphError: see :func:`from_proto`.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelFormatError(f"{path}: cannot read: {e.strerror}") from e
    proto = _parse(data, path)
    if not proto.graph.node and not proto.graph.input and not proto.graph.output:
        raise ModelFormatError(f"{path}: not a valid ONNX file (no graph found)")
    return from_proto(proto, dims=dims, base_dir=path.parent, path=path, require_data=require_data)


def _parse(data: bytes, path: Path) -> onnx.ModelProto:
    try:
        proto = onnx.ModelProto()
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelFormatError(f"{path}: not a valid ONNX file (truncated or corrupt): {e}") from e
    return proto


def external_locations(path: Path) -> list[str]:
    """The external-data locations an ONNX file names, unchecked (``[]`` if it cannot be parsed)."""
    try:
        proto = _parse(Path(path).read_bytes(), path)
    except (OSError, ModelFormatError):
        return []
    return sorted({loc for t in _all_tensors(proto.graph) if (loc := _location(t))})


def from_proto(
    proto: onnx.ModelProto,
    *,
    dims: Mapping[str, int] | None = None,
    base_dir: Path | None = None,
    path: Path | None = None,
    require_data: bool = True,
) -> Model:
    """Build a :class:`Model` from an in-memory ``ModelProto`` (not modified).

    Args:
        proto: The model; external data, if any, is resolved against ``base_dir``.
        dims: Values for symbolic input dimensions, by ``dim_param`` name.
        base_dir: Folder of the model file, for external data.
        path: The file it came from (for messages and export).
        require_data: Refuse a model whose external-data files are missing (else warn and go
            on: shapes are all scheduling needs; ``info["missing_data"]`` lists them).

    Raises:
        ModelFormatError: the model fails ``onnx.checker``.
        ExternalDataError: a reference is missing or escapes ``base_dir``.
        ShapeError: an activation has an unknown or symbolic dimension after ``dims``.
        UnsupportedError: an activation has an unsupported element type (strings...).
        GraphError: the graph is malformed (cycle, undefined tensor).
    """
    where = str(path) if path else (proto.graph.name or "<model>")
    _check_cycle(proto.graph, where)
    external, missing = check_external_data(proto, base_dir, where, require_data=require_data)
    if missing:
        log.warning(
            "%s: external data %s missing: scheduling needs only shapes, so going on; outputs will "
            "reference the same data files",
            where,
            ", ".join(f"'{m}'" for m in missing) + (" is" if len(missing) == 1 else " are"),
        )
    _check_model(proto, path, external, missing, where)
    inferred = _infer(proto, dims or {}, external - set(missing), base_dir, where)
    graph = _to_graph(inferred, where)
    info = {
        "ir_version": proto.ir_version,
        "opsets": {op.domain or "ai.onnx": op.version for op in proto.opset_import},
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "external_data": sorted(external),
        "missing_data": missing,
    }
    return Model(graph=graph, format="onnx", path=path, source=proto, info=info)


def _check_model(
    proto: onnx.ModelProto, path: Path | None, external: set[str], missing: list[str], where: str
) -> None:
    """``onnx.checker`` with full checks. With a file, the checker resolves external data against
    the file's folder; when data files are missing, it runs on a copy in a temporary folder where
    empty placeholders stand in for them (the checker only asks that each is a regular file)."""
    try:
        if missing:
            import tempfile

            with tempfile.TemporaryDirectory(prefix="serenity-check-") as tmp:
                for loc in external:
                    place = Path(tmp) / loc
                    place.parent.mkdir(parents=True, exist_ok=True)
                    place.touch()
                copy = Path(tmp) / "model.onnx"
                copy.write_bytes(proto.SerializeToString())
                onnx.checker.check_model(str(copy))
        else:
            onnx.checker.check_model(str(path) if path is not None and external else proto)
    except (onnx.checker.ValidationError, onnx.onnx_cpp2py_export.checker.ValidationError) as e:
        text = " ".join(str(e).split())[:300] or type(e).__name__
        raise ModelFormatError(f"{where}: invalid ONNX model: {text}") from e
    except ValueError as e:  # protobuf: a model over 2 GB cannot be serialised for the check
        raise ModelFormatError(f"{where}: cannot check the ONNX model: {e}") from e


def _check_cycle(g: onnx.GraphProto, where: str) -> None:
    """Name an undefined tensor or a cycle before ``onnx.checker`` reports an unsorted graph."""
    producer = {o: i for i, n in enumerate(g.node) for o in n.output if o}
    known = set(producer) | {i.name for i in g.input} | {t.name for t in g.initializer}
    known |= {t.values.name for t in g.sparse_initializer}
    for i, n in enumerate(g.node):
        for x in n.input:
            if x and x not in known:
                raise GraphError(
                    f"{where}: op '{n.name or f'{n.op_type}_{i}'}' reads tensor '{x}' which no op produces "
                    "and which is neither a graph input nor an initializer"
                )
    preds = [sorted({producer[x] for x in n.input if x in producer}) for n in g.node]
    cycle = find_cycle(preds)
    if cycle is not None:
        names = [g.node[i].name or f"{g.node[i].op_type}_{i}" for i in cycle]
        raise CycleError(names, where=where)


# -- external data ---------------------------------------------------------------------------


def _all_tensors(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    """Every TensorProto in the graph and its subgraphs (initializers and attributes)."""
    yield from graph.initializer
    for sp in graph.sparse_initializer:
        yield sp.values
        yield sp.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for g in attr.graphs:
                yield from _all_tensors(g)


def _location(t: TensorProto) -> str:
    return next((e.value for e in t.external_data if e.key == "location"), "")


def _external_int(t: TensorProto, key: str, where: str) -> int | None:
    text = next((e.value for e in t.external_data if e.key == key), None)
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()):
        raise ExternalDataError(f"{where}: tensor '{t.name}' has external-data {key} {text!r}, not a number")
    return int(text)


def check_external_data(
    proto: onnx.ModelProto, base_dir: Path | None, where: str, *, require_data: bool = True
) -> tuple[set[str], list[str]]:
    """Check every external-data reference; return the set of locations and the missing ones.

    Raises:
        ExternalDataError: absolute path, a path leaving ``base_dir``, an offset or length that is
            not a number or lies beyond its file, or (with ``require_data``) a missing file.
    """
    locations: set[str] = set()
    missing: set[str] = set()
    for t in _all_tensors(proto.graph):
        if t.data_location != TensorProto.EXTERNAL:
            continue
        loc = _location(t)
        if not loc:
            raise ExternalDataError(f"{where}: tensor '{t.name}' has external data with no location")
        if base_dir is None:
            raise ExternalDataError(
                f"{where}: tensor '{t.name}' stores its data in '{loc}' but the model has no folder"
            )
        if os.path.isabs(loc) or loc.startswith(("/", "\\")) or ":" in loc:
            raise ExternalDataError(
                f"{where}: tensor '{t.name}' points to absolute external-data path '{loc}'; refused"
            )
        root = base_dir.resolve()
        target = (root / loc).resolve()
        if not target.is_relative_to(root):
            raise ExternalDataError(
                f"{where}: tensor '{t.name}' points to external data '{loc}' outside the model's "
                "folder; refused"
            )
        offset = _external_int(t, "offset", where) or 0
        length = _external_int(t, "length", where)
        locations.add(loc)
        if not target.is_file():
            if require_data or target.exists():
                raise ExternalDataError(
                    f"{where}: external data file '{loc}' of tensor '{t.name}' is missing"
                    + (" (verify needs the weights)" if not target.exists() else " (not a regular file)")
                )
            missing.add(loc)
            continue
        size = target.stat().st_size
        need = offset + (length if length is not None else 0)
        if offset > size or need > size:
            raise ExternalDataError(
                f"{where}: tensor '{t.name}' reads bytes {offset}..{need} of external data '{loc}', "
                f"which has {size} bytes"
            )
    return locations, sorted(missing)


def _load_small_external(proto: onnx.ModelProto, base_dir: Path, available: set[str], where: str) -> None:
    """Load, in place, the integer external tensors small enough to matter for shape inference
    (from the ``available`` data files only).

    Raises:
        ExternalDataError: the stored bytes do not match the tensor's size.
    """
    for t in _all_tensors(proto.graph):
        if t.data_location != TensorProto.EXTERNAL or _location(t) not in available:
            continue
        if t.data_type not in (TensorProto.INT64, TensorProto.INT32):
            continue
        numel = math.prod(t.dims)
        if numel * _BITS[t.data_type] // 8 > _SMALL_EXTERNAL:
            continue
        try:
            onnx.external_data_helper.load_external_data_for_tensor(t, str(base_dir))
            t.data_location = TensorProto.DEFAULT
            del t.external_data[:]
            numpy_helper.to_array(t)  # the bytes read must match the tensor's shape
        except (OSError, ValueError) as e:
            raise ExternalDataError(f"{where}: external data of tensor '{t.name}' is unreadable: {e}") from e


# -- shapes ----------------------------------------------------------------------------------


def _infer(
    proto: onnx.ModelProto,
    dims: Mapping[str, int],
    external: set[str],
    base_dir: Path | None,
    where: str,
) -> onnx.ModelProto:
    """Return a copy with ``dims`` substituted into the inputs and shapes inferred."""
    work = onnx.ModelProto()
    work.CopyFrom(proto)
    if external and base_dir is not None:
        _load_small_external(work, base_dir, external, where)
    used: set[str] = set()
    for vi in work.graph.input:
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param in dims:
                used.add(d.dim_param)
                d.dim_value = int(dims[d.dim_param])
    unknown = set(dims) - used
    if unknown:
        raise ShapeError(f"{where}: --dim names no symbolic input dimension: {', '.join(sorted(unknown))}")
    try:
        return onnx.shape_inference.infer_shapes(work, check_type=True, strict_mode=True, data_prop=True)
    except Exception as e:  # onnx raises several unrelated types here
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ShapeError(f"{where}: shape inference failed: {first}") from e


def _shape(vi: onnx.ValueInfoProto, where: str, owner: str) -> tuple[tuple[int, ...], int]:
    tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
    if tt is None:
        kind = vi.type.WhichOneof("value") or "unknown"
        raise UnsupportedError(f"{where}: tensor '{vi.name}' ({owner}) is a {kind}, not a tensor")
    if not tt.HasField("shape"):
        raise ShapeError(
            f"{where}: tensor '{vi.name}' ({owner}) has unknown rank; the model needs static shapes"
        )
    shape = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            shape.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            raise ShapeError(
                f"{where}: tensor '{vi.name}' ({owner}) has symbolic dimension '{d.dim_param}'; "
                f"fix it with --dim {d.dim_param}=VALUE"
            )
        else:
            raise ShapeError(f"{where}: tensor '{vi.name}' ({owner}) has an unknown dimension")
    return tuple(shape), tt.elem_type


def _nbytes(shape: Sequence[int], elem_type: int, name: str, where: str) -> tuple[str, int]:
    if elem_type not in _BITS:
        tname = (
            TensorProto.DataType.Name(elem_type) if elem_type in TensorProto.DataType.values() else elem_type
        )
        raise UnsupportedError(f"{where}: tensor '{name}' has unsupported element type {tname}")
    return dtype_name(elem_type), (math.prod(shape) * _BITS[elem_type] + 7) // 8


def dtype_name(elem_type: int) -> str:
    """The numpy-style name of an ONNX element type (``float32``), else ONNX's own, lowercased."""
    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type).name)
    except (KeyError, TypeError, ValueError):
        return TensorProto.DataType.Name(elem_type).lower()


# -- graph -----------------------------------------------------------------------------------


def _outer_refs(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads from the enclosing scope (implicit inputs of If/Loop/Scan)."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.values.name for t in graph.sparse_initializer}
    refs: set[str] = set()
    for node in graph.node:
        for name in node.input:
            if name and name not in defined:
                refs.add(name)
        for attr in node.attribute:
            for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                refs |= {r for r in _outer_refs(g) if r not in defined}
        defined.update(node.output)
    return refs


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in node.attribute:
        if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            out[a.name] = "<graph>"
        elif a.type in (onnx.AttributeProto.TENSOR, onnx.AttributeProto.TENSORS):
            out[a.name] = "<tensor>"
        else:
            v = onnx.helper.get_attribute_value(a)
            out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _to_graph(m: onnx.ModelProto, where: str) -> Graph:
    g = m.graph
    constants = {t.name for t in g.initializer} | {t.values.name for t in g.sparse_initializer}
    infos: dict[str, onnx.ValueInfoProto] = {}
    for vi in (*g.input, *g.value_info, *g.output):
        infos.setdefault(vi.name, vi)
    ops: list[Op] = []
    names: set[str] = set()
    for i, node in enumerate(g.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in names:
            name = f"{name}#{i}"
        names.add(name)
        inputs = list(node.input)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                inputs += sorted(_outer_refs(sub) - set(inputs))
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            constants.update(node.output)
        ops.append(Op(name, node.op_type, tuple(inputs), tuple(node.output), attributes=_attributes(node)))
    tensors: list[Tensor] = []
    declared: set[str] = set()
    producer = {o: op.name for op in ops for o in op.outputs if o}
    init_by_name = {t.name: t for t in g.initializer}
    graph_inputs = {i.name for i in g.input}

    def declare(name: str) -> None:
        if not name or name in declared:
            return
        declared.add(name)
        owner = f"output of op '{producer[name]}'" if name in producer else "graph input"
        if name in constants:
            init = init_by_name.get(name)
            shape = tuple(init.dims) if init is not None else ()
            dtype = dtype_name(init.data_type) if init is not None else "const"
            tensors.append(Tensor(name, shape, dtype, 0, constant=True))
            return
        vi = infos.get(name)
        if vi is None:
            if name not in producer and name not in graph_inputs:
                raise GraphError(f"{where}: tensor '{name}' is read but never defined")
            raise ShapeError(
                f"{where}: tensor '{name}' ({owner}) has no inferred shape; the model needs static "
                "shapes (symbolic inputs can be fixed with --dim NAME=VALUE)"
            )
        shape, elem = _shape(vi, where, owner)
        dtype, nbytes = _nbytes(shape, elem, name, where)
        tensors.append(Tensor(name, shape, dtype, nbytes))

    inputs = [vi.name for vi in g.input if vi.name not in constants]
    for name in itertools.chain(
        inputs, (o.name for o in g.output), (t for op in ops for t in (*op.inputs, *op.outputs))
    ):
        declare(name)
    try:
        return Graph(g.name or "onnx", ops, tensors, inputs, [o.name for o in g.output])
    except CycleError as e:
        raise CycleError(e.path, where=where) from e
    except GraphError as e:
        raise GraphError(f"{where}: {e}") from e


# -- export ----------------------------------------------------------------------------------


def permuted_proto(proto: onnx.ModelProto, order: Sequence[int]) -> onnx.ModelProto:
    """A copy of ``proto`` whose nodes are ``proto.graph.node[i] for i in order``."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    del out.graph.node[:]
    out.graph.node.extend(proto.graph.node[i] for i in order)
    return out


def save_onnx(model: Model, order: Sequence[int], path: Path) -> None:
    """Write ``model`` with its nodes in ``order``; nothing else changes.

    External-data files stay where they are when ``path`` is in the model's folder; otherwise
    they are copied beside ``path`` under the same relative names (an existing different file of
    that name is refused, never overwritten; missing ones, of a graph-only model, are not copied:
    the output references them as the input did). The model is serialised to a temporary file
    first; the data copies appear only after it was written, just before it is renamed into
    place, and every file this call created is removed if anything fails.

    Raises:
        ExternalDataError: an external-data file would clash with a different existing one.
        SerenityError: the model cannot be serialised or written.
    """
    path = Path(path)
    proto = permuted_proto(model.source, order)
    try:
        data = proto.SerializeToString()
    except ValueError as e:
        raise SerenityError(f"{path}: model too large to serialise: {e}") from e
    copies: list[tuple[Path, Path, str]] = []
    missing = set(model.info.get("missing_data", []))
    if model.path is not None:
        src_dir, dst_dir = model.path.parent.resolve(), path.parent.resolve()
        if src_dir != dst_dir:
            copies = [
                (src_dir / loc, dst_dir / loc, loc)
                for loc in model.info.get("external_data", [])
                if loc not in missing
            ]
    created: list[Path] = []
    with staged_path(path) as tmp:
        tmp.write_bytes(data)
        try:
            for src, dst, loc in copies:
                if _copy_external(src, dst, loc):
                    created.append(dst)
            commit(tmp, path)
        except BaseException:
            for p in created:
                p.unlink(missing_ok=True)
            raise


def _digest(p: Path) -> str:
    h = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _copy_external(src: Path, dst: Path, loc: str) -> bool:
    """Copy one external-data file; ``False`` if an identical file is already there.

    Raises:
        ExternalDataError: a different file, or a folder, is already at ``dst``.
    """
    if dst.exists():
        if not dst.is_file() or _digest(src) != _digest(dst):
            raise ExternalDataError(
                f"{dst}: a different file already exists where external data '{loc}' must go; refused"
            )
        return False
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExternalDataError(f"{dst}: cannot create the folder for external data '{loc}': {e}") from e
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return True


def structure_problem(a: Model, b: Model) -> str | None:
    """How ``b``'s proto differs from ``a``'s beyond node order, or ``None`` if it does not."""
    pa, pb = a.source, b.source
    nodes_a = Counter(n.SerializeToString(deterministic=True) for n in pa.graph.node)
    nodes_b = Counter(n.SerializeToString(deterministic=True) for n in pb.graph.node)
    if nodes_a != nodes_b:
        return "the ONNX node lists differ beyond their order"
    rest_a, rest_b = permuted_proto(pa, ()), permuted_proto(pb, ())
    if rest_a.SerializeToString(deterministic=True) != rest_b.SerializeToString(deterministic=True):
        for field in ("ir_version", "opset_import", "producer_name", "metadata_props", "functions"):
            if getattr(rest_a, field) != getattr(rest_b, field):
                return f"the ONNX models differ in {field}"
        return "the ONNX graphs differ beyond node order (initializers, value_info or I/O)"
    return None
