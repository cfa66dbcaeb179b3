"""``serenity zoo list`` and ``serenity zoo export NAME -o FILE``: the built-in networks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from serenity.commands.common import seed


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``zoo`` command and its ``list`` / ``export`` actions."""
    p = subparsers.add_parser(
        "zoo",
        help="list or export the built-in irregularly wired networks",
        description="Irregularly wired networks (DARTS, NASNet-A, AmoebaNet-A, RandWire, SwiftNet, "
        "HRNet, NAS-FPN) and two regular controls, generated as runnable float32 ONNX "
        "models with seeded random weights.",
    )
    sub = p.add_subparsers(dest="zoo_action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="list the networks with their family, cells and op count")
    ls.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ls.set_defaults(func=run)
    ex = sub.add_parser("export", help="write one network as an ONNX file")
    ex.add_argument("name", help="a name from 'serenity zoo list'")
    ex.add_argument("-o", "--output", required=True, metavar="FILE.onnx", help="output file")
    ex.add_argument("--seed", type=seed, default=0, help="seed of the random weights (default 0)")
    ex.add_argument("--json", action="store_true", help="print one JSON object instead of a line")
    ex.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``zoo list`` or ``zoo export``; returns the exit code.

    Raises:
        UnknownModelError: ``export`` of a name not in the zoo.
        SerenityError: the output is not a ``.onnx`` path or its folder does not exist.
    """
    from rich.console import Console
    from rich.table import Table

    from serenity import zoo
    from serenity.commands.common import emit_json, guard_outputs
    from serenity.errors import SerenityError
    from serenity.fsutil import atomic_write_bytes

    if args.zoo_action == "list":
        entries = [zoo.info(n) for n in zoo.names()]
        if args.json:
            emit_json(
                {
                    "networks": [
                        {"name": e.name, "family": e.family, "cells": e.cells, "ops": e.ops,
                         "whole_network": e.whole, "description": e.description}
                        for e in entries
                    ]
                }
            )  # fmt: skip
            return 0
        t = Table(title="Zoo (cells: cells, stages or blocks of the network)", title_justify="left")
        for col, justify in (("name", "left"), ("family", "left"), ("cells", "right"), ("ops", "right")):
            t.add_column(col, justify=justify)  # type: ignore[arg-type]
        t.add_column("description", justify="left")
        for e in entries:
            t.add_row(e.name, e.family, str(e.cells), str(e.ops), e.description)
        Console(file=sys.stdout, width=max(120, Console().width)).print(t)
        return 0
    out = Path(args.output)
    if out.suffix.lower() != ".onnx":
        raise SerenityError(f"{out}: zoo models are ONNX; give an output name ending in .onnx")
    guard_outputs([("-o", out)], [])
    model = zoo.build(args.name, seed=args.seed)
    data = model.SerializeToString()
    atomic_write_bytes(out, data)
    if args.json:
        emit_json({"name": args.name, "output": str(out), "ops": len(model.graph.node), "bytes": len(data)})
    else:
        print(f"{args.name}: {len(model.graph.node)} ops, {len(data) / 1e6:.1f} MB written to {out}")
    return 0
