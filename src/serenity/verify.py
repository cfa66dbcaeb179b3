"""Check that a reordered (or rewritten) model is the original's computation, and that a real
runtime computes the same outputs from both.

1. Structure: same format; the same ops (as a multiset) and everything else byte-for-byte equal
   (ONNX: the proto without its node list; TFLite: the flatbuffer without subgraph 0's operator
   vector; JSON: the document without ``ops``). A file with other ops but the same graph inputs
   and outputs (name, shape, type) is a *rewritten graph* (``serenity optimize``): the report
   says so (``relation``) and the outputs decide.
2. Order: the reordered file's op order is topological.
3. Outputs: both run on the same seeded random inputs (onnxruntime with PRIORITY_BASED
   execution order; TFLite Micro, which runs operators in file order). A reordering must give
   every output bit for bit. A rewritten graph must give float outputs within ``rtol`` (1e-5)
   of the output's largest magnitude, integer outputs exactly, or within ``atol`` when given (a
   channel-wise split of an int8 model moves its rounding: ``optimize --allow-requantize``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from serenity.errors import OrderError, RuntimeFailure, SerenityError
from serenity.formats import Model, load
from serenity.ir import with_alignment, with_memory_model
from serenity.memory import check_memory_model, simulate


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of :func:`verify`.

    Attributes:
        ok: Structure equal, order valid and (when a runtime ran) outputs identical.
        problems: One line per failed check, empty when ``ok``.
        runtime: ``"onnxruntime"``, ``"tflite-micro"`` or ``"none"`` (JSON graphs).
        arena_original, arena_reordered: TFLite Micro's planned (non-persistent) arena for each
            file, as its allocator reports it; ``None`` for other runtimes.
        arena_planned: The extent of the arena plan REORDERED carries (``OfflineMemoryAllocation``),
            ``None`` without one.
        plan_honoured: TFLite Micro's measured arena equals that plan (``None`` without one); a
            plan that is not honoured fails the check.
        outputs: Number of outputs compared.
        relation: ``"reordering"`` (the same ops in another order) or ``"rewritten"`` (another
            graph with the same inputs and outputs).
        max_abs_diff: Largest absolute difference over all outputs (0.0 when identical).
    """

    original: str
    reordered: str
    format: str
    ok: bool
    structure_equal: bool
    order_valid: bool
    outputs_identical: bool | None
    runtime: str
    outputs: int
    max_abs_diff: float
    peak_original: int | None
    peak_reordered: int | None
    seed: int
    problems: tuple[str, ...]
    relation: str = "reordering"
    arena_original: int | None = None
    arena_reordered: int | None = None
    arena_planned: int | None = None
    plan_honoured: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["problems"] = list(self.problems)
        return d


def verify(
    original: Path,
    reordered: Path,
    *,
    seed: int = 0,
    dims: Mapping[str, int] | None = None,
    rtol: float = 1e-5,
    atol: float = 0.0,
    memory_model: str = "tflm",
) -> VerifyReport:
    """Verify ``reordered`` against ``original`` (see the module docstring for the checks).

    Args:
        memory_model: How the reported peaks are counted (:mod:`serenity.memory`); the checks
            do not depend on it.
        rtol: A rewritten graph's float outputs may differ by ``rtol`` times the output's
            largest magnitude.
        atol: A rewritten graph's outputs may also differ by this much (integer outputs of a
            requantized int8 split).

    Raises:
        SerenityError: either file cannot be loaded, or a runtime cannot run the original.
    """
    check_memory_model(memory_model)
    a, b = load(original, dims=dims, require_data=True), load(reordered, dims=dims, require_data=True)
    problems: list[str] = []
    if a.format != b.format:
        problems.append(f"formats differ: {a.format} vs {b.format}")
        return _report(a, b, problems, False, False, None, "none", 0, 0.0, seed, memory_model)
    structure = _structure_problem(a, b)
    relation = "reordering"
    if structure and _io_problem(a, b) is None:
        relation, structure = "rewritten", None
    elif structure:
        problems.append(structure)
    order_ok = True
    try:
        b.graph.check_order(b.graph.listed_order)
    except OrderError as e:
        order_ok = False
        problems.append(f"reordered op order is not topological: {e}")
    identical: bool | None = None
    runtime, n_out, diff = "none", 0, 0.0
    arenas: tuple[int | None, int | None] = (None, None)
    planned: tuple[int | None, bool | None] = (None, None)
    if not structure and order_ok and a.format in ("onnx", "tflite"):
        try:
            outs_a, outs_b, runtime, arenas, planned = _run_both(a, b, seed, dims)
        except SerenityError as e:
            if str(a.path) in str(e) or str(b.path) in str(e):
                raise
            raise RuntimeFailure(f"{a.path}: {e}") from e
        n_out = len(outs_a)
        identical = True
        for i, (x, y) in enumerate(zip(outs_a, outs_b, strict=True)):
            same = (
                x.shape == y.shape
                and x.dtype == y.dtype
                and np.array_equal(x, y, equal_nan=x.dtype.kind in "fc")
            )
            d = 0.0
            if x.shape == y.shape and x.size:
                d = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64))))
                diff = max(diff, d)
            if not same:
                identical = False
                close = relation == "rewritten" and x.shape == y.shape and x.dtype == y.dtype
                if close:
                    scale = float(np.max(np.abs(x.astype(np.float64)))) if x.size else 0.0
                    allowed = atol + (rtol * scale if x.dtype.kind in "fc" else 0.0)
                    close = d <= allowed
                if not close:
                    problems.append(f"output {i} differs (max abs diff {d:g})")
        if planned[1] is False:
            problems.append(
                f"TFLite Micro's arena ({arenas[1]} B) is not the embedded plan's ({planned[0]} B)"
            )
    rep = _report(
        a, b, problems, not structure, order_ok, identical, runtime, n_out, diff, seed, memory_model
    )
    return replace(
        rep,
        relation=relation,
        structure_equal=rep.structure_equal and relation == "reordering",
        arena_original=arenas[0],
        arena_reordered=arenas[1],
        arena_planned=planned[0],
        plan_honoured=planned[1],
    )


def _report(
    a: Model,
    b: Model,
    problems: list[str],
    structure: bool,
    order_ok: bool,
    identical: bool | None,
    runtime: str,
    n_out: int,
    diff: float,
    seed: int,
    memory_model: str = "tflm",
) -> VerifyReport:
    # Peaks under the runtime's accounting: TFLite Micro rounds every buffer up to 16 bytes.
    ga, gb = (
        with_memory_model(with_alignment(m.graph, 16) if m.format == "tflite" else m.graph, memory_model)
        for m in (a, b)
    )
    peak_b = simulate(gb, gb.listed_order).peak if order_ok and structure else None
    peak_a = None if ga.listed_problem else simulate(ga, ga.listed_order).peak
    return VerifyReport(
        original=str(a.path),
        reordered=str(b.path),
        format=a.format,
        ok=not problems,
        structure_equal=structure,
        order_valid=order_ok,
        outputs_identical=identical,
        runtime=runtime,
        outputs=n_out,
        max_abs_diff=diff,
        peak_original=peak_a,
        peak_reordered=peak_b,
        seed=seed,
        problems=tuple(problems),
    )


def _structure_problem(a: Model, b: Model) -> str | None:
    """A one-line description of how ``b`` differs from ``a`` beyond op order, or ``None``."""
    ga, gb = a.graph, b.graph
    key = lambda op: (op.type, op.inputs, op.outputs)  # noqa: E731
    if Counter(map(key, ga.ops)) != Counter(map(key, gb.ops)):
        extra = next((op for op in gb.ops if key(op) not in set(map(key, ga.ops))), None)
        what = f"op '{extra.name}' ({extra.type}) is new" if extra else "an op is missing or repeated"
        return f"the models have different ops: {what}"
    # Producer/consumer indices move with the order; what a tensor is must not.
    facts = lambda g: {n: (t.shape, t.dtype, t.nbytes, t.constant) for n, t in g.tensors.items()}  # noqa: E731
    if facts(ga) != facts(gb):
        return "the models have different tensors"
    if (ga.inputs, ga.outputs) != (gb.inputs, gb.outputs):
        return "the models have different graph inputs or outputs"
    if a.format == "onnx":
        from serenity.formats.onnx_io import structure_problem
    elif a.format == "tflite":
        from serenity.formats.tflite_bytes import TFLiteSource

        if isinstance(b.source, TFLiteSource) and b.source.offline_plan:
            from serenity.formats.tflite_plan import semantic_problem

            return semantic_problem(a, b)
        from serenity.formats.tflite_io import structure_problem  # type: ignore[no-redef]
    else:
        from serenity.formats.json_io import structure_problem  # type: ignore[no-redef]
    return structure_problem(a, b)


def _io_problem(a: Model, b: Model) -> str | None:
    """How the graph inputs and outputs of ``a`` and ``b`` differ (name, shape, type), or ``None``:
    what must hold for ``b`` to be a rewritten graph of ``a``."""
    ga, gb = a.graph, b.graph
    if (ga.inputs, ga.outputs) != (gb.inputs, gb.outputs):
        return "the models have different graph inputs or outputs"
    for n in (*ga.inputs, *ga.outputs):
        ta, tb = ga.tensors[n], gb.tensors[n]
        if (ta.shape, ta.dtype) != (tb.shape, tb.dtype):
            return f"graph input/output '{n}' is {ta.shape} {ta.dtype} vs {tb.shape} {tb.dtype}"
    return None


def _run_both(
    a: Model, b: Model, seed: int, dims: Mapping[str, int] | None
) -> tuple[
    list[np.ndarray], list[np.ndarray], str, tuple[int | None, int | None], tuple[int | None, bool | None]
]:
    """Outputs of both models on the same seeded inputs, the runtime's name, TFLM's arenas, and
    REORDERED's embedded plan extent with whether TFLM honoured it."""
    assert a.path is not None and b.path is not None
    if a.format == "onnx":
        from serenity.runtime import onnxrt

        feeds = onnxrt.random_inputs(onnxrt.session(a.path), seed, dict(dims or {}))
        return onnxrt.run(a.path, feeds), onnxrt.run(b.path, feeds), "onnxruntime", (None, None), (None, None)
    from serenity.runtime import tflm

    inputs = tflm.random_inputs(a.path, seed)
    ra, rb = tflm.execute(a.path, inputs), tflm.execute_planned(b.path, inputs)
    arenas = (ra.arena.head, rb.measured)
    return list(ra.outputs), list(rb.result.outputs), "tflite-micro", arenas, (rb.planned, rb.honoured)
