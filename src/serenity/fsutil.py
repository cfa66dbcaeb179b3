"""Safe file output: check a path before any work, write to a temporary file beside it, rename.

Temporary names are short (``.srn-XXXXXXXX.tmp``) so that any legal output name stays legal
while it is being written; they start with a dot and are removed on every failure, Ctrl-C
included, so nothing is left behind.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from serenity.errors import SerenityError

_TMP_PREFIX, _TMP_SUFFIX = ".srn-", ".tmp"


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name the same file (resolved paths, or one inode if both exist)."""
    try:
        if Path(a).resolve() == Path(b).resolve():
            return True
    except (OSError, RuntimeError):  # a symlink loop: compare inodes below
        pass
    try:
        return Path(a).exists() and Path(b).exists() and os.path.samefile(a, b)
    except OSError:
        return False


def refuse_overwrite(src: Path, dst: Path, *, in_place: bool = False) -> None:
    """Refuse to write ``dst`` over the input ``src`` unless ``in_place`` is set.

    Raises:
        SerenityError: ``dst`` is the same file as ``src``.
    """
    if not in_place and same_file(src, dst):
        raise SerenityError(f"{dst}: output would overwrite the input model; pass --in-place to allow it")


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def check_writable(path: Path, option: str = "output") -> None:
    """Check, before any work, that a new file can be written at ``path``.

    Raises:
        SerenityError: ``path`` is a directory, its folder is missing or not a folder, its name
            is too long for the file system, or the folder refuses new files.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        if not parent.is_dir():
            raise SerenityError(f"{path}: {option} folder {parent} does not exist")
        if len(os.fsencode(path.name)) > _name_max(parent):
            raise SerenityError(f"{path}: {option} file name is longer than the file system allows")
        if path.is_dir():
            raise SerenityError(f"{path}: {option} is a directory; give a file name")
        if path.exists() and not path.is_file():
            raise SerenityError(f"{path}: {option} exists and is not a regular file")
        fd, probe = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX, dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise SerenityError(f"{path}: cannot write {option} in {parent}: {e.strerror or e}") from e


def _umask_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def staged_path(dst: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dst`` and remove it if the block fails; the caller renames
    it with :func:`commit` (so several files can appear together, in a chosen order).

    Raises:
        SerenityError: the folder is missing or refuses new files.
    """
    dst = Path(dst)
    parent = dst.parent if str(dst.parent) else Path(".")
    if not parent.is_dir():
        raise SerenityError(f"{dst}: output folder {parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX, dir=parent)
    except OSError as e:
        raise SerenityError(f"{dst}: cannot write in {parent}: {e.strerror or e}") from e
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def commit(tmp: Path, dst: Path) -> None:
    """Give ``tmp`` the mode a plain ``open()`` would (mkstemp makes 0600) and rename it onto
    ``dst``; on failure ``tmp`` is removed and ``dst`` untouched.

    Raises:
        SerenityError: the rename failed (``dst`` became a directory, the disk filled...).
    """
    try:
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, dst)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        why = "is a directory" if e.errno == errno.EISDIR else (e.strerror or str(e))
        raise SerenityError(f"{dst}: cannot write: {why}") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(dst: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dst``; rename it onto ``dst`` only if the block succeeds.

    On any exception (Ctrl-C included) the temporary file is removed and ``dst`` is untouched.
    """
    with staged_path(dst) as tmp:
        try:
            yield tmp
        except OSError as e:
            raise SerenityError(f"{dst}: cannot write: {e.strerror or e}") from e
        commit(tmp, Path(dst))


def atomic_write_bytes(dst: Path, data: bytes) -> None:
    """Write ``data`` to ``dst`` through :func:`atomic_path`."""
    with atomic_path(dst) as tmp:
        tmp.write_bytes(data)
