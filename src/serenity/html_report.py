"""One self-contained HTML page that shows where a model's activation memory goes.

The page holds the numbers of ``serenity analyze``, the memory timeline of the listed order
against the optimal one (each peak marked, the tensors live at it named with their sizes), the
arena layout of the optimal order's plan and the command that rebuilds the page. Images are PNGs
inlined as ``data:`` URIs and the style sheet is inline: the file opens anywhere, offline, with
no JavaScript. Every string that comes from the model (names of tensors, ops, the file) is
escaped with :func:`html.escape`.

The tensors live at a step are the buffers of :func:`serenity.planning.buffers_of` whose
lifetime covers it; their sizes add up to ``simulate(graph, order).during[step]`` (the one
memory model), so the list under the plot explains the peak byte for byte.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from serenity.ir import Graph
from serenity.memory import MemoryProfile, simulate
from serenity.planning.buffers import ArenaPlan, Buffer, buffers_of
from serenity.report import fmt_bytes, fragmentation


@dataclass(frozen=True, slots=True)
class LiveTensor:
    """A buffer live at a step: the tensors it holds (more than one when written over in place),
    its bytes and its lifetime (steps, both ends inclusive)."""

    names: tuple[str, ...]
    size: int
    first_step: int
    last_step: int


@dataclass(frozen=True, slots=True)
class OrderView:
    """One order as the page shows it.

    Attributes:
        label: ``"listed"`` or ``"optimal"`` (or ``"best found"`` when not proven).
        order: The op indices.
        profile: :func:`serenity.memory.simulate` of the order.
        peak_op: Name of the op that runs at the peak step (``None`` with no ops).
        live_at_peak: The tensors live at the peak step, largest first (ties by name).
    """

    label: str
    order: tuple[int, ...]
    profile: MemoryProfile
    peak_op: str | None
    live_at_peak: tuple[LiveTensor, ...]


def order_view(graph: Graph, order: Sequence[int], label: str) -> OrderView:
    """The timeline of ``order`` and the tensors live at its peak.

    Raises:
        OrderError: ``order`` is not topological.
    """
    profile = simulate(graph, order)
    step = profile.peak_step
    live: list[LiveTensor] = []
    if step >= 0:
        for b in buffers_of(graph, order):
            if b.lower <= step < b.upper and b.size > 0:
                live.append(LiveTensor(b.names, b.size, b.lower, b.upper - 1))
    live.sort(key=lambda t: (-t.size, t.names))
    peak_op = graph.ops[order[step]].name if step >= 0 else None
    return OrderView(label, tuple(order), profile, peak_op, tuple(live))


@dataclass(frozen=True, slots=True)
class PlanView:
    """An arena plan of the optimal order: its buffers, the planner's record and the peak."""

    buffers: tuple[Buffer, ...]
    plan: ArenaPlan
    peak: int
    peak_step: int


@dataclass(frozen=True, slots=True)
class ReportView:
    """Everything the page shows.

    Attributes:
        title: The model's file name.
        numbers: The figures of ``analyze`` (see :func:`summary_rows` for the keys).
        orders: The listed order (unless invalid) and the optimal one.
        plan: The arena plan of the optimal order, or ``None``.
        command: The shell command that rebuilds the page.
        version: Serenity's version.
    """

    title: str
    numbers: Mapping[str, Any]
    orders: tuple[OrderView, ...]
    plan: PlanView | None
    command: str
    version: str


def bytes_text(n: int) -> str:
    """``82944`` -> ``"82,944 B (81.0 KiB)"``; exact bytes alone below 1 KiB.

    >>> bytes_text(512), bytes_text(82944)
    ('512 B', '82,944 B (81.0 KiB)')
    """
    return f"{n:,} B" if n < 1024 else f"{n:,} B ({fmt_bytes(n)})"


def summary_rows(numbers: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The figures of ``analyze`` as (label, text) rows, unescaped.

    Keys read: model, format, ops, activation_tensors, peak_bytes, peak_op,
    listed_order_invalid, optimal_peak_bytes, optimal_method, lower_bound, op_lower_bound,
    proven_optimal, seconds, memory_model, alignment.
    """
    n = numbers
    if n["listed_order_invalid"]:
        listed = f"invalid order: {n['listed_order_invalid']}"
    else:
        listed = f"{bytes_text(n['peak_bytes'])} at op '{n['peak_op']}'"
    optimal, listed_peak = n["optimal_peak_bytes"], n["peak_bytes"]
    gain = f", listed/optimal {listed_peak / optimal:.3f}x" if optimal and listed_peak else ""
    return [
        ("model", str(n["model"])),
        ("format", str(n["format"])),
        ("ops", str(n["ops"])),
        ("activation tensors", str(n["activation_tensors"])),
        ("peak (listed order)", listed),
        ("peak (optimal order)", f"{bytes_text(optimal)} ({n['optimal_method']}{gain})"),
        ("lower bound", bytes_text(n["lower_bound"])),
        ("op lower bound", bytes_text(n["op_lower_bound"])),
        ("proven optimal", "yes" if n["proven_optimal"] else "no"),
        ("seconds (scheduling)", f"{n['seconds']:.3f}"),
        ("memory model", str(n["memory_model"])),
        ("alignment", f"{n['alignment']} B"),
    ]


def _png(fig: Any) -> bytes:
    """``fig`` as PNG bytes (no metadata: the same figure gives the same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def timeline_png(orders: Sequence[OrderView], *, title: str) -> bytes:
    """Live bytes per step of each order, one step line each, its peak marked and labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
    try:
        top = max((max(v.profile.during, default=0) for v in orders), default=0)
        scale, unit = (1024, "KiB") if top >= 4096 else (1, "B")
        for i, v in enumerate(orders):
            ys = [b / scale for b in v.profile.during]
            color = f"C{i}"
            ax.step(range(len(ys) + 1), [*ys, ys[-1]] if ys else [0], where="post", color=color,
                    label=f"{v.label} (peak {fmt_bytes(v.profile.peak)})")  # fmt: skip
            if v.profile.peak_step >= 0:
                x, y = v.profile.peak_step + 0.5, v.profile.peak / scale
                ax.plot([x], [y], marker="v", markersize=9, color=color)
                ax.annotate(f"{v.label} peak, step {v.profile.peak_step}", (x, y),
                            textcoords="offset points", xytext=(6, 6 + 12 * i), color=color)  # fmt: skip
        ax.set_ylim(0, max(top / scale, 1) * 1.15)
        ax.set_xlabel("step (op executed)")
        ax.set_ylabel(f"live activation memory ({unit})")
        ax.set_title(f"Memory timeline: {title}")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        return _png(fig)
    finally:
        plt.close(fig)


def arena_png(view: PlanView, *, title: str) -> bytes:
    """The arena layout of a plan: steps across, offsets up, one rectangle per buffer, the arena
    size (solid) and the peak (dashed, below which no plan can go), the peak step shaded.

    :func:`serenity.report.arena_layout_png` draws the same rectangles for ``plan --plot``; this
    one adds the arena line, which a plan above its peak (``tflm-greedy``) needs to be read.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(10, 5), dpi=100)
    try:
        cmap = plt.get_cmap("tab20")
        arena, peak = view.plan.arena, view.peak
        steps = max((b.upper for b in view.buffers), default=1)
        scale, unit = (1024, "KiB") if max(arena, peak) >= 4096 else (1, "B")
        for i, (b, o) in enumerate(zip(view.buffers, view.plan.offsets, strict=True)):
            if b.size:
                ax.add_patch(Rectangle((b.lower, o / scale), b.upper - b.lower, b.size / scale,
                                       facecolor=cmap(i % 20), edgecolor="black", linewidth=0.3,
                                       alpha=0.85))  # fmt: skip
        ax.axhline(arena / scale, color="black", linewidth=1.2, label=f"arena {fmt_bytes(arena)}")
        ax.axhline(peak / scale, color="red", linestyle="--", linewidth=1, label=f"peak {fmt_bytes(peak)}")
        if view.peak_step >= 0:
            ax.axvspan(view.peak_step, view.peak_step + 1, color="red", alpha=0.12,
                       label=f"peak step {view.peak_step}")  # fmt: skip
        ax.set_xlim(0, steps)
        ax.set_ylim(0, max(arena, peak, 1) / scale * 1.08)
        ax.set_xlabel("step (op executed)")
        ax.set_ylabel(f"arena offset ({unit})")
        ax.set_title(f"{title}: arena {fmt_bytes(arena)}, fragmentation {fragmentation(arena, peak):.1%}")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        fig.tight_layout()
        return _png(fig)
    finally:
        plt.close(fig)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222;
       background: #fff; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { padding: 0.2em 0.8em; border-bottom: 1px solid #eee; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #ddd; }
pre { background: #f4f4f4; padding: 0.8em; overflow-x: auto; }
footer { margin-top: 2em; color: #666; font-size: 0.9em; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _live_table(v: OrderView) -> str:
    if v.profile.peak_step < 0:
        return "<p>No ops: nothing runs.</p>"
    rows = "".join(
        f"<tr><td>{_e(' = '.join(t.names))}</td><td class=num>{_e(bytes_text(t.size))}</td>"
        f"<td class=num>{t.first_step}&ndash;{t.last_step}</td></tr>"
        for t in v.live_at_peak
    )
    total = sum(t.size for t in v.live_at_peak)
    return (
        f"<h3>Tensors live at the peak of the {_e(v.label)} order: step {v.profile.peak_step}, "
        f"op '{_e(v.peak_op)}'</h3>\n"
        "<table><tr><th>tensor</th><th>size</th><th>live (steps)</th></tr>"
        f"{rows}<tr><th>total</th><th class=num>{_e(bytes_text(total))}</th><th></th></tr></table>"
    )


def _plan_section(view: PlanView, title: str) -> str:
    p = view.plan
    rows = [
        ("planner", p.planner),
        ("buffers", str(len(view.buffers))),
        ("arena", bytes_text(p.arena)),
        ("peak (lower bound)", bytes_text(view.peak)),
        ("fragmentation", f"{fragmentation(p.arena, view.peak):.1%}"),
        ("proven smallest", "yes" if p.proven else f"no (gap {bytes_text(p.gap)})"),
        ("seconds (planning)", f"{p.seconds:.3f}"),
    ]
    return (
        "<h2>Arena layout of the optimal order</h2>\n"
        "<p>Each rectangle is one buffer: its steps across, its bytes up from its offset. The "
        "solid line is the arena's size, the dashed one the peak, below which no plan can go.</p>\n"
        f"{_img(arena_png(view, title=title), 'arena layout')}\n{_rows_table(rows)}"
    )


def _rows_table(rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def render_html(view: ReportView) -> str:
    """The page, as one HTML document (UTF-8 text, no external resources)."""
    invalid = view.numbers.get("listed_order_invalid")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Serenity report: {_e(view.title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Serenity report: {_e(view.title)}</h1>",
        "<h2>Numbers</h2>",
        _rows_table(summary_rows(view.numbers)),
        "<h2>Memory timeline</h2>",
        "<p>Bytes of activations live while each op runs, for each order; the triangle marks its peak.</p>",
    ]
    if invalid:
        parts.append(f"<p>The file's own order is not topological ({_e(invalid)}); not drawn.</p>")
    parts.append(_img(timeline_png(view.orders, title=view.title), "memory timeline"))
    parts.extend(_live_table(v) for v in view.orders)
    if view.plan is not None:
        parts.append(_plan_section(view.plan, f"{view.title} (optimal order, {view.plan.plan.planner})"))
    parts += [
        "<h2>Reproduce</h2>",
        f"<pre>{_e(view.command)}</pre>",
        f"<footer>Serenity {_e(view.version)}</footer>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
