"""Human output: byte sizes, rich tables and spinners on the terminal, memory-timeline plots."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

from serenity.fsutil import atomic_path
from serenity.ir import Graph
from serenity.memory import simulate
from serenity.planning.buffers import Buffer


def fmt_bytes(n: int | float) -> str:
    """``1536`` -> ``"1.5 KiB"``; exact bytes below 1 KiB.

    >>> fmt_bytes(512), fmt_bytes(1536), fmt_bytes(3 * 1024**2)
    ('512 B', '1.5 KiB', '3.0 MiB')
    """
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            break
    return f"{n:.1f} {unit}"


def table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], *, show_header: bool = True
) -> None:
    """Print a table to stdout (plain text when stdout is not a terminal)."""
    from rich.console import Console  # here, not at the top: --json never needs rich
    from rich.table import Table

    t = Table(title=title, show_header=show_header, title_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right" if show_header else "left")
    for r in rows:
        t.add_row(*r)
    Console(file=sys.stdout, width=max(100, Console().width)).print(t)


@contextmanager
def status(message: str, *, quiet: bool = False) -> Iterator[None]:
    """A spinner on stderr while a long step runs (nothing when ``quiet`` or not a terminal)."""
    if quiet:  # --json: no need to import rich at all
        yield
        return
    from rich.console import Console

    console = Console(file=sys.stderr)
    ctx = console.status(message) if console.is_terminal else nullcontext()
    with ctx:
        yield


def memory_timeline_png(
    graph: Graph, orders: Mapping[str, Sequence[int]], path: Path, *, title: str | None = None
) -> None:
    """Plot live bytes per step for each order (one line each) and write a PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=120)
    for name, order in orders.items():
        prof = simulate(graph, order)
        kib = [b / 1024 for b in prof.during]
        # One horizontal segment per step, the last one included.
        ax.step(
            range(len(kib) + 1),
            [*kib, kib[-1]] if kib else [0],
            where="post",
            label=f"{name} (peak {fmt_bytes(prof.peak)})",
        )
    ax.set_xlabel("step (op executed)")
    ax.set_ylabel("live activation memory (KiB)")
    ax.set_title(f"Memory timeline: {title or graph.name}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def arena_layout_png(
    buffers: Sequence[Buffer],
    offsets: Sequence[int],
    path: Path,
    *,
    title: str,
    peak: int,
    peak_step: int | None = None,
) -> None:
    """Draw an arena plan: time (steps) on x, offset on y, one rectangle per buffer, the line of
    the peak (no plan can go below it) and the step where it is reached; write a PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(10, 5), dpi=120)
    cmap = plt.get_cmap("tab20")
    arena = max((o + b.size for b, o in zip(buffers, offsets, strict=True)), default=0)
    steps = max((b.upper for b in buffers), default=1)
    scale, unit = (1024, "KiB") if arena >= 4096 else (1, "B")
    for i, (b, o) in enumerate(zip(buffers, offsets, strict=True)):
        if b.size == 0:
            continue
        ax.add_patch(
            Rectangle(
                (b.lower, o / scale),
                b.upper - b.lower,
                b.size / scale,
                facecolor=cmap(i % 20),
                edgecolor="black",
                linewidth=0.3,
                alpha=0.85,
            )
        )
    ax.axhline(peak / scale, color="red", linestyle="--", linewidth=1, label=f"peak {fmt_bytes(peak)}")
    if peak_step is not None and peak_step >= 0:
        ax.axvspan(peak_step, peak_step + 1, color="red", alpha=0.12, label=f"peak step {peak_step}")
    ax.set_xlim(0, steps)
    ax.set_ylim(0, max(arena, peak, 1) / scale * 1.04)
    ax.set_xlabel("step (op executed)")
    ax.set_ylabel(f"arena offset ({unit})")
    ax.set_title(f"{title}: arena {fmt_bytes(arena)}, fragmentation {fragmentation(arena, peak):.1%}")
    ax.legend(loc="upper right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def fragmentation(arena: int, peak: int) -> float:
    """Bytes the arena holds beyond the peak, as a fraction of the peak (0.0 with no peak).

    >>> fragmentation(125, 100)
    0.25
    """
    return (arena - peak) / peak if peak else 0.0
