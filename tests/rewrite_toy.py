"""A format-free dialect for IR-level rewrite tests: op types name their role directly.

``Concat`` (attribute ``axis``), ``Conv`` (group-1 convolution on axis 1, weights constant),
``Dw`` (per-channel, multiplier from attribute ``m``), ``Relu`` (per-channel), ``Add``; anything
else has no role. Tensors are NCHW-like: channels on axis 1, one byte per element.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from serenity.ir import Graph, Op, Tensor
from serenity.rewrites.records import Rewrite, Role


class ToyDialect:
    format = "toy"
    concat_type = "Concat"
    add_type = "Add"

    def __init__(self, refuse: str = "") -> None:
        self.refuse = refuse  # a reader tensor name check() refuses, to test rejections

    def role(self, graph: Graph, op: Op) -> Role | str:
        if op.type == "Concat":
            return Role("concat", int(op.attributes.get("axis", 1)), int(op.attributes.get("axis", 1)))
        if op.type == "Conv":
            return Role("conv", 1, 1)
        if op.type == "Dw":
            return Role("channelwise", 1, 1, multiplier=int(op.attributes.get("m", 1)))
        if op.type == "Relu":
            return Role("channelwise", 1, 1)
        return f"{op.type} is not per-channel"

    def check(self, graph: Graph, rewrite: Rewrite) -> str | None:
        return "refused by the test" if rewrite.reader == self.refuse else None

    def materialize(self, rewrites: Sequence[Rewrite]) -> object:
        raise NotImplementedError


def T(name: str, c: int, hw: int = 4, *, const: bool = False) -> Tensor:
    shape = (1, c, hw, hw)
    return Tensor(name, shape, "int8", 0 if const else math.prod(shape), constant=const)


def nas_like(
    fan_in: int = 3, c: int = 8, hw: int = 4, readers: Sequence[str] = ("Conv",), channels: Sequence[int] = ()
) -> Graph:
    """``x -> Conv_i -> Concat -> each reader`` (part ``i`` has ``channels[i]`` channels, default
    ``c``; a Conv reader writes ``c`` channels, Relu/Dw keep the concatenation's); every reader's
    output is a graph output."""
    chans = list(channels) or [c] * fan_in
    ops = [Op(f"b{i}", "Conv", ("x", "w"), (f"a{i}",)) for i in range(len(chans))]
    tensors = [T("x", c, hw), T("w", c, 1, const=True)] + [T(f"a{i}", ch, hw) for i, ch in enumerate(chans)]
    ops.append(
        Op("cat", "Concat", tuple(f"a{i}" for i in range(len(chans))), ("cat",), attributes={"axis": 1})
    )
    tensors.append(T("cat", sum(chans), hw))
    outs = []
    for j, kind in enumerate(readers):
        ch = c if kind == "Conv" else sum(chans) * (2 if kind == "Dw2" else 1)
        kind = "Dw" if kind == "Dw2" else kind
        ins = ("cat", "w") if kind == "Conv" else ("cat",)
        ops.append(Op(f"r{j}", kind, ins, (f"y{j}",), attributes={"m": 2} if ch == 2 * sum(chans) else {}))
        tensors.append(T(f"y{j}", ch, hw))
        outs.append(f"y{j}")
    return Graph("toy", ops, tensors, ["x"], outs)
