"""Writing one rewrite into an ONNX graph: branch nodes, sliced constants, the join.

The ONNX half of :meth:`serenity.formats.onnx_rewrite.OnnxDialect.materialize`, which keeps the
in-memory IR (:func:`serenity.rewrites.apply.apply_rewrite`) beside the proto and passes it here
for the new tensors' shapes. Constants are sliced with numpy and stored inline under fresh names;
the element type is kept.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from serenity.errors import ExternalDataError, GraphError
from serenity.formats import Model
from serenity.formats.onnx_rewrite_roles import Plan
from serenity.ir import Graph
from serenity.rewrites.records import Rewrite


class Weights:
    """Values of the model's constants: initializers (external data resolved beside the model
    file) and ``Constant`` nodes."""

    def __init__(self, proto: onnx.ModelProto, model: Model) -> None:
        g = proto.graph
        self.inits = {t.name: t for t in g.initializer}
        self.sparse = {t.values.name for t in g.sparse_initializer}
        self.consts = {
            o: n for n in g.node if n.op_type == "Constant" and n.domain in ("", "ai.onnx") for o in n.output
        }
        self.base = model.path.parent if model.path is not None else None
        self.missing = set(model.info.get("missing_data", []))

    def constant_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the ``Constant`` nodes' ``value`` tensors."""
        out = {}
        for name, node in self.consts.items():
            for a in node.attribute:
                if a.name == "value":
                    out[name] = tuple(a.t.dims)
        return out

    def problem(self, name: str) -> str | None:
        """Why the value of constant ``name`` cannot be read, or ``None``."""
        if name in self.inits:
            t = self.inits[name]
            if t.data_location != TensorProto.EXTERNAL:
                return None
            loc = next((e.value for e in t.external_data if e.key == "location"), "")
            if loc in self.missing or self.base is None:
                return f"the values of constant '{name}' are in external data '{loc}', which is missing"
            return None
        if name in self.sparse:
            return f"constant '{name}' is a sparse initializer, which is not sliced"
        node = self.consts.get(name)
        if node is None or not any(a.name in _CONSTANT_VALUES for a in node.attribute):
            return f"constant '{name}' is neither an initializer nor a Constant node with a dense value"
        return None

    def array(self, name: str) -> np.ndarray:
        """The value of constant ``name`` (:meth:`problem` said it is readable)."""
        if name in self.inits:
            try:
                return numpy_helper.to_array(self.inits[name], base_dir=str(self.base or ""))
            except (OSError, ValueError) as e:
                raise ExternalDataError(
                    f"{self.base}: values of constant '{name}' are unreadable: {e}"
                ) from e
        attr = next(a for a in self.consts[name].attribute if a.name in _CONSTANT_VALUES)
        value = helper.get_attribute_value(attr)
        if attr.name == "value":
            return numpy_helper.to_array(value)
        return np.asarray(value, dtype=np.float32 if attr.name.startswith("value_float") else np.int64)


_CONSTANT_VALUES = ("value", "value_float", "value_floats", "value_int", "value_ints")


class Names:
    """Fresh names for sliced constants: none may clash with a name already in the graph."""

    def __init__(self, g: onnx.GraphProto) -> None:
        self.taken = set(mentioned(g)) | {t.name for t in g.initializer} | {v.name for v in g.value_info}

    def fresh(self, base: str) -> str:
        """``base``, or ``base#k`` with the first free ``k``; taken from now on."""
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}#{k}", k + 1
        self.taken.add(name)
        return name


def mentioned(g: onnx.GraphProto) -> Iterator[str]:
    """Every tensor name the graph and its subgraphs read or write (a superset of what is read)."""
    yield from (v.name for v in (*g.input, *g.output))
    for node in g.node:
        yield from node.input
        yield from node.output
        for a in node.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from mentioned(sub)


def splice(
    g: onnx.GraphProto,
    rw: Rewrite,
    plan: Plan,
    r_name: str,
    after: Graph,
    weights: Weights,
    names: Names,
    created: dict[str, np.ndarray],
    symbolic: bool,
) -> None:
    """Write ``rw`` into ``g`` in place.

    Args:
        g: The graph being written.
        rw: The rewrite.
        plan: How to split the op writing ``rw.reader`` (its role, the constants to slice).
        r_name: That op's IR name, which the new nodes' names extend.
        after: The IR with ``rw`` applied: the new tensors' shapes, whether the concat stays.
        weights: The original model's constant values.
        names: Fresh names for the sliced constants.
        created: Values of the constants written so far (updated).
        symbolic: The model has symbolic dimensions (fixed in ``after`` only).

    Raises:
        GraphError: no node of ``g`` writes ``rw.reader``.
    """
    k = next((i for i, n in enumerate(g.node) if rw.reader in n.output), None)
    if k is None:
        raise GraphError(f"no node of the ONNX model writes '{rw.reader}'")
    r = onnx.NodeProto()
    r.CopyFrom(g.node[k])
    tag = "kw" if rw.kind == "kernel" else "cw"
    # Kernel-wise, part i holds channels off*m .. (off+c)*m of every per-channel constant;
    # channel-wise, input channels off .. off+c of the weight.
    m = rw.multiplier if rw.kind == "kernel" else 1
    new: list[onnx.NodeProto] = []
    # 1. One copy of R per part, constants sliced to its channels.
    for i, (off, c) in enumerate(zip(rw.offsets(), rw.channels, strict=True)):
        node = onnx.NodeProto()
        node.CopyFrom(r)
        node.name = f"{r_name}/{tag}{i}"
        del node.output[:]
        node.output.append(rw.part(i))
        node.input[plan.role.data_input] = rw.parts[i]
        for j, axis in plan.sliced.items():
            if j < len(node.input) and node.input[j]:
                const = node.input[j]
                if const not in created:
                    created[const] = weights.array(const)
                rows = range(off * m, (off + c) * m)
                value = np.ascontiguousarray(np.take(created[const], rows, axis=axis))
                fresh = names.fresh(f"{const}/{tag}{i}")
                g.initializer.append(numpy_helper.from_array(value, fresh))
                created[fresh] = value
                node.input[j] = fresh
        if rw.kind == "channel" and i > 0:
            del node.input[2:]  # the bias is added once, by the first part
        if plan.depthwise:
            next(a for a in node.attribute if a.name == "group").i = c
        new.append(node)
    # 2. Join: a concatenation after the branches, or a chain of additions.
    n = len(rw.parts)
    if rw.kind == "kernel":
        parts = [rw.part(i) for i in range(n)]
        new.append(helper.make_node("Concat", parts, [rw.reader], name=f"{r_name}/concat", axis=rw.out_axis))
    else:
        prev = rw.part(0)
        for i in range(1, n):
            out = rw.reader if i == n - 1 else rw.acc(i)
            new.append(helper.make_node("Add", [prev, rw.part(i)], [out], name=f"{r_name}/acc{i}"))
            prev = out
    # 3. Splice in place (rebuilding the lists would copy every weight), then drop what nothing
    # reads any more: the concatenation, R's old constants (unless graph inputs: overridable).
    del g.node[k]
    for j, node in enumerate(new):
        g.node.insert(k + j, node)
    if rw.concat not in after.tensors:
        del g.node[next(i for i, nd in enumerate(g.node) if rw.concat in nd.output)]
        _drop_value_info(g, rw.concat)
    read = set(mentioned(g))
    stale = {x for x in r.input if x and x not in read}
    for i in reversed(range(len(g.initializer))):
        if g.initializer[i].name in stale:
            del g.initializer[i]
    # 4. Declare the new tensors, so the file says what the importer will infer.
    accs = [rw.acc(i) for i in range(1, n - 1)] if rw.kind == "channel" else []
    for name in [*(rw.part(i) for i in range(n)), *accs]:
        _declare(g, name, rw, after, symbolic)


def _drop_value_info(g: onnx.GraphProto, name: str) -> None:
    """Remove the value_info of ``name``, a tensor no node writes any more."""
    for i in reversed(range(len(g.value_info))):
        if g.value_info[i].name == name:
            del g.value_info[i]


def _declare(g: onnx.GraphProto, name: str, rw: Rewrite, after: Graph, symbolic: bool) -> None:
    """Add a value_info for new tensor ``name`` of ``rw``: the reader's declared type with the
    part's channels (kernel-wise), so a symbolic batch stays symbolic; failing that, the IR's
    shape, unless the model has symbolic dimensions (then the element type alone)."""
    shape = after.tensors[name].shape
    decl = next((v for v in (*g.value_info, *g.output) if v.name == rw.reader), None)
    if decl is not None and decl.type.HasField("tensor_type"):
        vi = g.value_info.add(name=name, type=decl.type)
        dims = vi.type.tensor_type.shape.dim
        if len(dims) == len(shape) and rw.kind == "kernel":
            dims[rw.out_axis].Clear()
            dims[rw.out_axis].dim_value = shape[rw.out_axis]
        return
    try:
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(after.tensors[name].dtype))
    except (TypeError, KeyError, ValueError):
        return  # shape inference will declare it
    g.value_info.append(helper.make_tensor_value_info(name, elem, None if symbolic else list(shape)))


__all__ = ["Names", "Weights", "mentioned", "splice"]
