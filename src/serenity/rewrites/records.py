"""The records every rewrite pass, format adapter and the optimizer share.

Two primitive rewrites split an op that reads a concatenation ``X = Concat(x_1..x_n)`` along the
concatenated (channel) axis (Ahn et al., "Ordering Chaos", MLSys 2020, section 4):

* ``kernel`` (kernel-wise partitioning): a *per-channel* reader ``Y = f(X)`` (depthwise conv,
  pooling, element-wise activation, a per-channel affine, a spatial reduction) becomes
  ``y_i = f_i(x_i)`` and ``Y = Concat(y_1..y_n)``; ``f_i`` is ``f`` with its per-channel
  constants sliced to the channels of ``x_i``. The concat moves past ``f``.
* ``channel`` (channel-wise partitioning): a group-1 convolution ``Y = Conv(X, W) + b`` becomes
  ``p_i = Conv(x_i, W_i)`` (``W`` split along its input channels, the bias in ``p_1`` only) and
  ``Y = ((p_1 + p_2) + p_3) ...``, accumulated in a chain so the scheduler can interleave the
  branches; the convolution's fused activation, if any, moves to the last addition.

In both, the concat disappears once nothing reads ``X`` any more. Names of new tensors and ops
are derived from the reader's output name (:meth:`Rewrite.part`, :meth:`Rewrite.acc`), so the
in-memory IR rewrite (:mod:`serenity.rewrites.apply`) and a format adapter that writes the file
produce the same tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from serenity.ir import Graph, Op

if TYPE_CHECKING:
    from serenity.formats import Model

Kind = Literal["channel", "kernel"]


@dataclass(frozen=True, slots=True)
class Role:
    """What a rewrite needs to know about an op, as its format's dialect reads it.

    Attributes:
        kind: ``"concat"`` (concatenation along ``axis``), ``"conv"`` (a group-1 convolution
            whose input channels are on ``axis``: channel-wise splittable) or ``"channelwise"``
            (output channel group ``c`` depends only on input channel ``c``: kernel-wise
            splittable).
        axis: The channel axis of the op's activation input (for a concat: its axis),
            non-negative.
        out_axis: The channel axis of the op's output (a reduction without kept dims moves it).
        multiplier: Output channels per input channel (a depthwise multiplier), else 1.
        data_input: Position in ``op.inputs`` of the one activation input split (conv,
            channelwise); every other input is a constant.
    """

    kind: Literal["concat", "conv", "channelwise"]
    axis: int
    out_axis: int
    multiplier: int = 1
    data_input: int = 0


@dataclass(frozen=True, slots=True)
class Rewrite:
    """One primitive rewrite: split the op writing ``reader`` across the parts of ``concat``.

    Attributes:
        kind: ``"kernel"`` or ``"channel"`` (see the module docstring).
        concat: The concatenation's output tensor ``X``.
        reader: The split op's (first) output tensor ``Y``; it keeps its name.
        parts: The concatenation's inputs ``x_1..x_n`` in order (a name may repeat).
        channels: Channels each part contributes along the concat axis.
        axis: The concat axis (= the reader's input channel axis).
        out_axis: The reader's output channel axis (kernel-wise: the new concat's axis).
        multiplier: Output channels per input channel of the reader (kernel-wise).
    """

    kind: Kind
    concat: str
    reader: str
    parts: tuple[str, ...]
    channels: tuple[int, ...]
    axis: int
    out_axis: int
    multiplier: int = 1

    def part(self, i: int) -> str:
        """Name of branch ``i``'s output: ``y_i`` (kernel) or the partial sum ``p_i`` (channel)."""
        return f"{self.reader}/{'kw' if self.kind == 'kernel' else 'cw'}{i}"

    def acc(self, i: int) -> str:
        """Name of the ``i``-th running sum, ``1 <= i <= n-2`` (``p_1 + .. + p_{i+1}``); the last
        addition writes :attr:`reader` itself."""
        return f"{self.reader}/acc{i}"

    def offsets(self) -> list[int]:
        """First channel of each part along the concat axis."""
        out, at = [], 0
        for c in self.channels:
            out.append(at)
            at += c
        return out

    def describe(self) -> str:
        """One line for ``--explain``."""
        how = "kernel-wise" if self.kind == "kernel" else "channel-wise"
        return f"{how}: '{self.reader}' over the {len(self.parts)} parts of '{self.concat}'"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A match that was considered and not applied, with the reason as text."""

    concat: str
    reader: str
    reason: str

    def describe(self) -> str:
        """One line for ``--explain``."""
        return f"'{self.reader}' reading '{self.concat}': {self.reason}"


class Dialect(Protocol):
    """What the rewrites need from a format: op roles, what it can write, and the writer.

    An adapter lives beside its format (``serenity.formats.onnx_rewrite``,
    ``serenity.formats.tflite_rewrite``); the IR itself stays format-free.
    """

    format: str
    concat_type: str  #: op type a new concatenation gets (``"Concat"``, ``"CONCATENATION"``)
    add_type: str  #: op type of an accumulation (``"Add"``, ``"ADD"``)

    def role(self, graph: Graph, op: Op) -> Role | str:
        """The op's role, or why it has none (one line, e.g. ``"Conv with group 4"``)."""
        ...

    def check(self, graph: Graph, rewrite: Rewrite) -> str | None:
        """Why the format cannot write ``rewrite`` on ``graph`` (int8 rounding, quantization
        mismatch, unsupported option), or ``None`` when it can."""
        ...

    def materialize(self, rewrites: Sequence[Rewrite]) -> Model:
        """The dialect's model with ``rewrites`` applied in sequence, as a new in-memory model
        whose graph equals :func:`serenity.rewrites.apply.apply_all` of the same rewrites (up
        to constant names), new ops listed where the split op was."""
        ...


__all__ = ["Dialect", "Kind", "Rejection", "Rewrite", "Role"]
