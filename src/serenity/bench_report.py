"""Bench output: the CSV file, the PNG figure and the rows of the on-screen table."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from serenity.bench import TRAFFIC_ORDERS, BenchReport
from serenity.fsutil import atomic_path, atomic_write_bytes


def csv_text(report: BenchReport) -> str:
    """One line per network: peaks and seconds per method, the bound, the proof, the ratios.

    Columns: ``network, family, ops, element_bytes, peak_<m>..., lower_bound, proven,
    seconds_<m>..., listed_over_<m>...`` for each method ``m`` in column order, then with SRAM
    budgets ``traffic_<order>_<bytes>`` for each budget and order of :data:`TRAFFIC_ORDERS`
    (empty where an op alone does not fit).
    """
    methods = report.methods
    budgets = sorted(report.traffic_vs_listed)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["network", "family", "ops", "element_bytes"]
        + [f"peak_{m}" for m in methods]
        + ["lower_bound", "proven"]
        + [f"seconds_{m}" for m in methods]
        + [f"listed_over_{m}" for m in methods if m != "listed"]
        + [f"traffic_{o}_{b}" for b in budgets for o in TRAFFIC_ORDERS]
    )
    for r in report.rows:
        w.writerow(
            [r.network, r.family, r.ops, r.element_bytes]
            + [r.runs[m].peak for m in methods]
            + [r.lower_bound, int(r.proven)]
            + [f"{r.runs[m].seconds:.4f}" for m in methods]
            + [f"{r.ratio(m):.4f}" for m in methods if m != "listed"]
            + [_cell(r.traffic.get(b, {}).get(o)) for b in budgets for o in TRAFFIC_ORDERS]
        )
    return buf.getvalue()


def write_csv(report: BenchReport, path: Path) -> None:
    """Write :func:`csv_text` atomically."""
    atomic_write_bytes(Path(path), csv_text(report).encode())


def write_plot(report: BenchReport, path: Path) -> None:
    """Three panels sharing the networks axis, one bar per method in each group.

    1. Peak activation memory (KiB, log scale), the lower bound as a black tick.
    2. The same peaks relative to the listed (framework) order, so small gains are visible.
    3. Scheduling time (seconds, log scale).

    Written atomically as a PNG with matplotlib's Agg backend.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows, methods = report.rows, report.methods
    x = np.arange(len(rows))
    width = 0.8 / max(1, len(methods))
    fig, (ax_peak, ax_rel, ax_time) = plt.subplots(
        3, 1, figsize=(max(10.0, 0.5 * len(rows) + 2), 11), sharex=True
    )
    for k, m in enumerate(methods):
        offset = (k - (len(methods) - 1) / 2) * width
        ax_peak.bar(x + offset, [r.runs[m].peak / 1024 for r in rows], width, label=m)
        ax_rel.bar(x + offset, [1 / r.ratio(m) for r in rows], width, label=m)
        ax_time.bar(x + offset, [max(r.runs[m].seconds, 1e-5) for r in rows], width, label=m)
    ax_peak.scatter(x, [r.lower_bound / 1024 for r in rows], marker="_", s=200, color="black", zorder=3,
                    label="lower bound")  # fmt: skip
    ax_peak.set_yscale("log")
    eb = rows[0].element_bytes if rows else 4
    ax_peak.set_ylabel(f"peak (KiB, {eb} B/element)")
    ax_peak.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    ratio = ", ".join(f"{m} {v:.2f}×" for m, v in report.vs_listed.items())
    ax_peak.set_title(f"Peak activation memory by order\ngeomean peak(listed)/peak(method): {ratio}",
                      fontsize="medium")  # fmt: skip
    ax_rel.axhline(1.0, color="black", linewidth=0.8)
    ax_rel.set_ylabel("peak / peak(listed)")
    ax_time.set_yscale("log")
    ax_time.set_ylabel("scheduling time (s)")
    ax_time.set_xticks(x)
    ax_time.set_xticklabels([r.network for r in rows], rotation=60, ha="right", fontsize="small")
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _op_type(peak_op: str) -> str:
    """``"name (Type)"`` -> ``"Type"``: the column stays narrow; the JSON has the name."""
    return peak_op.rsplit(" (", 1)[-1].rstrip(")") if peak_op else ""


def table_rows(report: BenchReport) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of the on-screen table.

    Peaks and the bound are in KiB; ``*`` marks a peak proven optimal; ``listed/best`` is how much
    lower the best method goes than the framework's order; ``s`` sums the methods' seconds.
    """
    methods = report.methods
    where = "optimal"
    cols = ["network", "ops", *methods, "bound", "proven", "listed/best", "optimal peaks at", "s"]
    out = []
    for r in report.rows:
        cells = [r.network, str(r.ops)]
        cells += [f"{r.runs[m].peak / 1024:.1f}" + ("*" if r.runs[m].proven else "") for m in methods]
        cells += [
            f"{r.lower_bound / 1024:.1f}",
            "yes" if r.proven else "no",
            f"{r.ratio(r.best.method):.2f}×",
            _op_type(r.runs[where].peak_op) if where in r.runs else "",
        ]
        cells.append(f"{sum(run.seconds for run in r.runs.values()):.2f}")
        out.append(cells)
    return cols, out


def _cell(v: int | None) -> str:
    return "" if v is None else str(v)


def traffic_rows(report: BenchReport) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of the off-chip table: per budget, the KiB moved per inference by the
    listed order, by the peak-optimal order and by the order chosen for that budget."""
    budgets = sorted(report.traffic_vs_listed)
    cols = ["network", "optimal peak"] + [f"{b // 1024} KiB: listed / optimal / ours" for b in budgets]
    out = []
    for r in report.rows:
        peak = r.runs["optimal"].peak if "optimal" in r.runs else r.best.peak
        out.append([r.network, f"{peak / 1024:.1f}", *(_traffic_cell(r.traffic.get(b, {})) for b in budgets)])
    return cols, out


def _traffic_cell(t: dict[str, int | None]) -> str:
    """``listed / optimal / ours`` off-chip KiB, ``0`` when nothing moves in any, ``no fit`` when
    an op alone exceeds the budget."""
    vals = [t.get(k) for k in TRAFFIC_ORDERS]
    if any(v is None for v in vals):
        return "no fit"
    if not any(vals):
        return "0"
    return " / ".join(f"{v / 1024:.1f}" for v in vals)  # type: ignore[operator]
