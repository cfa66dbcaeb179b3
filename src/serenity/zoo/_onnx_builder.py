"""A small NCHW network builder that emits ONNX nodes with random, seeded initializers.

The zoo's families describe networks in terms of convolutions, pooling, elementwise ops and
concatenation; this module turns those calls into ONNX ``NodeProto``s in call order, which is the
order a framework exporter (PyTorch's ``forward`` order) produces. Batch norm is folded into the
preceding convolution's bias, as the TFLite converter and ``onnxoptimizer``'s ``fuse_bn_into_conv``
do for deployment; a ``BatchNormalization`` node is emitted only where no convolution precedes it
(DARTS' factorized reduce, after a concat).

Shapes are tracked here (batch 1, NCHW) so that builders can size their layers; the finished
model also carries ONNX shape inference's ``value_info`` and passes ``onnx.checker`` in full mode.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: The opset the zoo emits; onnxruntime 1.31 runs it, and it has every op the zoo needs.
OPSET = 17
#: ONNX IR version matching :data:`OPSET` (onnxruntime 1.31 refuses IR version 14).
IR_VERSION = 8

Shape = tuple[int, int, int, int]


class NetBuilder:
    """Accumulates ONNX nodes and initializers for one network.

    Node names are ``scope/kind#k``; the scope (set with :meth:`scope`) names the cell or stage a
    node belongs to (``cell3``, ``stage2``...), which is how tests count cells.

    Args:
        name: The graph name.
        seed: Seeds the numpy Generator used for every weight.
    """

    def __init__(self, name: str, seed: int = 0) -> None:
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._scope: list[str] = []
        self._count: dict[str, int] = {}

    # -- naming -----------------------------------------------------------------------------

    @contextmanager
    def scope(self, name: str) -> Iterator[None]:
        """Prefix the names of the nodes emitted inside the block with ``name/``."""
        self._scope.append(name)
        try:
            yield
        finally:
            self._scope.pop()

    def _fresh(self, kind: str) -> str:
        prefix = "/".join([*self._scope, kind])
        k = self._count.get(prefix, 0)
        self._count[prefix] = k + 1
        return f"{prefix}#{k}" if k else prefix

    def _node(self, op: str, inputs: Sequence[str], shape: tuple[int, ...], **attrs: Any) -> str:
        name = self._fresh(op.lower())
        out = name + ":0"
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=name, **attrs))
        self.shapes[out] = shape
        return out

    def _const(self, kind: str, array: np.ndarray) -> str:
        name = self._fresh(kind) + ":w"
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def _int_const(self, kind: str, values: Sequence[int]) -> str:
        name = self._fresh(kind) + ":i"
        self.inits.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
        return name

    # -- graph boundary -----------------------------------------------------------------------

    def input(self, name: str, shape: tuple[int, ...]) -> str:
        """Declare a float32 graph input of static ``shape``."""
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        self.shapes[name] = shape
        return name

    def shape(self, x: str) -> tuple[int, ...]:
        """The static shape of tensor ``x``."""
        return self.shapes[x]

    def channels(self, x: str) -> int:
        """The channel count (dimension 1) of ``x``."""
        return self.shapes[x][1]

    def finish(self, outputs: Sequence[str], *, doc: str = "") -> onnx.ModelProto:
        """Assemble, shape-infer and fully check the model.

        Raises:
            onnx.checker.ValidationError: a builder bug (never a user error).
        """
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, list(self.shapes[o])) for o in outputs]
        graph = helper.make_graph(self.nodes, self.name, self.inputs, outs, initializer=self.inits)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="serenity.zoo",
            doc_string=doc,
        )
        model.ir_version = IR_VERSION
        model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        onnx.checker.check_model(model, full_check=True)
        return model

    # -- layers -------------------------------------------------------------------------------

    def conv(
        self,
        x: str,
        cout: int,
        k: int | tuple[int, int] = 1,
        *,
        stride: int | tuple[int, int] = 1,
        groups: int = 1,
        dilation: int = 1,
    ) -> str:
        """Convolution with "same" padding and a bias (the folded batch norm)."""
        n, cin, h, w = self.shapes[x]
        kh, kw = (k, k) if isinstance(k, int) else k
        sh, sw = (stride, stride) if isinstance(stride, int) else stride
        ph, pw = dilation * (kh - 1) // 2, dilation * (kw - 1) // 2
        fan_in = cin // groups * kh * kw
        weight = self.rng.standard_normal((cout, cin // groups, kh, kw)) * np.sqrt(2.0 / fan_in)
        bias = self.rng.standard_normal(cout) * 0.01
        wn, bn = self._const("weight", weight), self._const("bias", bias)
        oh = (h + 2 * ph - dilation * (kh - 1) - 1) // sh + 1
        ow = (w + 2 * pw - dilation * (kw - 1) - 1) // sw + 1
        return self._node(
            "Conv",
            [x, wn, bn],
            (n, cout, oh, ow),
            kernel_shape=[kh, kw],
            strides=[sh, sw],
            pads=[ph, pw, ph, pw],
            dilations=[dilation, dilation],
            group=groups,
        )

    def dwconv(self, x: str, k: int = 3, *, stride: int = 1, dilation: int = 1) -> str:
        """Depthwise convolution (one filter per channel)."""
        c = self.channels(x)
        return self.conv(x, c, k, stride=stride, groups=c, dilation=dilation)

    def relu(self, x: str) -> str:
        """ReLU."""
        return self._node("Relu", [x], self.shapes[x])

    def clip6(self, x: str) -> str:
        """ReLU6, as PyTorch exports it (``Clip`` with constant bounds 0 and 6)."""
        lo, hi = self._const("clip_min", np.asarray(0.0)), self._const("clip_max", np.asarray(6.0))
        return self._node("Clip", [x, lo, hi], self.shapes[x])

    def sigmoid(self, x: str) -> str:
        """Sigmoid."""
        return self._node("Sigmoid", [x], self.shapes[x])

    def add(self, a: str, b: str) -> str:
        """Elementwise add of two equal-shaped (or broadcastable to ``a``) tensors."""
        return self._node("Add", [a, b], self.shapes[a])

    def mul(self, a: str, b: str) -> str:
        """Elementwise multiply; ``b`` may broadcast (N, C, 1, 1) to ``a``."""
        return self._node("Mul", [a, b], self.shapes[a])

    def scale(self, x: str, factor: float) -> str:
        """Multiply by a scalar constant."""
        return self._node("Mul", [x, self._const("scale", np.asarray(factor))], self.shapes[x])

    def sum(self, xs: Sequence[str]) -> str:
        """Variadic ``Sum`` (one input passes through unchanged, emitting nothing)."""
        if len(xs) == 1:
            return xs[0]
        return self._node("Sum", list(xs), self.shapes[xs[0]])

    def concat(self, xs: Sequence[str]) -> str:
        """Concatenate along channels (one input passes through unchanged)."""
        if len(xs) == 1:
            return xs[0]
        n, _, h, w = self.shapes[xs[0]]
        c = sum(self.shapes[x][1] for x in xs)
        return self._node("Concat", list(xs), (n, c, h, w), axis=1)

    def _pool(self, op: str, x: str, k: int, stride: int, pad: int, **attrs: Any) -> str:
        n, c, h, w = self.shapes[x]
        oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        return self._node(
            op, [x], (n, c, oh, ow), kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, **attrs
        )

    def maxpool(self, x: str, k: int = 3, *, stride: int = 1, pad: int | None = None) -> str:
        """Max pooling, "same" padding by default."""
        return self._pool("MaxPool", x, k, stride, (k - 1) // 2 if pad is None else pad)

    def avgpool(self, x: str, k: int = 3, *, stride: int = 1, pad: int | None = None) -> str:
        """Average pooling that excludes padding (PyTorch ``count_include_pad=False``)."""
        return self._pool("AveragePool", x, k, stride, (k - 1) // 2 if pad is None else pad)

    def gap(self, x: str) -> str:
        """Global average pooling to (N, C, 1, 1)."""
        n, c, _, _ = self.shapes[x]
        return self._node("GlobalAveragePool", [x], (n, c, 1, 1))

    def bn(self, x: str) -> str:
        """Inference-mode batch norm (only where it cannot be folded into a conv)."""
        c = self.channels(x)
        params = [
            self._const("bn_scale", 1.0 + 0.1 * self.rng.standard_normal(c)),
            self._const("bn_bias", 0.1 * self.rng.standard_normal(c)),
            self._const("bn_mean", 0.1 * self.rng.standard_normal(c)),
            self._const("bn_var", 1.0 + 0.1 * np.abs(self.rng.standard_normal(c))),
        ]
        return self._node("BatchNormalization", [x, *params], self.shapes[x], epsilon=1e-5)

    def slice_hw(self, x: str, start: int = 1) -> str:
        """``x[:, :, start:, start:]`` (DARTS' factorized reduce shifts its second path by one)."""
        n, c, h, w = self.shapes[x]
        starts = self._int_const("starts", [start, start])
        ends = self._int_const("ends", [h, w])
        axes = self._int_const("axes", [2, 3])
        return self._node("Slice", [x, starts, ends, axes], (n, c, h - start, w - start))

    def resize(self, x: str, hw: tuple[int, int]) -> str:
        """Nearest-neighbour resize to spatial size ``hw`` (an integer up-sampling factor)."""
        n, c, h, w = self.shapes[x]
        scales = self._const("scales", np.asarray([1.0, 1.0, hw[0] / h, hw[1] / w]))
        return self._node("Resize", [x, "", scales], (n, c, *hw), mode="nearest")

    def classifier(self, x: str, classes: int) -> str:
        """Global average pool, flatten and a fully connected layer: the usual head."""
        pooled = self.gap(x)
        n, c = self.shapes[pooled][:2]
        flat = self._node("Flatten", [pooled], (n, c), axis=1)
        weight = self.rng.standard_normal((classes, c)) * np.sqrt(1.0 / c)
        w, b = self._const("fc", weight), self._const("fc_bias", np.zeros(classes))
        return self._node("Gemm", [flat, w, b], (n, classes), transB=1)
