"""``serenity bench``: peak memory of the zoo under every order, the paper's evaluation."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from serenity.commands.common import add_memory_model, byte_sizes, duration


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` command."""
    p = subparsers.add_parser(
        "bench",
        help="peak memory of the zoo networks under every scheduling method",
        description="For each zoo network: the peak under each baseline order, under the optimal "
        "schedule (when registered) and optimal + rewriting (when available), the lower "
        "bound, proof status and scheduling time, with geomean ratios against the "
        "framework's own (listed) order.",
    )
    p.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help="model files (.onnx/.tflite/.json) to bench instead of the zoo",
    )
    p.add_argument("--only", action="append", metavar="NAME", help="bench only this network (repeatable)")
    p.add_argument("--quick", action="store_true", help="a small subset that runs in well under a minute")
    p.add_argument(
        "--element-size", type=int, choices=(4, 1), default=4, help="bytes per activation element (default 4)"
    )
    p.add_argument("--int8", action="store_true", help="same as --element-size 1")
    p.add_argument(
        "--time-limit",
        type=duration,
        default=60.0,
        metavar="S",
        help="seconds per method and network (default 60)",
    )
    p.add_argument("--csv", metavar="FILE", help="write one CSV line per network")
    p.add_argument("--plot", metavar="FILE.png", help="write grouped peak bars and scheduling times")
    p.add_argument(
        "--sram",
        type=byte_sizes,
        metavar="SIZES",
        default=[],
        help="on-chip budgets (e.g. 32K,64K,128K,256K): add each network's off-chip traffic under "
        "the listed order and ours, and the geomean reduction per budget beside the paper's",
    )
    add_memory_model(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the bench; returns the exit code.

    Raises:
        UnknownModelError: ``--only`` names a network not in the zoo.
        SerenityError: an output folder does not exist.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from serenity import zoo
    from serenity.bench import QUICK, methods_available, run_bench
    from serenity.bench_report import table_rows, write_csv, write_plot
    from serenity.commands.common import emit_json, guard_outputs
    from serenity.errors import SerenityError
    from serenity.formats import referenced_files

    names = [*args.models, *(args.only or [])] or list(QUICK if args.quick else zoo.names())
    for n in names:
        if n in args.models:
            if not Path(n).is_file():
                raise SerenityError(f"{n}: no such file")
        else:
            zoo.info(n)
    inputs = [f for m in args.models for f in referenced_files(Path(m))]
    guard_outputs([("--csv", args.csv), ("--plot", args.plot)], inputs)
    element_bytes = 1 if args.int8 else args.element_size
    time_limit = min(args.time_limit, 5.0) if args.quick else args.time_limit
    methods = methods_available()
    steps = len(names) * (len(methods) + 1 + len(args.sram))
    console = Console(file=sys.stderr)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal,
    ) as bar:  # fmt: skip
        task = bar.add_task("bench", total=steps)

        started = [0]

        def progress(network: str, method: str) -> None:
            # Called before each step: the steps before this one are done.
            bar.update(task, completed=started[0], description=f"{network}: {method}")
            started[0] += 1

        report = run_bench(
            names,
            element_bytes=element_bytes,
            time_limit=time_limit,
            methods=methods,
            progress=progress,
            sram=sorted(set(args.sram)),
            memory_model=args.memory_model,
        )
        bar.update(task, completed=steps)
    if args.csv:
        write_csv(report, Path(args.csv))
    if args.plot:
        write_plot(report, Path(args.plot))
    if args.json:
        emit_json(report.as_dict())
        return 0
    cols, rows = table_rows(report)
    sizes = (
        "files as stored, zoo at 4 B/element"
        if args.models and element_bytes == 4
        else f"{element_bytes} B/element"
    )
    model = "" if args.memory_model == "tflm" else f", {args.memory_model} memory model"
    t = Table(title=f"Peak activation memory in KiB, {sizes}{model} (* = proven optimal)",
              title_justify="left")  # fmt: skip
    for i, c in enumerate(cols):
        t.add_column(c, justify="left" if i == 0 else "right", no_wrap=True)
    for r in rows:
        t.add_row(*r)
    Console(file=sys.stdout, width=max(160, Console().width)).print(t)
    ratios = ", ".join(f"{m} {v:.2f}×" for m, v in report.vs_listed.items())
    print(f"geomean peak(listed) / peak(method): {ratios}")
    if report.rewrite_gain is not None:
        print(
            f"geomean peak(optimal) / peak(optimal+rewrite): {report.rewrite_gain:.2f}× "
            "(rewriting over scheduling alone)"
        )
    vs = ", ".join(f"{b} {v:.2f}×" for b, v in report.vs_baselines.items())
    print(f"geomean peak(baseline) / peak({report.reference}): {vs}")
    if report.traffic_vs_listed:
        from serenity.bench import PAPER_TRAFFIC
        from serenity.bench_report import traffic_rows

        cols, rows = traffic_rows(report)
        t = Table(title="Off-chip traffic in KiB per inference (written + read; 'no fit': one op "
                  "alone exceeds the budget)", title_justify="left")  # fmt: skip
        for i, c in enumerate(cols):
            t.add_column(c, justify="left" if i == 0 else "right", no_wrap=True)
        for r in rows:
            t.add_row(*r)
        Console(file=sys.stdout, width=max(160, Console().width)).print(t)
        print("geomean off-chip traffic(listed) / traffic(ours), over networks that spill:")
        for b, v in report.traffic_vs_listed.items():
            paper = PAPER_TRAFFIC.get(b)
            print(
                f"  {b // 1024:>4} KiB: {v['ours']:.2f}× (peak-optimal order alone {v['optimal']:.2f}×; "
                f"{int(v['networks'])} networks spill, {int(v['zeroed'])} of them not at all in our "
                f"order)" + (f"; paper {paper:.2f}×" if paper else "")
            )
    if "optimal" not in methods:
        print("note: no 'optimal' scheduler is registered; only baselines were run", file=sys.stderr)
    for path in (args.csv, args.plot):
        if path:
            print(f"written: {path}", file=sys.stderr)
    return 0
