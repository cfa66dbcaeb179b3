"""PyTorch adapter: a ``torch.export`` program as the IR, and the program with its ops reordered.

:func:`from_torch` exports a module and reads it; :func:`graph_of` reads an
:class:`~torch.export.ExportedProgram` that already exists; :func:`reorder` writes an order back
by moving the graph's nodes. Nothing else of the program changes, so its outputs are the same.

How the ATen-level graph becomes the IR, and why (it mirrors what ExecuTorch's memory planner,
``executorch/exir/memory_planning.py``, later counts):

* Every ``call_function`` node is an op, except ``operator.getitem`` (it names one output of a
  multi-output op: that op's output tensor is named after the ``getitem`` node) and the *alias*
  ops below. Each tensor an op returns is an output, read or not: ExecuTorch allocates every
  ``out=`` argument, so an unread output (the indices of ``max.dim``) is live during its op.
* Placeholders of parameters, buffers and lifted constants are constants (ExecuTorch stores
  them in the program, ``spec.const``); user inputs are graph inputs. Mutated buffers are
  refused (:class:`~serenity.errors.UnsupportedError`): ExecuTorch keeps them live throughout.
* Shapes and dtypes come from each node's ``meta["val"]`` (fake tensors); bytes are
  ``numel * element_size``. A symbolic dimension is a :class:`~serenity.errors.ShapeError`.
* **Alias ops** (:data:`ALIAS_OPS`: ``view``, ``_unsafe_view``, ``view_copy``, and ``reshape`` /
  ``flatten`` of a contiguous tensor, which decompose to ``view_copy``) are no op of their own.
  ExecuTorch's ``ReplaceViewCopyWithViewPass`` turns a static ``view_copy`` that is not a graph
  output into ``memory.view``, whose spec *is* its base's spec (``get_node_tensor_specs``): no
  bytes, and the base stays live until the view's last reader. Here the view's readers read the
  base tensor itself, which is exactly that lifetime. A view that is a graph output stays a
  copy (an op), as there. ``permute``, ``t``, ``transpose``, ``expand``, ``squeeze`` and
  ``unsqueeze`` become ``*_copy`` ops with an ``out=`` buffer in the edge dialect: they are ops.
* **In-place ops** (``relu_``, a schema that mutates an argument) are refused: in the ATen graph
  their meaning depends on where they stand relative to other readers of the mutated tensor,
  which no data edge records, so moving them is unsafe. :func:`from_torch` functionalises such a
  program first (``run_decompositions({})``), after which every op writes a fresh tensor, as
  ExecuTorch's edge program (functional) does too.

What the IR does not see: the edge dialect adds a few ops of its own, chiefly a copy of each
Python scalar an op takes (``x * 2`` reads a 0-d tensor constant that ExecuTorch copies into the
arena, ``_to_dim_order_copy``). Such programs count a few (aligned) bytes more in ExecuTorch than
here; :mod:`serenity.executorch_io` plans ExecuTorch's own lifetimes, so its plans stay exact.

An op's index is its position among the op nodes of the graph: the export order is
:attr:`~serenity.ir.Graph.listed_order`. Torch is imported lazily; the core never needs it.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from serenity.errors import GraphError, ModelFormatError, ShapeError, UnsupportedError
from serenity.ir import Graph, Op, Tensor

if TYPE_CHECKING:
    import torch
    from torch.export import ExportedProgram
    from torch.fx import Node

#: ATen ops whose result ExecuTorch makes a view of its input (``memory.view``), not a new buffer.
#: ``reshape`` and ``flatten`` only when their input is contiguous (else they copy).
ALIAS_OPS = frozenset({"aten::view", "aten::_unsafe_view", "aten::view_copy"})
CONTIGUOUS_ALIAS_OPS = frozenset({"aten::reshape", "aten::flatten"})


def from_torch(module: torch.nn.Module, example_inputs: tuple[Any, ...]) -> tuple[Graph, ExportedProgram]:
    """Export ``module`` with ``torch.export`` and read the program into the IR.

    Args:
        module: The module (put it in ``eval()`` mode for inference).
        example_inputs: Positional inputs; their shapes become the graph's static shapes.

    Returns:
        ``(graph, program)``: the IR, whose op indices are the program's op nodes in order, and
        the exported program (functionalised when the module mutates a tensor in place).

    Raises:
        ShapeError: a tensor has a symbolic dimension.
        UnsupportedError: the program mutates a buffer.
    """
    import torch

    program = torch.export.export(module, tuple(example_inputs))
    if _mutating_nodes(program):
        program = program.run_decompositions({})
    return graph_of(program, type(module).__name__), program


def graph_of(program: ExportedProgram, name: str | None = None) -> Graph:
    """The IR of an exported program (see the module docstring for what counts how).

    Args:
        program: An exported program with static shapes and no in-place ops.
        name: The graph's name; default ``"exported_program"``.

    Raises:
        ShapeError: a tensor has a symbolic dimension.
        UnsupportedError: an in-place op or a mutated buffer.
        GraphError: a node whose value is not a tensor is read as one.
    """
    gm = program.graph_module
    mutating = _mutating_nodes(program)
    if mutating:
        raise UnsupportedError(
            f"op '{mutating[0].name}' ({mutating[0].target}) mutates its input in place; "
            "functionalise the program first: program = program.run_decompositions({})"
        )
    sig = program.graph_signature
    if sig.buffers_to_mutate:
        raise UnsupportedError(
            f"the program mutates buffer(s) {', '.join(sorted(sig.buffers_to_mutate.values()))}; "
            "Serenity schedules inference graphs without state"
        )
    user_inputs = set(sig.user_inputs)
    # 1. Name every tensor: node -> the tensor names it stands for.
    tensors: dict[str, Tensor] = {}
    names: dict[Node, tuple[str, ...]] = {}
    op_nodes: list[Node] = []
    inputs: list[str] = []
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if not _is_tensor(node.meta.get("val")):
                names[node] = ()  # a Python scalar input: baked into the program, no bytes
                continue
            tensors[node.name] = _tensor(
                node.name, node.meta.get("val"), constant=node.name not in user_inputs
            )
            names[node] = (node.name,)
            if node.name in user_inputs:
                inputs.append(node.name)
        elif node.op == "get_attr":
            names[node] = ()
        elif node.op == "call_function":
            if node.target is operator.getitem:
                base, i = node.args
                names[node] = (names[base][i],) if names[base][i] else ()
                continue
            if is_alias(node):
                names[node] = names[node.args[0]]
                continue
            vals = node.meta.get("val")
            multi = isinstance(vals, (tuple, list))
            outs: list[str] = []
            for i, v in enumerate(vals if multi else [vals]):
                if not _is_tensor(v):
                    outs.append("")
                    continue
                # A multi-output op's tensor is named after its getitem node (else ``op#i``).
                tname = node.name
                if multi:
                    getitem = next(
                        (u for u in node.users if u.target is operator.getitem and u.args[1] == i), None
                    )
                    tname = f"{node.name}#{i}" if getitem is None else getitem.name
                tensors[tname] = _tensor(tname, v)
                outs.append(tname)
            names[node] = tuple(outs)
            op_nodes.append(node)
    # 2. Ops read the tensors their argument nodes stand for.
    ops = []
    for node in op_nodes:
        reads = [n for arg in _arg_nodes(node) for n in names[arg] if n]
        ops.append(
            Op(
                node.name,
                _type_of(node),
                tuple(reads),
                tuple(names[node]),
                attributes={"target": str(node.target)},
            )
        )
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    outputs = list(dict.fromkeys(n for arg in _arg_nodes(out_node) for n in names[arg] if n))
    return Graph(name or "exported_program", ops, tensors.values(), inputs, outputs)


def reorder(program: ExportedProgram, order: Sequence[int] | None = None) -> ExportedProgram:
    """A copy of ``program`` whose op nodes run in ``order``.

    Placeholders stay first and the output last; each ``getitem`` and alias node follows the
    node it reads at once (so a view never lengthens a lifetime beyond its readers'). The graph is
    linted and recompiled; ``program`` itself is not changed.

    Args:
        program: An exported program :func:`graph_of` reads.
        order: A topological permutation of :func:`graph_of`'s op indices; default the order of
            :func:`serenity.schedulers.schedule` with :data:`~serenity.schedulers.DEFAULT_METHOD`.

    Returns:
        The reordered program; ``graph_of(result).listed_order`` is the new order.

    Raises:
        OrderError: ``order`` is not topological.
    """
    graph = graph_of(program)
    if order is None:
        from serenity.schedulers import DEFAULT_METHOD, schedule

        order = schedule(graph, DEFAULT_METHOD).order
    order = graph.check_order(order)
    new = copy.deepcopy(program)
    fx_graph = new.graph_module.graph
    by_name = {n.name: n for n in fx_graph.nodes}
    # 1. The new node sequence: leaves, then each op followed by its getitem and alias users.
    seq: list[Node] = []
    done: set[Node] = set()

    def emit(node: Node) -> None:
        seq.append(node)
        done.add(node)
        for user in node.users:
            follows = user.op == "call_function" and (user.target is operator.getitem or is_alias(user))
            if follows and user not in done and all(a in done for a in _arg_nodes(user)):
                emit(user)

    for node in list(fx_graph.nodes):
        if node.op in ("placeholder", "get_attr"):
            emit(node)
    for i in order:
        emit(by_name[graph.ops[i].name])
    out_node = next(n for n in fx_graph.nodes if n.op == "output")
    missing = [n.name for n in fx_graph.nodes if n not in done and n is not out_node]
    if missing:
        raise GraphError(f"reorder placed no position for node(s) {', '.join(missing)}")
    # 2. Move each node, in sequence, to just before the output: the graph then lists ``seq``.
    for node in seq:
        out_node.prepend(node)
    fx_graph.lint()
    new.graph_module.recompile()
    return new


def load_pt2(path: str | Path) -> tuple[Graph, ExportedProgram]:
    """Read a ``.pt2`` file (``torch.export.save``) into the IR.

    Returns:
        ``(graph, program)``; the graph is named after the file.

    Raises:
        ModelFormatError: missing, truncated or corrupt file.
        ShapeError, UnsupportedError: as :func:`graph_of`.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"{path}: no such file")
    try:
        program = torch.export.load(path)
    except Exception as e:  # torch raises many types for a bad archive
        raise ModelFormatError(f"{path}: not a torch.export program ({type(e).__name__}: {e})") from e
    return graph_of(program, path.stem), program


def save_pt2(program: ExportedProgram, order: Sequence[int], path: str | Path) -> None:
    """Write ``program`` with its ops in ``order`` (:func:`reorder`) as a ``.pt2`` file,
    atomically (a temporary file beside ``path``, renamed).

    Raises:
        OrderError: ``order`` is not topological.
        SerenityError: ``path`` cannot be written.
    """
    import torch

    from serenity.fsutil import atomic_path

    moved = reorder(program, order)
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
        torch.export.save(moved, f)


def is_alias(node: Node) -> bool:
    """Whether ``node`` is a view ExecuTorch plans no bytes for (see :data:`ALIAS_OPS`)."""
    schema = getattr(node.target, "_schema", None)
    if node.op != "call_function" or schema is None:
        return False
    if any(u.op == "output" for u in node.users):
        return False  # a graph output is never turned into a view (ReplaceViewCopyWithViewPass)
    if schema.name in ALIAS_OPS:
        return True
    if schema.name in CONTIGUOUS_ALIAS_OPS:
        base = node.args[0]
        val = getattr(base, "meta", {}).get("val")
        return _is_tensor(val) and bool(val.is_contiguous())
    return False


# -- helpers -----------------------------------------------------------------------------------


def _mutating_nodes(program: ExportedProgram) -> list[Node]:
    """The ``call_function`` nodes whose schema writes an argument in place, in graph order."""
    return [
        n
        for n in program.graph_module.graph.nodes
        if n.op == "call_function" and getattr(getattr(n.target, "_schema", None), "is_mutable", False)
    ]


def _arg_nodes(node: Node) -> list[Node]:
    """The nodes among ``node``'s arguments (nested in lists too), each once, in order."""
    from torch.fx import Node as FxNode
    from torch.utils._pytree import tree_flatten

    flat, _ = tree_flatten((node.args, node.kwargs))
    return list(dict.fromkeys(a for a in flat if isinstance(a, FxNode)))


def _is_tensor(v: Any) -> TypeGuard[torch.Tensor]:
    import torch

    return isinstance(v, torch.Tensor)


def _tensor(name: str, val: Any, *, constant: bool = False) -> Tensor:
    """The IR tensor of a node's fake value."""
    if not _is_tensor(val):
        raise GraphError(f"node '{name}' has no tensor value (meta['val'] is {type(val).__name__})")
    shape = []
    for d in val.shape:
        if not isinstance(d, int):
            raise ShapeError(f"tensor '{name}' has symbolic dimension {d}; export with static shapes")
        shape.append(d)
    dtype = str(val.dtype).removeprefix("torch.")
    return Tensor(name, tuple(shape), dtype, val.numel() * val.element_size(), constant=constant)


def _type_of(node: Node) -> str:
    """``aten.conv2d.default`` -> ``conv2d``: the op type as reports show it."""
    schema = getattr(node.target, "_schema", None)
    if schema is not None:
        return str(schema.name).split("::")[-1]
    return getattr(node.target, "__name__", str(node.target))


__all__ = [
    "ALIAS_OPS",
    "CONTIGUOUS_ALIAS_OPS",
    "from_torch",
    "graph_of",
    "is_alias",
    "load_pt2",
    "reorder",
    "save_pt2",
]
