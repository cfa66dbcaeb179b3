"""The ``serenity`` program's first code: Ctrl-C is handled from the first instruction on.

Until the command's own handling is in place (:func:`serenity.cli.main`), Ctrl-C prints
``serenity: interrupted`` and exits 130 at once: nothing has been written yet, so there is
nothing to clean up, and Python's import machinery gets no chance to print a traceback.
"""

from __future__ import annotations

import os
import signal


def _quit(signum: int, frame: object) -> None:
    os.write(2, b"serenity: interrupted\n")
    os._exit(130)


def run() -> None:
    """The console script: install the start-up Ctrl-C handler, then run the command line."""
    signal.signal(signal.SIGINT, _quit)
    from serenity.cli import entry

    entry()
