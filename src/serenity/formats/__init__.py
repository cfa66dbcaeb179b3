"""File formats: adapters at the edge of the IR with symmetric verbs.

Each adapter turns a file into a :class:`Model` (the IR graph plus the format's own handle, kept
so that export changes nothing but the order) and writes a model back with its ops permuted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serenity.errors import ModelFormatError
from serenity.ir import Graph


@dataclass(slots=True)
class Model:
    """A loaded model.

    Attributes:
        graph: The IR of the scheduled graph (TFLite: subgraph 0).
        format: ``"onnx"``, ``"tflite"``, ``"json"`` or ``"pt2"`` (a ``torch.export`` program;
            the ``[torch]`` extra).
        path: The file it came from, if any.
        source: The format's own in-memory model, used by the exporter.
        info: Format facts worth reporting (opset, IR version, subgraph count...).
    """

    graph: Graph
    format: str
    path: Path | None
    source: Any
    info: dict[str, Any] = field(default_factory=dict)


FORMATS = {".onnx": "onnx", ".tflite": "tflite", ".json": "json", ".pt2": "pt2"}
#: Outputs a format may be written as besides its own: a ``torch.export`` program lowers to an
#: ExecuTorch program with our order and arena plan (:mod:`serenity.executorch_io`).
LOWERED = {"pt2": ("pte",)}


def format_of(path: Path) -> str:
    """The format a path's suffix names.

    Raises:
        ModelFormatError: unknown suffix.
    """
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ModelFormatError(f"{path}: unknown model format (expected .onnx, .tflite, .json or .pt2)")
    return fmt


def output_format(src: Path, dst: Path) -> str:
    """The format ``dst`` will be written in for a model read from ``src``: the same, or a
    lowering of it (:data:`LOWERED`: ``.pt2`` -> ``.pte``).

    Raises:
        ModelFormatError: ``dst`` is neither.
    """
    fmt = format_of(src)
    suffix = Path(dst).suffix.lower().lstrip(".")
    if suffix in LOWERED.get(fmt, ()):
        return suffix
    if FORMATS.get(Path(dst).suffix.lower()) != fmt:
        also = "".join(f" or .{s}" for s in LOWERED.get(fmt, ()))
        raise ModelFormatError(f"{dst}: output must have the input's format ({Path(src).suffix}{also})")
    return fmt


def load(path: str | Path, *, dims: Mapping[str, int] | None = None, require_data: bool = False) -> Model:
    """Load a model file into the IR.

    Args:
        path: A ``.onnx``, ``.tflite`` or ``.json`` file.
        dims: Values for symbolic dimensions, by name (``{"batch": 1}``).
        require_data: Refuse an ONNX model whose external-data files are missing (to run it);
            by default such a graph-only model loads with a warning (to schedule it).

    Raises:
        ModelFormatError: missing, truncated or corrupt file.
        ShapeError: unknown or symbolic dimensions left after ``dims``.
        GraphError: malformed graph (cycle, undefined tensor).
    """
    path = Path(path)
    fmt = format_of(path)
    if not path.is_file():
        raise ModelFormatError(f"{path}: no such file")
    if fmt == "onnx":
        from serenity.formats.onnx_io import load_onnx

        return load_onnx(path, dims=dims, require_data=require_data)
    if fmt == "tflite":
        from serenity.formats.tflite_io import load_tflite

        return load_tflite(path, dims=dims)
    if fmt == "pt2":
        import logging

        from serenity.torch_export import load_pt2

        # torch.export.load logs a whole traceback before raising on a bad archive; the error
        # we raise names the file and the problem in one line.
        logging.disable(logging.WARNING)
        try:
            graph, program = load_pt2(path)
        finally:
            logging.disable(logging.NOTSET)
        return Model(graph, "pt2", path, program, {"torch": "torch.export"})
    from serenity.formats.json_io import load_json

    return load_json(path)


def save(model: Model, order: Sequence[int], path: str | Path) -> None:
    """Write ``model`` to ``path`` in its own format with its ops in ``order``.

    Nothing but the op order changes. The file is written to a temporary name and renamed.

    Raises:
        OrderError: ``order`` is not topological.
        ModelFormatError: ``path``'s suffix is not the model's format.
    """
    path = Path(path)
    if model.format == "pt2" and path.suffix.lower() == ".pte":
        from serenity.executorch_io import save_pte

        save_pte(model.source, path, model.graph.check_order(order))
        return
    if format_of(path) != model.format:
        raise ModelFormatError(f"{path}: cannot write a {model.format} model as {path.suffix}")
    order = model.graph.check_order(order)
    if model.format == "onnx":
        from serenity.formats.onnx_io import save_onnx

        save_onnx(model, order, path)
    elif model.format == "tflite":
        from serenity.formats.tflite_io import save_tflite

        save_tflite(model, order, path)
    elif model.format == "pt2":
        from serenity.torch_export import save_pt2

        save_pt2(model.source, order, path)
    else:
        from serenity.formats.json_io import save_json

        save_json(model, order, path)


def protected_files(model: Model) -> list[Path]:
    """The files an output must never overwrite: the model file and the external-data files it
    references (ONNX), whether or not they exist."""
    if model.path is None:
        return []
    files = [model.path]
    for loc in model.info.get("external_data", []):
        files.append(model.path.parent / loc)
    return files


def referenced_files(path: Path) -> list[Path]:
    """``path`` and, for an ONNX file, the external-data files it names, read without loading
    the model (an unreadable file yields just ``path``: loading it will say what is wrong)."""
    path = Path(path)
    if FORMATS.get(path.suffix.lower()) != "onnx" or not path.is_file():
        return [path]
    from serenity.formats.onnx_io import external_locations

    return [path, *(path.parent / loc for loc in external_locations(path))]


def dialect_for(model: Model, *, allow_requantize: bool = False) -> Any:
    """The rewrite dialect of ``model``'s format (:class:`serenity.rewrites.records.Dialect`):
    what its ops mean to the rewrites, and the writer of rewritten files.

    Args:
        model: A loaded ONNX or TFLite model.
        allow_requantize: (TFLite) allow channel-wise partitioning of quantized convolutions.

    Raises:
        UnsupportedError: a JSON graph (it has no weights to split).
    """
    if model.format == "onnx":
        from serenity.formats.onnx_rewrite import OnnxDialect

        return OnnxDialect(model)
    if model.format == "tflite":
        from serenity.formats.tflite_rewrite import TFLiteDialect

        return TFLiteDialect(model, allow_requantize=allow_requantize)
    from serenity.errors import UnsupportedError

    where = f"{model.path}: " if model.path else ""
    raise UnsupportedError(f"{where}a {model.format} graph has no weights to rewrite; use --no-rewrite")


def spatial_dialect_for(model: Model) -> Any:
    """The spatial dialect of ``model``'s format (:class:`serenity.rewrites.tiling.SpatialDialect`):
    how its ops map pixels, for patch-based execution.

    Raises:
        UnsupportedError: a JSON graph (no kernels, strides or padding to tile by).
    """
    if model.format == "onnx":
        from serenity.formats.onnx_tiling import OnnxSpatialDialect

        return OnnxSpatialDialect(model)
    if model.format == "tflite":
        from serenity.formats.tflite_tiling import TfliteSpatialDialect

        return TfliteSpatialDialect(model)
    from serenity.errors import UnsupportedError

    where = f"{model.path}: " if model.path else ""
    raise UnsupportedError(
        f"{where}a {model.format} graph has no kernels or strides to tile by; use --tiles off"
    )


def write_tiled(model: Model, plan: Any) -> Model:
    """``model`` with ``plan`` (:class:`serenity.rewrites.tiling.TilePlan`) written in, as a new
    model (same path; its graph is the plan's tiled graph, checked by the format's writer)."""
    if model.format == "onnx":
        from serenity.formats.onnx_tiling import write_tiled_onnx

        return write_tiled_onnx(model, plan)
    from serenity.formats.tflite_io import parse_tflite
    from serenity.formats.tflite_tiling import write_tiled_tflite

    assert model.path is not None
    return parse_tflite(write_tiled_tflite(model, plan), model.path)


__all__ = [
    "FORMATS",
    "Model",
    "dialect_for",
    "format_of",
    "load",
    "protected_files",
    "referenced_files",
    "save",
    "spatial_dialect_for",
    "write_tiled",
]
