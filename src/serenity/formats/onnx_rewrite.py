"""ONNX dialect of identity graph rewriting: op roles, what can be written, and the writer.

The rewrites themselves (kernel-wise and channel-wise partitioning of an op reading a
concatenation, Ahn et al., "Ordering Chaos", MLSys 2020, section 4) are format-free
(:mod:`serenity.rewrites`); this adapter tells them what ONNX ops mean
(:mod:`serenity.formats.onnx_rewrite_roles`) and writes chosen rewrites into a copy of the model:

* kernel-wise, the node ``R`` writing ``Y`` becomes ``R/kw0 .. R/kw{n-1}`` writing ``Y/kw{i}``
  from part ``x_i``, each with its per-channel constants sliced to the part's channels (new
  initializers ``W/kw{i}``), then ``R/concat`` joining them into ``Y``;
* channel-wise, the convolution becomes ``R/cw{i}`` over ``x_i`` with the weight's input
  channels ``W/cw{i}``, the bias on the first only, then ``R/acc{i}`` adding them up into ``Y``.

New nodes take ``R``'s place in the node list; the concatenation goes once nothing reads its
output, and so do the constants nothing reads any more (unless they are also graph inputs).
Everything else (other nodes, initializers, opset, metadata) is left as it was.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from serenity.errors import GraphError, UnsupportedError
from serenity.formats import Model
from serenity.formats.onnx_rewrite_roles import Plan, analyse
from serenity.formats.onnx_rewrite_splice import Names, Weights, splice
from serenity.ir import Graph, Op
from serenity.rewrites.apply import apply_rewrite, structure_difference
from serenity.rewrites.records import Rewrite, Role


class OnnxDialect:
    """The ONNX :class:`~serenity.rewrites.records.Dialect` (NCHW, channels on axis 1).

    Built from a loaded model it can judge and write rewrites; built without one
    (``OnnxDialect()``, to score rewrites of a graph that is never written, like the zoo's in
    the benchmarks) it answers :meth:`role` from the graph alone, :meth:`check` accepts every
    rewrite (it has no weights or node domains to consult) and :meth:`materialize` raises.

    Args:
        model: An ONNX model (``model.source`` its ``ModelProto``), or ``None``.

    Raises:
        UnsupportedError: ``model`` is not an ONNX model.

    Example:
        >>> from serenity.formats.onnx_io import from_proto
        >>> from serenity import zoo
        >>> from serenity.rewrites.match import matches
        >>> dialect = OnnxDialect(from_proto(zoo.build("swiftnet_cell_a")))
        >>> found = [m for m in matches(dialect.model.graph, dialect) if isinstance(m, Rewrite)]
        >>> rewritten = dialect.materialize(found[:1])
        >>> len(rewritten.graph.ops) > len(dialect.model.graph.ops)
        True
    """

    format = "onnx"
    concat_type = "Concat"
    add_type = "Add"

    def __init__(self, model: Model | None = None) -> None:
        if model is not None and model.format != "onnx":
            raise UnsupportedError(f"{model.path or 'model'}: a {model.format} model has no ONNX dialect")
        self.model = model
        nodes = model.source.graph.node if model is not None else []
        self._nodes = {o: n for n in nodes for o in n.output if o}
        self._weights = Weights(model.source, model) if model is not None else None
        # Shapes of Constant-node tensors, which the IR does not record (role needs them).
        self._const_shapes = self._weights.constant_shapes() if self._weights else {}

    def _plan(self, graph: Graph, op: Op) -> Plan | str:
        return analyse(graph, op, self._const_shapes)

    def role(self, graph: Graph, op: Op) -> Role | str:
        """The op's role, or why it has none (see :func:`~.onnx_rewrite_roles.analyse`).

        Read from ``graph`` alone, except the shapes of ``Constant`` nodes' ``value`` tensors,
        which the IR does not record: with a model they come from it, without one an op that
        needs one (a ``Mul`` by such a constant) is refused with a reason.
        """
        plan = self._plan(graph, op)
        return plan if isinstance(plan, str) else plan.role

    def check(self, graph: Graph, rewrite: Rewrite) -> str | None:
        """Why the model cannot be written with ``rewrite``, or ``None``: the split node is not
        in the default domain, or a constant to slice has no readable value
        (missing external data, a sparse initializer). ``None`` without a model."""
        if self._weights is None:
            return None
        producer = graph.tensors[rewrite.reader].producer if rewrite.reader in graph.tensors else None
        if producer is None:
            return f"no op of '{graph.name}' writes '{rewrite.reader}'"
        # A branch an earlier split created (a part that is itself a concatenation) is not in
        # the model: it is a copy of a node whose domain was checked then.
        node = self._nodes.get(rewrite.reader)
        if node is not None and node.domain not in ("", "ai.onnx"):
            return f"{node.op_type} is in domain '{node.domain}', not the default ONNX domain"
        op = graph.ops[producer]
        plan = self._plan(graph, op)
        if isinstance(plan, str):
            return plan
        for j in plan.sliced:
            if j < len(op.inputs) and op.inputs[j]:
                problem = self._weights.problem(op.inputs[j])
                if problem:
                    return problem
        return None

    def materialize(self, rewrites: Sequence[Rewrite]) -> Model:
        """A copy of the model with ``rewrites`` applied in sequence (a later one may name
        tensors an earlier one created).

        The result's graph equals :func:`serenity.rewrites.apply.apply_all` of the same
        rewrites (up to constant and op names); it is imported afresh (:func:`from_proto`:
        checker and shape inference). Its ``path`` stays the original's, since the copy still
        references the original's external data by relative name, so
        :func:`serenity.formats.save` copies that data beside a new file as it does for any
        model; sliced constants are stored inline.

        Raises:
            UnsupportedError: the dialect has no model, or :meth:`check` refuses a rewrite.
            GraphError: a rewrite does not match the graph it is applied to (stale record).
        """
        if self.model is None or self._weights is None:
            raise UnsupportedError("this ONNX dialect was built from a graph alone: no model to write")
        work = onnx.ModelProto()
        work.CopyFrom(self.model.source)
        graph = self.model.graph
        names = Names(work.graph)
        created: dict[str, np.ndarray] = {}  # sliced constants, which a nested split slices again
        dims = _dims(self.model)
        for rw in rewrites:
            problem = self.check(graph, rw)
            if problem:
                raise UnsupportedError(f"cannot write {rw.describe()}: {problem}")
            after = apply_rewrite(graph, rw, self)
            r_op = graph.ops[graph.tensors[rw.reader].producer]  # type: ignore[index]
            plan = self._plan(graph, r_op)
            assert not isinstance(plan, str)  # apply_rewrite checked the role
            splice(work.graph, rw, plan, r_op.name, after, self._weights, names, created, bool(dims))
            graph = after
        out = _import(work, self.model, dims)
        diff = structure_difference(out.graph, graph)
        if diff:
            raise GraphError(f"the written ONNX model is not the rewritten graph: {diff}")
        return Model(out.graph, "onnx", self.model.path, work, {**self.model.info, **out.info})


def _dims(model: Model) -> dict[str, int]:
    """The values the model's symbolic input dimensions were given when it was loaded, read off
    its graph (the proto keeps them symbolic)."""
    out = {}
    for vi in model.source.graph.input:
        t = model.graph.tensors.get(vi.name)
        if t is None or t.constant:
            continue
        for d, n in zip(vi.type.tensor_type.shape.dim, t.shape, strict=False):
            if d.HasField("dim_param"):
                out[d.dim_param] = n
    return out


def _import(work: onnx.ModelProto, model: Model, dims: dict[str, int]) -> Model:
    """:func:`from_proto` of the written copy of ``model``, with the same ``dims``, external data
    resolved beside ``model``'s file. ``onnx.checker`` resolves an in-memory model's external data
    against the working directory, so with external data the copy is checked as a file in a
    temporary folder where empty placeholders stand in for the data files (all the checker
    looks at)."""
    from serenity.formats.onnx_io import from_proto

    base = model.path.parent if model.path is not None else None
    if not model.info.get("external_data"):
        return from_proto(work, dims=dims, base_dir=base, require_data=False)
    with tempfile.TemporaryDirectory(prefix="serenity-rewrite-") as tmp:
        for loc in model.info["external_data"]:
            place = Path(tmp) / loc
            place.parent.mkdir(parents=True, exist_ok=True)
            place.touch()
        copy = Path(tmp) / "model.onnx"
        copy.write_bytes(work.SerializeToString())
        return from_proto(work, dims=dims, base_dir=base, path=copy, require_data=False)


__all__ = ["OnnxDialect"]
