"""Bench output: the CSV file, the PNG figure and the rows of the on-screen table."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from serenity.bench import BenchReport
from serenity.fsutil import atomic_path, atomic_write_bytes


def csv_text(report: BenchReport) -> str:
    """One line per network: peaks and seconds per method, the bound, the proof, the ratios.

    Columns: ``network, family, ops, element_bytes, peak_<m>..., lower_bound, proven,
    seconds_<m>..., listed_over_<m>...`` for each method ``m`` in column order.
    """
    methods = report.methods
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["network", "family", "ops", "element_bytes"]
        + [f"peak_{m}" for m in methods]
        + ["lower_bound", "proven"]
        + [f"seconds_{m}" for m in methods]
        + [f"listed_over_{m}" for m in methods if m != "listed"]
    )
    for r in report.rows:
        w.writerow(
            [r.network, r.family, r.ops, r.element_bytes]
            + [r.runs[m].peak for m in methods]
            + [r.lower_bound, int(r.proven)]
            + [f"{r.runs[m].seconds:.4f}" for m in methods]
            + [f"{r.ratio(m):.4f}" for m in methods if m != "listed"]
        )
    return buf.getvalue()


def write_csv(report: BenchReport, path: Path) -> None:
    """Write :func:`csv_text` atomically."""
    atomic_write_bytes(Path(path), csv_text(report).encode())


def write_plot(report: BenchReport, path: Path) -> None:
    """Grouped bars of peak per network and method (log scale), and scheduling time (log scale).

    Written atomically as a PNG with matplotlib's Agg backend.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows, methods = report.rows, report.methods
    x = np.arange(len(rows))
    width = 0.8 / max(1, len(methods))
    fig, (ax_peak, ax_time) = plt.subplots(
        2, 1, figsize=(max(8.0, 0.6 * len(rows) * max(1, len(methods)) / 3), 8), sharex=True
    )
    for k, m in enumerate(methods):
        offset = (k - (len(methods) - 1) / 2) * width
        peaks = [r.runs[m].peak / 1024 for r in rows]
        secs = [max(r.runs[m].seconds, 1e-5) for r in rows]
        ax_peak.bar(x + offset, peaks, width, label=m)
        ax_time.bar(x + offset, secs, width, label=m)
    bounds = [r.lower_bound / 1024 for r in rows]
    ax_peak.scatter(x, bounds, marker="_", s=200, color="black", zorder=3, label="lower bound")
    ax_peak.set_yscale("log")
    eb = rows[0].element_bytes if rows else 4
    ax_peak.set_ylabel(f"peak activation memory (KiB, {eb} B/element)")
    ax_peak.legend(ncol=min(4, len(methods) + 1), fontsize="small")
    ratio = ", ".join(f"{m} {v:.2f}×" for m, v in report.vs_listed.items())
    ax_peak.set_title(f"Peak by order; geomean listed/method: {ratio}", fontsize="small")
    ax_time.set_yscale("log")
    ax_time.set_ylabel("scheduling time (s)")
    ax_time.set_xticks(x)
    ax_time.set_xticklabels([r.network for r in rows], rotation=60, ha="right", fontsize="small")
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def table_rows(report: BenchReport) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of the on-screen table.

    Peaks and the bound are in KiB; ``*`` marks a peak proven optimal; ``listed/best`` is how much
    lower the best method goes than the framework's order; ``s`` sums the methods' seconds.
    """
    methods = report.methods
    cols = ["network", "ops", *methods, "bound", "proven", "listed/best", "s"]
    out = []
    for r in report.rows:
        cells = [r.network, str(r.ops)]
        cells += [f"{r.runs[m].peak / 1024:.1f}" + ("*" if r.runs[m].proven else "") for m in methods]
        cells += [
            f"{r.lower_bound / 1024:.1f}",
            "yes" if r.proven else "no",
            f"{r.ratio(r.best.method):.2f}×",
        ]
        cells.append(f"{sum(run.seconds for run in r.runs.values()):.2f}")
        out.append(cells)
    return cols, out
