"""``serenity optimize MODEL -o OUT``: rewrite where it lowers the proven peak, schedule, plan.

The report gives the peak of the listed order, after scheduling alone, and after rewriting, and
(TFLite) the arena TensorFlow Lite Micro measures for the input and the output file.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from serenity.commands.common import (
    Deadline,
    add_alignment,
    add_common,
    add_memory_model,
    alignment_for,
    check_output,
    duration,
    emit_json,
    guard_outputs,
    parse_dims,
    seed,
)
from serenity.errors import SerenityError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``optimize`` command."""
    p = subparsers.add_parser(
        "optimize",
        help="rewrite the graph where that lowers the peak, then schedule (and plan) it",
        description="Split ops that read a concatenation (channel-wise and kernel-wise "
        "partitioning) wherever the exact scheduler proves the rewritten graph has a lower "
        "peak, then write the model in its optimal order (TFLite: with an arena plan on request).",
    )
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output file (same format)")
    p.add_argument("--no-rewrite", action="store_true", help="schedule (and plan) only")
    p.add_argument(
        "--embed-plan",
        action="store_true",
        help="(.tflite) write the arena plan as OfflineMemoryAllocation metadata",
    )
    p.add_argument("--planner", default="exact", metavar="NAME", help="arena planner for --embed-plan")
    p.add_argument("--explain", action="store_true", help="list every match considered and its outcome")
    p.add_argument(
        "--allow-requantize",
        action="store_true",
        help="(int8 .tflite) allow channel-wise partitioning, which moves int8 rounding; the "
        "largest output difference on seeded inputs is measured and reported",
    )
    p.add_argument("--time-limit", type=duration, metavar="S", help="seconds for the whole command")
    p.add_argument("--seed", type=seed, default=0, help="seed of the inputs --allow-requantize measures on")
    add_alignment(p)
    add_memory_model(p)
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``optimize``; returns the exit code."""
    from serenity.commands.schedule import before_after, choose_arena
    from serenity.formats import dialect_for, load, protected_files, save
    from serenity.ir import with_alignment, with_memory_model
    from serenity.memory import simulate
    from serenity.report import fmt_bytes, status, table
    from serenity.rewrites.apply import structure_difference
    from serenity.rewrites.search import rewrite_for_memory
    from serenity.schedulers.dp import schedule_dp

    deadline = Deadline(args.time_limit)
    src, dst = Path(args.model), Path(args.output)
    check_output(src, dst, embed_plan=args.embed_plan, planner=args.planner if args.embed_plan else None)
    guard_outputs([("-o", dst)], [src])
    model = load(src, dims=parse_dims(args.dim), require_data=not args.no_rewrite)
    guard_outputs([("-o", dst)], protected_files(model))
    align = alignment_for(model, args.align)
    mm = args.memory_model

    def counted(g: Any) -> Any:  # the graph as the peaks are counted: aligned, in the memory model
        return with_memory_model(with_alignment(g, align), mm)

    graph = counted(model.graph)
    listed = None if graph.listed_problem else simulate(graph, graph.listed_order).peak
    t0 = time.perf_counter()
    with status(f"scheduling {len(graph.ops)} ops", quiet=args.json):
        base = schedule_dp(graph, time_limit=deadline.left())
    out_model, result, outcome = model, base, None
    if not args.no_rewrite:
        dialect = dialect_for(model, allow_requantize=args.allow_requantize)
        with status("searching rewrites", quiet=args.json):
            outcome = rewrite_for_memory(
                with_memory_model(model.graph, mm),
                dialect,
                alignment=align,
                time_limit=deadline.left(),
                base=base,
            )
        if outcome.modified:
            out_model = dialect.materialize(outcome.rewrites)
            diff = structure_difference(out_model.graph, outcome.graph)
            if diff is not None:  # the writer and the IR must agree, or the proof is about another graph
                raise AssertionError(f"{src}: the written graph is not the one scheduled: {diff}")
            result = schedule_dp(counted(out_model.graph), time_limit=deadline.left())
    out_graph = counted(out_model.graph)
    order = result.order
    arena = None
    if args.embed_plan:
        arena = choose_arena(out_model, out_graph, result, align, args.planner, deadline)
        order = arena["order"]
    seconds = time.perf_counter() - t0
    if arena is not None:
        from serenity.formats.tflite_plan import save_tflite_with_plan

        save_tflite_with_plan(out_model, order, arena["offsets"], dst, memory_model=mm)
    else:
        save(out_model, order, dst)
    peak = simulate(out_graph, order).peak
    out: dict[str, Any] = {
        "model": str(src),
        "output": str(dst),
        "alignment": align,
        "memory_model": mm,
        "peak_listed": listed,
        "peak_scheduled": base.peak,
        "peak_rewritten": peak,
        "proven_optimal_scheduled": base.proven_optimal,
        "proven_optimal_rewritten": result.proven_optimal and peak == result.peak,
        "lower_bound": result.lower_bound,
        "ops_before": len(model.graph.ops),
        "ops_after": len(out_model.graph.ops),
        "rewritten": bool(outcome and outcome.modified),
        "rewrites": [_rewrite_dict(rw) for rw in outcome.rewrites] if outcome else [],
        "steps": [
            {"label": s.label, "peak_before": s.peak_before, "peak_after": s.peak_after, "proven": s.proven}
            for s in (outcome.steps if outcome else ())
        ],
        "evaluations": outcome.evaluations if outcome else 0,
        "seconds": round(seconds, 6),
    }
    if outcome is not None and outcome.stopped:
        out["stopped"] = outcome.stopped
    if args.explain or args.json:
        out["considered"] = [c.as_dict() for c in outcome.considered] if outcome else []
    if arena is not None:
        out["arena"] = {k: v for k, v in arena.items() if k not in ("order", "offsets")}
    if model.format == "tflite":
        out.update(_tflm_measure(src, dst, args.json))
        if args.allow_requantize and any(
            rw.kind == "channel" for rw in (outcome.rewrites if outcome else ())
        ):
            out["requantize_max_abs_diff"] = _max_diff(src, dst, args.seed)
    if args.json:
        emit_json(out)
        return 0
    rows = [
        (
            "peak, listed order",
            fmt_bytes(listed) if listed is not None else f"invalid: {graph.listed_problem}",
        ),
        (
            "peak, scheduled",
            before_after(listed, base.peak) + ("  proven optimal" if base.proven_optimal else ""),
        ),
        (
            "peak, rewritten",
            before_after(base.peak, peak) + ("  proven optimal" if out["proven_optimal_rewritten"] else ""),
        ),
        (
            "ops",
            f"{out['ops_before']} -> {out['ops_after']}"
            + (f" ({len(out['rewrites'])} rewrites)" if out["rewrites"] else ""),
        ),
    ]
    if outcome is not None:
        rows.append(
            (
                "rewrite search",
                f"{outcome.evaluations} graphs scheduled in {outcome.seconds:.2f} s"
                + (f" ({outcome.stopped})" if outcome.stopped else ""),
            )
        )
    if arena is not None:
        rows.append(("arena plan", f"{fmt_bytes(arena['arena_bytes'])} ({arena['planner']})"))
    if out.get("tflm_arena_after") is not None:
        rows.append(
            ("TFLM arena (measured)", before_after(out.get("tflm_arena_before"), out["tflm_arena_after"]))
        )
    if "requantize_max_abs_diff" in out:
        rows.append(
            ("int8 output difference", f"max |Δ| {out['requantize_max_abs_diff']:g} (seed {args.seed})")
        )
    rows += [("time", f"{seconds:.2f} s"), ("written", str(dst))]
    table("Optimize", ["", ""], rows, show_header=False)
    if args.explain and outcome is not None:
        table(
            "Matches considered",
            ["concatenation", "reader", "kind", "outcome", "why"],
            [(c.concat, c.reader, c.kind or "-", c.status, c.reason) for c in outcome.considered],
        )
    return 0


def _rewrite_dict(rw: Any) -> dict[str, Any]:
    return {
        "kind": rw.kind,
        "concat": rw.concat,
        "reader": rw.reader,
        "parts": list(rw.parts),
        "channels": list(rw.channels),
    }


def _tflm_measure(src: Path, dst: Path, quiet: bool) -> dict[str, Any]:
    """The arena TensorFlow Lite Micro allocates for the input and the output file."""
    import logging

    from serenity.runtime.tflm import arena_bytes

    out: dict[str, Any] = {}
    for key, path in (("tflm_arena_before", src), ("tflm_arena_after", dst)):
        try:
            out[key] = arena_bytes(path)
        except SerenityError as e:
            logging.getLogger("serenity").warning("%s: TFLite Micro could not measure the arena: %s", path, e)
            out[key] = None
    return out


def _max_diff(src: Path, dst: Path, seed_: int) -> float:
    """Largest absolute output difference between two TFLite files on seeded random inputs."""
    import numpy as np

    from serenity.runtime.tflm import random_inputs, run

    inputs = random_inputs(src, seed=seed_)
    a, b = run(src, inputs), run(dst, inputs)
    return max(
        float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) if x.size else 0.0
        for x, y in zip(a, b, strict=True)
    )
