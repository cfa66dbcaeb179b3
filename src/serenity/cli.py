"""The ``serenity`` command line: builds the parser from ``serenity.commands`` and owns the one
error path.

Exit codes: 0 success, 1 verification failed, 2 bad input or usage (one line on stderr naming the
file or the option and the problem), 3 an internal error (a bug: rerun with ``SERENITY_DEBUG=1``),
130 interrupted (Ctrl-C; partial outputs are removed). ``--json`` prints exactly one JSON object on
stdout. Each subcommand is one module of :mod:`serenity.commands` exposing ``register``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

from serenity.errors import SerenityError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

#: The subcommands, in the order ``--help`` lists them (modules of :mod:`serenity.commands`).
COMMANDS = ("analyze", "schedule", "optimize", "plan", "offchip", "verify", "bench", "batch", "zoo", "report")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: the problem, then where to read more."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


class _Formatter(logging.Formatter):
    """Warnings as one line, ``serenity: warning: ...``; ``-v`` progress as ``module: ...``."""

    def format(self, record: logging.LogRecord) -> str:
        text = " ".join(record.getMessage().split())
        if record.levelno >= logging.WARNING:
            return f"serenity: {record.levelname.lower()}: {text}"
        return f"{record.name}: {text}"


def _log_to_stderr(*, verbose: bool) -> None:
    """Send the package's log records to stderr, one line each (once per process)."""
    log = logging.getLogger("serenity")
    log.setLevel(logging.INFO if verbose else logging.WARNING)
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        log.addHandler(_StderrHandler())


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at each record (a StreamHandler keeps the first)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(_Formatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand of :data:`COMMANDS` registered."""
    from serenity import __version__

    parser = _Parser(
        prog="serenity",
        description="Memory-optimal scheduling of irregularly wired neural networks.",
    )
    parser.add_argument("--version", action="version", version=f"serenity {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each scheduler's result")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"serenity.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``serenity`` command; returns the exit code."""
    try:
        if threading.current_thread() is threading.main_thread():
            # From here on Ctrl-C raises KeyboardInterrupt, so partial outputs are removed.
            signal.signal(signal.SIGINT, signal.default_int_handler)
        args = build_parser().parse_args(argv)
        _log_to_stderr(verbose=args.verbose)
        return int(args.func(args))
    except KeyboardInterrupt:
        print("serenity: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as e:  # argparse: --help, --version, usage errors
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    except SerenityError as e:
        print(f"serenity: error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print("serenity: error: out of memory; try --time-limit or a smaller model", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:
        if os.environ.get("SERENITY_DEBUG"):
            raise
        text = " ".join(str(e).split())[:300]
        hint = "rerun with SERENITY_DEBUG=1 and report it"
        print(f"serenity: internal error ({type(e).__name__}: {text}); {hint}", file=sys.stderr)
        return EXIT_INTERNAL


def entry() -> NoReturn:
    """Run :func:`main` as a program and exit with its code.

    After Ctrl-C the process ends with ``os._exit(130)``: Python would otherwise re-raise SIGINT
    at exit (exit status -2) when the interrupt passed through an extension's embedded
    ``PyRun_*`` call on its way to :func:`main`'s handler, even though it was handled.
    """
    try:
        code = main()
        sys.stdout.flush()
    except KeyboardInterrupt:
        print("serenity: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except BrokenPipeError:  # `serenity ... | head`: the reader left
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_OK
    if code == EXIT_INTERRUPTED:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)
    raise SystemExit(code)


if __name__ == "__main__":
    from serenity._entry import run

    run()
