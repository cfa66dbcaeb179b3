"""What every subcommand shares: option validation, JSON output, and the output-path guard.

Every check here runs before any work, so a bad option or output path costs nothing and loses
nothing: each raises :class:`~serenity.errors.SerenityError` (exit 2, one line).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from serenity.errors import SerenityError

#: The largest dimension ``--dim`` accepts: ONNX stores dimensions as int64.
MAX_DIM = 2**62


def parse_dims(items: Sequence[str] | None) -> dict[str, int]:
    """``["N=1", "seq=128"]`` -> ``{"N": 1, "seq": 128}``.

    >>> parse_dims(["batch=1"])
    {'batch': 1}

    Raises:
        SerenityError: an item is not ``NAME=VALUE`` with ``0 < VALUE <= 2**62``.
    """
    dims: dict[str, int] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name or not value.isascii() or not value.isdigit() or not 0 < int(value) <= MAX_DIM:
            raise SerenityError(f"--dim {item!r}: expected NAME=VALUE with an integer VALUE in 1..2^62")
        dims[name] = int(value)
    return dims


def _non_negative(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative, finite {what}, got {text!r}")
    return value


def duration(text: str) -> float:
    """argparse type: a finite, non-negative number of seconds (0: return the first answer)."""
    return _non_negative(text, "number of seconds")


def tolerance(text: str) -> float:
    """argparse type: a finite, non-negative number (an output tolerance)."""
    return _non_negative(text, "number")


def check_output(src: Path, dst: Path, *, embed_plan: bool = False, planner: str | None = None) -> None:
    """Before any work: OUT has MODEL's format, ``--embed-plan`` is for ``.tflite``, and
    ``planner`` (when one will be used) is a known arena planner.

    Raises:
        SerenityError: naming the option or file.
    """
    from serenity.formats import format_of, output_format
    from serenity.planning import PLANNERS

    output_format(src, dst)
    if embed_plan and format_of(src) != "tflite":
        raise SerenityError(
            f"{src}: --embed-plan writes TFLite Micro's OfflineMemoryAllocation; .tflite only"
        )
    if planner is not None and planner not in PLANNERS:
        raise SerenityError(f"--planner: unknown planner '{planner}' (known: {', '.join(PLANNERS)})")


def _int_in(text: str, lo: int, hi: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    return _int_in(text, 1, 2**63 - 1, "a positive integer")


def seed(text: str) -> int:
    """argparse type: a seed for numpy's generators, ``0 <= seed < 2**63``."""
    return _int_in(text, 0, 2**63 - 1, "an integer in 0..2^63-1")


def add_common(p: argparse.ArgumentParser, *, dims: bool = True) -> None:
    """``--json`` and, for commands that load models, ``--dim``."""
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    if dims:
        p.add_argument(
            "--dim",
            action="append",
            metavar="NAME=VALUE",
            help="value for a symbolic dimension (repeatable), e.g. --dim batch=1",
        )


def emit_json(obj: Any) -> None:
    """Print one JSON object on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def methods(spec: str | None) -> list[str]:
    """``"bfs,greedy"`` or ``"all"`` -> registered method names.

    Raises:
        SerenityError: a name is not a registered method.
    """
    from serenity.schedulers import SCHEDULERS

    if not spec:
        return []
    if spec == "all":
        # Every method of the portfolio; the ILP repeats the exact answer more slowly (and needs
        # the [ilp] extra): name it to run it.
        from serenity.schedulers import NOT_IN_PORTFOLIO

        return [m for m in SCHEDULERS if m not in NOT_IN_PORTFOLIO]
    names = [m.strip() for m in spec.split(",") if m.strip()]
    for m in names:
        if m not in SCHEDULERS and m != "best":
            raise SerenityError(f"unknown method '{m}' (known: best, {', '.join(SCHEDULERS)})")
    return names


class Deadline:
    """The time left of a command's ``--time-limit``, counted from when the command started.

    Loading counts against the limit, so a limit covers the whole command; what is left goes to
    the search, which returns its best order when it runs out.
    """

    def __init__(self, limit: float | None, start: float | None = None) -> None:
        self.limit = limit
        self.start = time.perf_counter() if start is None else start

    def left(self) -> float | None:
        """Seconds left (``None``: no limit; never below zero)."""
        if self.limit is None:
            return None
        return max(0.0, self.limit - (time.perf_counter() - self.start))


def guard_outputs(outputs: Iterable[tuple[str, str | Path | None]], inputs: Iterable[Path]) -> list[Path]:
    """Check every output path before any work; return them in order (``None`` entries dropped).

    Each output must not be an input (a model file or one of its external-data files), nor
    another output, nor a directory; its folder must exist and accept a new file (probed by
    creating and removing one, which catches read-only mounts and ``/proc`` even for root), and
    its name must fit the file system's limit.

    Args:
        outputs: ``(option, path)`` pairs, e.g. ``("-o", "out.onnx")``, ``("--plot", None)``.
        inputs: Files that must never be written: the models and their data.

    Raises:
        SerenityError: naming the option, the path and the problem.
    """
    from serenity.fsutil import check_writable, same_file

    protected = [Path(p) for p in inputs]
    seen: list[tuple[str, Path]] = []
    for option, raw in outputs:
        if raw is None or raw == "":
            continue
        path = Path(raw)
        for p in protected:
            if same_file(path, p):
                raise SerenityError(f"{path}: {option} would overwrite the input file {p}; refused")
        for other_option, other in seen:
            if same_file(path, other):
                raise SerenityError(f"{path}: {option} and {other_option} name the same file")
        check_writable(path, option)
        seen.append((option, path))
    return [p for _, p in seen]


#: Buffer alignment of each format's runtime: TensorFlow Lite Micro rounds every buffer up to
#: 16 bytes (``MicroArenaBufferAlignment()``); ONNX and JSON graphs keep exact sizes unless asked.
DEFAULT_ALIGNMENT = {"tflite": 16, "onnx": 1, "json": 1}


def add_alignment(p: argparse.ArgumentParser) -> None:
    """``--align N``: the byte alignment every activation buffer is rounded up to."""
    p.add_argument(
        "--align",
        type=positive_int,
        metavar="N",
        help="round every activation up to N bytes (default: 16 for .tflite, as TFLite Micro "
        "allocates; 1 for .onnx and .json)",
    )


def alignment_for(model: Any, requested: int | None) -> int:
    """The alignment to account ``model``'s activations at: ``--align`` if given, else its
    runtime's (:data:`DEFAULT_ALIGNMENT`)."""
    if requested is not None:
        return int(requested)
    return DEFAULT_ALIGNMENT.get(model.format, 1)


def add_memory_model(p: argparse.ArgumentParser) -> None:
    """``--memory-model tflm|inplace``: how activation bytes are counted (:mod:`serenity.memory`)."""
    from serenity.memory import MEMORY_MODELS

    p.add_argument(
        "--memory-model",
        choices=MEMORY_MODELS,
        default="tflm",
        help="tflm (default): every output gets its own bytes, as TensorFlow Lite Micro plans; "
        "inplace: an element-wise or reshape-like op may write over an input of the same size "
        "that dies at it, as HMCOS and several compilers do",
    )


_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20}


def byte_size(text: str) -> int:
    """A byte count: ``262144``, ``256K``, ``256KB``, ``256KiB``, ``1.5M`` (K = 1024 bytes)."""
    raw = text.strip()
    num = raw.rstrip("bBiIkKmM")
    unit = raw[len(num) :].upper()
    try:
        value = float(num)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or not (value > 0) or value != value or value * _UNITS[unit] > 1 << 62:
        raise argparse.ArgumentTypeError(f"'{text}' is not a byte size (e.g. 262144, 256K, 1.5M)")
    size = value * _UNITS[unit]
    if size != int(size):
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number of bytes")
    return int(size)


def byte_sizes(text: str) -> list[int]:
    """A comma-separated list of :func:`byte_size` values, e.g. ``32K,64K,128K,256K``."""
    parts = [s for s in text.split(",") if s.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("expected one or more byte sizes, e.g. 32K,64K")
    return [byte_size(s) for s in parts]


def counted(graph: Any, align: int, memory_model: str, element_size: int | None = None) -> Any:
    """``graph`` as every command counts its bytes: at ``element_size`` bytes per element when
    given (:func:`serenity.ir.with_element_size`), each activation rounded up to ``align`` bytes
    (:func:`serenity.ir.with_alignment`), in ``memory_model`` (:func:`serenity.ir.with_memory_model`)."""
    from serenity.ir import with_alignment, with_element_size, with_memory_model

    if element_size:
        graph = with_element_size(graph, element_size)
    return with_memory_model(with_alignment(graph, align), memory_model)
