"""Documents into a model's context: packed to a token budget, exactly, in a stable order, with
an explicit list of what was dropped or compressed (see :mod:`kimidoc.context.pack`)."""

from kimidoc.context.formats import FORMATS, Renderer
from kimidoc.context.pack import PackResult, counters, pack_documents, pack_paths

__all__ = ["FORMATS", "PackResult", "Renderer", "counters", "pack_documents", "pack_paths"]
