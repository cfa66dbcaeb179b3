"""Run ONNX models in onnxruntime in their listed node order.

onnxruntime follows the order of ``graph.node`` only with ``ExecutionOrder.PRIORITY_BASED``; its
default order is its own topological sort. Graph optimisations are disabled and one thread is
used, so two orders of the same model compute bit-identical results and any difference is real.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from serenity.errors import RuntimeFailure

# onnxruntime logs warnings of its own (coloured, several lines) to stderr; errors reach the user
# through RuntimeFailure instead, one line naming the file.
ort.set_default_logger_severity(4)


def session(model: Path | bytes) -> ort.InferenceSession:
    """An inference session that executes nodes in file order, single-threaded, unoptimised.

    Raises:
        RuntimeFailure: onnxruntime cannot load the model (its message, first line).
    """
    so = ort.SessionOptions()
    so.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 4
    try:
        src = str(model) if isinstance(model, Path) else model
        return ort.InferenceSession(src, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own pybind types
        name = model if isinstance(model, Path) else "<model bytes>"
        raise RuntimeFailure(f"{name}: onnxruntime cannot load the model: {_first_line(e)}") from e


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


_NP = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int16)": np.int16,
    "tensor(uint16)": np.uint16,
    "tensor(int32)": np.int32,
    "tensor(uint32)": np.uint32,
    "tensor(int64)": np.int64,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


def random_inputs(
    sess: ort.InferenceSession, seed: int = 0, dims: dict[str, int] | None = None
) -> dict[str, np.ndarray]:
    """Seeded random inputs for every graph input: floats ~ N(0, 1), integers in [0, 4).

    Raises:
        RuntimeFailure: an input has a type or a symbolic dimension that cannot be filled.
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for inp in sess.get_inputs():
        dtype = _NP.get(inp.type)
        if dtype is None:
            raise RuntimeFailure(f"input '{inp.name}' has type {inp.type}, which verify cannot fill")
        shape = []
        for d in inp.shape:
            if isinstance(d, int) and d >= 0:
                shape.append(d)
            elif isinstance(d, str) and dims and d in dims:
                shape.append(dims[d])
            else:
                raise RuntimeFailure(f"input '{inp.name}' has symbolic dimension {d!r}; pass --dim {d}=VALUE")
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype is np.bool_:
            feeds[inp.name] = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            feeds[inp.name] = rng.integers(0, 4, shape).astype(dtype)
    return feeds


def run(model: Path | bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run the model once and return its outputs in graph order.

    Raises:
        RuntimeFailure: loading or running failed (naming the file).
    """
    sess = session(model)
    ro = ort.RunOptions()
    ro.log_severity_level = 4
    try:
        return [np.asarray(o) for o in sess.run(None, feeds, ro)]
    except Exception as e:
        name = model if isinstance(model, Path) else "<model bytes>"
        raise RuntimeFailure(f"{name}: onnxruntime failed to run the model: {_first_line(e)}") from e
