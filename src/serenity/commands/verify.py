"""``serenity verify ORIGINAL REORDERED``: same model, valid order, identical outputs in a real
runtime."""

from __future__ import annotations

import argparse
from pathlib import Path

from serenity.commands.common import add_common, emit_json, parse_dims, seed


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``verify`` command."""
    p = subparsers.add_parser(
        "verify",
        help="check a reordered model against the original in a real runtime",
        description="Check REORDERED is ORIGINAL with only its op order changed, run both on "
        "the same seeded random inputs (onnxruntime or TFLite Micro) and compare "
        "outputs bit for bit. Exit 0 only if identical.",
    )
    p.add_argument("original")
    p.add_argument("reordered")
    p.add_argument("--seed", type=seed, default=0, help="seed of the random inputs (default 0)")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``verify``; returns 0 when the check passed, 1 when it failed."""
    from serenity.report import fmt_bytes, table
    from serenity.verify import verify

    rep = verify(Path(args.original), Path(args.reordered), seed=args.seed, dims=parse_dims(args.dim))
    if args.json:
        emit_json(rep.as_dict())
        return 0 if rep.ok else 1
    ident = {True: "identical", False: "DIFFERENT", None: "not run (no runtime for this format)"}
    table(
        "Verify",
        ["", ""],
        [
            ("structure", "same model" if rep.structure_equal else "DIFFERENT"),
            ("order", "topological" if rep.order_valid else "INVALID"),
            ("runtime", rep.runtime),
            ("outputs", f"{rep.outputs} {ident[rep.outputs_identical]}"),
            ("peak", f"{_peak(rep.peak_original)} -> {_peak(rep.peak_reordered)}"),
            *(
                [("TFLM arena", f"{fmt_bytes(rep.arena_original)} -> {fmt_bytes(rep.arena_reordered)}")]
                if rep.arena_original is not None and rep.arena_reordered is not None
                else []
            ),
            *(
                [
                    (
                        "arena plan",
                        f"{fmt_bytes(rep.arena_planned)} embedded, "
                        + ("honoured by TFLite Micro" if rep.plan_honoured else "NOT honoured"),
                    )
                ]
                if rep.arena_planned is not None
                else []
            ),
            ("verdict", "OK" if rep.ok else "FAILED: " + "; ".join(rep.problems)),
        ],
        show_header=False,
    )
    return 0 if rep.ok else 1


def _peak(n: int | None) -> str:
    from serenity.report import fmt_bytes

    return "n/a" if n is None else fmt_bytes(n)
