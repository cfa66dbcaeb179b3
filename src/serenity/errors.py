"""The exception hierarchy: every error the package raises on purpose is a ``SerenityError``.

The CLI maps ``SerenityError`` to exit code 2 and prints ``str(error)`` on one line, so every
message names the file, op or tensor at fault and, where there is one, what to do about it.
"""

from __future__ import annotations


class SerenityError(Exception):
    """Base class of every error Serenity raises on purpose."""


class ModelFormatError(SerenityError):
    """A model file is missing, truncated, corrupt, or not the format its name says."""


class UnsupportedError(SerenityError):
    """The model uses something Serenity does not handle (data type, operator, feature)."""


class ShapeError(SerenityError):
    """A tensor has an unknown, symbolic or negative dimension."""


class GraphError(SerenityError):
    """The graph is malformed: undefined tensors, two producers, dangling references."""


class CycleError(GraphError):
    """The graph has a cycle; ``path`` lists the op names around it, first repeated last."""

    def __init__(self, path: list[str], where: str = "") -> None:
        self.path = path
        prefix = f"{where}: " if where else ""
        super().__init__(prefix + "graph has a cycle: " + " -> ".join(path))


class OrderError(SerenityError):
    """An order is not a topological permutation of the graph's ops."""


class ExternalDataError(ModelFormatError):
    """An ONNX external-data reference is missing or points outside the model's folder."""


class InfeasibleError(SerenityError):
    """No schedule satisfies the requested budget or the search hit a resource cap."""


class VerificationError(SerenityError):
    """Two models that should be the same model differ in structure."""


class RuntimeFailure(SerenityError):
    """A real runtime (onnxruntime, TensorFlow Lite Micro) refused or failed to run a model."""
