"""Identity graph rewriting: passes that change the graph, not its meaning, to lower the peak.

Each pass is pattern -> check -> rewrite over the IR (``channel_split``, ``kernel_split``); a
rejected match carries its reason. :func:`serenity.rewrites.search.rewrite_for_memory` keeps a
rewrite only where the exact scheduler proves it lowers the peak of the whole graph. A format's
:class:`~serenity.rewrites.records.Dialect` reads op roles and writes the chosen rewrites into
the file (``serenity.formats.onnx_rewrite``, ``serenity.formats.tflite_rewrite``).
"""

from __future__ import annotations

from serenity.rewrites.apply import apply_all, apply_rewrite, structure_difference
from serenity.rewrites.records import Dialect, Rejection, Rewrite, Role

__all__ = ["Dialect", "Rejection", "Rewrite", "Role", "apply_all", "apply_rewrite", "structure_difference"]
