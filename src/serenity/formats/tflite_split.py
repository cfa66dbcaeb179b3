"""Write kernel-wise and channel-wise splits into a ``.tflite`` model's object API (``ModelT``).

:class:`TFLiteEditor` is the file side of :mod:`serenity.rewrites.apply`: it makes the same new
tensors (named by :meth:`Rewrite.part` / :meth:`Rewrite.acc`) and operators, in the same
places, and slices every per-channel constant into a new buffer, which the IR rewrite leaves
alone because constants cost no activation memory (Ahn et al., MLSys 2020, section 4):

* kernel-wise: ``y_i = R(x_i)`` with ``R``'s opcode and options, constants sliced along their
  last axis to the channels of ``x_i`` (times the depthwise multiplier ``m``), then
  ``Y = CONCATENATION(y_1..y_n)`` along the output's channel axis;
* channel-wise: ``p_i = CONV_2D(x_i, W[..., c_i])`` (bias on ``p_1`` only, fused activation
  NONE), then ``Y = ADD(.. ADD(p_1, p_2) .., p_n)``, the last addition carrying the
  convolution's fused activation.

Tensors get their IR names so the written file parses back to the same graph, and
:meth:`TFLiteEditor.finish` drops subgraph 0's unreferenced tensors (remapping indices in
operators, subgraph inputs/outputs and signature defs), empties buffers nothing reads any more,
and removes an ``OfflineMemoryAllocation`` plan (made for the old tensors).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

from serenity.errors import GraphError, UnsupportedError
from serenity.formats.tflite_plan import OFFLINE_PLAN, pack_model
from serenity.rewrites.records import Rewrite

_T = fb.TensorType
NUMPY = {
    _T.FLOAT32: np.float32, _T.FLOAT16: np.float16, _T.FLOAT64: np.float64, _T.INT8: np.int8,
    _T.UINT8: np.uint8, _T.INT16: np.int16, _T.INT32: np.int32, _T.INT64: np.int64,
}  # fmt: skip
#: Maps an output's quantization and dtype name to the one its partial sums get.
PartialQuant = Callable[[Any, str], Any]


class TFLiteEditor:
    """Subgraph 0 of a ``ModelT`` under rewrite, its tensors addressed by IR name.

    Args:
        mt: The model to edit in place (pass a copy).
        names: The IR name of every tensor of subgraph 0, by index (written into the file).
        label: The file, for messages.

    Raises:
        UnsupportedError: the file stores buffers after the flatbuffer (``offset``/``size``,
            models over 2 GB), which the object API does not carry.
    """

    def __init__(self, mt: Any, names: Sequence[str], label: str) -> None:
        self.mt, self.label = mt, label
        far = next((b for b, buf in enumerate(mt.buffers or []) if buf.offset > 1), None)
        if far is not None:
            raise UnsupportedError(
                f"{label}: buffer {far} is stored after the flatbuffer (offset/size); rewriting "
                "re-serialises the file, which does not carry such buffers"
            )
        self.sg = mt.subgraphs[0]
        for t, name in zip(self.sg.tensors, names, strict=True):
            t.name = name
        self.index = {name: i for i, name in enumerate(names)}
        empty = mt.buffers and (mt.buffers[0].data is None or len(mt.buffers[0].data) == 0)
        self.empty_buffer = 0 if empty else self._new_buffer(None)

    # -- the two rewrites ----------------------------------------------------------------------

    def split_kernel(self, rw: Rewrite, data_input: int, sliced: Collection[int]) -> None:
        """Kernel-wise: the op writing ``rw.reader`` becomes one copy per part and a concat.

        Args:
            rw: The rewrite.
            data_input: Position of the activation input in the op's inputs.
            sliced: Positions of per-channel constants (sliced along their last axis; a
                constant with a last axis of 1 is shared).
        """
        k, r = self._writer(rw.reader)
        y = self.sg.tensors[self.index[rw.reader]]
        copies = []
        for i, (off, c) in enumerate(zip(rw.offsets(), rw.channels, strict=True)):
            lo, hi = off * rw.multiplier, (off + c) * rw.multiplier
            ins = list(r.inputs)
            ins[data_input] = self.index[rw.parts[i]]
            for pos in sliced:
                if pos < len(ins) and ins[pos] >= 0:
                    ins[pos] = self._slice(ins[pos], -1, lo, hi)
            shape = list(y.shape)
            shape[rw.out_axis] = hi - lo
            out = self._activation(y, rw.part(i), shape, rw.out_axis)
            copies.append(self._operator(r, ins, out))
        join = fb.ConcatenationOptionsT()
        join.axis = rw.out_axis
        op = self._new_op(
            fb.BuiltinOperator.CONCATENATION,
            [self.index[p] for p in map(rw.part, range(len(copies)))],
            self.index[rw.reader],
            fb.BuiltinOptions.ConcatenationOptions,
            join,
        )
        self._splice(k, [*copies, op], rw.concat)

    def split_channel(self, rw: Rewrite, partial: PartialQuant) -> None:
        """Channel-wise: the CONV_2D writing ``rw.reader`` becomes one partial convolution per
        part and a chain of ADDs.

        Args:
            rw: The rewrite.
            partial: The quantization of the partial sums, from the output's.
        """
        k, r = self._writer(rw.reader)
        y = self.sg.tensors[self.index[rw.reader]]
        quant = partial(y.quantization, np.dtype(NUMPY.get(y.type, np.void)).name)
        act = int(getattr(r.builtinOptions, "fusedActivationFunction", 0))
        new_ops, sums = [], []
        for i, (off, c) in enumerate(zip(rw.offsets(), rw.channels, strict=True)):
            ins = list(r.inputs)
            ins[0] = self.index[rw.parts[i]]
            ins[1] = self._slice(ins[1], 3, off, off + c)
            if i > 0 and len(ins) > 2:
                ins[2] = -1  # the bias is added once, by the first partial sum
            sums.append(self._activation(y, rw.part(i), list(y.shape), None, quant))
            new_ops.append(self._operator(r, ins, sums[-1]))
            if new_ops[-1].builtinOptions is not None:  # the activation moves to the last ADD
                new_ops[-1].builtinOptions.fusedActivationFunction = fb.ActivationFunctionType.NONE
        prev, n = sums[0], len(sums)
        for i in range(1, n):
            last = i == n - 1
            out = (
                self.index[rw.reader] if last else self._activation(y, rw.acc(i), list(y.shape), None, quant)
            )
            opts = fb.AddOptionsT()
            opts.fusedActivationFunction = act if last else fb.ActivationFunctionType.NONE
            opts.potScaleInt16 = False  # general int16 rescaling: the partial scales are not powers of 2
            new_ops.append(
                self._new_op(fb.BuiltinOperator.ADD, [prev, sums[i]], out, fb.BuiltinOptions.AddOptions, opts)
            )
            prev = out
        self._splice(k, new_ops, rw.concat)

    def finish(self) -> bytes:
        """The edited model's bytes: unreferenced tensors dropped, unread buffers emptied, any
        ``OfflineMemoryAllocation`` entry removed, buffers 16-byte aligned."""
        sg, mt = self.sg, self.mt
        sigs = [
            m
            for s in mt.signatureDefs or []
            if s.subgraphIndex == 0
            for m in (*(s.inputs or []), *(s.outputs or []))
        ]
        used = {int(t) for op in sg.operators for t in (*op.inputs, *op.outputs, *(op.intermediates or []))}
        used |= {int(t) for t in (*sg.inputs, *sg.outputs)} | {int(m.tensorIndex) for m in sigs}
        used.discard(-1)
        keep = sorted(used)
        new = {old: j for j, old in enumerate(keep)}
        sg.tensors = [sg.tensors[i] for i in keep]
        for op in sg.operators:
            op.inputs = [-1 if t == -1 else new[int(t)] for t in op.inputs]
            op.outputs = [-1 if t == -1 else new[int(t)] for t in op.outputs]
            if op.intermediates is not None:
                op.intermediates = [-1 if t == -1 else new[int(t)] for t in op.intermediates]
        sg.inputs = [new[int(t)] for t in sg.inputs]
        sg.outputs = [new[int(t)] for t in sg.outputs]
        for m in sigs:
            m.tensorIndex = new[int(m.tensorIndex)]
        mt.metadata = [
            md for md in mt.metadata or [] if md.name not in (OFFLINE_PLAN, OFFLINE_PLAN.encode())
        ] or None
        readers = {int(t.buffer) for s in mt.subgraphs for t in s.tensors or []}
        readers |= {int(md.buffer) for md in mt.metadata or []} | {int(b) for b in mt.metadataBuffer or []}
        for b, buf in enumerate(mt.buffers):
            if b and b not in readers:
                buf.data = None
        return pack_model(mt)

    # -- internals -------------------------------------------------------------------------------

    def _writer(self, name: str) -> tuple[int, Any]:
        t = self.index[name]
        for k, op in enumerate(self.sg.operators):
            if t in op.outputs:
                return k, op
        raise GraphError(f"{self.label}: no operator writes tensor '{name}'")

    def _splice(self, k: int, new_ops: list[Any], concat: str) -> None:
        """Put ``new_ops`` where operator ``k`` was; drop the concat once nothing reads it."""
        ops = self.sg.operators
        ops[k : k + 1] = new_ops
        x = self.index[concat]
        if x not in self.sg.outputs and not any(x in op.inputs for op in ops):
            ops[:] = [op for op in ops if x not in op.outputs]

    def _operator(self, like: Any, inputs: list[int], output: int) -> Any:
        op = copy.deepcopy(like)
        op.inputs, op.outputs = inputs, [output]
        return op

    def _new_op(self, code: int, inputs: list[int], output: int, kind: int, options: Any) -> Any:
        op = fb.OperatorT()
        op.opcodeIndex = self._opcode(code)
        op.inputs, op.outputs = inputs, [output]
        op.builtinOptionsType, op.builtinOptions = kind, options
        return op

    def _opcode(self, code: int) -> int:
        """The index of builtin ``code``'s OperatorCode, added if the model lacks it. Codes
        above 127 live in ``builtin_code`` only; ``deprecated_builtin_code`` then says 127."""
        for j, c in enumerate(self.mt.operatorCodes):
            if max(c.builtinCode, c.deprecatedBuiltinCode) == code and not c.customCode:
                return j
        c = fb.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), 1
        self.mt.operatorCodes.append(c)
        return len(self.mt.operatorCodes) - 1

    def _new_buffer(self, data: np.ndarray | None) -> int:
        buf = fb.BufferT()
        buf.data = None if data is None else np.frombuffer(data.tobytes(), np.uint8).copy()
        self.mt.buffers.append(buf)
        return len(self.mt.buffers) - 1

    def _add(self, t: Any) -> int:
        name = t.name
        while name in self.index:
            name = f"{name}#{len(self.sg.tensors)}"
        t.name = name
        self.sg.tensors.append(t)
        self.index[name] = len(self.sg.tensors) - 1
        return self.index[name]

    def _activation(self, like: Any, name: str, shape: list[int], axis: int | None, quant: Any = None) -> int:
        """A new activation like ``like`` named ``name`` (``axis``: the dimension that changed)."""
        if name in self.index:
            raise GraphError(f"{self.label}: the rewrite would create tensor '{name}', which exists")
        t = copy.deepcopy(like)
        t.name, t.shape, t.buffer, t.isVariable = name, list(shape), self.empty_buffer, False
        if t.shapeSignature is not None and axis is not None and len(t.shapeSignature) == len(shape):
            t.shapeSignature = [*t.shapeSignature]
            t.shapeSignature[axis] = shape[axis]
        if quant is not None:
            t.quantization = quant
        return self._add(t)

    def _slice(self, index: int, axis: int, lo: int, hi: int) -> int:
        """A new constant: tensor ``index``'s data ``[lo:hi]`` along ``axis``, with per-channel
        quantization on that axis sliced too. A constant of size 1 there is shared as is."""
        t = self.sg.tensors[index]
        shape = [int(s) for s in t.shape]
        axis %= len(shape)
        if shape[axis] == 1 and hi - lo != 1:
            return index
        buf = self.mt.buffers[t.buffer]
        if t.type not in NUMPY or buf.data is None or buf.offset > 1:
            raise UnsupportedError(
                f"{self.label}: cannot slice constant '{t.name}' (no inline data of a numeric type)"
            )
        if not lo <= hi <= shape[axis]:
            raise GraphError(
                f"{self.label}: constant '{t.name}' has {shape[axis]} channels, the split needs {hi}"
            )
        data = np.frombuffer(np.asarray(buf.data, np.uint8).tobytes(), NUMPY[t.type]).reshape(shape)
        part = np.ascontiguousarray(np.take(data, range(lo, hi), axis=axis))
        new = copy.deepcopy(t)
        new.name, new.shape, new.buffer = f"{t.name}[{lo}:{hi}]", list(part.shape), self._new_buffer(part)
        new.shapeSignature = None
        q = new.quantization
        if q is not None and q.scale is not None and len(q.scale) > 1 and q.quantizedDimension == axis:
            for field in ("scale", "zeroPoint", "min", "max"):
                values = getattr(q, field)
                if values is not None and len(values) > 1:
                    setattr(q, field, values[lo:hi])
        return self._add(new)


__all__ = ["NUMPY", "PartialQuant", "TFLiteEditor"]
