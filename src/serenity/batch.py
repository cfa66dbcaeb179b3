"""Schedule many model files: one row per model, on one process, a local pool or a Ray cluster.

The work per model (:func:`schedule_file`) is what ``serenity schedule`` does short of writing:
load the file, account its activations as its runtime does (alignment, memory model), take the
peak of the listed order, schedule with :data:`~serenity.schedulers.DEFAULT_METHOD` and report
before -> after with the lower bound and whether the order is proven optimal. A model that fails
(unreadable file, unsupported op...) gets its row with a one-line ``error`` and the batch goes on.

Three executors run the same function on the same inputs and return rows in input order:
:func:`run_local` (in-process with one worker, else a ``spawn`` process pool) and :func:`run_ray`
(``ray.remote`` tasks). Rows agree across executors, ``seconds`` aside (:func:`same_rows`):
the dynamic program is deterministic, and where the default method's CP-SAT child wins the race
instead it proves the same peak and bound, which is all a row records. A ``time_limit`` that cuts
a search short makes the answer depend on the machine's speed, as it would in any one run.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from serenity.errors import SerenityError


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """How every model of a batch is scheduled.

    Attributes:
        time_limit: Seconds per model, loading included (``None``: until proven or the state cap).
        memory_model: ``"tflm"`` or ``"inplace"`` (:mod:`serenity.memory`).
    """

    time_limit: float | None = None
    memory_model: str = "tflm"


@dataclass(frozen=True, slots=True)
class BatchRow:
    """The result for one model; the figures are ``None`` when ``error`` says why there are none.

    Attributes:
        model: The file, as given.
        ops: Number of ops of the scheduled graph.
        peak_before: Peak of the listed order in bytes (``None`` if that order is not topological).
        peak_after: Peak of the scheduled order.
        lower_bound: A proven lower bound on every order's peak.
        proven_optimal: Whether ``peak_after`` is proven the lowest.
        method: The scheduling method that ran.
        seconds: Wall time of the model's load and schedule (differs between runs).
        error: One line saying why the model failed, or ``None``.
    """

    model: str
    ops: int | None = None
    peak_before: int | None = None
    peak_after: int | None = None
    lower_bound: int | None = None
    proven_optimal: bool | None = None
    method: str | None = None
    seconds: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The row as a JSON-ready dict (field order kept)."""
        return asdict(self)


#: The columns of a row, in order (the CSV header).
COLUMNS = tuple(f.name for f in fields(BatchRow))

#: Called after each model finishes: ``progress(models_done, row)``.
Progress = Callable[[int, BatchRow], None]


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if isinstance(e, SerenityError) else f"{type(e).__name__}: {text}"


def schedule_file(path: str, options: BatchOptions) -> BatchRow:
    """Load, account and schedule one model file; never raises for a bad model.

    Args:
        path: A ``.onnx``, ``.tflite`` or ``.json`` file.
        options: The batch's options.

    Returns:
        The model's row; on any failure (a missing or corrupt file, an unsupported op, a bug)
        a row whose ``error`` is one line and whose figures are ``None``.

    Example:
        >>> schedule_file("missing.onnx", BatchOptions()).error  # doctest: +ELLIPSIS
        'missing.onnx: ...'
    """
    t0 = time.perf_counter()
    try:
        from serenity.commands.common import Deadline, alignment_for
        from serenity.formats import load
        from serenity.ir import with_alignment, with_memory_model
        from serenity.memory import simulate
        from serenity.schedulers import DEFAULT_METHOD, schedule

        deadline = Deadline(options.time_limit, start=t0)
        model = load(path)
        graph = with_memory_model(
            with_alignment(model.graph, alignment_for(model, None)), options.memory_model
        )
        before = None if graph.listed_problem else simulate(graph, graph.listed_order).peak
        result = schedule(graph, DEFAULT_METHOD, time_limit=deadline.left())
        after = simulate(graph, result.order).peak
        return BatchRow(
            model=path,
            ops=len(graph.ops),
            peak_before=before,
            peak_after=after,
            lower_bound=result.lower_bound,
            proven_optimal=result.proven_optimal and after == result.peak,
            method=result.method,
            seconds=round(time.perf_counter() - t0, 6),
        )
    except Exception as e:  # a bad model fails its row, not the batch
        return BatchRow(model=path, seconds=round(time.perf_counter() - t0, 6), error=_one_line(e))


def run_local(
    paths: Sequence[str], options: BatchOptions, *, workers: int = 1, progress: Progress | None = None
) -> list[BatchRow]:
    """Schedule every file on this machine: in this process with one worker, else in a pool of
    ``workers`` fresh (``spawn``) processes, each model a task.

    Returns:
        One row per path, in the order of ``paths``.
    """
    rows: list[BatchRow | None] = [None] * len(paths)
    if workers <= 1 or len(paths) <= 1:
        for i, p in enumerate(paths):
            rows[i] = schedule_file(p, options)
            if progress is not None:
                progress(i + 1, rows[i])  # type: ignore[arg-type]
        return [r for r in rows if r is not None]
    # spawn, not fork: a forked copy of a process that has run numba's compiled search can hang
    # on the locks it holds (see serenity.schedulers.auto).
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(paths)), mp_context=ctx) as pool:
        futures = {pool.submit(schedule_file, p, options): i for i, p in enumerate(paths)}
        for done, fut in enumerate(as_completed(futures), 1):
            i = futures[fut]
            try:
                rows[i] = fut.result()
            except Exception as e:  # the worker died (out of memory, a crash in native code)
                rows[i] = BatchRow(model=paths[i], error=f"worker failed: {_one_line(e)}")
            if progress is not None:
                progress(done, rows[i])  # type: ignore[arg-type]
    return [r for r in rows if r is not None]


def ray_module() -> Any:
    """Import Ray (the ``[ray]`` extra).

    Raises:
        SerenityError: Ray is not installed.
    """
    try:
        import ray
    except ImportError as e:
        raise SerenityError("--ray needs Ray: pip install 'serenity-sched[ray]'") from e
    return ray


def run_ray(
    paths: Sequence[str],
    options: BatchOptions,
    *,
    address: str | None = None,
    progress: Progress | None = None,
) -> list[BatchRow]:
    """Schedule every file as a Ray task (one CPU each).

    Connects with ``ray.init(address=address)``, or starts a local instance when ``address`` is
    ``None``; a Ray already initialised in this process is used as it is and left running. The
    cluster's workers must have ``serenity`` installed and the model paths must be readable
    there (the paths are sent, not the files).

    Returns:
        One row per path, in the order of ``paths``.

    Raises:
        SerenityError: Ray is not installed, or the cluster cannot be reached.
    """
    ray = ray_module()
    started = False
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
            else:
                ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        except Exception as e:
            where = f"at {address}" if address else "locally"
            raise SerenityError(f"--ray: cannot start or reach Ray {where}: {_one_line(e)}") from e
        started = True
    try:
        task = ray.remote(num_cpus=1)(schedule_file)
        refs = [task.remote(p, options) for p in paths]
        index = {ref: i for i, ref in enumerate(refs)}
        rows: list[BatchRow | None] = [None] * len(paths)
        pending = list(refs)
        done = 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                i = index[ref]
                try:
                    rows[i] = ray.get(ref)
                except Exception as e:  # the task or its worker failed
                    rows[i] = BatchRow(model=paths[i], error=f"ray task failed: {_one_line(e)}")
                done += 1
                if progress is not None:
                    progress(done, rows[i])  # type: ignore[arg-type]
        return [r for r in rows if r is not None]
    finally:
        if started:
            ray.shutdown()


def without_seconds(rows: Sequence[BatchRow]) -> list[BatchRow]:
    """The rows with ``seconds`` zeroed: what must agree between executors."""
    return [replace(r, seconds=0.0) for r in rows]


def same_rows(a: Sequence[BatchRow], b: Sequence[BatchRow]) -> bool:
    """Whether two batches agree on every row but ``seconds``."""
    return without_seconds(a) == without_seconds(b)
