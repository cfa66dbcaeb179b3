"""Off-chip traffic as TiGrIS reports it (``tigris analyze MODEL -m BUDGET --json``), run as a
subprocess in ``.venv-peers``.

TiGrIS 0.12.1 (``pip install tigris-ml==0.12.1``, RAWS Labs, Apache-2.0) tiles a model for a
fast-memory budget and runs it on its own runtime. What its figures mean, read from its source
(``site-packages/tigris``):

* **The order is TiGrIS's own.** A ``.tflite`` file is converted to a QDQ ONNX graph
  (``frontends/tflite.py``) and sorted by a depth-first topological sort that visits a tensor's
  consumers in reverse (``loaders/onnx/loader.py: _topo_sort``), not the file's listed order.
* **Stages, not eviction.** ``analysis/partition_temporal.py: partition_temporal`` walks that
  order greedily and cuts a stage before the op that would lift the stage's fast-memory peak
  over the budget. At the end of every stage the runtime spills the stage's outputs (tensors read
  by a later stage, and model outputs) to the slow pool and resets the fast arena; a stage loads
  every input it reads from the slow pool (``_StageCost``'s docstring). A tensor read by three
  later stages is written once and read three times; a tensor that would have fitted beside the
  next stage is spilled anyway.
* **Tiling.** A stage still over the budget runs in row bands (``analysis/partition_spatial.py``):
  1-D or 2-D tiles, or a chain of ops tiled together; each band loads its input rows plus the
  halo, so tiling adds halo re-reads to the traffic (and recomputes halo rows in fast memory,
  which costs no traffic).
* **"slow traffic" is measured, not modelled.** ``cli/trace.py: traffic`` compiles the plan in
  memory and runs it once on the bundled host runtime (``native/libtigris_host.so``) with zero
  inputs; ``written`` is the runtime's ``spill_bytes`` counter, ``read`` its ``load_bytes``.
  Both count the model's input (loaded from the slow pool by every stage that reads it) and its
  outputs (spilled at the end); in-arena compaction (``move``) is not traffic. **Weights are
  not counted**: they stay in the plan (flash, execute-in-place); only ``-c lz4`` plans
  decompress weights into fast memory, counted apart (``weight_bytes``) and not used here.
* **Bytes.** Tensor sizes follow the dtype (an int8 model's activations at 1 byte an element, a
  float32 model's at 4); the fast-memory accounting rounds every tensor up to the host's
  32-byte alignment (``graph/ir.py: tensor_alignment``). ``-m`` takes bytes or ``K``/``M``
  suffixes (1024-based, ``cli/__init__.py: _parse_size``). Tiling cannot be turned off; the
  analysis has no order option.

:func:`tigris_traffic` returns the public report (``analyze --json``, kept as ``raw``) and, with
``breakdown=True``, splits the traffic into the model's own input and output and the rest by
re-running the same plan traced (:data:`DRIVER`, which calls ``tigris.cli._run_pipeline`` and
``tigris.cli.trace``: the private functions ``analyze`` itself uses, pinned to
:data:`TIGRIS_VERSION`). The trace's totals must equal the report's.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
#: The virtual environment the peers are installed into (never Serenity's ``.venv``).
PEERS_VENV = ROOT / ".venv-peers"
TIGRIS_VERSION = "0.12.1"
INSTALL_HINT = (
    f"run `make peers` (python3 -m venv .venv-peers && .venv-peers/bin/pip install "
    f"tigris-ml=={TIGRIS_VERSION})"
)

#: The ``tigris`` command, run as ``python -c CLI ARGS...`` (the package has no ``__main__``).
CLI = "import sys; from tigris.cli import cli; sys.exit(cli())"

#: Run in the peers' interpreter as ``python -c DRIVER MODEL BUDGET``: compiles the plan
#: ``tigris analyze`` would, runs it traced on the host runtime, and prints one JSON object
#: with the runtime's counters and the traffic split by tensor (model input / model output /
#: the rest) and by halo (bytes a stage loaded of a tensor beyond the tensor's size).
DRIVER = r"""
import json, sys
from collections import defaultdict
from tigris.cli import _run_pipeline
from tigris.cli.trace import _plan_bytes, _run
from tigris.emitters.binary.reader import read_binary_plan

ag, _ = _run_pipeline(sys.argv[1], (sys.argv[2],), report_bindings=False)
data = _plan_bytes(ag)
if data is None:
    print(json.dumps(None))
    sys.exit(0)
plan = read_binary_plan(data, decompress_weights=False)
events, counters, memory, _ = _run(data, (), traced=True)
inputs, outputs = set(plan["model_inputs"]), set(plan["model_outputs"])
out = {"io_read": 0, "io_written": 0, "loads": 0, "spills": 0}
per_stage = defaultdict(int)
for e in events:
    if e["kind"] == "load":
        out["loads"] += 1
        per_stage[e["stage"], e["tensor"]] += e["bytes"]
        if e["tensor"] in inputs:
            out["io_read"] += e["bytes"]
    elif e["kind"] == "spill":
        out["spills"] += 1
        if e["tensor"] in outputs:
            out["io_written"] += e["bytes"]
size = [t["size_bytes"] for t in plan["tensors"]]
out["halo_read"] = sum(max(0, b - size[t]) for (_, t), b in per_stage.items())
out["counters"] = counters
out["memory"] = memory
out["order"] = [op.name for op in ag.ops]
print(json.dumps(out))
"""


class PeerNotInstalledError(RuntimeError):
    """The peer tool is not installed where the benchmark looks for it."""


class PeerError(RuntimeError):
    """The peer tool ran and failed, or printed what this module cannot read."""


@dataclass(frozen=True, slots=True)
class TigrisTraffic:
    """What TiGrIS reports for one model at one fast-memory budget.

    Attributes:
        model: The model file.
        budget: The fast-memory budget in bytes (``-m``).
        dtype: ``int8``, ``float32`` or None (mixed), as TiGrIS reads the model.
        fits: Whether TiGrIS has a plan within the budget (``analyze`` measured traffic).
        verdict: TiGrIS's verdict: ``ok`` (one stage), ``partitioned`` (stages, no tiling),
            ``tiled``, ``needs_work``.
        stages: Stages of the plan.
        tiled_stages: Stages over the budget that run tiled (``stages_needing_tiling``).
        fast_peak: The plan's fast-memory peak (``scheduled_peak_bytes``).
        unscheduled_peak: Peak of TiGrIS's order without staging (everything in fast memory).
        slow_peak: The slow pool's peak.
        written: Bytes spilled to slow memory per inference (None without a plan).
        read: Bytes loaded from slow memory per inference (None without a plan).
        io_read: Of ``read``, loads of the model's inputs (``breakdown=True``; else None).
        io_written: Of ``written``, spills of the model's outputs (likewise).
        halo_read: Of ``read``, bytes a stage loaded of a tensor beyond the tensor's size: the
            halo rows overlapping tiles re-read (likewise; a halo of the model's input is in
            ``io_read`` too).
        order: TiGrIS's op order, by its op names (likewise; else empty).
        raw: The ``analyze --json`` report, whole.
    """

    model: str
    budget: int
    dtype: str | None
    fits: bool
    verdict: str | None
    stages: int
    tiled_stages: int
    fast_peak: int
    unscheduled_peak: int
    slow_peak: int
    written: int | None
    read: int | None
    io_read: int | None = None
    io_written: int | None = None
    halo_read: int | None = None
    order: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def traffic(self) -> int | None:
        """Bytes written plus bytes read per inference (None without a plan)."""
        return None if self.written is None or self.read is None else self.written + self.read

    @property
    def traffic_without_io(self) -> int | None:
        """``traffic`` less the model's own input loads and output spills (None unknown)."""
        if self.traffic is None or self.io_read is None or self.io_written is None:
            return None
        return self.traffic - self.io_read - self.io_written

    def as_dict(self, raw: bool = True) -> dict[str, Any]:
        """The record as JSON-ready data, with ``traffic`` (``raw=False`` leaves the report out)."""
        d = asdict(self)
        d["order"] = list(self.order)
        d["traffic"] = self.traffic
        d["traffic_without_io"] = self.traffic_without_io
        if not raw:
            del d["raw"]
        return d


def peers_python(python: str | Path | None = None) -> Path:
    """The interpreter TiGrIS is installed in: ``python`` if given, else ``.venv-peers``'s.

    Raises:
        PeerNotInstalledError: no such interpreter, no ``tigris-ml`` in it, or another version
            than :data:`TIGRIS_VERSION`; the message says how to install it.
    """
    exe = Path(python) if python is not None else PEERS_VENV / "bin" / "python"
    version = _installed_version(str(exe))
    if version is None:
        raise PeerNotInstalledError(f"TiGrIS is not installed for {exe}: {INSTALL_HINT}")
    if version != TIGRIS_VERSION:
        raise PeerNotInstalledError(
            f"{exe} has tigris-ml {version}; this benchmark reads {TIGRIS_VERSION}'s output: {INSTALL_HINT}"
        )
    return exe


@cache
def _installed_version(exe: str) -> str | None:
    """``tigris-ml``'s version in interpreter ``exe``, or None (no interpreter, not installed)."""
    if not Path(exe).is_file():
        return None
    probe = "import importlib.metadata as m; print(m.version('tigris-ml'))"
    try:
        proc = subprocess.run([exe, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _run_json(exe: Path, args: list[str], what: str, timeout: float) -> Any:
    """Run ``exe args`` and parse its standard output as JSON.

    Raises:
        PeerError: a non-zero exit, a time-out or output that is not JSON; the message quotes
            the command and the tail of its standard error.
    """
    cmd = [str(exe), *args]
    names = {CLI: "<tigris>", DRIVER: "<DRIVER>"}
    shown = " ".join(names.get(a, a) for a in cmd)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise PeerError(f"{what}: `{shown}` ran over {timeout:g} s") from e
    tail = proc.stderr.strip()[-800:]
    if proc.returncode != 0:
        raise PeerError(f"{what}: `{shown}` exited with {proc.returncode}: {tail}")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        raise PeerError(f"{what}: `{shown}` printed no JSON ({e}); stderr: {tail}") from e


def tigris_traffic(
    model_path: str | Path,
    budget_bytes: int,
    *,
    python: str | Path | None = None,
    breakdown: bool = True,
    timeout: float = 300.0,
) -> TigrisTraffic:
    """Run ``tigris analyze MODEL -m BUDGET --json`` and read its figures.

    Args:
        model_path: A ``.tflite`` or ``.onnx`` model.
        budget_bytes: The fast-memory budget in bytes.
        python: The interpreter TiGrIS is installed in (default ``.venv-peers/bin/python``).
        breakdown: Also run the plan traced (:data:`DRIVER`) to split the traffic into the
            model's input and output and the rest, and to record TiGrIS's order.
        timeout: Seconds each subprocess may take.

    Returns:
        The report; ``fits`` False (traffic None) when TiGrIS has no plan at this budget.

    Raises:
        PeerNotInstalledError: TiGrIS is not installed (the message says how to install it).
        PeerError: TiGrIS failed on this model, or the traced run disagrees with the report.
    """
    exe = peers_python(python)
    model = str(Path(model_path).resolve())
    what = f"TiGrIS on {Path(model).name} at {budget_bytes} B"
    args = [model, "-m", str(budget_bytes), "--json"]
    raw = _run_json(exe, ["-c", CLI, "analyze", *args], what, timeout)
    fast, slow = raw["fast"], raw["slow"]
    traffic = slow.get("traffic")
    report = TigrisTraffic(
        model=model,
        budget=budget_bytes,
        dtype=raw["model"]["dtype"],
        fits=isinstance(traffic, dict),
        verdict=fast["verdict"],
        stages=int(fast["stages"]),
        tiled_stages=int(fast["stages_needing_tiling"]),
        fast_peak=int(fast["scheduled_peak_bytes"]),
        unscheduled_peak=int(raw["model"]["unscheduled_peak_bytes"]),
        slow_peak=int(slow["peak_bytes"]),
        written=int(traffic["written"]) if isinstance(traffic, dict) else None,
        read=int(traffic["read"]) if isinstance(traffic, dict) else None,
        raw=raw,
    )
    if not (breakdown and report.fits):
        return report
    traced = _run_json(exe, ["-c", DRIVER, model, str(budget_bytes)], what + " (traced)", timeout)
    if traced is None:
        raise PeerError(f"{what}: the report has traffic but the traced run found no plan")
    counters = traced["counters"]
    if (counters["spill_bytes"], counters["load_bytes"]) != (report.written, report.read):
        raise PeerError(
            f"{what}: the traced run moved {counters['spill_bytes']} B written, "
            f"{counters['load_bytes']} B read; the report says {report.written} and {report.read}"
        )
    return replace(
        report,
        io_read=int(traced["io_read"]),
        io_written=int(traced["io_written"]),
        halo_read=int(traced["halo_read"]),
        order=tuple(traced["order"]),
    )
