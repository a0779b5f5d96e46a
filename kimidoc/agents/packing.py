"""How documents enter an agent's first message: packed by :mod:`kimidoc.context` to a token budget.

The packer labels every unit with its citation (``## report.pdf p.3``) and lists what it left out,
so the model cites what it saw and knows what to open with the document tools. Another packer can
be given to :class:`~kimidoc.agents.Agent` as ``packer``: a function of (documents, backend, token
budget, question) returning the message content parts and the sources they hold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from kimidoc.backends.base import Backend
from kimidoc.documents.base import Document, Source

Packer = Callable[[Sequence[Document], Backend, int, str], tuple[list[dict[str, Any]], list[Source]]]


def pack_with_sources(
    documents: Sequence[Document], backend: Backend, max_tokens: int, question: str = ""
) -> tuple[list[dict[str, Any]], list[Source]]:
    """Content parts for ``documents`` within ``max_tokens`` (the backend's own counts), and the
    sources of every part they hold.

    Whole documents in order when they fit; when they do not, the passages most relevant to
    ``question`` come first (:mod:`kimidoc.context.relevant`), within half the budget, and the
    packer fills the rest.
    """
    from kimidoc.context import pack_documents as pack
    from kimidoc.context.relevant import relevant_passages

    result = pack(documents, max_tokens, backend=backend)
    if not question or not result.dropped:
        return result.to_content(), result.sources
    block, found = relevant_passages(documents, question, max_tokens // 2, backend.count_tokens)
    rest = pack(documents, max_tokens - backend.count_tokens(block), backend=backend)
    content = ([{"type": "text", "text": block}] if block else []) + rest.to_content()
    return content, list(dict.fromkeys(found + rest.sources))
