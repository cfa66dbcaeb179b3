"""``serenity verify ORIGINAL REORDERED``: same model, valid order, identical outputs in a real
runtime."""

from __future__ import annotations

import argparse
from pathlib import Path

from serenity.commands.common import add_common, add_memory_model, emit_json, parse_dims, seed, tolerance


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``verify`` command."""
    p = subparsers.add_parser(
        "verify",
        help="check a reordered or rewritten model against the original in a real runtime",
        description="Check REORDERED is ORIGINAL with only its op order changed (or, for a "
        "graph rewritten by 'serenity optimize', the same inputs and outputs), run both on the "
        "same seeded random inputs (onnxruntime or TFLite Micro) and compare outputs: bit for "
        "bit for a reordering, within --rtol (float) for a rewritten graph. Exit 0 only if they "
        "agree.",
    )
    p.add_argument("original")
    p.add_argument("reordered")
    p.add_argument("--seed", type=seed, default=0, help="seed of the random inputs (default 0)")
    p.add_argument(
        "--rtol", type=tolerance, default=1e-5,
        help="rewritten graph: float outputs may differ by RTOL x the output's largest magnitude "
        "(default 1e-5)",
    )  # fmt: skip
    p.add_argument(
        "--atol", type=tolerance, default=0.0,
        help="rewritten graph: outputs may also differ by ATOL (e.g. 3 for an int8 model from "
        "optimize --allow-requantize; default 0)",
    )  # fmt: skip
    add_common(p)
    add_memory_model(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``verify``; returns 0 when the check passed, 1 when it failed."""
    from serenity.report import fmt_bytes, table
    from serenity.verify import verify

    rep = verify(
        Path(args.original), Path(args.reordered), seed=args.seed, dims=parse_dims(args.dim),
        rtol=args.rtol, atol=args.atol, memory_model=args.memory_model,
    )  # fmt: skip
    if args.json:
        emit_json(rep.as_dict())
        return 0 if rep.ok else 1
    ident = {True: "identical", False: "DIFFERENT", None: "not run (no runtime for this format)"}
    if rep.relation == "rewritten" and rep.outputs_identical is False and rep.ok:
        ident[False] = f"equal within tolerance (max abs diff {rep.max_abs_diff:g})"
    table(
        "Verify",
        ["", ""],
        [
            (
                "structure",
                "same model"
                if rep.structure_equal
                else "other ops, same inputs and outputs"
                if rep.relation == "rewritten"
                else "DIFFERENT",
            ),
            (
                "relation",
                "reordering: the same ops in another order"
                if rep.relation == "reordering"
                else "rewritten graph (not a reordering): same inputs and outputs, other ops",
            ),
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
