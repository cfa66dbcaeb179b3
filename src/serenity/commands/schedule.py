"""``serenity schedule MODEL -o OUT``: write the model with a memory-saving op order."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from serenity.commands.common import (
    Deadline,
    add_common,
    duration,
    emit_json,
    guard_outputs,
    parse_dims,
    positive_int,
)
from serenity.errors import SerenityError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``schedule`` command."""
    p = subparsers.add_parser(
        "schedule",
        help="write the model with a memory-saving op order",
        description="Find an order with a low (by default the lowest provable) peak and "
        "write the same model with its ops in that order.",
    )
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output file (same format)")
    p.add_argument("--method", metavar="NAME", help="scheduling method (default: the best available)")
    p.add_argument(
        "--time-limit",
        type=duration,
        metavar="S",
        help="seconds for the whole command, loading included; the best order found is written",
    )
    p.add_argument("--in-place", action="store_true", help="allow OUT to be MODEL")
    p.add_argument(
        "--max-states", type=positive_int, metavar="N", help="cap on stored search states (exact methods)"
    )
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``schedule``; returns the exit code."""
    from serenity.formats import format_of, load, protected_files, save
    from serenity.fsutil import refuse_overwrite
    from serenity.memory import simulate
    from serenity.report import fmt_bytes, status, table
    from serenity.schedulers import DEFAULT_METHOD, SCHEDULERS, schedule

    deadline = Deadline(args.time_limit)
    src, dst = Path(args.model), Path(args.output)
    method = args.method or DEFAULT_METHOD
    if method not in SCHEDULERS and method != "best":
        known = ", ".join(["best", *SCHEDULERS])
        raise SerenityError(f"--method: unknown scheduling method '{method}' (known: {known})")
    dims = parse_dims(args.dim)
    if format_of(src) != format_of(dst):
        raise SerenityError(f"{dst}: output must have the input's format ({src.suffix})")
    refuse_overwrite(src, dst, in_place=args.in_place)
    guard_outputs([("-o", dst)], [] if args.in_place else [src])
    model = load(src, dims=dims)
    load_seconds = time.perf_counter() - deadline.start
    data = [p for p in protected_files(model) if p != model.path]
    guard_outputs([("-o", dst)], data if args.in_place else [*data, src])
    invalid = model.graph.listed_problem
    before = None if invalid else simulate(model.graph, model.graph.listed_order).peak
    with status(f"scheduling {len(model.graph.ops)} ops with '{method}'", quiet=args.json):
        t0 = time.perf_counter()
        result = schedule(model.graph, method, time_limit=deadline.left(), max_states=args.max_states)
        seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    save(model, result.order, dst)
    save_seconds = time.perf_counter() - t1
    out = {
        "model": str(src),
        "output": str(dst),
        "method": result.method,
        "peak_before": before,
        "peak_after": result.peak,
        "lower_bound": result.lower_bound,
        "proven_optimal": result.proven_optimal,
        "reduction": round(before / result.peak, 4) if result.peak and before is not None else None,
        "listed_order_invalid": invalid,
        "seconds": round(seconds, 6),
        "load_seconds": round(load_seconds, 6),
        "save_seconds": round(save_seconds, 6),
        "stats": dict(result.stats),
    }
    if args.json:
        emit_json(out)
        return 0
    table(
        "Schedule",
        ["", ""],
        [
            ("method", result.method),
            ("peak", _before_after(before, result.peak)),
            *([("listed order", f"invalid: {invalid}")] if invalid else []),
            ("lower bound", fmt_bytes(result.lower_bound)),
            ("proven optimal", "yes" if result.proven_optimal else "no"),
            *([("states explored", f"{result.stats['states']:,}")] if "states" in result.stats else []),
            *([("search stopped", str(result.stats["stopped"]))] if result.stats.get("stopped") else []),
            ("time", f"{seconds:.3f} s (load {load_seconds:.3f} s, save {save_seconds:.3f} s)"),
            ("written", str(dst)),
        ],
        show_header=False,
    )
    return 0


def _before_after(before: int | None, after: int) -> str:
    """``"72.0 KiB -> 64.0 KiB  (1.12x lower)"``; ``before`` is ``None`` for an invalid listed order."""
    from serenity.report import fmt_bytes

    if before is None:
        return f"(listed order invalid) -> {fmt_bytes(after)}"
    gain = f"  ({before / after:.2f}x lower)" if after and before > after else ""
    return f"{fmt_bytes(before)} -> {fmt_bytes(after)}{gain}"
