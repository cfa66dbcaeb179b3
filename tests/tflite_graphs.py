"""Hand-built ``.tflite`` models for the tests, through the schema's object API (no TensorFlow).

:class:`TFLiteBuilder` declares tensors and operators of one subgraph and packs them with
16-byte aligned buffers (:func:`serenity.formats.tflite_plan.pack_model`), so TFLite Micro runs
the result. Shapes of convolutions and pools are computed as TFLite does (``SAME``/``VALID``,
strides, dilation); layouts are NHWC, filters ``(O, kh, kw, I)``, depthwise ``(1, kh, kw, C*m)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

from serenity.formats.tflite_plan import pack_model

_TYPES = {"float32": fb.TensorType.FLOAT32, "int32": fb.TensorType.INT32, "int8": fb.TensorType.INT8}
_ACT = {"NONE": 0, "RELU": 1, "RELU6": 3}
_OPTIONS: dict[str, tuple[int, Any]] = {
    "CONV_2D": (fb.BuiltinOptions.Conv2DOptions, fb.Conv2DOptionsT),
    "DEPTHWISE_CONV_2D": (fb.BuiltinOptions.DepthwiseConv2DOptions, fb.DepthwiseConv2DOptionsT),
    "MAX_POOL_2D": (fb.BuiltinOptions.Pool2DOptions, fb.Pool2DOptionsT),
    "AVERAGE_POOL_2D": (fb.BuiltinOptions.Pool2DOptions, fb.Pool2DOptionsT),
    "CONCATENATION": (fb.BuiltinOptions.ConcatenationOptions, fb.ConcatenationOptionsT),
    "ADD": (fb.BuiltinOptions.AddOptions, fb.AddOptionsT),
    "MUL": (fb.BuiltinOptions.MulOptions, fb.MulOptionsT),
    "MEAN": (fb.BuiltinOptions.ReducerOptions, fb.ReducerOptionsT),
    "SUM": (fb.BuiltinOptions.ReducerOptions, fb.ReducerOptionsT),
    "FULLY_CONNECTED": (fb.BuiltinOptions.FullyConnectedOptions, fb.FullyConnectedOptionsT),
}


def _out_size(n: int, k: int, stride: int, dilation: int, padding: str) -> int:
    eff = (k - 1) * dilation + 1
    return math.ceil(n / stride) if padding == "SAME" else (n - eff) // stride + 1


class TFLiteBuilder:
    """Subgraph 0 of a model, built tensor by tensor; ``build()`` returns the file's bytes.

    Example:
        >>> b = TFLiteBuilder()
        >>> x = b.input("x", (1, 4, 4, 3))
        >>> y = b.unary("RELU", x, "y")
        >>> b.output(y)
        >>> b.build()[4:8]
        b'TFL3'
    """

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.model = fb.ModelT()
        self.model.version = 3
        self.model.operatorCodes = []
        self.model.buffers = [fb.BufferT()]  # buffer 0: the empty sentinel
        self.sg = fb.SubGraphT()
        self.sg.tensors, self.sg.operators, self.sg.inputs, self.sg.outputs = [], [], [], []
        self.sg.name = "main"
        self.model.subgraphs = [self.sg]
        self.shapes: dict[str, tuple[int, ...]] = {}

    # -- tensors ---------------------------------------------------------------------------

    def tensor(self, name: str, shape: Sequence[int], dtype: str = "float32", data: Any = None) -> str:
        """Declare a tensor (a constant when ``data`` is given); returns its name."""
        t = fb.TensorT()
        t.name, t.shape, t.type = name, list(shape), _TYPES[dtype]
        if data is not None:
            buf = fb.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data, dtype=dtype).tobytes(), np.uint8).copy()
            self.model.buffers.append(buf)
            t.buffer = len(self.model.buffers) - 1
        self.sg.tensors.append(t)
        self.shapes[name] = tuple(shape)
        return name

    def input(self, name: str, shape: Sequence[int]) -> str:
        """A float graph input."""
        self.tensor(name, shape)
        self.sg.inputs.append(self._index(name))
        return name

    def output(self, name: str) -> None:
        """Mark ``name`` a graph output."""
        self.sg.outputs.append(self._index(name))

    def const(self, name: str, array: Any, dtype: str = "float32") -> str:
        """A constant tensor holding ``array``."""
        a = np.asarray(array, dtype=dtype)
        return self.tensor(name, a.shape, dtype, a)

    def random(self, name: str, shape: Sequence[int]) -> str:
        """A float constant with seeded N(0, 1/fan-in) entries."""
        fan = max(1, math.prod(shape[1:]))
        return self.const(name, self.rng.standard_normal(shape) / math.sqrt(fan))

    def _index(self, name: str) -> int:
        return next(i for i, t in enumerate(self.sg.tensors) if t.name == name)

    # -- operators ---------------------------------------------------------------------------

    def op(self, opcode: str, inputs: Sequence[str | None], outputs: Sequence[str], **options: Any) -> None:
        """Append an operator; ``None`` inputs are absent (-1); ``options`` set its options table."""
        code = getattr(fb.BuiltinOperator, opcode)
        codes = self.model.operatorCodes
        k = next((j for j, c in enumerate(codes) if c.builtinCode == code), None)
        if k is None:
            c = fb.OperatorCodeT()
            c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), 1
            codes.append(c)
            k = len(codes) - 1
        o = fb.OperatorT()
        o.opcodeIndex = k
        o.inputs = [-1 if n is None else self._index(n) for n in inputs]
        o.outputs = [self._index(n) for n in outputs]
        if opcode in _OPTIONS:
            kind, cls = _OPTIONS[opcode]
            opts = cls()
            for key, value in options.items():
                setattr(opts, key, value)
            o.builtinOptionsType, o.builtinOptions = kind, opts
        self.sg.operators.append(o)

    def unary(self, opcode: str, x: str, name: str) -> str:
        """An element-wise op of one input."""
        self.op(opcode, [x], [self.tensor(name, self.shapes[x])])
        return name

    def concat(self, parts: Sequence[str], name: str, axis: int = -1) -> str:
        """CONCATENATION along ``axis``."""
        shape = list(self.shapes[parts[0]])
        shape[axis] = sum(self.shapes[p][axis] for p in parts)
        self.op("CONCATENATION", parts, [self.tensor(name, shape)], axis=axis)
        return name

    def conv(
        self,
        x: str,
        out_ch: int,
        name: str,
        *,
        k: int = 3,
        stride: int = 1,
        padding: str = "SAME",
        dilation: int = 1,
        act: str = "NONE",
        bias: bool = True,
    ) -> str:
        """CONV_2D with random weights (and bias)."""
        n, h, w, c = self.shapes[x]
        f = self.random(f"{name}/filter", (out_ch, k, k, c))
        b = self.random(f"{name}/bias", (out_ch,)) if bias else None
        oh, ow = (_out_size(s, k, stride, dilation, padding) for s in (h, w))
        self.op(
            "CONV_2D",
            [x, f, b],
            [self.tensor(name, (n, oh, ow, out_ch))],
            padding=_pad(padding),
            strideH=stride,
            strideW=stride,
            dilationHFactor=dilation,
            dilationWFactor=dilation,
            fusedActivationFunction=_ACT[act],
        )
        return name

    def depthwise(
        self,
        x: str,
        name: str,
        *,
        multiplier: int = 1,
        k: int = 3,
        stride: int = 1,
        padding: str = "SAME",
        act: str = "NONE",
    ) -> str:
        """DEPTHWISE_CONV_2D with random weights and bias."""
        n, h, w, c = self.shapes[x]
        f = self.random(f"{name}/filter", (1, k, k, c * multiplier))
        b = self.random(f"{name}/bias", (c * multiplier,))
        oh, ow = (_out_size(s, k, stride, 1, padding) for s in (h, w))
        self.op(
            "DEPTHWISE_CONV_2D",
            [x, f, b],
            [self.tensor(name, (n, oh, ow, c * multiplier))],
            padding=_pad(padding),
            strideH=stride,
            strideW=stride,
            depthMultiplier=multiplier,
            fusedActivationFunction=_ACT[act],
        )
        return name

    def pool(
        self, opcode: str, x: str, name: str, *, k: int = 2, stride: int = 2, padding: str = "VALID"
    ) -> str:
        """MAX_POOL_2D or AVERAGE_POOL_2D."""
        n, h, w, c = self.shapes[x]
        oh, ow = (_out_size(s, k, stride, 1, padding) for s in (h, w))
        self.op(
            opcode,
            [x],
            [self.tensor(name, (n, oh, ow, c))],
            padding=_pad(padding),
            strideH=stride,
            strideW=stride,
            filterHeight=k,
            filterWidth=k,
        )
        return name

    def reduce(self, opcode: str, x: str, name: str, axes: Sequence[int], *, keep_dims: bool = False) -> str:
        """MEAN/SUM over ``axes`` (a constant int32 vector)."""
        shape = self.shapes[x]
        a = self.const(f"{name}/axes", list(axes), "int32")
        out = (
            [1 if i in axes else s for i, s in enumerate(shape)]
            if keep_dims
            else [s for i, s in enumerate(shape) if i not in axes]
        )
        self.op(opcode, [x, a], [self.tensor(name, out)], keepDims=keep_dims)
        return name

    def build(self) -> bytes:
        """The model's bytes (buffers 16-byte aligned)."""
        return pack_model(self.model)


def _pad(padding: str) -> int:
    return fb.Padding.SAME if padding == "SAME" else fb.Padding.VALID


__all__ = ["TFLiteBuilder"]
