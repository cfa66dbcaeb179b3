"""``serenity.torch``: the names the PyTorch front end is documented under (the ``[torch]``
extra). The code lives in :mod:`serenity.torch_export`; this module only re-exports it, so that
``serenity.torch.reorder(program)`` reads as the issue and the README write it."""

from __future__ import annotations

from serenity.torch_export import from_torch, graph_of, load_pt2, reorder, save_pt2

__all__ = ["from_torch", "graph_of", "load_pt2", "reorder", "save_pt2"]
