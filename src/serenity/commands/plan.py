"""``serenity plan``: where each activation lives in the arena, for a model's order or for a plain
buffer list in minimalloc's CSV format."""

from __future__ import annotations

import argparse
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
    positive_int,
)
from serenity.errors import SerenityError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``plan`` command."""
    p = subparsers.add_parser(
        "plan",
        help="plan the activation arena (offsets) of a model's order, or of a CSV buffer list",
        description="Place every activation tensor of MODEL run in an order at an arena offset "
        "(no two tensors live at the same step may overlap) and report the arena, the peak "
        "(the lower bound), fragmentation and whether the arena is proven smallest. With "
        "--buffers, plan a buffer list in minimalloc's CSV format (id,lower,upper,size; "
        "half-open lifetimes) instead.",
    )
    p.add_argument("model", nargs="?", help="a .onnx, .tflite or .json graph")
    p.add_argument(
        "--order",
        default="listed",
        metavar="listed|optimal|FILE.json",
        help="the op order: the file's own (default), the proven-optimal one, or a JSON list of op "
        "names or indices (or an object with an 'order' list)",
    )
    p.add_argument("--planner", default="exact", metavar="NAME", help="exact (default) or tflm-greedy")
    p.add_argument("--time-limit", type=duration, metavar="S", help="seconds for the whole command")
    p.add_argument("--plot", metavar="FILE.png", help="draw the arena layout")
    p.add_argument(
        "--buffers", metavar="FILE.csv", help="plan this minimalloc CSV buffer list instead of a model"
    )
    p.add_argument(
        "--capacity", type=positive_int, metavar="N", help="with --buffers: find a plan within N bytes"
    )
    p.add_argument(
        "-o", "--output", metavar="OUT.csv", help="with --buffers: write the list with an offset column"
    )
    add_alignment(p)
    add_memory_model(p)
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``plan``; returns the exit code."""
    from serenity.planning import PLANNERS

    if args.planner not in PLANNERS:
        raise SerenityError(f"--planner: unknown planner '{args.planner}' (known: {', '.join(PLANNERS)})")
    if (args.model is None) == (args.buffers is None):
        raise SerenityError("plan: give either MODEL or --buffers FILE.csv")
    if args.buffers is not None:
        return _run_csv(args)
    if args.capacity is not None or args.output is not None:
        raise SerenityError("plan: --capacity and -o go with --buffers")
    return _run_model(args)


def _run_model(args: argparse.Namespace) -> int:
    from serenity.formats import load, protected_files
    from serenity.memory import simulate
    from serenity.planning import PLANNERS, check_plan, peak_of
    from serenity.planning.target import target_buffers
    from serenity.report import arena_layout_png, fmt_bytes, fragmentation, table

    deadline = Deadline(args.time_limit)
    dims = parse_dims(args.dim)
    guard_outputs([("--plot", args.plot)], [Path(args.model)])
    model = load(args.model, dims=dims)
    guard_outputs([("--plot", args.plot)], protected_files(model))
    align = alignment_for(model, args.align)
    # The parser's --memory-model where it has one: under "inplace" a tensor an op writes over
    # a dying input shares that input's buffer (and offset).
    memory_model = getattr(args, "memory_model", None) or "tflm"
    graph = counted(model.graph, align, memory_model)
    order, order_name = _order(graph, args.order, deadline)
    profile = simulate(graph, order)
    target = target_buffers(model.graph, order, fmt=model.format, alignment=align, memory_model=memory_model)
    buffers = list(target.buffers)
    plan = PLANNERS[args.planner](buffers, time_limit=deadline.left())
    check_plan(buffers, plan.offsets)  # independent of the planner: never report an invalid plan
    peak = peak_of(buffers)  # the aligned peak, and kernel scratch buffers where the runtime has them
    out: dict[str, Any] = {
        "model": str(args.model),
        "order": order_name,
        "alignment": align,
        "peak_bytes": peak,
        "peak_step": profile.peak_step,
        "scratch_buffers": sum(t is None for t in target.tensors),
        "fragmentation": round(fragmentation(plan.arena, peak), 6),
        **plan.as_dict(buffers),
    }
    out["offsets"] = target.tensor_offsets(plan.offsets)
    if args.plot:
        title = f"{Path(args.model).name} ({order_name} order, {plan.planner})"
        arena_layout_png(buffers, plan.offsets, Path(args.plot), title=title, peak=peak)
    if args.json:
        emit_json(out)
        return 0
    rows = [
        ("model", str(args.model)),
        ("order", f"{order_name} ({len(order)} ops)"),
        ("planner", plan.planner),
        ("tensors placed", str(len(out["offsets"]))),
        *([("buffers", str(len(buffers)))] if len(buffers) != len(out["offsets"]) else []),
        ("peak (lower bound)", fmt_bytes(profile.peak) + (f", {align}-byte aligned" if align > 1 else "")),
        ("arena", f"{fmt_bytes(plan.arena)} ({plan.arena:,} B)"),
        ("fragmentation", f"{fragmentation(plan.arena, profile.peak):.1%}"),
        (
            "proven smallest",
            "yes" if plan.proven else f"no (gap {fmt_bytes(plan.gap)} to {fmt_bytes(plan.lower_bound)})",
        ),
        *([("search stopped", str(plan.stats["stopped"]))] if plan.stats.get("stopped") else []),
        *(
            [("TFLM arena (predicted)", fmt_bytes(out["tflm_arena_predicted"]))]
            if out.get("tflm_arena_predicted") is not None
            else []
        ),
        ("time", f"{plan.seconds:.3f} s"),
    ]
    table("Arena plan", ["", ""], rows, show_header=False)
    if args.plot:
        print(f"arena layout written to {args.plot}", file=sys.stderr)
    return 0


def _order(graph: Any, spec: str, deadline: Deadline) -> tuple[tuple[int, ...], str]:
    """The order ``--order`` names, and a label for it."""
    from serenity.schedulers import schedule

    if spec == "listed":
        if graph.listed_problem:
            raise SerenityError(f"--order listed: the file's order is invalid: {graph.listed_problem}")
        return graph.listed_order, "listed"
    if spec == "optimal":
        r = schedule(graph, "optimal", time_limit=deadline.left())
        return r.order, "optimal" if r.proven_optimal else "best found"
    return read_order_file(graph, Path(spec)), Path(spec).name


def read_order_file(graph: Any, path: Path) -> tuple[int, ...]:
    """An order from a JSON file: a list of op names or indices, or ``{"order": [...]}``.

    Raises:
        SerenityError: the file is missing, not JSON, names unknown ops, or the order is not
            topological (naming the file).
    """
    import json

    from serenity.errors import OrderError

    if path.suffix.lower() != ".json" or not path.is_file():
        raise SerenityError(f"--order {path}: expected listed, optimal or an existing .json file")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise SerenityError(f"{path}: not a JSON order: {e}") from e
    items = doc.get("order") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise SerenityError(f'{path}: expected a list of op names or indices, or {{"order": [...]}}')
    index = {op.name: op.index for op in graph.ops}
    order = []
    for item in items:
        if isinstance(item, str) and item in index:
            order.append(index[item])
        elif isinstance(item, int) and not isinstance(item, bool):
            order.append(item)
        else:
            raise SerenityError(f"{path}: {item!r} names no op of the model")
    try:
        return graph.check_order(order)
    except OrderError as e:
        raise SerenityError(f"{path}: {e}") from e


def _run_csv(args: argparse.Namespace) -> int:
    from serenity.planning import PLANNERS, check_plan, peak_of
    from serenity.planning.csvio import read_csv, write_csv
    from serenity.report import fmt_bytes, fragmentation, table

    deadline = Deadline(args.time_limit)
    src = Path(args.buffers)
    guard_outputs([("-o", args.output), ("--plot", args.plot)], [src])
    buffers = read_csv(src)
    planner = PLANNERS[args.planner]
    if args.capacity is not None:
        plan = planner(buffers, time_limit=deadline.left(), capacity=args.capacity)
    else:
        plan = planner(buffers, time_limit=deadline.left())
    check_plan(buffers, plan.offsets, capacity=args.capacity)
    peak = peak_of(buffers)
    if args.output:
        write_csv(Path(args.output), buffers, plan.offsets)
    if args.plot:
        from serenity.report import arena_layout_png

        arena_layout_png(buffers, plan.offsets, Path(args.plot), title=src.name, peak=peak)
    out = {"buffers": str(src), "count": len(buffers), "capacity": args.capacity, "peak_bytes": peak,
           "fragmentation": round(fragmentation(plan.arena, peak), 6), **plan.as_dict(buffers)}  # fmt: skip
    if args.json:
        emit_json(out)
        return 0
    table(
        "Arena plan",
        ["", ""],
        [
            ("buffers", f"{src} ({len(buffers)})"),
            ("planner", plan.planner),
            ("peak (lower bound)", f"{peak:,} B"),
            ("arena", f"{plan.arena:,} B" + (f" (capacity {args.capacity:,} B)" if args.capacity else "")),
            ("fragmentation", f"{fragmentation(plan.arena, peak):.1%}"),
            ("proven smallest", "yes" if plan.proven else f"no (gap {fmt_bytes(plan.gap)})"),
            ("time", f"{plan.seconds:.3f} s"),
            *([("written", str(args.output))] if args.output else []),
        ],
        show_header=False,
    )
    return 0
