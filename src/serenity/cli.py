"""The ``serenity`` command line: analyze, schedule, verify (+ zoo and bench from ``commands/``).

Exit codes: 0 success, 1 verification failed, 2 bad input or usage. Errors are one line on
stderr naming the file and the problem. ``--json`` prints exactly one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import pkgutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serenity import __version__
from serenity.errors import SerenityError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def parse_dims(items: Sequence[str] | None) -> dict[str, int]:
    """``["N=1", "seq=128"]`` -> ``{"N": 1, "seq": 128}``.

    Raises:
        SerenityError: an item is not ``NAME=POSITIVE_INT``.
    """
    dims: dict[str, int] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name or not value.isdigit() or int(value) <= 0:
            raise SerenityError(f"--dim {item!r}: expected NAME=VALUE with a positive integer VALUE")
        dims[name] = int(value)
    return dims


def emit_json(obj: Any) -> None:
    """Print one JSON object on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _add_common(p: argparse.ArgumentParser, *, dims: bool = True) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    if dims:
        p.add_argument(
            "--dim",
            action="append",
            metavar="NAME=VALUE",
            help="value for a symbolic dimension (repeatable), e.g. --dim batch=1",
        )


def _methods(spec: str | None) -> list[str]:
    from serenity.schedulers import SCHEDULERS

    if not spec:
        return []
    if spec == "all":
        return list(SCHEDULERS)
    names = [m.strip() for m in spec.split(",") if m.strip()]
    for m in names:
        if m not in SCHEDULERS and m != "best":
            raise SerenityError(f"unknown method '{m}' (known: best, {', '.join(SCHEDULERS)})")
    return names


# -- analyze ---------------------------------------------------------------------------------


def cmd_analyze(args: argparse.Namespace) -> int:
    from serenity.formats import load
    from serenity.ir import with_element_size
    from serenity.memory import simulate
    from serenity.report import fmt_bytes, memory_timeline_png, table
    from serenity.schedulers import op_lower_bound, schedule

    model = load(args.model, dims=parse_dims(args.dim))
    graph = model.graph if not args.element_size else with_element_size(model.graph, args.element_size)
    listed = simulate(graph, graph.listed_order)
    bound = op_lower_bound(graph)
    results = [
        schedule(graph, m, time_limit=args.time_limit, max_states=args.max_states)
        for m in _methods(args.order)
    ]
    out = {
        "model": str(args.model),
        "format": model.format,
        "ops": len(graph.ops),
        "tensors": len(graph.tensors),
        "activation_tensors": len(graph.activations),
        "peak_bytes": listed.peak,
        "peak_step": listed.peak_step,
        "peak_op": graph.ops[graph.listed_order[listed.peak_step]].name if listed.peak_step >= 0 else None,
        "lower_bound": bound,
        "info": model.info,
        "methods": {r.method: {k: v for k, v in r.as_dict().items() if k != "order"} for r in results},
    }
    if args.plot:
        orders = {"listed": graph.listed_order, **{r.method: r.order for r in results}}
        memory_timeline_png(graph, orders, Path(args.plot), title=Path(args.model).name)
    if args.json:
        emit_json(out)
        return EXIT_OK
    rows = [
        ("model", str(args.model)),
        ("format", model.format),
        ("ops", str(len(graph.ops))),
        ("activation tensors", str(len(graph.activations))),
        ("peak (listed order)", f"{fmt_bytes(listed.peak)} at op '{out['peak_op']}'"),
        ("op lower bound", fmt_bytes(bound)),
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
                    f"{listed.peak / r.peak:.3f}x" if r.peak else "-",
                    fmt_bytes(r.lower_bound),
                    "yes" if r.proven_optimal else "no",
                    f"{r.seconds:.3f}",
                )
                for r in results
            ],
        )
    if args.plot:
        print(f"memory timeline written to {args.plot}", file=sys.stderr)
    return EXIT_OK


# -- schedule --------------------------------------------------------------------------------


def cmd_schedule(args: argparse.Namespace) -> int:
    from serenity.formats import format_of, load, save
    from serenity.fsutil import refuse_overwrite
    from serenity.memory import simulate
    from serenity.report import fmt_bytes, status, table
    from serenity.schedulers import DEFAULT_METHOD, schedule

    src, dst = Path(args.model), Path(args.output)
    refuse_overwrite(src, dst, in_place=args.in_place)
    if format_of(src) != format_of(dst):
        raise SerenityError(f"{dst}: output must have the input's format ({src.suffix})")
    model = load(src, dims=parse_dims(args.dim))
    before = simulate(model.graph, model.graph.listed_order).peak
    method = args.method or DEFAULT_METHOD
    with status(f"scheduling {len(model.graph.ops)} ops with '{method}'", quiet=args.json):
        t0 = time.perf_counter()
        result = schedule(model.graph, method, time_limit=args.time_limit, max_states=args.max_states)
        seconds = time.perf_counter() - t0
    save(model, result.order, dst)
    out = {
        "model": str(src),
        "output": str(dst),
        "method": result.method,
        "peak_before": before,
        "peak_after": result.peak,
        "lower_bound": result.lower_bound,
        "proven_optimal": result.proven_optimal,
        "reduction": round(before / result.peak, 4) if result.peak else None,
        "seconds": round(seconds, 6),
        "stats": dict(result.stats),
    }
    if args.json:
        emit_json(out)
        return EXIT_OK
    table(
        "Schedule",
        ["", ""],
        [
            ("method", result.method),
            (
                "peak",
                f"{fmt_bytes(before)} -> {fmt_bytes(result.peak)}"
                + (f"  ({before / result.peak:.2f}x lower)" if result.peak and before > result.peak else ""),
            ),
            ("lower bound", fmt_bytes(result.lower_bound)),
            ("proven optimal", "yes" if result.proven_optimal else "no"),
            *([("states explored", f"{result.stats['states']:,}")] if "states" in result.stats else []),
            *([("search stopped", str(result.stats["stopped"]))] if result.stats.get("stopped") else []),
            ("time", f"{seconds:.3f} s"),
            ("written", str(dst)),
        ],
        show_header=False,
    )
    return EXIT_OK


# -- verify ----------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    from serenity.report import fmt_bytes, table
    from serenity.verify import verify

    rep = verify(Path(args.original), Path(args.reordered), seed=args.seed, dims=parse_dims(args.dim))
    if args.json:
        emit_json(rep.as_dict())
    else:
        ident = {True: "identical", False: "DIFFERENT", None: "not run (no runtime for this format)"}
        table(
            "Verify",
            ["", ""],
            [
                ("structure", "same model" if rep.structure_equal else "DIFFERENT"),
                ("order", "topological" if rep.order_valid else "INVALID"),
                ("runtime", rep.runtime),
                ("outputs", f"{rep.outputs} {ident[rep.outputs_identical]}"),
                ("peak", f"{fmt_bytes(rep.peak_original)} -> {fmt_bytes(rep.peak_reordered)}"),
                *(
                    [("TFLM arena", f"{fmt_bytes(rep.arena_original)} -> {fmt_bytes(rep.arena_reordered)}")]
                    if rep.arena_original is not None and rep.arena_reordered is not None
                    else []
                ),
                ("verdict", "OK" if rep.ok else "FAILED: " + "; ".join(rep.problems)),
            ],
            show_header=False,
        )
    return EXIT_OK if rep.ok else EXIT_FAILED


# -- main ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with the subcommands of ``serenity.commands`` registered."""
    parser = argparse.ArgumentParser(
        prog="serenity",
        description="Memory-optimal scheduling of irregularly wired neural networks.",
    )
    parser.add_argument("--version", action="version", version=f"serenity {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each scheduler's result")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "analyze",
        help="peak activation memory of a model's order(s)",
        description="Report ops, activation tensors and the peak of the listed order; "
        "with --order, the peak under other scheduling methods.",
    )
    p.add_argument("model", help="a .onnx, .tflite or .json graph")
    p.add_argument("--order", metavar="METHODS", help="comma-separated methods, or 'all'")
    p.add_argument("--time-limit", type=float, metavar="S", help="seconds per method")
    p.add_argument("--max-states", type=int, metavar="N", help="cap on stored search states (exact methods)")
    p.add_argument(
        "--element-size", type=int, choices=(1, 2, 4), help="account activations at N bytes/element"
    )
    p.add_argument("--plot", metavar="FILE.png", help="write the memory timeline of each order")
    _add_common(p)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser(
        "schedule",
        help="write the model with a memory-saving op order",
        description="Find an order with a low (by default the lowest provable) peak and "
        "write the same model with its ops in that order.",
    )
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output file (same format)")
    p.add_argument("--method", metavar="NAME", help="scheduling method (default: the best available)")
    p.add_argument("--time-limit", type=float, metavar="S", help="stop searching after S seconds")
    p.add_argument("--in-place", action="store_true", help="allow OUT to be MODEL")
    p.add_argument("--max-states", type=int, metavar="N", help="cap on stored search states (exact methods)")
    _add_common(p)
    p.set_defaults(func=cmd_schedule)

    p = sub.add_parser(
        "verify",
        help="check a reordered model against the original in a real runtime",
        description="Check REORDERED is ORIGINAL with only its op order changed, run both on "
        "the same seeded random inputs (onnxruntime or TFLite Micro) and compare "
        "outputs bit for bit. Exit 0 only if identical.",
    )
    p.add_argument("original")
    p.add_argument("reordered")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    _add_common(p)
    p.set_defaults(func=cmd_verify)

    import serenity.commands as commands

    for info in pkgutil.iter_modules(commands.__path__):
        mod = importlib.import_module(f"serenity.commands.{info.name}")
        register = getattr(mod, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``serenity`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except SerenityError as e:
        print(f"serenity: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("serenity: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("serenity: error: out of memory; try --time-limit or a smaller model", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:
        if os.environ.get("SERENITY_DEBUG"):
            raise
        print(
            f"serenity: internal error ({type(e).__name__}: {e}); rerun with SERENITY_DEBUG=1 and report it",
            file=sys.stderr,
        )
        return 3


if __name__ == "__main__":
    sys.exit(main())
