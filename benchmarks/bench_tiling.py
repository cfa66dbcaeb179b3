"""Patch-based execution of the first layers (issue 12): peaks, TFLite Micro's measured arena,
extra MACs and exactness, with TiGrIS beside it.

Run ``.venv/bin/python benchmarks/bench_tiling.py`` (``--help`` for options). Every figure comes
from the command line a user runs: ``serenity optimize MODEL -o OUT --tiles ...`` (``--embed-plan``
for ``.tflite``), then ``serenity verify MODEL OUT`` in the model's runtime. Tables, then one line
per missed target and a non-zero exit on a miss.

1. **Stem** (``../shared/models/stem/mobilenet_v2_035_96_{float,int8}.tflite``, MobileNetV2 0.35
   at 96x96): for each grid 2x2 .. 8x8, the best split for that grid (any overhead), its proven
   peak, TFLite Micro's measured arena with the plan embedded, the extra MACs (% of the network's)
   and whether TFLM's outputs are bit-identical; then ``--tiles auto`` (at most 20 % extra MACs).
   Target: ``auto``'s measured arena at least 3x below the converter's file, bit-identical.
2. **Zoo** ``mobilenet_v2`` and ``resnet18`` (ONNX, float32): ``--tiles auto``. Target: peak at
   least 2.5x lower at <= 20 % extra MACs, outputs within 1e-6 in onnxruntime.
3. **Irregular networks** (zoo NAS cells): ``--tiles auto`` never ends above ``--tiles off``.
4. **TiGrIS 0.12.1** (``make peers``) on the int8 stem at our arena: whether its own plan fits
   there and what it moves to slow memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from verdict import verdict

ROOT = Path(__file__).resolve().parents[1]
_SHARED = ROOT.parent / "shared" / "models" / "stem"
STEM = _SHARED if _SHARED.is_dir() else ROOT / "examples" / "stem"
GRIDS = [f"{k}x{k}" for k in range(2, 9)]
IRREGULAR = (
    "darts_normal_cell",
    "nasnet_a_normal_cell",
    "amoebanet_a_normal_cell",
    "swiftnet_cell_a",
    "randwire_ws_stage",
    "nasfpn_body",
)


def serenity(*args: str) -> dict[str, Any]:
    """Run ``serenity ARGS --json`` and return its object (raises with stderr on failure)."""
    p = subprocess.run([sys.executable, "-m", "serenity", *args, "--json"], capture_output=True, text=True)
    if p.returncode not in (0, 1):
        raise RuntimeError(f"serenity {' '.join(args)}: {p.stderr.strip()}")
    return json.loads(p.stdout)


def optimize(model: Path, out: Path, *extra: str) -> dict[str, Any]:
    plan = ("--embed-plan",) if model.suffix == ".tflite" else ()
    return serenity("optimize", str(model), "-o", str(out), "--time-limit", "90", *plan, *extra)


def kib(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:,.1f}"


def stem_table(console: Console, work: Path, misses: list[str]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    table = Table(title="MobileNetV2 0.35 at 96x96 in TFLite Micro (KiB; * = peak proven optimal)")
    for c in ("model", "tiles", "split", "peak", "TFLM arena", "vs converter", "extra MACs", "bit-identical"):
        table.add_column(c, justify="left" if c in ("model", "split") else "right")
    for kind in ("int8", "float"):
        model = STEM / f"mobilenet_v2_035_96_{kind}.tflite"
        for tiles in (*GRIDS, "auto"):
            out = work / f"stem_{kind}_{tiles}.tflite"
            extra = ("--tiles", tiles) + (("--max-overhead", "1000") if tiles != "auto" else ())
            o = optimize(model, out, *extra)
            v = serenity("verify", str(model), str(out))
            t = o["tiling"] or {}
            before, after = o.get("tflm_arena_before"), o.get("tflm_arena_after")
            ratio = before / after if before and after else None
            row = {
                "peak": o["peak_rewritten"],
                "proven": o["proven_optimal_rewritten"],
                "arena_before": before,
                "arena_after": after,
                "split": t.get("split"),
                "grid": t.get("grid"),
                "overhead": t.get("overhead"),
                "identical": v.get("outputs_identical"),
            }
            rows[f"{kind} {tiles}"] = row
            table.add_row(
                kind,
                tiles if tiles != "auto" else f"auto: {t.get('grid', 'none')}",
                (t.get("split") or "-")[-44:],
                kib(row["peak"]) + ("*" if row["proven"] else ""),
                kib(after),
                f"{ratio:.2f}x" if ratio else "-",
                "-" if t.get("overhead") is None else f"{t['overhead']:.1%}",
                "yes" if v.get("outputs_identical") else "NO",
            )
            if not v.get("ok") or not v.get("outputs_identical"):
                misses.append(f"stem {kind} {tiles}: TFLM outputs not bit-identical ({v.get('problems')})")
            if tiles == "auto":
                if not ratio or ratio < 3.0:
                    misses.append(
                        f"stem {kind}: TFLM arena {before} -> {after} B is {ratio or 0:.2f}x, not >= 3x "
                        f"within 20 % extra MACs"
                    )
                if t.get("overhead") is not None and t["overhead"] > 0.2:
                    misses.append(f"stem {kind}: {t['overhead']:.1%} extra MACs")
    console.print(table)
    return rows


def zoo_table(console: Console, work: Path, misses: list[str]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    table = Table(title="Zoo networks in ONNX (float32, onnxruntime)")
    for c in ("network", "split", "grid", "peak before", "peak after", "lower", "extra MACs", "max |diff|"):
        table.add_column(c, justify="left" if c in ("network", "split") else "right")
    for name in ("mobilenet_v2", "resnet18"):
        src = work / f"{name}.onnx"
        subprocess.run(
            [sys.executable, "-m", "serenity", "zoo", "export", name, "-o", str(src)],
            check=True,
            capture_output=True,
        )
        out = work / f"{name}.tiled.onnx"
        o = optimize(src, out)
        v = serenity("verify", str(src), str(out))
        t = o["tiling"] or {}
        ratio = o["peak_scheduled"] / o["peak_rewritten"]
        rows[name] = {
            "before": o["peak_scheduled"],
            "after": o["peak_rewritten"],
            "split": t.get("split"),
            "grid": t.get("grid"),
            "overhead": t.get("overhead"),
            "max_abs_diff": v.get("max_abs_diff"),
        }
        table.add_row(
            name,
            str(t.get("split")),
            str(t.get("grid")),
            kib(o["peak_scheduled"]),
            kib(o["peak_rewritten"]),
            f"{ratio:.2f}x",
            "-" if t.get("overhead") is None else f"{t['overhead']:.1%}",
            f"{v.get('max_abs_diff', 0):g}",
        )
        if ratio < 2.5:
            misses.append(f"{name}: peak only {ratio:.2f}x lower")
        if not v.get("ok"):
            misses.append(f"{name}: onnxruntime outputs differ ({v.get('problems')})")
    console.print(table)
    return rows


def irregular_table(console: Console, work: Path, misses: list[str]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    table = Table(title="Irregular networks: --tiles auto never raises the peak")
    for c in ("network", "peak, --tiles off", "peak, --tiles auto", "tiling"):
        table.add_column(c, justify="left" if c in ("network", "tiling") else "right")
    for name in IRREGULAR:
        src = work / f"{name}.onnx"
        subprocess.run(
            [sys.executable, "-m", "serenity", "zoo", "export", name, "-o", str(src)],
            check=True,
            capture_output=True,
        )
        off = optimize(src, work / f"{name}.off.onnx", "--tiles", "off", "--time-limit", "60")
        auto = optimize(src, work / f"{name}.auto.onnx", "--time-limit", "60")
        t = auto["tiling"] or {}
        rows[name] = {"off": off["peak_rewritten"], "auto": auto["peak_rewritten"], "tiling": t.get("grid")}
        table.add_row(
            name,
            kib(off["peak_rewritten"]),
            kib(auto["peak_rewritten"]),
            f"{t.get('split')} {t.get('grid')}" if t.get("applied") else t.get("reason", "-")[:60],
        )
        if auto["peak_rewritten"] > off["peak_rewritten"]:
            misses.append(
                f"{name}: tiling raised the peak {off['peak_rewritten']} -> {auto['peak_rewritten']}"
            )
    console.print(table)
    return rows


def tigris_table(console: Console, arena: int | None) -> dict[str, Any] | None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from peers.tigris import PeerNotInstalledError, tigris_traffic
    except ImportError as e:  # pragma: no cover
        console.print(f"TiGrIS table skipped: {e}")
        return None
    model = STEM / "mobilenet_v2_035_96_int8.tflite"
    table = Table(title="TiGrIS 0.12.1 on the int8 stem (its own tiling, order and runtime)")
    for c in (
        "fast memory",
        "fits",
        "verdict",
        "stages (tiled)",
        "fast peak",
        "slow traffic",
        "less model I/O",
    ):
        table.add_column(c, justify="right")
    out = {}
    budgets = sorted({b for b in (arena, 64 * 1024, 128 * 1024, 138_240) if b})
    for b in budgets:
        try:
            r = tigris_traffic(model, b)
        except PeerNotInstalledError as e:
            console.print(f"TiGrIS table skipped: {e}")
            return None
        out[b] = {"fits": r.fits, "verdict": r.verdict, "traffic": r.traffic, "fast_peak": r.fast_peak}
        table.add_row(
            kib(b) + (" (ours)" if b == arena else ""),
            "yes" if r.fits else "no",
            str(r.verdict),
            f"{r.stages} ({r.tiled_stages})",
            kib(r.fast_peak),
            kib(r.traffic),
            kib(r.traffic_without_io),
        )
    console.print(table)
    console.print(
        "TiGrIS meets a fast-memory budget by moving activations to slow memory between stages "
        "(its traffic); ours runs entirely in the arena, with no slow memory."
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object after the tables")
    ap.add_argument("--no-peers", action="store_true", help="skip TiGrIS")
    ap.add_argument("--skip-irregular", action="store_true", help="skip the irregular networks")
    args = ap.parse_args(argv)
    console = Console(width=170)
    misses: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stem = stem_table(console, work, misses)
        zoo = zoo_table(console, work, misses)
        irregular = {} if args.skip_irregular else irregular_table(console, work, misses)
    auto = stem.get("int8 auto", {}).get("arena_after")
    peers = None if args.no_peers else tigris_table(console, auto)
    if args.json:
        print(
            json.dumps(
                {"stem": stem, "zoo": zoo, "irregular": irregular, "tigris": peers, "misses": misses},
                indent=2,
                default=str,
            )
        )
    return verdict(console, misses)


if __name__ == "__main__":
    sys.exit(main())
