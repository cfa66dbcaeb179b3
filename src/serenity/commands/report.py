"""``serenity report MODEL -o report.html``: one self-contained HTML page with the numbers of
``analyze``, the memory timeline of the listed order against the optimal one, the tensors live at
each peak, the arena layout of the optimal order and the command that rebuilds the page."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from serenity.commands.common import (
    Deadline,
    add_alignment,
    add_common,
    add_memory_model,
    alignment_for,
    counted,
    duration,
    emit_json,
    guard_outputs,
    parse_dims,
)
from serenity.errors import SerenityError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``report`` command."""
    p = subparsers.add_parser(
        "report",
        help="write one self-contained HTML report of a model's activation memory",
        description="Schedule MODEL, plan the arena of the optimal order and write one HTML file "
        "(images inlined, no external resources): the numbers of 'analyze', the memory timeline "
        "of the listed and the optimal order with the tensors live at each peak, the arena "
        "layout and the command that reproduces the report.",
    )
    p.add_argument("model", help="a .onnx, .tflite or .json graph")
    p.add_argument("-o", "--output", required=True, metavar="REPORT.html", help="the HTML file to write")
    p.add_argument("--time-limit", type=duration, metavar="S", help="seconds for the whole command")
    p.add_argument(
        "--planner", default="exact", metavar="NAME", help="arena planner: exact (default) or tflm-greedy"
    )
    add_alignment(p)
    add_memory_model(p)
    add_common(p)
    p.set_defaults(func=run)


def reproduce_command(args: argparse.Namespace, align: int) -> str:
    """The shell command that rebuilds the report: every option spelled out, the alignment as
    resolved, so a change of default cannot change what it gives."""
    argv = ["serenity", "report", str(args.model), "-o", str(args.output)]
    if args.time_limit is not None:
        argv += ["--time-limit", f"{args.time_limit:g}"]
    argv += ["--memory-model", args.memory_model, "--align", str(align), "--planner", args.planner]
    for d in args.dim or ():
        argv += ["--dim", d]
    return shlex.join(argv)


def run(args: argparse.Namespace) -> int:
    """Run ``report``; returns the exit code."""
    from serenity import __version__
    from serenity.formats import load, protected_files
    from serenity.fsutil import atomic_write_bytes
    from serenity.html_report import PlanView, ReportView, order_view, render_html
    from serenity.planning import PLANNERS, buffers_of, check_plan, peak_of
    from serenity.schedulers import DEFAULT_METHOD, op_lower_bound, schedule

    # 1. Every check before any work: the planner, the output path (never the model).
    if args.planner not in PLANNERS:
        raise SerenityError(f"--planner: unknown planner '{args.planner}' (known: {', '.join(PLANNERS)})")
    deadline = Deadline(args.time_limit)
    dims = parse_dims(args.dim)
    guard_outputs([("-o", args.output)], [Path(args.model)])
    model = load(args.model, dims=dims)
    guard_outputs([("-o", args.output)], protected_files(model))

    # 2. The graph as analyze accounts it, the listed order and the optimal one.
    align = alignment_for(model, args.align)
    graph = counted(model.graph, align, args.memory_model)
    invalid = graph.listed_problem
    best = schedule(graph, DEFAULT_METHOD, time_limit=deadline.left())
    orders = [] if invalid else [order_view(graph, graph.listed_order, "listed")]
    orders.append(order_view(graph, best.order, "optimal" if best.proven_optimal else "best found"))

    # 3. The arena plan of the optimal order, checked independently of the planner.
    buffers = buffers_of(graph, best.order)
    plan = PLANNERS[args.planner](buffers, time_limit=deadline.left())
    check_plan(buffers, plan.offsets)
    plan_view = PlanView(tuple(buffers), plan, peak_of(buffers), orders[-1].profile.peak_step)

    listed = None if invalid else orders[0]
    numbers: dict[str, Any] = {
        "model": str(args.model),
        "format": model.format,
        "ops": len(graph.ops),
        "activation_tensors": len(graph.activations),
        "peak_bytes": None if listed is None else listed.profile.peak,
        "peak_step": None if listed is None else listed.profile.peak_step,
        "peak_op": None if listed is None else listed.peak_op,
        "listed_order_invalid": invalid,
        "optimal_peak_bytes": best.peak,
        "optimal_method": best.method,
        "lower_bound": best.lower_bound,
        "op_lower_bound": op_lower_bound(graph),
        "proven_optimal": best.proven_optimal,
        "seconds": round(best.seconds, 6),
        "memory_model": graph.memory_model,
        "alignment": align,
    }
    view = ReportView(
        title=Path(args.model).name,
        numbers=numbers,
        orders=tuple(orders),
        plan=plan_view,
        command=reproduce_command(args, align),
        version=__version__,
    )

    # 4. One file, written atomically.
    atomic_write_bytes(Path(args.output), render_html(view).encode("utf-8"))
    if args.json:
        emit_json({**numbers, "output": str(args.output), "arena_bytes": plan.arena,
                   "planner": plan.planner, "command": view.command})  # fmt: skip
        return 0
    before = "invalid" if listed is None else f"{listed.profile.peak:,} B"
    print(
        f"report written to {args.output}: peak {before} -> {best.peak:,} B, arena {plan.arena:,} B",
        file=sys.stderr,
    )
    return 0
