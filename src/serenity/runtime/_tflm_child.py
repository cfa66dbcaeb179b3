"""The child process behind :mod:`serenity.runtime.tflm`; run as a script, never imported.

``python _tflm_child.py MODEL WORKDIR ARENA`` builds a TFLite Micro interpreter for ``MODEL``
with an ``ARENA``-byte arena (reporting the missing bytes if that is too small); if ``WORKDIR`` holds
``inputs.npz`` it sets the inputs, invokes once and writes ``outputs.npz``; then it prints
TFLM's allocation report. Everything it learnt goes to ``WORKDIR/report.json``.

Why a child: TFLM reports through C++ ``stderr`` (invisible to Python's ``sys.stderr``) and a
malformed model can crash the process. Here fd 2 is pointed at a file around each call, so the
parent gets TFLM's own words, and a crash only ends the child. It imports only numpy and
tflite_micro so it does not depend on how Serenity is installed.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tflite_micro.python.tflite_micro import runtime

#: TFLM's allocators say "missing: N" exactly when the arena is too small.
_TOO_SMALL = re.compile(r"missing: (\d+)")


def _captured(fn: Callable[[], Any]) -> tuple[Any, BaseException | None, str]:
    """Call ``fn`` with file descriptor 2 redirected; return its result, error and C++ stderr."""
    with tempfile.TemporaryFile() as f:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn()
        except Exception as e:  # the pybind wrapper raises RuntimeError, ValueError...
            error = e
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        return result, error, f.read().decode("utf-8", "replace")


def _classify(text: str) -> str:
    """``"unsupported"`` when TFLM has no kernel for an operator, else ``"runtime"``."""
    if "Didn't find op for" in text or "Failed to get registration" in text:
        return "unsupported"
    return "runtime"


def _interpreter(model: bytes, arena: int, report: dict[str, Any]) -> Any:
    """Build an interpreter with an ``arena``-byte arena, or record why not.

    One attempt per process: after a failed allocation TFLM's state is not to be trusted (with
    some tiny arenas it even segfaults), so the parent grows the arena and starts a new child
    when the report says ``"arena"`` and how many bytes were missing.
    """
    interp, error, text = _captured(lambda: runtime.Interpreter.from_bytes(model, arena_size=arena))
    if error is None:
        report["arena_size"] = arena
        return interp
    missing = _TOO_SMALL.search(text)
    if missing is not None:
        report.update(error="arena", missing=int(missing.group(1)), message=_summary(text, error))
    else:
        report.update(error=_classify(text), message=_summary(text, error))
    return None


def _summary(text: str, error: BaseException) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    detail = "; ".join(lines[:3]) if lines else ""
    return f"{error}: {detail}" if detail else f"{type(error).__name__}: {error}"


def main(argv: list[str]) -> int:
    model_path, workdir, arena = Path(argv[1]), Path(argv[2]), int(argv[3])
    report: dict[str, Any] = {}
    interp = _interpreter(model_path.read_bytes(), arena, report)
    if interp is not None:
        _run(interp, workdir, report)
    (workdir / "report.json").write_text(json.dumps(report))
    return 0


def _run(interp: Any, workdir: Path, report: dict[str, Any]) -> None:
    inputs_file = workdir / "inputs.npz"
    if inputs_file.exists():
        with np.load(inputs_file) as npz:
            inputs = [npz[f"arr_{i}"] for i in range(len(npz.files))]

        def invoke() -> list[np.ndarray]:
            for i, x in enumerate(inputs):
                interp.set_input(x, i)
            interp.invoke()
            outs = []
            i = 0
            while True:  # the wrapper exposes no output count: read until it refuses
                try:
                    outs.append(np.array(interp.get_output(i), copy=True))
                except IndexError:
                    return outs
                i += 1

        outs, error, text = _captured(invoke)
        if error is not None:
            report.update(error=_classify(text), message=_summary(text, error))
            return
        np.savez(workdir / "outputs.npz", *outs)
    _, error, text = _captured(interp.print_allocations)
    report["allocations"] = text


if __name__ == "__main__":
    sys.exit(main(sys.argv))
