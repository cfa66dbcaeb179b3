"""minimalloc's CSV format for buffers, and for plans.

Moffitt's MiniMalloc (ASPLOS 2024, google/minimalloc) reads one buffer a row under the header
``id,lower,upper,size``, alive over the half-open interval ``[lower, upper)``, and writes its
solution as the same rows with an ``offset`` column added. :func:`read_csv` and :func:`write_csv`
speak that format, so an instance moves between the two tools unchanged. Columns may come in any
order and extra columns (minimalloc's ``gaps``, or an ``offset`` already there) are ignored.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from serenity.errors import ModelFormatError, SerenityError
from serenity.planning.buffers import Buffer

#: The columns every instance has, in minimalloc's order.
COLUMNS = ("id", "lower", "upper", "size")


def read_csv(path: str | Path) -> list[Buffer]:
    """The buffers of a minimalloc CSV file, in row order.

    Args:
        path: The file.

    Returns:
        One :class:`Buffer` per row.

    Raises:
        ModelFormatError: the file is missing, empty or lacks a column, or a row has a field that
            is not an integer, a negative size, ``upper <= lower`` or an id seen before; the one
            line names the file, the row (its line number) and the problem.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.csv"
        >>> _ = p.write_text("id,lower,upper,size\\nb0,0,3,4\\nb1,3,5,4\\n")
        >>> read_csv(p)
        [Buffer(id='b0', lower=0, upper=3, size=4), Buffer(id='b1', lower=3, upper=5, size=4)]
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{path}: cannot read the file ({e})") from e
    if not text.strip():
        raise ModelFormatError(f"{path}: empty file (expected the header {','.join(COLUMNS)})")
    rows = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(rows)]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise ModelFormatError(
            f"{path}: row 1: missing column(s) {', '.join(missing)} (header is {','.join(header)}; "
            f"expected {','.join(COLUMNS)})"
        )
    where = {c: header.index(c) for c in COLUMNS}
    seen: dict[str, int] = {}
    out: list[Buffer] = []
    for row in rows:
        line = rows.line_num
        if not any(f.strip() for f in row):
            continue  # a blank line
        if len(row) < len(header):
            raise ModelFormatError(f"{path}: row {line}: {len(row)} fields, the header has {len(header)}")
        ident = row[where["id"]].strip()
        values: dict[str, int] = {}
        for c in COLUMNS[1:]:
            field = row[where[c]].strip()
            try:
                values[c] = int(field)
            except ValueError:
                raise ModelFormatError(f"{path}: row {line}: {c} '{field}' is not an integer") from None
        if values["size"] < 0:
            raise ModelFormatError(f"{path}: row {line}: negative size {values['size']}")
        if values["upper"] <= values["lower"]:
            raise ModelFormatError(
                f"{path}: row {line}: upper {values['upper']} <= lower {values['lower']} "
                "(lifetimes are half-open [lower, upper))"
            )
        if ident in seen:
            raise ModelFormatError(f"{path}: row {line}: duplicate id '{ident}' (first on row {seen[ident]})")
        seen[ident] = line
        out.append(Buffer(ident, values["lower"], values["upper"], values["size"]))
    return out


def write_csv(path: str | Path, buffers: Sequence[Buffer], offsets: Sequence[int] | None = None) -> None:
    """Write ``buffers`` as a minimalloc CSV, with an ``offset`` column when ``offsets`` is given.

    Args:
        path: The file to write (replaced if it exists).
        buffers: The buffers, one row each.
        offsets: The offset of each buffer (a plan's ``offsets``), or ``None`` for an instance.

    Raises:
        SerenityError: ``offsets`` does not have one entry per buffer, or the file cannot be written.
    """
    if offsets is not None and len(offsets) != len(buffers):
        raise SerenityError(f"{len(offsets)} offsets for {len(buffers)} buffers")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*COLUMNS, "offset"] if offsets is not None else COLUMNS)
    for i, b in enumerate(buffers):
        row: list[object] = [b.id, b.lower, b.upper, b.size]
        if offsets is not None:
            row.append(offsets[i])
        w.writerow(row)
    try:
        Path(path).write_text(buf.getvalue(), encoding="utf-8")
    except OSError as e:
        raise SerenityError(f"{path}: cannot write the file ({e})") from e
