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
    counted,
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
    p.add_argument(
        "--tiles",
        type=tiles_arg,
        default="auto",
        metavar="auto|NxM|off",
        help="patch-based execution of the first layers: auto (default) tries the split tensors "
        "and grids 2x2..8x8 and keeps the lowest proven peak if it is lower; NxM one grid; off",
    )
    p.add_argument(
        "--max-overhead",
        type=percent,
        default=20.0,
        metavar="PCT",
        help="largest extra compute of the tiles' overlapping halos, %% of the network's MACs (default 20)",
    )
    p.add_argument("--time-limit", type=duration, metavar="S", help="seconds for the whole command")
    p.add_argument("--seed", type=seed, default=0, help="seed of the inputs --allow-requantize measures on")
    add_alignment(p)
    add_memory_model(p)
    add_common(p)
    p.set_defaults(func=run)


def tiles_arg(text: str) -> Any:
    """``--tiles``: auto, off or NxM."""
    from serenity.rewrites.tiling_search import parse_tiles

    try:
        return parse_tiles(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def percent(text: str) -> float:
    """A percentage in [0, 1000]."""
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0 <= v <= 1000:
        raise argparse.ArgumentTypeError(f"'{text}' is not a percentage between 0 and 1000")
    return v


#: Seconds one tiled graph's schedule may take during the ``--tiles`` search (the chosen one is
#: scheduled again with up to :data:`TILED_SCHEDULE_SECONDS`).
TILE_SCHEDULE_SECONDS = 0.5
#: Seconds for the ``--tiles`` search when the command has no time limit (else half of it).
TILE_SEARCH_SECONDS = 30.0
#: Seconds for the schedule of the tiled file when the command has no time limit.
TILED_SCHEDULE_SECONDS = 30.0


def run(args: argparse.Namespace) -> int:
    """Run ``optimize``; returns the exit code."""
    from serenity.commands.schedule import before_after, choose_arena
    from serenity.formats import dialect_for, load, protected_files, save
    from serenity.ir import with_memory_model
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

    def account(g: Any) -> Any:  # the graph as the peaks are counted: aligned, in the memory model
        return counted(g, align, mm)

    graph = account(model.graph)
    listed = None if graph.listed_problem else simulate(graph, graph.listed_order).peak
    t0 = time.perf_counter()
    with status(f"scheduling {len(graph.ops)} ops", quiet=args.json):
        base = schedule_dp(graph, time_limit=deadline.left())
    source, scheduled = model, base
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
            result = schedule_dp(account(out_model.graph), time_limit=deadline.left())
    # Patch stages last, on the rewritten model, kept only if they lower its peak: never worse
    # than the rewrites alone.
    tiling: dict[str, Any] | None = None
    if args.tiles != "off" and not args.no_rewrite:
        choice, tiled_model = _tile(out_model, result, account, args, deadline)
        tiling = _tiling_dict(choice, args.explain or args.json)
        tiling["peak_before"] = result.peak
        if tiled_model is not None:
            out_model = tiled_model
            left = deadline.left()
            with status(f"scheduling {len(out_model.graph.ops)} ops (tiled)", quiet=args.json):
                result = schedule_dp(
                    account(out_model.graph), time_limit=TILED_SCHEDULE_SECONDS if left is None else left
                )
            tiling["peak"], tiling["proven"] = result.peak, result.proven_optimal
    out_graph = account(out_model.graph)
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
    rewritten = tiling["peak_before"] if tiling else peak
    out: dict[str, Any] = {
        "model": str(src),
        "output": str(dst),
        "alignment": align,
        "memory_model": mm,
        "peak_listed": listed,
        "peak_scheduled": scheduled.peak,
        "tiling": tiling,
        "peak_rewritten": peak,
        "proven_optimal_scheduled": scheduled.proven_optimal,
        "proven_optimal_rewritten": result.proven_optimal and peak == result.peak,
        "lower_bound": result.lower_bound,
        "ops_before": len(source.graph.ops),
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
    rw_proven = out["proven_optimal_rewritten"] and not (tiling and tiling["applied"])
    rows = [
        (
            "peak, listed order",
            fmt_bytes(listed) if listed is not None else f"invalid: {graph.listed_problem}",
        ),
        (
            "peak, scheduled",
            before_after(listed, scheduled.peak) + ("  proven optimal" if scheduled.proven_optimal else ""),
        ),
        (
            "peak, rewritten",
            before_after(scheduled.peak, rewritten) + ("  proven optimal" if rw_proven else ""),
        ),
        *_tiling_rows(tiling, rewritten),
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
    if args.explain and tiling is not None and tiling.get("candidates"):
        table(
            "Patch stages considered",
            ["split", "grid", "outcome", "peak", "extra MACs", "why"],
            [
                (c["split"], c["grid"], c["status"] + (" (proven)" if c["proven"] else ""),
                 "-" if c["peak"] is None else fmt_bytes(c["peak"]),
                 "-" if c["overhead"] is None else f"{c['overhead']:.1%}", c["reason"])
                for c in tiling["candidates"]
            ],
        )  # fmt: skip
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


def _tile(
    model: Any, base: Any, account: Any, args: argparse.Namespace, deadline: Deadline
) -> tuple[Any, Any]:
    """The ``--tiles`` search (:mod:`serenity.rewrites.tiling_search`) and, when it lowers the
    peak, the model with the chosen patch stage written in (else ``None``)."""
    from serenity.errors import UnsupportedError
    from serenity.formats import spatial_dialect_for, write_tiled
    from serenity.report import status
    from serenity.rewrites.tiling_search import choose_tiling
    from serenity.schedulers.dp import schedule_dp

    try:
        spatial = spatial_dialect_for(model)
    except UnsupportedError:
        if args.tiles == "auto":
            return None, None
        raise

    def scheduled(g: Any, left: float | None) -> Any:
        limit = TILE_SCHEDULE_SECONDS if left is None else min(TILE_SCHEDULE_SECONDS, left)
        return schedule_dp(g, time_limit=limit)

    left = deadline.left()
    left = TILE_SEARCH_SECONDS if left is None else left / 2
    with status("searching patch stages", quiet=args.json):
        choice = choose_tiling(
            model.graph,
            spatial,
            scheduled,
            counted=account,
            base_peak=base.peak,
            grids=None if args.tiles == "auto" else [args.tiles],
            max_overhead=args.max_overhead / 100,
            time_limit=left,
        )
    if not choice.plans:
        return choice, None
    # Each stage is planned again on the file the previous one wrote (same tensors, its own op
    # indices) and written into it; a later stage reads the earlier one's split whole.
    from serenity.rewrites.tiling import plan_tiles

    for k, plan in enumerate(choice.plans):
        start = {choice.plans[k - 1].split} if k else set()
        again = plan_tiles(model.graph, spatial_dialect_for(model), plan.split, plan.grid, start=start)
        model = write_tiled(model, again)
    return choice, model


def _tiling_dict(choice: Any, candidates: bool) -> dict[str, Any]:
    """The ``tiling`` entry of ``--json``: the chosen split and grid (or why none), the search's
    figures, and with ``--explain`` or ``--json`` every candidate."""
    if choice is None:
        return {"applied": False, "reason": "this format has no kernels or strides to tile by"}
    out: dict[str, Any] = {"applied": bool(choice.plans), "seconds": round(choice.seconds, 4)}
    if choice.plans:
        last = choice.plans[-1]
        out.update(
            split=last.split,
            grid=f"{last.grid[0]}x{last.grid[1]}",
            overhead=round(choice.overhead, 4),
            network_macs=choice.network_macs,
            stages=[
                {
                    "split": p.split,
                    "grid": f"{p.grid[0]}x{p.grid[1]}",
                    "ops": len(p.prefix),
                    "macs_before": p.macs_before,
                    "macs_after": p.macs_after,
                    "overhead_of_tiled_layers": round(p.overhead(), 4),
                }
                for p in choice.plans
            ],
        )
    else:
        scored = [c for c in choice.candidates if c.peak is not None]
        out["reason"] = (
            f"no split and grid lowers the peak of {choice.base_peak:,} B"
            if scored or choice.candidates
            else "no tensor ends a prefix that can be tiled"
        )
    if candidates:
        out["candidates"] = [c.as_dict() for c in choice.candidates]
    return out


def _tiling_rows(tiling: dict[str, Any] | None, before: int) -> list[tuple[str, str]]:
    from serenity.commands.schedule import before_after

    if tiling is None:
        return []
    if not tiling["applied"]:
        return [("patch stage", f"none: {tiling['reason']}")]
    stages = " then ".join(f"{st['split']} {st['grid']}" for st in tiling["stages"])
    what = f"  ({stages}; +{tiling['overhead']:.1%} MACs)"
    proven = "  proven optimal" if tiling.get("proven") else ""
    return [("peak, tiled", before_after(before, tiling["peak"]) + proven + what)]
