"""``python -m serenity``: the command line (see :mod:`serenity._entry`)."""

from serenity._entry import run

if __name__ == "__main__":
    run()
