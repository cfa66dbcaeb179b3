"""Run ``.tflite`` models in TensorFlow Lite Micro and read the arena it plans.

TFLite Micro executes subgraph 0's operators in the order the file lists them, and its memory
planner (the greedy planner) lays out every activation for that order. So running a reordered
file is the end-to-end check of a schedule, and the planner's arena is its real-world cost.

Every call runs the interpreter in a child process (``_tflm_child.py``): TFLM prints its
diagnostics and its allocation report on the C++ ``stderr``, which Python cannot capture in
process, and a malformed model must not take the caller down with it. Models are validated by
:func:`serenity.formats.tflite_io.parse_tflite` before TFLM sees them.

The arena figure (:func:`arena_bytes`) is the **head** of TFLM's ``RecordingMicroAllocator``
report: the non-persistent section where the planner places activations (and kernels' scratch
buffers). It is what an op order changes and what :func:`serenity.memory.simulate` models; the
planner rounds each buffer up to 16 bytes and may leave gaps, so head >= simulated peak. The
**tail** (persistent section: TfLiteEvalTensor structs, node registrations, quantisation data,
variable tensors) does not depend on the order and is reported separately.

Arena size: TFLM needs the size up front and fails ``AllocateTensors`` if it is too small. We
start from the no-reuse bound (every activation, each rounded up to 16 bytes) plus room for the
persistent structures (64 KiB + 1 KiB per tensor and operator), which suffices unless kernels ask
for large scratch buffers; on failure TFLM says how many bytes were ``missing`` and we grow the
arena (at least doubling) and retry in a new child: after a failed allocation TFLM's state is
not to be trusted, and with some tiny arenas it even crashes (then we retry at the bound).
The head does not depend on the arena size.

Embedded plans: a file carrying an ``OfflineMemoryAllocation`` entry (see
:mod:`serenity.formats.tflite_plan`) has its listed tensors at fixed offsets; TFLM places the
rest (unplanned tensors, kernels' scratch buffers) around them, so the head is at least the
plan's extent. :func:`execute_planned` runs such a file and says whether the head *equals* the
plan's extent (the plan was honoured and nothing TFLM placed itself went beyond it), next to
the head :func:`serenity.planning.tflm_greedy.predict_tflm_arena` predicts.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

from serenity.errors import ModelFormatError, RuntimeFailure, UnsupportedError
from serenity.formats import Model
from serenity.formats.tflite_bytes import TFLiteSource
from serenity.formats.tflite_io import parse_tflite
from serenity.formats.tflite_plan import offline_offsets
from serenity.planning.buffers import align_up
from serenity.planning.tflm_greedy import TFLM_ALIGNMENT, predict_tflm_arena

#: A model given as a file path or as the file's bytes.
ModelRef = bytes | str | os.PathLike[str]

_CHILD = Path(__file__).with_name("_tflm_child.py")
#: The interpreter's arena size argument is a C ``int``.
_MAX_ARENA = 2**31 - 1
_ALLOC = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


class TFLMError(RuntimeFailure):
    """TFLite Micro refused or failed to run the model, or was called with wrong inputs."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A graph input or output as TFLite Micro sees it.

    Attributes:
        name: The tensor's name in the file.
        shape: Static shape.
        dtype: numpy dtype name (``"float32"``, ``"int8"``...).
        scales: Quantisation scales (empty for float tensors).
        zero_points: Quantisation zero points, one per scale.
        quantized_dimension: Axis of per-channel quantisation.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    scales: tuple[float, ...] = ()
    zero_points: tuple[int, ...] = ()
    quantized_dimension: int = 0


@dataclass(frozen=True, slots=True)
class ArenaUsage:
    """TFLM's ``RecordingMicroAllocator`` summary for one model.

    Attributes:
        head: Non-persistent bytes: the planned activations and scratch buffers.
        tail: Persistent bytes: runtime structures; independent of the op order.
        total: ``head + tail`` plus alignment of the arena start.
        arena_size: The arena size the interpreter was built with.
        report: TFLM's printed report, verbatim.
    """

    head: int
    tail: int
    total: int
    arena_size: int
    report: str


@dataclass(frozen=True, slots=True)
class TFLMResult:
    """One child run: the outputs (if inputs were given) and the arena usage."""

    outputs: tuple[np.ndarray, ...]
    arena: ArenaUsage


def input_specs(model: ModelRef) -> list[TensorSpec]:
    """The graph inputs of subgraph 0, in order, read from the flatbuffer.

    Raises:
        ModelFormatError: the model cannot be read (and the other :func:`load_tflite` errors).
    """
    data, label = _read(model)
    return _specs(data, parse_tflite(data, Path(label)), inputs=True)


def output_specs(model: ModelRef) -> list[TensorSpec]:
    """The graph outputs of subgraph 0, in order (see :func:`input_specs`)."""
    data, label = _read(model)
    return _specs(data, parse_tflite(data, Path(label)), inputs=False)


def random_inputs(model: ModelRef, seed: int = 0) -> list[np.ndarray]:
    """Seeded random inputs: floats ~ N(0, 1), integers uniform over the dtype's range, bools 0/1.

    Raises:
        TFLMError: an input's dtype cannot be filled.
    """
    rng = np.random.default_rng(seed)
    out = []
    for spec in input_specs(model):
        dt = np.dtype(spec.dtype) if spec.dtype in np.sctypeDict else None
        if dt is None or dt.kind not in "fiub":
            raise TFLMError(f"input '{spec.name}' has type {spec.dtype}, which cannot be filled")
        if dt.kind == "f":
            out.append(rng.standard_normal(spec.shape).astype(dt))
        elif dt.kind == "b":
            out.append(rng.integers(0, 2, spec.shape).astype(dt))
        else:
            info = np.iinfo(dt)
            out.append(rng.integers(info.min, info.max, spec.shape, dtype=dt, endpoint=True))
    return out


def run(model: ModelRef, inputs: Sequence[np.ndarray], *, timeout: float = 300.0) -> list[np.ndarray]:
    """Run the model once in TFLite Micro and return copies of its outputs, in graph order.

    Args:
        model: A ``.tflite`` path or its bytes.
        inputs: One array per graph input, with exactly the input's shape and dtype.
        timeout: Seconds before the child process is killed.

    Raises:
        ModelFormatError: the model cannot be read.
        UnsupportedError: TFLM has no kernel for one of its operators.
        TFLMError: wrong inputs, or TFLM failed or crashed.
    """
    return list(execute(model, inputs, timeout=timeout).outputs)


def arena_bytes(model: ModelRef, *, timeout: float = 300.0) -> int:
    """The non-persistent arena ("head") TFLite Micro plans for the model's listed op order.

    Raises:
        the errors of :func:`run` (no inputs are needed).
    """
    return arena_usage(model, timeout=timeout).head


def arena_usage(model: ModelRef, *, timeout: float = 300.0) -> ArenaUsage:
    """The full :class:`ArenaUsage` for the model (no inference is run)."""
    return execute(model, None, timeout=timeout).arena


def execute(
    model: ModelRef,
    inputs: Sequence[np.ndarray] | None,
    *,
    arena_size: int | None = None,
    timeout: float = 300.0,
) -> TFLMResult:
    """Build the interpreter in a child process, optionally invoke it, and read its arena.

    Args:
        model: A ``.tflite`` path or its bytes.
        inputs: Arrays for every graph input, or ``None`` to only allocate.
        arena_size: Starting arena size; ``None`` for the bound in the module docstring.
        timeout: Seconds before the child process is killed.

    Returns:
        The outputs (empty without ``inputs``) and the :class:`ArenaUsage`.

    Raises:
        The errors of :func:`run`.
    """
    data, label = _read(model)
    loaded = parse_tflite(data, Path(label))
    if inputs is not None:
        _check_inputs(_specs(data, loaded, inputs=True), inputs, label)
    bound = _arena_bound(loaded)
    arena_size = bound if arena_size is None else arena_size
    with tempfile.TemporaryDirectory(prefix="serenity-tflm-") as tmp:
        work = Path(tmp)
        path = Path(label) if not isinstance(model, bytes) else work / "model.tflite"
        if isinstance(model, bytes):
            path.write_bytes(data)
        if inputs is not None:
            np.savez(work / "inputs.npz", *[np.asarray(x) for x in inputs])
        # Grow the arena across children (one allocation attempt per process, see the child).
        while True:
            report = _spawn(path, work, arena_size, timeout, label)
            if report.get("error") == "crash" and arena_size < bound:
                # TFLM can crash when the arena runs out while it builds its persistent
                # structures (seen at ~13 KB for nas_cells_int8); that is a too-small arena.
                arena_size = bound
            elif report.get("error") == "arena" and arena_size < _MAX_ARENA:
                arena_size = min(_MAX_ARENA, max(2 * arena_size, arena_size + 2 * int(report["missing"])))
            else:
                return _collect(work, report, inputs is not None, label)


@dataclass(frozen=True, slots=True)
class PlannedRun:
    """A TFLM run of a file, set against the arena plan it carries (if any).

    Attributes:
        result: The outputs and :class:`ArenaUsage` of the run.
        planned: The embedded plan's extent, ``max(offset + size)`` over its tensors with sizes
            rounded up to 16 bytes as TFLM rounds them; ``None`` without a plan.
        predicted: The head the greedy model predicts for this file (with its plan), or ``None``
            when the model cannot predict it (control flow, unmodelled scratch requests).
        honoured: ``head == planned``: TFLM's arena is exactly the plan's; ``None`` without a plan.
    """

    result: TFLMResult
    planned: int | None
    predicted: int | None
    honoured: bool | None

    @property
    def measured(self) -> int:
        """TFLM's reported head (the planned, non-persistent arena)."""
        return self.result.arena.head


def planned_extent(model: ModelRef) -> int | None:
    """The extent of the file's embedded ``OfflineMemoryAllocation`` plan, or ``None`` without one.

    Raises:
        ModelFormatError: the model or its plan cannot be read.
    """
    data, label = _read(model)
    loaded = parse_tflite(data, Path(label))
    if not isinstance(loaded.source, TFLiteSource) or not loaded.source.offline_plan:
        return None
    sizes = {n: align_up(t.nbytes, TFLM_ALIGNMENT) for n, t in loaded.graph.tensors.items()}
    return max((o + sizes[n] for n, o in offline_offsets(loaded).items()), default=0)


def execute_planned(
    model: ModelRef, inputs: Sequence[np.ndarray] | None = None, *, timeout: float = 300.0
) -> PlannedRun:
    """:func:`execute` the model and compare TFLM's head with its embedded plan.

    Args:
        model: A ``.tflite`` path or its bytes.
        inputs: Arrays for every graph input, or ``None`` to only allocate.
        timeout: Seconds before a child process is killed.

    Returns:
        The run, the plan's extent, the predicted head and whether the plan was honoured.

    Raises:
        The errors of :func:`run`.
    """
    data, label = _read(model)
    loaded = parse_tflite(data, Path(label))
    planned = planned_extent(data)
    try:
        offline = offline_offsets(loaded) if planned is not None else None
        predicted: int | None = predict_tflm_arena(loaded.graph, loaded.graph.listed_order, offline=offline)
    except UnsupportedError:
        predicted = None
    result = execute(model, inputs, timeout=timeout)
    honoured = None if planned is None else result.arena.head == planned
    return PlannedRun(result, planned, predicted, honoured)


def _arena_bound(model: Model) -> int:
    """The starting arena: no reuse at all (every activation rounded up to TFLM's 16-byte
    alignment) plus room for the persistent structures (64 KiB + 1 KiB per tensor and op)."""
    g = model.graph
    acts = sum(-(-t.nbytes // 16) * 16 for t in g.activations)
    return min(_MAX_ARENA, acts + 65536 + 1024 * (len(g.tensors) + len(g.ops)))


# -- internals ----------------------------------------------------------------------------------


def _read(model: ModelRef) -> tuple[bytes, str]:
    if isinstance(model, bytes):
        return model, "<model bytes>"
    path = Path(model)
    try:
        return path.read_bytes(), str(path)
    except OSError as e:
        raise ModelFormatError(f"{path}: cannot read ({e.strerror or e})") from e


def _specs(data: bytes, model: Model, *, inputs: bool) -> list[TensorSpec]:
    """Specs from ``data``, which :func:`parse_tflite` has validated into ``model``."""
    graph = model.graph
    sg = fb.Model.GetRootAs(data, 0).Subgraphs(0)
    idx = [int(i) for i in (sg.InputsAsNumpy() if inputs else sg.OutputsAsNumpy())]
    names = graph.inputs if inputs else graph.outputs
    specs = []
    for i, name in zip(idx, names, strict=True):
        t = graph.tensors[name]
        q = sg.Tensors(i).Quantization()
        scales: tuple[float, ...] = ()
        zeros: tuple[int, ...] = ()
        axis = 0
        if q is not None and q.ScaleLength():
            scales = tuple(float(s) for s in q.ScaleAsNumpy())
            zeros = tuple(int(z) for z in q.ZeroPointAsNumpy()) if q.ZeroPointLength() else ()
            axis = int(q.QuantizedDimension())
        specs.append(TensorSpec(name, t.shape, t.dtype, scales, zeros, axis))
    return specs


def _check_inputs(specs: list[TensorSpec], inputs: Sequence[np.ndarray], label: str) -> None:
    if len(inputs) != len(specs):
        raise TFLMError(f"{label}: the model has {len(specs)} inputs, {len(inputs)} were given")
    for spec, x in zip(specs, inputs, strict=True):
        x = np.asarray(x)
        if tuple(x.shape) != spec.shape or x.dtype.name != spec.dtype:
            raise TFLMError(
                f"{label}: input '{spec.name}' wants {spec.dtype}{list(spec.shape)}, "
                f"got {x.dtype.name}{list(x.shape)}"
            )


def _spawn(path: Path, work: Path, arena_size: int, timeout: float, label: str) -> dict[str, Any]:
    """Run the child once and return its JSON report."""
    cmd = [sys.executable, str(_CHILD), str(path), str(work), str(arena_size)]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise TFLMError(f"{label}: TFLite Micro did not finish within {timeout:g} s") from e
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        return {"error": "crash", "message": f"crashed ({sig})"}
    if proc.returncode != 0 or not (work / "report.json").exists():
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise TFLMError(f"{label}: the TFLite Micro child failed: {lines[-1] if lines else proc.returncode}")
    report: dict[str, Any] = json.loads((work / "report.json").read_text())
    (work / "report.json").unlink()
    return report


def _collect(work: Path, report: dict[str, Any], ran: bool, label: str) -> TFLMResult:
    if "error" in report:
        kind = UnsupportedError if report["error"] == "unsupported" else TFLMError
        raise kind(f"{label}: TFLite Micro: {report['message']}")
    text = report.get("allocations", "")
    found = {k: int(v) for k, v in _ALLOC.findall(text)}
    if set(found) != {"total", "head", "tail"}:
        raise TFLMError(f"{label}: TFLite Micro printed no allocation summary")
    outputs: tuple[np.ndarray, ...] = ()
    if ran:
        with np.load(work / "outputs.npz") as npz:
            outputs = tuple(np.array(npz[f"arr_{i}"]) for i in range(len(npz.files)))
    usage = ArenaUsage(found["head"], found["tail"], found["total"], int(report["arena_size"]), text)
    return TFLMResult(outputs, usage)


__all__ = [
    "ArenaUsage",
    "ModelRef",
    "PlannedRun",
    "TFLMError",
    "TFLMResult",
    "TensorSpec",
    "arena_bytes",
    "arena_usage",
    "execute",
    "execute_planned",
    "input_specs",
    "output_specs",
    "planned_extent",
    "random_inputs",
    "run",
]
