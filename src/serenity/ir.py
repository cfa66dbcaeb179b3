"""The graph IR: ops, tensors, and the dependency structure every scheduler works on.

This module knows no file format. Importers (``serenity.formats``) build a :class:`Graph` from a
file; exporters write an order back. An *order* (a schedule) is a permutation of op indices
``0 .. n-1``; an op's index is its position in the file it came from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from serenity.errors import CycleError, GraphError, OrderError

Order = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Tensor:
    """A value flowing between ops.

    Attributes:
        name: Unique name within the graph.
        shape: Static shape; every dimension is a non-negative int.
        dtype: Element type, a numpy-style name (``"float32"``, ``"int8"``...).
        nbytes: Size in bytes as the runtime stores it.
        constant: True for weights: ONNX initializers and ``Constant`` outputs, TFLite tensors
            with buffer data. Constants are never counted as activation memory.
        producer: Index of the op that writes it, ``None`` for graph inputs and initializers.
        consumers: Indices of the ops that read it, each once, ascending.
        is_input: A graph input (not an initializer).
        is_output: A graph output; it stays live until the end of the schedule.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    constant: bool = False
    producer: int | None = None
    consumers: tuple[int, ...] = ()
    is_input: bool = False
    is_output: bool = False

    @property
    def is_activation(self) -> bool:
        """Whether the tensor occupies activation memory (everything but constants)."""
        return not self.constant


@dataclass(frozen=True, slots=True)
class Op:
    """One operator.

    Attributes:
        name: Unique name within the graph (importers invent one when the file has none).
        type: Operator type as the format spells it (``"Conv"``, ``"CONV_2D"``...).
        inputs: Input tensor names in argument order; ``""`` marks an absent optional input.
            A name may repeat (``Add(x, x)``).
        outputs: Output tensor names; ``""`` marks an absent optional output.
        index: Position in the source file: the listed order, and the tie-breaker everywhere.
        attributes: Opaque to Serenity; kept for reports, never interpreted by the core.
    """

    name: str
    type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    index: int = -1
    attributes: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True, slots=True)
class Dense:
    """The graph as integer arrays, the form schedulers and the memory model iterate over.

    Only activation tensors get an id here (``0 .. len(sizes)-1``); constants cost nothing and
    are absent. Dependencies (``preds``/``succs``) come from every tensor, constants produced by
    ops included, so an ONNX ``Constant`` op still precedes its readers.
    """

    n_ops: int
    names: tuple[str, ...]
    sizes: tuple[int, ...]
    producer: tuple[int, ...]  # op index, -1 for graph inputs
    consumers: tuple[tuple[int, ...], ...]
    pinned: tuple[bool, ...]  # graph outputs: never freed
    initial: tuple[int, ...]  # graph-input activations live at the start
    op_in: tuple[tuple[int, ...], ...]  # activation ids read, each once
    op_out: tuple[tuple[int, ...], ...]  # activation ids written
    preds: tuple[tuple[int, ...], ...]
    succs: tuple[tuple[int, ...], ...]
    #: Per op, the inputs its output may overwrite under the ``inplace`` memory model
    #: (:func:`serenity.memory.reuse_candidates`); empty (the default) under ``tflm``.
    reuse: tuple[tuple[int, ...], ...] = ()

    @property
    def inplace(self) -> bool:
        """Whether some op may write its output over a dying input (the ``inplace`` model)."""
        return any(self.reuse)


class Graph:
    """A dataflow DAG of :class:`Op` over :class:`Tensor`.

    The constructor fills in each tensor's producer, consumers and input/output flags, and
    rejects malformed graphs: a tensor read but never defined, two producers, a cycle.

    Example:
        >>> g = Graph("tiny",
        ...     ops=[Op("a", "Relu", ("x",), ("y",)), Op("b", "Relu", ("y",), ("z",))],
        ...     tensors=[Tensor("x", (4,), "float32", 16), Tensor("y", (4,), "float32", 16),
        ...              Tensor("z", (4,), "float32", 16)],
        ...     inputs=["x"], outputs=["z"])
        >>> g.tensors["y"].producer, g.tensors["y"].consumers
        (0, (1,))
        >>> g.check_order([1, 0])
        Traceback (most recent call last):
        ...
        serenity.errors.OrderError: op 'b' (#1) is at position 0, before op 'a' (#0) at ...
    """

    def __init__(
        self,
        name: str,
        ops: Sequence[Op],
        tensors: Iterable[Tensor],
        inputs: Sequence[str],
        outputs: Sequence[str],
        *,
        acyclic: bool = False,
        memory_model: str = "tflm",
    ) -> None:
        """Args:
        acyclic: The caller guarantees the ops form no cycle (a transformation that provably
            keeps a checked graph acyclic, e.g. splitting an op); skips the check.
        memory_model: How activation bytes are counted (:data:`serenity.memory.MEMORY_MODELS`):
            ``"tflm"`` (TensorFlow Lite Micro: every output gets bytes of its own) or
            ``"inplace"`` (an element-wise or reshape-like op may write its output over an
            input of the same size that dies at it). Every scheduler, bound and planner
            reads it from the graph (:attr:`dense`).
        """
        from serenity.memory import check_memory_model

        self.memory_model = check_memory_model(memory_model)
        self.name = name
        # Direct construction, not dataclasses.replace: graphs are rebuilt often (rewrite search).
        self.ops: tuple[Op, ...] = tuple(
            op if op.index == i else Op(op.name, op.type, op.inputs, op.outputs, i, op.attributes)
            for i, op in enumerate(ops)
        )
        self.inputs: tuple[str, ...] = tuple(inputs)
        self.outputs: tuple[str, ...] = tuple(outputs)
        self.tensors: dict[str, Tensor] = self._link(tensors)
        if not acyclic:
            self._check_acyclic()

    # -- construction -----------------------------------------------------------------------

    def _link(self, tensors: Iterable[Tensor]) -> dict[str, Tensor]:
        base: dict[str, Tensor] = {}
        for t in tensors:
            if t.name in base:
                raise GraphError(f"tensor '{t.name}' is declared twice")
            base[t.name] = t
        producer: dict[str, int] = {}
        consumers: dict[str, list[int]] = {n: [] for n in base}
        names = set()
        for op in self.ops:
            if op.name in names:
                raise GraphError(f"op name '{op.name}' is used twice")
            names.add(op.name)
            for out in op.outputs:
                if not out:
                    continue
                if out not in base:
                    raise GraphError(f"op '{op.name}' writes tensor '{out}' which has no declaration")
                if out in producer:
                    first = self.ops[producer[out]].name
                    raise GraphError(f"tensor '{out}' is written by two ops: '{first}' and '{op.name}'")
                producer[out] = op.index
        input_set = set(self.inputs)
        for name in (*self.inputs, *self.outputs):
            if name not in base:
                raise GraphError(f"graph input/output '{name}' has no tensor declaration")
        for op in self.ops:
            for inp in op.inputs:
                if not inp:
                    continue
                decl = base.get(inp)
                if decl is None or (inp not in producer and inp not in input_set and not decl.constant):
                    raise GraphError(
                        f"op '{op.name}' reads tensor '{inp}' which no op produces and which is "
                        "neither a graph input nor a constant"
                    )
                if not consumers[inp] or consumers[inp][-1] != op.index:
                    consumers[inp].append(op.index)
        for name in self.outputs:
            if name not in producer and name not in input_set and not base[name].constant:
                raise GraphError(f"graph output '{name}' is produced by no op")
        output_set = set(self.outputs)
        linked = {}
        for name, t in base.items():
            if name in input_set and name in producer:
                raise GraphError(
                    f"graph input '{name}' is also written by op '{self.ops[producer[name]].name}'"
                )
            linked[name] = Tensor(
                t.name,
                t.shape,
                t.dtype,
                t.nbytes,
                t.constant,
                producer.get(name),
                tuple(consumers[name]),
                name in input_set and not t.constant,
                name in output_set,
            )
        return linked

    def _check_acyclic(self) -> None:
        cycle = find_cycle(self.dense.preds)
        if cycle is not None:
            raise CycleError([self.ops[i].name for i in cycle])

    # -- structure ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.ops)

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, ops={len(self.ops)}, tensors={len(self.tensors)})"

    @cached_property
    def dense(self) -> Dense:
        """Integer arrays for schedulers; computed once (the graph is immutable)."""
        acts = [t for t in self.tensors.values() if t.is_activation]
        aid = {t.name: i for i, t in enumerate(acts)}
        op_in = []
        op_out = []
        preds: list[list[int]] = [[] for _ in self.ops]
        succs: list[list[int]] = [[] for _ in self.ops]
        for op in self.ops:
            ins = dict.fromkeys(n for n in op.inputs if n in aid)
            op_in.append(tuple(aid[n] for n in ins))
            op_out.append(tuple(aid[n] for n in op.outputs if n in aid))
            for n in dict.fromkeys(op.inputs):
                if not n:
                    continue
                p = self.tensors[n].producer
                if p is not None and p not in preds[op.index]:
                    preds[op.index].append(p)
                    succs[p].append(op.index)
        return Dense(
            n_ops=len(self.ops),
            names=tuple(t.name for t in acts),
            sizes=tuple(t.nbytes for t in acts),
            producer=tuple(-1 if t.producer is None else t.producer for t in acts),
            consumers=tuple(t.consumers for t in acts),
            pinned=tuple(t.is_output for t in acts),
            initial=tuple(aid[t.name] for t in acts if t.is_input and (t.consumers or t.is_output)),
            op_in=tuple(op_in),
            op_out=tuple(op_out),
            preds=tuple(tuple(sorted(p)) for p in preds),
            succs=tuple(tuple(sorted(s)) for s in succs),
            reuse=self._reuse(aid) if self.memory_model == "inplace" else (),
        )

    def _reuse(self, aid: Mapping[str, int]) -> tuple[tuple[int, ...], ...]:
        from serenity.memory import reuse_candidates

        return tuple(tuple(aid[n] for n in reuse_candidates(self, op)) for op in self.ops)

    def predecessors(self, i: int) -> tuple[int, ...]:
        """Ops whose outputs op ``i`` reads, ascending."""
        return self.dense.preds[i]

    def successors(self, i: int) -> tuple[int, ...]:
        """Ops that read an output of op ``i``, ascending."""
        return self.dense.succs[i]

    @property
    def activations(self) -> list[Tensor]:
        """Tensors that occupy activation memory, in declaration order."""
        return [t for t in self.tensors.values() if t.is_activation]

    # -- orders -------------------------------------------------------------------------------

    def check_order(self, order: Sequence[int]) -> Order:
        """Check that ``order`` is a topological permutation of the ops and return it as a tuple.

        Raises:
            OrderError: naming the missing, repeated or unknown op, or the first dependency
                edge the order breaks.
        """
        n = len(self.ops)
        order = tuple(int(i) for i in order)
        pos = [-1] * n
        for p, i in enumerate(order):
            if not 0 <= i < n:
                raise OrderError(f"order names op #{i}, but the graph has ops #0..#{n - 1}")
            if pos[i] >= 0:
                raise OrderError(f"order lists op '{self.ops[i].name}' (#{i}) twice")
            pos[i] = p
        if len(order) != n:
            missing = next(i for i in range(n) if pos[i] < 0)
            raise OrderError(
                f"order has {len(order)} ops but the graph has {n}; op '{self.ops[missing].name}' "
                f"(#{missing}) is missing"
            )
        for p, i in enumerate(order):
            for j in self.dense.preds[i]:
                if pos[j] > p:
                    via = next(t for t in self.ops[i].inputs if t and self.tensors[t].producer == j)
                    raise OrderError(
                        f"op '{self.ops[i].name}' (#{i}) is at position {p}, before op "
                        f"'{self.ops[j].name}' (#{j}) at position {pos[j]} which produces its "
                        f"input '{via}'"
                    )
        return order

    def is_topological(self, order: Sequence[int]) -> bool:
        """Whether ``order`` is a topological permutation of the ops."""
        try:
            self.check_order(order)
        except OrderError:
            return False
        return True

    @property
    def listed_order(self) -> Order:
        """The order of the source file. TFLite and ONNX importers check it is topological (the
        runtimes run it); a JSON graph may list its ops in any order (see :attr:`listed_problem`)."""
        return tuple(range(len(self.ops)))

    @cached_property
    def listed_problem(self) -> str | None:
        """Why the listed order is not a valid schedule (the first edge it breaks), or ``None``."""
        try:
            self.check_order(self.listed_order)
        except OrderError as e:
            return str(e)
        return None

    @cached_property
    def topological_order(self) -> Order:
        """The listed order when it is topological, else Kahn's order taking the lowest-index
        ready op first: a valid order every graph has, for algorithms that scan one."""
        if self.listed_problem is None:
            return self.listed_order
        import heapq

        preds, succs = self.dense.preds, self.dense.succs
        indeg = [len(p) for p in preds]
        ready = [v for v in range(len(self.ops)) if indeg[v] == 0]
        heapq.heapify(ready)
        order: list[int] = []
        while ready:
            v = heapq.heappop(ready)
            order.append(v)
            for w in succs[v]:
                indeg[w] -= 1
                if indeg[w] == 0:
                    heapq.heappush(ready, w)
        return tuple(order)


def with_element_size(graph: Graph, element_bytes: int) -> Graph:
    """A copy of ``graph`` whose activations are accounted at ``element_bytes`` per element.

    Used to ask "how much would this float model need quantised to int8 on a microcontroller"
    (``element_bytes=1``) without converting it. Constants are unchanged (they cost nothing).
    """
    if element_bytes <= 0:
        raise ValueError("element_bytes must be positive")
    tensors = []
    for t in graph.tensors.values():
        if t.is_activation:
            numel = 1
            for s in t.shape:
                numel *= s
            t = replace(t, nbytes=numel * element_bytes)
        tensors.append(t)
    return Graph(graph.name, graph.ops, tensors, graph.inputs, graph.outputs, memory_model=graph.memory_model)


def with_alignment(graph: Graph, alignment: int) -> Graph:
    """A copy of ``graph`` whose activations occupy their size rounded up to ``alignment`` bytes.

    TensorFlow Lite Micro places every buffer at a multiple of 16 bytes and rounds its size up
    to one (``MicroArenaBufferAlignment()`` in ``micro_arena_constants.h``), so peaks computed on
    ``with_alignment(g, 16)`` are the bytes its arena really holds. ``alignment=1`` returns
    ``graph`` itself.

    >>> g = Graph("g", [Op("a", "Relu", ("x",), ("y",))],
    ...           [Tensor("x", (3,), "int8", 3), Tensor("y", (3,), "int8", 3)], ["x"], ["y"])
    >>> [t.nbytes for t in with_alignment(g, 16).tensors.values()]
    [16, 16]
    """
    if alignment <= 0:
        raise ValueError("alignment must be positive")
    if alignment == 1:
        return graph
    tensors = [
        replace(t, nbytes=-(-t.nbytes // alignment) * alignment) if t.is_activation else t
        for t in graph.tensors.values()
    ]
    return Graph(graph.name, graph.ops, tensors, graph.inputs, graph.outputs, memory_model=graph.memory_model)


def with_memory_model(graph: Graph, memory_model: str) -> Graph:
    """``graph`` counted under ``memory_model`` (``"tflm"`` or ``"inplace"``, see :class:`Graph`);
    ``graph`` itself when it already is. Ops, tensors and indices are shared, not copied."""
    from serenity.memory import check_memory_model

    if check_memory_model(memory_model) == graph.memory_model:
        return graph
    return Graph(
        graph.name,
        graph.ops,
        graph.tensors.values(),
        graph.inputs,
        graph.outputs,
        acyclic=True,
        memory_model=memory_model,
    )


def find_cycle(preds: Sequence[Sequence[int]]) -> list[int] | None:
    """A cycle of the graph given by predecessor lists, as ``[a, b, ..., a]``, or ``None``.

    Kahn's algorithm removes every op not on or behind a cycle; from any op left, walking
    backwards along predecessors that are also left must revisit an op: that loop is a cycle.
    """
    n = len(preds)
    succs: list[list[int]] = [[] for _ in range(n)]
    for v, ps in enumerate(preds):
        for p in ps:
            succs[p].append(v)
    indeg = [len(p) for p in preds]
    ready = [i for i, d in enumerate(indeg) if d == 0]
    while ready:
        v = ready.pop()
        for w in succs[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                ready.append(w)
    left = next((i for i, d in enumerate(indeg) if d > 0), None)
    if left is None:
        return None
    path: list[int] = []
    pos: dict[int, int] = {}
    v = left
    while v not in pos:
        pos[v] = len(path)
        path.append(v)
        v = next(p for p in preds[v] if indeg[p] > 0)
    cycle = [*path[pos[v] :], v]
    cycle.reverse()
    return cycle
