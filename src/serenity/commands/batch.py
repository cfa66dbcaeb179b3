"""``serenity batch MODELS...``: schedule many models, one result row each (:mod:`serenity.batch`).

Exit 0 when the batch ran, even if some models failed (each failure is one line in its row's
``error``, and the count is printed on stderr); 2 for a usage error, before any work.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from serenity.commands.common import add_memory_model, duration, emit_json, positive_int
from serenity.errors import SerenityError

if TYPE_CHECKING:
    from serenity.batch import BatchRow


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``batch`` command."""
    p = subparsers.add_parser(
        "batch",
        help="schedule many models, one result row each (local processes or a Ray cluster)",
        description="Schedule every MODEL with the default method and report peak before -> "
        "after, the lower bound and the proof, one row per model. A model that fails is "
        "reported in its row and the batch goes on. Rows are the same (seconds aside) "
        "whichever executor runs them.",
    )
    p.add_argument("models", nargs="*", metavar="MODEL", help="model files (.onnx/.tflite/.json)")
    p.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="local worker processes (default 1: in this process)",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run the models as Ray tasks: on the cluster at ADDRESS (e.g. auto, ray://host:10001), "
        "or on a local Ray instance when no address is given (needs the [ray] extra)",
    )
    p.add_argument("--time-limit", type=duration, metavar="S", help="seconds per model, loading included")
    p.add_argument("--csv", metavar="FILE", help="write the rows as CSV (atomically)")
    add_memory_model(p)
    p.add_argument("--json", action="store_true", help='print {"results": [...]} instead of a table')
    p.set_defaults(func=run)


def _looks_like_model(text: str) -> bool:
    from serenity.formats import FORMATS

    return Path(text).suffix.lower() in FORMATS


def run(args: argparse.Namespace) -> int:
    """Run ``batch``; returns the exit code.

    Raises:
        SerenityError: ``--workers`` with ``--ray``, ``--ray`` without Ray installed, or an
            unwritable ``--csv`` (all before any model is scheduled).
    """
    from serenity.batch import BatchOptions, ray_module, run_local, run_ray
    from serenity.commands.common import guard_outputs

    models = list(args.models)
    address = args.ray
    if address is not None and _looks_like_model(address):
        # `--ray a.onnx b.onnx`: argparse gave the first model to --ray as its address.
        models.insert(0, address)
        address = ""
    if not models:
        raise SerenityError("batch: no MODEL given (see 'serenity batch --help')")
    if address is not None and args.workers != 1:
        raise SerenityError("--workers is for local processes; with --ray the cluster's CPUs decide")
    if address is not None:
        ray_module()
    guard_outputs([("--csv", args.csv)], [Path(m) for m in models if Path(m).is_file()])
    options = BatchOptions(time_limit=args.time_limit, memory_model=args.memory_model)

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(file=sys.stderr)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=console, transient=True,
        disable=args.json or not console.is_terminal,
    ) as bar:  # fmt: skip
        task = bar.add_task("batch", total=len(models))

        def progress(done: int, row: BatchRow) -> None:
            bar.update(task, completed=done, description=f"batch: {Path(row.model).name}")

        if address is not None:
            rows = run_ray(models, options, address=address or None, progress=progress)
        else:
            rows = run_local(models, options, workers=args.workers, progress=progress)
    if args.csv:
        write_csv(rows, Path(args.csv))
    failed = sum(r.error is not None for r in rows)
    if args.json:
        emit_json({"results": [r.as_dict() for r in rows]})
    else:
        print_table(rows)
    if failed:
        print(f"serenity: {failed} of {len(rows)} models failed (see their error)", file=sys.stderr)
    if args.csv:
        print(f"written: {args.csv}", file=sys.stderr)
    return 0


def csv_text(rows: Sequence[BatchRow]) -> str:
    """The rows as CSV, with the header :data:`serenity.batch.COLUMNS` (empty cells for ``None``)."""
    from serenity.batch import COLUMNS

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        d = r.as_dict()
        w.writerow(["" if d[c] is None else d[c] for c in COLUMNS])
    return buf.getvalue()


def write_csv(rows: Sequence[BatchRow], path: Path) -> None:
    """Write :func:`csv_text` atomically (:mod:`serenity.fsutil`)."""
    from serenity.fsutil import atomic_write_bytes

    atomic_write_bytes(path, csv_text(rows).encode())


def print_table(rows: Sequence[BatchRow]) -> None:
    """One line per model: peak before -> after, the gain, the proof and the time; then one line
    per failed model with its error."""
    from serenity.report import fmt_bytes, table

    lines = []
    for r in rows:
        if r.error is not None:
            lines.append((r.model, "", "", "", "", "failed (below)", f"{r.seconds:.2f} s"))
            continue
        before = "invalid" if r.peak_before is None else fmt_bytes(r.peak_before)
        gain = f"{r.peak_before / r.peak_after:.2f}x" if r.peak_before and r.peak_after else ""
        proven = "yes" if r.proven_optimal else f"no (bound {fmt_bytes(r.lower_bound or 0)})"
        after = fmt_bytes(r.peak_after or 0)
        lines.append((r.model, str(r.ops), before, after, gain, proven, f"{r.seconds:.2f} s"))
    table("Batch", ["model", "ops", "peak before", "peak after", "gain", "proven optimal", "time"], lines)
    for r in rows:
        if r.error is not None:
            print(f"failed: {r.error}")
