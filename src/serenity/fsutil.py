"""Safe file output: write to a temporary file in the target folder, then rename over."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from serenity.errors import SerenityError


def refuse_overwrite(src: Path, dst: Path, *, in_place: bool = False) -> None:
    """Refuse to write ``dst`` over the input ``src`` unless ``in_place`` is set.

    Raises:
        SerenityError: ``dst`` is the same file as ``src``.
    """
    if in_place:
        return
    same = dst.resolve() == src.resolve() or (dst.exists() and os.path.samefile(src, dst))
    if same:
        raise SerenityError(f"{dst}: output would overwrite the input model; pass --in-place to allow it")


@contextmanager
def atomic_path(dst: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dst``; rename it onto ``dst`` only if the block succeeds.

    On any exception the temporary file is removed and ``dst`` is untouched.
    """
    dst = Path(dst)
    parent = dst.parent if str(dst.parent) else Path(".")
    if not parent.is_dir():
        raise SerenityError(f"{dst}: output folder {parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 less umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, dst)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(dst: Path, data: bytes) -> None:
    """Write ``data`` to ``dst`` through :func:`atomic_path`."""
    with atomic_path(dst) as tmp:
        tmp.write_bytes(data)
