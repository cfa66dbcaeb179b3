"""The closing lines every benchmark prints: each missed target, then the verdict."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console


def verdict(console: Console, misses: Sequence[str]) -> int:
    """Print one ``MISS`` line per missed target, or ``all targets met``; return the exit code."""
    for m in misses:
        console.print(f"[red]MISS[/red] {m}")
    if not misses:
        console.print("all targets met")
    return 1 if misses else 0
