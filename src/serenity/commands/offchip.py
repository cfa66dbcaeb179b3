"""``serenity offchip MODEL --sram 32K,64K``: off-chip traffic under SRAM budgets, listed order vs
a traffic-aware one (:mod:`serenity.planning.offchip`, :mod:`serenity.schedulers.traffic`)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serenity.commands.common import (
    Deadline,
    add_alignment,
    add_common,
    add_memory_model,
    alignment_for,
    byte_sizes,
    counted,
    duration,
    emit_json,
    guard_outputs,
    parse_dims,
)
from serenity.errors import SerenityError

#: The budgets of Ahn et al.'s off-chip traffic figure (MLSys 2020).
DEFAULT_BUDGETS = "32K,64K,128K,256K"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``offchip`` command."""
    p = subparsers.add_parser(
        "offchip",
        help="off-chip traffic under SRAM budgets: the listed order vs one that spills less",
        description="When the activations exceed on-chip memory they spill to external memory and "
        "are read back. For each SRAM budget, report the bytes the listed order moves (before) and "
        "the bytes the chosen order moves (after: the least-traffic order found, or the order "
        "given), written and read, with the eviction of serenity.planning.offchip (furthest next "
        "use first). --exact also solves each order's eviction optimally (CP-SAT; small graphs).",
    )
    p.add_argument("model", help="a .onnx, .tflite or .json graph")
    p.add_argument(
        "--sram",
        type=byte_sizes,
        default=DEFAULT_BUDGETS,
        metavar="SIZES",
        help=f"comma-separated on-chip budgets, e.g. 32K,64K,1.5M (default: {DEFAULT_BUDGETS})",
    )
    p.add_argument(
        "--order",
        default="optimal",
        metavar="listed|optimal|FILE.json",
        help="the order to compare with the listed one: optimal (default: the least traffic found "
        "at each budget), listed, or a JSON file (a list of op names or indices, an object with an "
        "'order' list, or a JSON graph as 'serenity schedule -o' writes)",
    )
    add_memory_model(p)
    p.add_argument(
        "--exact",
        action="store_true",
        help="also the optimal eviction of each order (CP-SAT, the [ilp] extra; small graphs): "
        "how far the policy is from it",
    )
    p.add_argument("--time-limit", type=duration, metavar="S", help="seconds for the whole command")
    p.add_argument(
        "--element-size", type=int, choices=(1, 2, 4), help="account activations at N bytes/element"
    )
    p.add_argument("--plot", metavar="FILE.png", help="bar chart of the traffic per budget")
    add_alignment(p)
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``offchip``; returns the exit code."""
    from serenity.formats import load, protected_files
    from serenity.memory import simulate
    from serenity.report import status
    from serenity.schedulers import DEFAULT_METHOD, op_lower_bound, schedule

    deadline = Deadline(args.time_limit)
    dims = parse_dims(args.dim)
    if args.order not in ("listed", "optimal"):
        path = Path(args.order)
        if path.suffix.lower() != ".json" or not path.is_file():
            raise SerenityError(f"--order {path}: expected listed, optimal or an existing .json file")
    if args.exact:
        _require_ortools()
    guard_outputs([("--plot", args.plot)], [Path(args.model)])
    model = load(args.model, dims=dims)
    guard_outputs([("--plot", args.plot)], protected_files(model))
    align = alignment_for(model, args.align)
    graph = counted(model.graph, align, args.memory_model, args.element_size)
    listed = graph.topological_order
    fixed: tuple[int, ...] | None = None
    order_name = args.order
    if args.order == "listed":
        fixed = listed
    elif args.order != "optimal":
        fixed = read_order(graph, Path(args.order))
        order_name = Path(args.order).name
    peak = None
    if fixed is None:
        with status(f"scheduling {len(graph.ops)} ops for the smallest peak", quiet=args.json):
            peak = schedule(graph, DEFAULT_METHOD, time_limit=deadline.left())
    peak_bound = peak.lower_bound if peak is not None else op_lower_bound(graph)
    budgets: list[dict[str, Any]] = []
    for i, sram in enumerate(args.sram):
        left = deadline.left()
        share = None if left is None else left / (len(args.sram) - i)
        with status(f"SRAM {sram:,} B ({i + 1}/{len(args.sram)})", quiet=args.json):
            budgets.append(budget_row(graph, sram, listed, fixed, peak, peak_bound, share, args.exact))
    out: dict[str, Any] = {
        "model": str(args.model),
        "format": model.format,
        "alignment": align,
        "memory_model": args.memory_model,
        "order": order_name,
        "listed_order_invalid": graph.listed_problem,
        "peak_listed": simulate(graph, listed).peak,
        "peak_optimal": None if peak is None else peak.peak,
        "peak_lower_bound": peak_bound,
        "seconds": round(time.perf_counter() - deadline.start, 6),
        "budgets": budgets,
    }
    if args.plot:
        traffic_png(budgets, order_name, Path(args.plot), title=Path(args.model).name)
    if args.json:
        emit_json(out)
        return 0
    print_table(out, exact=args.exact)
    if args.plot:
        print(f"traffic chart written to {args.plot}", file=sys.stderr)
    return 0


def _require_ortools() -> None:
    """``--exact`` needs OR-Tools: say so before any work."""
    import importlib.util

    from serenity.errors import UnsupportedError

    if importlib.util.find_spec("ortools") is None:
        raise UnsupportedError("--exact needs OR-Tools: pip install 'serenity-sched[ilp]'")


def budget_row(
    graph: Any,
    sram: int,
    listed: tuple[int, ...],
    fixed: tuple[int, ...] | None,
    peak: Any,
    peak_bound: int,
    time_limit: float | None,
    exact: bool,
) -> dict[str, Any]:
    """One budget: the listed order's traffic, the chosen order's, the reduction, and with
    ``exact`` each order's optimal eviction. An op that does not fit leaves ``fits`` false."""
    from serenity.memory import simulate
    from serenity.planning.offchip import OpDoesNotFit, run_policy, traffic_lower_bound
    from serenity.schedulers.traffic import schedule_traffic

    bound = traffic_lower_bound(graph, sram, peak_bound)
    search_time = None if time_limit is None else time_limit / (2 if exact else 1)
    exact_time = None if time_limit is None else time_limit / 4
    row: dict[str, Any] = {"sram": sram}
    before: dict[str, Any] = {"peak": simulate(graph, listed).peak}
    try:
        t = run_policy(graph, listed, sram)
        before.update(fits=True, written=t.written, read=t.read, traffic=t.traffic)
        if exact:
            before["exact"] = _exact(graph, listed, sram, exact_time)
    except OpDoesNotFit as e:
        before.update(fits=False, error=str(e))
    try:
        if fixed is None:
            r = schedule_traffic(graph, sram, time_limit=search_time, peak_result=peak)
            order, t = r.order, run_policy(graph, r.order, sram)
            row["chosen"] = r.stats["chosen"]
            row["candidates"] = r.stats["candidates"]
        else:
            order, t = fixed, run_policy(graph, fixed, sram)
    except OpDoesNotFit as e:
        row.update(fits=False, error=str(e), lower_bound=bound, listed=before)
        return row
    row.update(
        fits=True,
        written=t.written,
        read=t.read,
        traffic=t.traffic,
        spills=t.spills,
        reloads=t.reloads,
        peak=simulate(graph, order).peak,
        lower_bound=bound,
        proven=t.traffic == bound,
        listed=before,
        reduction=_ratio(before.get("traffic"), t.traffic),
    )
    if exact:
        same = tuple(order) == tuple(listed) and "exact" in before
        row["exact"] = before["exact"] if same else _exact(graph, order, sram, exact_time)
    return row


def _ratio(before: int | None, after: int) -> float | None:
    """``before / after``: 1.0 when both are 0, ``None`` when only ``after`` is (nothing left to
    divide by) or ``before`` is unknown."""
    if before is None:
        return None
    if after == 0:
        return 1.0 if before == 0 else None
    return round(before / after, 4)


def _exact(graph: Any, order: Sequence[int], sram: int, time_limit: float | None) -> dict[str, Any]:
    """The optimal eviction of ``order`` as a JSON-ready dict (``error`` when it is refused)."""
    from serenity.errors import UnsupportedError
    from serenity.planning.offchip_exact import offchip_exact

    try:
        x = offchip_exact(graph, order, sram, time_limit=time_limit)
    except UnsupportedError as e:
        return {"error": str(e)}
    return {
        "written": x.traffic.written,
        "read": x.traffic.read,
        "traffic": x.traffic.traffic,
        "proven": x.proven,
        "lower_bound": x.lower_bound,
        "status": x.status,
        "seconds": round(x.seconds, 6),
    }


def read_order(graph: Any, path: Path) -> tuple[int, ...]:
    """An order from a JSON file: what ``plan --order`` reads (a list of op names or indices, or
    ``{"order": [...]}``), or a JSON graph (``serenity schedule -o order.json`` of a JSON model),
    whose ops are listed in the order.

    Raises:
        SerenityError: naming the file and the problem.
    """
    import json

    from serenity.commands.plan import read_order_file
    from serenity.errors import OrderError

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise SerenityError(f"{path}: not a JSON order: {e}") from e
    if not (isinstance(doc, dict) and doc.get("format") == "serenity-graph"):
        return read_order_file(graph, path)
    ops = doc.get("ops")
    if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
        raise SerenityError(f"{path}: a JSON graph without a list of ops")
    index = {op.name: op.index for op in graph.ops}
    order = []
    for op in ops:
        name = op.get("name")
        if not isinstance(name, str) or name not in index:
            raise SerenityError(f"{path}: op {name!r} is not an op of the model")
        order.append(index[name])
    try:
        return graph.check_order(order)
    except OrderError as e:
        raise SerenityError(f"{path}: {e}") from e


def print_table(out: dict[str, Any], *, exact: bool) -> None:
    """The human table: one row per budget, listed -> chosen; why a budget does not fit below it."""
    from serenity.report import fmt_bytes

    after = out["order"]
    columns = ["SRAM", "listed", after, "reduction", "written / read", "peak", "lower bound"]
    columns += ["exact listed", f"exact {after}"] if exact else []
    rows, notes = [], []
    for b in out["budgets"]:
        listed = b["listed"]
        if not b["fits"]:
            notes.append(f"{fmt_bytes(b['sram'])}: {b['error']}")
            rows.append([fmt_bytes(b["sram"]), "-", "does not fit", "-", "-", "-", "-"] + ["-"] * (2 * exact))
            continue
        if not listed["fits"]:
            notes.append(f"{fmt_bytes(b['sram'])}, listed order: {listed['error']}")
        red = b["reduction"]
        rows.append(
            [
                fmt_bytes(b["sram"]),
                fmt_bytes(listed["traffic"]) if listed["fits"] else "does not fit",
                fmt_bytes(b["traffic"]),
                "-" if not listed["fits"] else ("inf" if red is None else f"{red:.2f}x"),
                f"{fmt_bytes(b['written'])} / {fmt_bytes(b['read'])}",
                fmt_bytes(b["peak"]),
                fmt_bytes(b["lower_bound"]) + (" (met)" if b["proven"] else ""),
            ]
            + ([_exact_text(listed.get("exact")), _exact_text(b.get("exact"))] if exact else [])
        )
    title = f"Off-chip traffic: {Path(out['model']).name} ({out['memory_model']}"
    title += f", {out['alignment']}-byte aligned" if out["alignment"] > 1 else ""
    title += f"; peak listed {fmt_bytes(out['peak_listed'])}"
    if out["peak_optimal"] is not None:
        title += f", smallest {fmt_bytes(out['peak_optimal'])}"
    _wide_table(title + ")", columns, rows)
    if out["listed_order_invalid"]:
        notes.append(
            f"the listed order is invalid ({out['listed_order_invalid']}); 'listed' is the nearest valid one"
        )
    for note in notes:
        print(note)


def _wide_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """:func:`serenity.report.table` at 130 columns or more: a budget's row stays on one line."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right", no_wrap=True)
    for r in rows:
        t.add_row(*r)
    Console(file=sys.stdout, width=max(130, Console().width)).print(t)


def _exact_text(x: dict[str, Any] | None) -> str:
    from serenity.report import fmt_bytes

    if x is None:
        return "-"
    if "error" in x:
        return "too large"
    return fmt_bytes(x["traffic"]) + ("" if x["proven"] else f" (>= {fmt_bytes(x['lower_bound'])})")


def traffic_png(budgets: Sequence[dict[str, Any]], order_name: str, path: Path, *, title: str) -> None:
    """Grouped bars, one group per budget: the listed order and the chosen one, each split into
    bytes written (solid) and read back (hatched); written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from serenity.fsutil import atomic_path
    from serenity.report import fmt_bytes

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    width = 0.38
    bars = (("listed", "tab:gray", -width / 2), (order_name, "tab:blue", width / 2))
    labelled: set[str] = set()
    for i, b in enumerate(budgets):
        for j, (label, color, dx) in enumerate(bars):
            rec = b.get("listed") if j == 0 else b
            if not rec or not rec.get("fits"):
                ax.text(i + dx, 0, "does not fit", rotation=90, ha="center", va="bottom", fontsize=7)
                continue
            w, r = rec["written"] / 1024, rec["read"] / 1024
            if w + r == 0:
                ax.text(i + dx, 0, "0", ha="center", va="bottom", fontsize=8)
            first = label not in labelled
            labelled.add(label)
            ax.bar(i + dx, w, width, color=color, label=f"{label}: written" if first else None)
            ax.bar(i + dx, r, width, bottom=w, color=color, alpha=0.55, hatch="//",
                   label=f"{label}: read" if first else None)  # fmt: skip
    ax.set_xticks(range(len(budgets)), [fmt_bytes(b["sram"]) for b in budgets])
    ax.set_xlabel("on-chip memory (SRAM budget)")
    ax.set_ylabel("off-chip traffic (KiB)")
    ax.set_title(f"Off-chip traffic: {title}")
    ax.grid(axis="y", alpha=0.3)
    if labelled:
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
