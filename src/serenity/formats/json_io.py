"""A small JSON graph format for graphs that come from elsewhere (a profiler, another compiler).

Schema (``docs/graph-format.md`` has the full description and a JSON Schema)::

    {
      "format": "serenity-graph", "version": 1, "name": "cell",
      "tensors": [{"name": "x", "shape": [1, 32, 8, 8], "dtype": "int8"},
                  {"name": "w", "shape": [32, 32, 1, 1], "dtype": "int8", "constant": true},
                  {"name": "odd", "shape": [3], "dtype": "float32", "bytes": 16}],
      "ops": [{"name": "conv", "type": "Conv", "inputs": ["x", "w"], "outputs": ["y"]}],
      "inputs": ["x"], "outputs": ["y"]
    }

``bytes`` is optional (default: elements × element size of ``dtype``); ``""`` in ``inputs``
marks an absent optional input. Exporting writes the same document with ``ops`` permuted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serenity.errors import CycleError, GraphError, ModelFormatError, ShapeError, UnsupportedError
from serenity.formats import Model
from serenity.fsutil import atomic_write_bytes
from serenity.ir import Graph, Op, Tensor

#: Element sizes in bits for the dtypes the JSON format accepts.
DTYPE_BITS = {
    "float64": 64,
    "float32": 32,
    "float16": 16,
    "bfloat16": 16,
    "int64": 64,
    "int32": 32,
    "int16": 16,
    "int8": 8,
    "uint64": 64,
    "uint32": 32,
    "uint16": 16,
    "uint8": 8,
    "bool": 8,
    "int4": 4,
    "uint4": 4,
}


def load_json(path: Path) -> Model:
    """Load a JSON graph.

    Raises:
        ModelFormatError: not JSON, or not a ``serenity-graph`` document.
        ShapeError, UnsupportedError, GraphError: a bad shape, dtype or graph.
    """
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"{path}: not a valid JSON graph: {e}") from e
    except RecursionError as e:
        raise ModelFormatError(f"{path}: not a valid JSON graph: nested too deeply") from e
    return Model(graph=from_dict(doc, str(path)), format="json", path=Path(path), source=doc)


def _req(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise ModelFormatError(f"{where}: missing key '{key}'")
    if not isinstance(obj[key], kind):
        raise ModelFormatError(f"{where}: key '{key}' has the wrong type")
    return obj[key]


def from_dict(doc: Any, where: str = "<json>") -> Graph:
    """Build a :class:`Graph` from a parsed JSON graph document."""
    if not isinstance(doc, dict) or doc.get("format") != "serenity-graph":
        raise ModelFormatError(f'{where}: not a serenity-graph document ("format" must be "serenity-graph")')
    version = doc.get("version")
    if type(version) is not int or version != 1:
        raise ModelFormatError(f"{where}: unsupported serenity-graph version {version!r} (expected 1)")
    tensors = []
    for i, t in enumerate(_req(doc, "tensors", list, where)):
        at = f"{where}: tensors[{i}]"
        name = _req(t, "name", str, at)
        shape = _req(t, "shape", list, at)
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ShapeError(f"{where}: tensor '{name}' has a shape with unknown or negative dims: {shape}")
        dtype = _req(t, "dtype", str, at)
        constant = t.get("constant", False)
        if not isinstance(constant, bool):
            raise ModelFormatError(f"{at}: 'constant' must be true or false, not {constant!r}")
        if "bytes" in t:
            nbytes = t["bytes"]
            if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
                raise ModelFormatError(f"{at}: 'bytes' must be a non-negative integer")
        elif dtype in DTYPE_BITS:
            nbytes = (math.prod(shape) * DTYPE_BITS[dtype] + 7) // 8
        else:
            raise UnsupportedError(f"{where}: tensor '{name}' has unsupported dtype '{dtype}' (give 'bytes')")
        tensors.append(Tensor(name, tuple(shape), dtype, 0 if constant else nbytes, constant=constant))
    ops = []
    for i, o in enumerate(_req(doc, "ops", list, where)):
        at = f"{where}: ops[{i}]"
        ins, outs = _req(o, "inputs", list, at), _req(o, "outputs", list, at)
        if not all(isinstance(n, str) for n in (*ins, *outs)):
            raise ModelFormatError(f"{at}: tensor names must be strings")
        attributes = o.get("attributes", {})
        if not isinstance(attributes, dict):
            raise ModelFormatError(f"{at}: 'attributes' must be an object")
        ops.append(
            Op(
                _req(o, "name", str, at),
                _req(o, "type", str, at),
                tuple(ins),
                tuple(outs),
                attributes=attributes,
            )
        )
    io = {key: _req(doc, key, list, where) for key in ("inputs", "outputs")}
    for key, names in io.items():
        if not all(isinstance(n, str) for n in names):
            raise ModelFormatError(f"{where}: '{key}' must be a list of tensor names (strings)")
    try:
        return Graph(str(doc.get("name", "graph")), ops, tensors, io["inputs"], io["outputs"])
    except CycleError as e:
        raise CycleError(e.path, where=where) from e
    except GraphError as e:
        raise GraphError(f"{where}: {e}") from e


def to_dict(graph: Graph, order: Sequence[int] | None = None) -> dict[str, Any]:
    """The JSON document of ``graph`` with its ops in ``order`` (default: listed)."""
    order = graph.listed_order if order is None else graph.check_order(order)
    tensors = []
    for t in graph.tensors.values():
        entry: dict[str, Any] = {"name": t.name, "shape": list(t.shape), "dtype": t.dtype}
        if t.constant:
            entry["constant"] = True
        else:
            entry["bytes"] = t.nbytes
        tensors.append(entry)
    ops = []
    for i in order:
        op = graph.ops[i]
        entry = {"name": op.name, "type": op.type, "inputs": list(op.inputs), "outputs": list(op.outputs)}
        ops.append(entry)
    return {
        "format": "serenity-graph",
        "version": 1,
        "name": graph.name,
        "tensors": tensors,
        "ops": ops,
        "inputs": list(graph.inputs),
        "outputs": list(graph.outputs),
    }


def save_json(model: Model, order: Sequence[int], path: Path) -> None:
    """Write the source document with its ``ops`` permuted (other keys untouched)."""
    doc = dict(model.source) if isinstance(model.source, dict) else to_dict(model.graph)
    src_ops = doc["ops"]
    doc["ops"] = [src_ops[i] for i in model.graph.check_order(order)]
    atomic_write_bytes(Path(path), (json.dumps(doc, indent=1) + "\n").encode())


def structure_problem(a: Model, b: Model) -> str | None:
    """How ``b``'s document differs from ``a``'s beyond the order of ``ops``, or ``None``."""
    da, db = dict(a.source), dict(b.source)
    key = lambda o: json.dumps(o, sort_keys=True)  # noqa: E731
    if sorted(map(key, da.pop("ops"))) != sorted(map(key, db.pop("ops"))):
        return "the JSON graphs have different ops"
    if key(da) != key(db):
        return "the JSON graphs differ beyond the order of ops"
    return None
