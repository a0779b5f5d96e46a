"""How documents enter an agent's first message: packed by :mod:`kimidoc.context` to a token budget.

The packer labels every unit with its citation (``## report.pdf p.3``) and lists what it left out,
so the model cites what it saw and knows what to open with the document tools. Another packer can
be given to :class:`~kimidoc.agents.Agent` as ``packer``: a function of (documents, backend, token
budget) returning the message content parts and the sources they hold.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from kimidoc.backends.base import Backend
from kimidoc.documents.base import Document, Source

Packer = Callable[[Sequence[Document], Backend, int], tuple[list[dict[str, Any]], list[Source]]]


def pack_with_sources(documents: Sequence[Document], backend: Backend, max_tokens: int) -> tuple[list[dict[str, Any]], list[Source]]:
    """Content parts for ``documents`` within ``max_tokens`` (the backend's own counts), and the sources packed."""
    from kimidoc.context import pack_documents

    result = pack_documents(documents, max_tokens, backend=backend)
    included = set(result.included)  # the packer cites a page as "path p.N", anything else by its source
    packed = [p.source for d in documents for p in d.parts if (f"{p.source.path} p.{p.source.page}" if p.source.page is not None else p.source.cite()) in included]
    return result.to_content(), packed


def known_paths(documents: Sequence[Document]) -> list[str]:
    """Every path a citation of these documents can name: the documents and their parts' files."""
    return list(dict.fromkeys([d.path for d in documents] + [p.source.path for d in documents for p in d.parts]))
