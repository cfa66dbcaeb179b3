"""``serenity analyze MODEL``: ops, activation tensors, the peak of the listed order and of other
methods, and a memory-timeline plot."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    methods,
    parse_dims,
    positive_int,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``analyze`` command."""
    p = subparsers.add_parser(
        "analyze",
        help="peak activation memory of a model's order(s)",
        description="Report ops, activation tensors and the peak of the listed order; "
        "with --order, the peak under other scheduling methods.",
    )
    p.add_argument("model", help="a .onnx, .tflite or .json graph")
    p.add_argument("--order", metavar="METHODS", help="comma-separated methods, or 'all'")
    p.add_argument("--time-limit", type=duration, metavar="S", help="seconds for the whole command")
    p.add_argument(
        "--max-states", type=positive_int, metavar="N", help="cap on stored search states (exact methods)"
    )
    p.add_argument(
        "--element-size", type=int, choices=(1, 2, 4), help="account activations at N bytes/element"
    )
    p.add_argument("--plot", metavar="FILE.png", help="write the memory timeline of each order")
    add_alignment(p)
    add_memory_model(p)
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``analyze``; returns the exit code."""
    from serenity.formats import load, protected_files
    from serenity.memory import simulate
    from serenity.report import fmt_bytes, memory_timeline_png, table
    from serenity.schedulers import op_lower_bound, schedule

    deadline = Deadline(args.time_limit)
    names = methods(args.order)
    dims = parse_dims(args.dim)
    guard_outputs([("--plot", args.plot)], [Path(args.model)])
    model = load(args.model, dims=dims)
    guard_outputs([("--plot", args.plot)], protected_files(model))
    align = alignment_for(model, args.align)
    graph = counted(model.graph, align, args.memory_model, args.element_size)
    invalid = graph.listed_problem
    listed = simulate(graph, graph.topological_order)
    bound = op_lower_bound(graph)
    results = [schedule(graph, m, time_limit=deadline.left(), max_states=args.max_states) for m in names]
    out = {
        "model": str(args.model),
        "format": model.format,
        "alignment": align,
        "memory_model": graph.memory_model,
        "ops": len(graph.ops),
        "tensors": len(graph.tensors),
        "activation_tensors": len(graph.activations),
        "peak_bytes": None if invalid else listed.peak,
        "peak_step": None if invalid else listed.peak_step,
        "peak_op": graph.ops[graph.listed_order[listed.peak_step]].name
        if listed.peak_step >= 0 and not invalid
        else None,
        "listed_order_invalid": invalid,
        "lower_bound": bound,
        "info": model.info,
        "methods": {r.method: {k: v for k, v in r.as_dict().items() if k != "order"} for r in results},
    }
    if args.plot:
        orders = {} if invalid else {"listed": graph.listed_order}
        orders.update({r.method: r.order for r in results})
        memory_timeline_png(graph, orders, Path(args.plot), title=Path(args.model).name)
    if args.json:
        emit_json(out)
        return 0
    rows = [
        ("model", str(args.model)),
        ("format", model.format),
        ("ops", str(len(graph.ops))),
        ("activation tensors", str(len(graph.activations))),
        (
            "peak (listed order)",
            f"invalid order: {invalid}"
            if invalid
            else f"{fmt_bytes(listed.peak)} at op '{out['peak_op']}'"
            + (f" ({align}-byte aligned)" if align > 1 else ""),
        ),
        ("op lower bound", fmt_bytes(bound)),
        *([("memory model", graph.memory_model)] if graph.memory_model != "tflm" else []),
    ]
    table("Model", ["", ""], rows, show_header=False)
    if results:
        table(
            "Peak by order",
            ["method", "peak", "vs listed", "lower bound", "proven", "seconds"],
            [
                (
                    r.method,
                    fmt_bytes(r.peak),
                    f"{listed.peak / r.peak:.3f}x" if r.peak and not invalid else "-",
                    fmt_bytes(r.lower_bound),
                    "yes" if r.proven_optimal else "no",
                    f"{r.seconds:.3f}",
                )
                for r in results
            ],
        )
    if args.plot:
        print(f"memory timeline written to {args.plot}", file=sys.stderr)
    return 0
