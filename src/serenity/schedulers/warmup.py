"""``python -m serenity.schedulers.warmup``: compile the search kernels before their first use.

numba compiles a kernel the first time it is called and caches the machine code (``cache=True``:
in ``__pycache__`` beside the sources, or under ``NUMBA_CACHE_DIR``); later processes only load
it. Three kernels are compiled: the scheduler's best-first search on one state word
(:mod:`.search_jit`) and on several (:mod:`.search_wide`), and the arena planner's placement
search (:mod:`serenity.planning.exact_search`). The Makefile runs this module after installing
(it also writes the package's bytecode), so that ``make demo`` and ``make test`` start warm; run
again, it only loads the cache.

Even loaded from the cache the kernels cost a process about 0.5 s (importing numba, setting up
its compiler's tables), more than most searches take in pure Python. :func:`python_budget` keeps
the account :func:`serenity.schedulers.dp.search` decides by: the pure-Python search until the
process has spent about that much in it, the kernels from then on.

Compiling takes seconds, so when it happens on first use anyway (a plain ``pip install``, or
the kernels' sources changed since the cache was written) :func:`announce_compiles` says so on
stderr, one line per kernel. It listens to numba's ``numba:compile`` event, which numba raises
only on a cache miss, so a warm run prints nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

#: Kernel module -> what the progress line calls it, and the seconds a cold compile of it takes
#: on one core of the development machine (measured with an empty ``NUMBA_CACHE_DIR``).
KNOWN = {
    "serenity.schedulers.search_jit": ("the search kernel", 4),
    "serenity.schedulers.search_wide": ("the search kernel for wide graphs", 6),
    "serenity.planning.exact_search": ("the arena planner's search", 3),
}

#: Stored states the pure-Python search may spend in one process before the compiled kernels
#: take over (at about 6 µs a state, what importing numba and loading them costs), and per search
#: once numba is imported (below this, calling a kernel costs more than it saves).
PYTHON_STATES, PYTHON_STATES_LOADED = 50_000, 100

_listening = False
_python_stored = 0


def python_budget() -> int:
    """Stored states the next pure-Python search may use before a kernel takes over
    (:func:`serenity.schedulers.dp.search`): what is left of :data:`PYTHON_STATES` in this
    process, or :data:`PYTHON_STATES_LOADED` once numba is imported, when the kernels cost
    little more than their call. This is the ski-rental rule: a process that never needs a big
    search never pays for the kernels, and one that does pays at most twice what it must."""
    if "numba" in sys.modules:
        return PYTHON_STATES_LOADED
    return max(PYTHON_STATES_LOADED, PYTHON_STATES - _python_stored)


def spent_in_python(stored: int) -> None:
    """Count ``stored`` states of a pure-Python search against :func:`python_budget`."""
    global _python_stored
    _python_stored += stored


def progress_line(module: str) -> str:
    """The line printed before a kernel defined in ``module`` compiles.

    >>> progress_line("serenity.schedulers.search_jit")
    'serenity: compiling the search kernel (first run only, ~4 s)...'
    """
    what, seconds = KNOWN.get(module, (f"the kernels of {module}", None))
    about = f", ~{seconds} s" if seconds else ""
    return f"serenity: compiling {what} (first run only{about})..."


def _kernel_module(dispatcher: Any) -> str | None:
    """The module of a compiling serenity kernel, or ``None`` for anything else (numba's own
    code; ``objmode`` blocks, compiled again in every process)."""
    if type(dispatcher).__name__ != "CPUDispatcher":
        return None
    module = getattr(getattr(dispatcher, "py_func", None), "__module__", None) or ""
    return module if module.startswith("serenity.") else None


def announce_compiles() -> None:
    """From now on, print :func:`progress_line` on stderr when numba starts compiling one of our
    kernels (a cache miss: numba raises ``numba:compile`` only then). The helpers a kernel
    compiles along the way are not announced separately. Imports numba: call it only where a
    kernel is about to run. Idempotent; does nothing without numba."""
    global _listening
    if _listening:
        return
    try:
        from numba.core import event
    except ImportError:  # pragma: no cover - exercised only without numba
        return

    class _Listener(event.Listener):  # type: ignore[misc]
        depth = 0  # compiles under way: numba compiles a kernel's callees inside its compile

        def on_start(self, ev: Any) -> None:
            module = _kernel_module((ev.data or {}).get("dispatcher"))
            if module is not None and self.depth == 0:
                sys.stderr.write(progress_line(module) + "\n")
                sys.stderr.flush()
            self.depth += 1

        def on_end(self, ev: Any) -> None:
            self.depth -= 1

    event.register("numba:compile", _Listener())
    _listening = True


def _fork_join(width: int) -> None:
    """The scheduler's search, compiled, on ``width`` parallel ops between a fork and a join:
    one item each (unfused), so 3 items take the one-word kernel and 70 the wide one."""
    from serenity.ir import Graph, Op, Tensor
    from serenity.schedulers.dp import search
    from serenity.schedulers.reduce import build_items

    ops = [Op(f"b{i}", "Relu", ("x",), (f"t{i}",)) for i in range(width)]
    ops.append(Op("join", "Concat", tuple(f"t{i}" for i in range(width)), ("y",)))
    tensors = [Tensor("x", (1,), "int8", 1), Tensor("y", (1,), "int8", width)]
    tensors += [Tensor(f"t{i}", (1,), "int8", 1 + i % 3) for i in range(width)]
    items = build_items(Graph(f"fork{width}", ops, tensors, ["x"], ["y"]).dense, fuse=False)
    search(items, ub=1 << 40, lb=0, time_limit=None, max_states=1000, compiled=True)


def _placement() -> None:
    """One decision of the arena planner's search at the peak (as ``plan_exact`` makes when its
    greedy placement misses the peak)."""
    from serenity.planning.buffers import Buffer
    from serenity.planning.exact import decide, split

    buffers = [Buffer("a", 0, 2, 4), Buffer("b", 1, 3, 4), Buffer("c", 2, 4, 4), Buffer("d", 0, 4, 2)]
    part = split(buffers, 2)[0]
    decide(part, part.peak, None, {})


#: The compiled kernels, by name, each with a tiny run that compiles it.
_RUNS: dict[str, Callable[[], None]] = {
    "search_jit": lambda: _fork_join(3),
    "search_wide": lambda: _fork_join(70),
    "exact_search": _placement,
}
KERNELS = tuple(_RUNS)


def warm_up(kernels: Sequence[str] = KERNELS) -> dict[str, float]:
    """Run each kernel once on a tiny problem, so that numba compiles (or loads) and caches it.

    Args:
        kernels: Names from :data:`KERNELS`.

    Returns:
        Seconds per kernel, by name; empty without numba.
    """
    from importlib.util import find_spec

    if find_spec("numba") is None:
        return {}
    announce_compiles()
    seconds: dict[str, float] = {}
    for name in kernels:
        t0 = time.perf_counter()
        _RUNS[name]()
        seconds[name] = time.perf_counter() - t0
    return seconds


def byte_compile() -> None:
    """Write the bytecode of every module of the package, as an install from a wheel does (an
    editable install does not, and ``PYTHONDONTWRITEBYTECODE`` stops Python from writing it on
    import, so every run would compile the sources again)."""
    import compileall
    from pathlib import Path

    compileall.compile_dir(Path(__file__).resolve().parents[1], quiet=1)


def main() -> int:
    """Write the package's bytecode, warm the kernels, and print one line saying how long it took."""
    t0 = time.perf_counter()
    byte_compile()
    done = warm_up()
    if not done:
        print("serenity: numba is not installed; the pure-Python searches will be used")
        return 0
    each = ", ".join(f"{k} {v:.1f} s" for k, v in done.items())
    print(f"serenity: search kernels ready in {time.perf_counter() - t0:.1f} s ({each})")
    return 0


if __name__ == "__main__":
    # Through the package's module, not ``__main__``: ``dp.search`` imports this module by its
    # name, and one listener (one set of announced families) must serve both.
    from serenity.schedulers.warmup import main as _main

    sys.exit(_main())
