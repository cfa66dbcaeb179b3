"""``serenity schedule MODEL -o OUT``: write the model with a memory-saving op order."""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from serenity.commands.common import (
    Deadline,
    add_alignment,
    add_common,
    add_memory_model,
    alignment_for,
    byte_size,
    check_output,
    counted,
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
    p.add_argument(
        "--method",
        metavar="NAME",
        help="scheduling method (default: auto, the dynamic program raced by the integer program)",
    )
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
    p.add_argument(
        "--embed-plan",
        action="store_true",
        help="(.tflite) also write the arena plan as OfflineMemoryAllocation metadata, which TFLite "
        "Micro's planner honours; implies --objective arena",
    )
    p.add_argument(
        "--objective",
        choices=("peak", "arena", "traffic"),
        help="peak: the smallest peak (default); arena: among orders with that peak, one whose "
        "arena plan reaches it (default with --embed-plan); traffic: the order that moves the "
        "fewest bytes to and from off-chip memory with --sram bytes on chip",
    )
    p.add_argument(
        "--sram",
        type=byte_size,
        metavar="SIZE",
        help="on-chip memory for activations (e.g. 256K): report the off-chip traffic of the "
        "orders (needed by --objective traffic)",
    )
    p.add_argument(
        "--planner",
        default="exact",
        metavar="NAME",
        help="arena planner for --objective arena and --embed-plan: exact (default) or tflm-greedy",
    )
    add_alignment(p)
    add_memory_model(p)
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``schedule``; returns the exit code."""
    from serenity.formats import load, protected_files, save
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
    if args.objective == "traffic" and args.sram is None:
        raise SerenityError("--objective traffic needs --sram SIZE (the on-chip memory, e.g. 256K)")
    if args.objective == "traffic" and args.embed_plan:
        raise SerenityError("--embed-plan plans the arena for the smallest peak; it cannot be "
                            "combined with --objective traffic")  # fmt: skip
    planned = args.objective == "arena" or args.embed_plan
    check_output(src, dst, embed_plan=args.embed_plan, planner=args.planner if planned else None)
    dims = parse_dims(args.dim)
    objective = args.objective or ("arena" if args.embed_plan else "peak")
    refuse_overwrite(src, dst, in_place=args.in_place)
    guard_outputs([("-o", dst)], [] if args.in_place else [src])
    model = load(src, dims=dims)
    load_seconds = time.perf_counter() - deadline.start
    data = [p for p in protected_files(model) if p != model.path]
    guard_outputs([("-o", dst)], data if args.in_place else [*data, src])
    align = alignment_for(model, args.align)
    graph = counted(model.graph, align, args.memory_model)
    invalid = graph.listed_problem
    before = None if invalid else simulate(graph, graph.listed_order).peak
    with status(f"scheduling {len(graph.ops)} ops with '{method}'", quiet=args.json):
        t0 = time.perf_counter()
        result = schedule(graph, method, time_limit=deadline.left(), max_states=args.max_states)
        order = result.order
        arena = None
        if objective == "arena":
            arena = choose_arena(model, graph, result, align, args.planner, deadline)
            order = arena["order"]
        traffic = None
        if args.sram is not None:
            traffic = offchip_figures(graph, result, args.sram, objective == "traffic", deadline)
            order = traffic.pop("order")
        seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    et = None
    if args.embed_plan:
        from serenity.formats.tflite_plan import save_tflite_with_plan

        assert arena is not None
        save_tflite_with_plan(model, order, arena["offsets"], dst, memory_model=graph.memory_model)
    elif model.format == "pt2" and dst.suffix.lower() == ".pte":
        from serenity.executorch_io import save_pte

        et = save_pte(model.source, dst, order)  # our order and our exact arena plan
        order = et.order  # the export order when ExecuTorch's lifetimes made ours plan worse
    else:
        save(model, order, dst)
    save_seconds = time.perf_counter() - t1
    peak_after = simulate(graph, order).peak
    out: dict[str, Any] = {
        "model": str(src),
        "output": str(dst),
        "method": result.method,
        "objective": objective,
        "alignment": align,
        "memory_model": graph.memory_model,
        "peak_before": before,
        "peak_after": peak_after,
        "lower_bound": result.lower_bound,
        "proven_optimal": result.proven_optimal and peak_after == result.peak,
        "reduction": round(before / peak_after, 4) if peak_after and before is not None else None,
        "listed_order_invalid": invalid,
        "seconds": round(seconds, 6),
        "load_seconds": round(load_seconds, 6),
        "save_seconds": round(save_seconds, 6),
        "stats": dict(result.stats),
        **tflm_arenas(model, order, arena, args.embed_plan),
    }
    if arena is not None:
        out["arena"] = {k: v for k, v in arena.items() if k not in ("order", "offsets")}
        out["plan_embedded"] = bool(args.embed_plan)
    if et is not None:
        out["executorch_arena_before"] = et.executorch_arena
        out["executorch_arena_after"] = et.arena
        out["executorch_plan_proven"] = et.proven
    if traffic is not None:
        out["offchip"] = traffic
    if args.json:
        emit_json(out)
        return 0
    rows = [
        ("method", result.method + ("" if objective == "peak" else f" (objective: {objective})")),
        ("peak", before_after(before, peak_after) + (f", {align}-byte aligned" if align > 1 else "")),
        *([("listed order", f"invalid: {invalid}")] if invalid else []),
        *([("memory model", graph.memory_model)] if graph.memory_model != "tflm" else []),
        ("lower bound", fmt_bytes(result.lower_bound)),
        ("proven optimal", proven_text(out["proven_optimal"], result.stats)),
        *([("states explored", f"{result.stats['states']:,}")] if "states" in result.stats else []),
        *([("search stopped", str(result.stats["stopped"]))] if result.stats.get("stopped") else []),
    ]
    if et is not None:
        rows.append(("ExecuTorch arena", before_after(et.executorch_arena, et.arena)
                     + " (its planner in the export order -> ours)"))  # fmt: skip
    if traffic is not None:
        rows += traffic_rows(traffic)
    if arena is not None:
        proven = "proven smallest" if arena["proven"] else f"gap {fmt_bytes(arena['gap_bytes'])} to the bound"
        rows.append(("arena plan", f"{fmt_bytes(arena['arena_bytes'])} ({arena['planner']}, {proven})"))
    if out.get("tflm_arena_before") is not None and out.get("tflm_arena_after") is not None:
        rows.append(("TFLM arena", before_after(out["tflm_arena_before"], out["tflm_arena_after"])
                     + (" (plan embedded)" if args.embed_plan else " (predicted)")))  # fmt: skip
    rows += [
        ("time", f"{seconds:.3f} s (load {load_seconds:.3f} s, save {save_seconds:.3f} s)"),
        ("written", str(dst)),
    ]
    table("Schedule", ["", ""], rows, show_header=False)
    return 0


def offchip_figures(
    graph: Any, result: Any, sram: int, by_traffic: bool, deadline: Deadline
) -> dict[str, Any]:
    """Off-chip traffic at ``sram`` bytes on chip (:mod:`serenity.planning.offchip`) of the listed
    order and of the chosen one: ``result``'s order, or with ``by_traffic`` the order of
    :func:`serenity.schedulers.traffic.schedule_traffic` (the least traffic it finds). The
    chosen order is under ``"order"``; ``"proven"`` says the traffic objective is proven."""
    from serenity.planning.offchip import OpDoesNotFit, offchip_traffic

    order = result.order
    out: dict[str, Any] = {"sram": sram, "objective": "traffic" if by_traffic else "peak"}
    proven = False
    try:
        if by_traffic:
            from serenity.schedulers.traffic import schedule_traffic

            chosen = schedule_traffic(graph, sram, time_limit=deadline.left(), peak_result=result)
            order = chosen.order
            out["lower_bound"] = chosen.stats.get("traffic_lower_bound")
            proven = bool(chosen.stats.get("traffic_proven"))
            out["peak"] = chosen.peak
        out["after"] = offchip_traffic(graph, order, sram).as_dict()
        listed = None if graph.listed_problem else offchip_traffic(graph, graph.listed_order, sram)
        out["before"] = None if listed is None else listed.as_dict()
    except OpDoesNotFit as e:
        out["error"] = str(e)
    out["proven"] = proven
    out["order"] = order
    return out


def traffic_rows(traffic: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Table rows for :func:`offchip_figures`."""
    from serenity.report import fmt_bytes

    head = f"off-chip traffic at {fmt_bytes(traffic['sram'])}"
    if "error" in traffic:
        return [(head, f"does not fit: {traffic['error']}")]
    after = traffic["after"]["traffic"]
    before = traffic["before"]["traffic"] if traffic["before"] else None
    text = f"{fmt_bytes(after)}" if before is None else f"{fmt_bytes(before)} -> {fmt_bytes(after)}"
    if before and after < before:
        text += f"  ({before / after:.2f}x less)" if after else "  (none left)"
    if traffic["objective"] == "traffic":
        text += ", proven least" if traffic["proven"] else f", bound {fmt_bytes(traffic['lower_bound'] or 0)}"
    rows = [(head, text)]
    if traffic["objective"] == "traffic" and "peak" in traffic:
        rows.append(("peak of that order", fmt_bytes(traffic["peak"])))
    return rows


def choose_arena(
    model: Any, graph: Any, result: Any, align: int, planner_name: str, deadline: Deadline
) -> dict[str, Any]:
    """Order and placement together (:mod:`serenity.planning.joint`); the chosen order, its
    tensor offsets and the plan's figures."""
    from serenity.planning import PLANNERS, check_plan
    from serenity.planning.joint import plan_with_order
    from serenity.planning.target import target_buffers
    from serenity.schedulers import BASELINES

    def buffers_for(order: tuple[int, ...]) -> tuple[Any, ...]:
        return target_buffers(
            model.graph, order, fmt=model.format, alignment=align, memory_model=graph.memory_model
        ).buffers

    baselines = [fn(graph) for fn in BASELINES.values()] if len(graph.ops) <= 5000 else []
    joint = plan_with_order(
        graph, result, buffers_for, PLANNERS[planner_name], time_limit=deadline.left(), baselines=baselines
    )
    target = target_buffers(
        model.graph, joint.order, fmt=model.format, alignment=align, memory_model=graph.memory_model
    )
    check_plan(target.buffers, joint.plan.offsets)  # never write a plan that was not checked
    return {
        "order": joint.order,
        "offsets": target.tensor_offsets(joint.plan.offsets),
        "planner": joint.plan.planner,
        "arena_bytes": joint.plan.arena,
        "lower_bound": joint.plan.lower_bound,
        "gap_bytes": joint.plan.gap,
        "proven": joint.plan.proven,
        "candidates": joint.candidates,
        "seconds": round(joint.plan.seconds, 6),
    }


def tflm_arenas(
    model: Any, order: tuple[int, ...], arena: dict[str, Any] | None, embedded: bool
) -> dict[str, Any]:
    """For a ``.tflite``: the arena TFLite Micro plans for the input file and for the output
    (predicted by the model of its planner, which the tests hold to TFLM's measurement)."""
    if model.format != "tflite":
        return {}
    from serenity.errors import UnsupportedError
    from serenity.formats.tflite_plan import offline_offsets
    from serenity.planning.tflm_greedy import predict_tflm_arena

    try:
        own = offline_offsets(model) or None
        before = (
            None
            if model.graph.listed_problem
            else predict_tflm_arena(model.graph, model.graph.listed_order, offline=own)
        )
        offline = arena["offsets"] if embedded and arena is not None else None
        after = predict_tflm_arena(model.graph, order, offline=offline)
    except UnsupportedError:
        return {"tflm_arena_before": None, "tflm_arena_after": None}
    return {"tflm_arena_before": before, "tflm_arena_after": after}


#: How ``stats["proved_by"]`` names each exact method in the table.
PROVERS = {
    "optimal": "the dynamic program",
    "ilp": "the integer program (CP-SAT)",
    "bound": "an order meeting the lower bound",
}


def proven_text(proven: bool, stats: Mapping[str, Any]) -> str:
    """``yes``/``no``, with the method that proved it when a portfolio ran (``--method auto``)."""
    if not proven:
        return "no"
    by = [PROVERS.get(m, m) for m in str(stats.get("proved_by", "")).split(",") if m]
    return f"yes, by {' and '.join(by)}" if by else "yes"


def before_after(before: int | None, after: int) -> str:
    """``"72.0 KiB -> 64.0 KiB  (1.12x lower)"``; ``before`` is ``None`` for an invalid listed order."""
    from serenity.report import fmt_bytes

    if before is None:
        return f"(listed order invalid) -> {fmt_bytes(after)}"
    gain = f"  ({before / after:.2f}x lower)" if after and before > after else ""
    return f"{fmt_bytes(before)} -> {fmt_bytes(after)}{gain}"
