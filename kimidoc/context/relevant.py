"""Question-aware context: the passages most relevant to the question, labelled, ahead of the rest.

When the documents do not all fit the window, packing them in order would keep the first pages and
drop the rest, whatever the question asks. This block goes first instead: the best BM25 passages for
the question, each under its citation, within a share of the budget; the packer then fills what is
left with whole pages and files as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kimidoc.documents.base import Document, Source
from kimidoc.documents.retrieve import Index

HEADING = "# Passages most relevant to the question (best first; cite their labels)"


def relevant_passages(
    documents: Sequence[Document], question: str, budget: int, count: Callable[[str], int], most: int = 40
) -> tuple[str, list[Source]]:
    """The block of the best passages for ``question`` within ``budget`` tokens (by ``count``), and
    their sources; ("", []) when no passage shares a term with the question or none fits."""
    rows: list[str] = []
    sources: list[Source] = []
    used = count(HEADING + "\n\n")
    for hit in Index.of(documents).search(question, most):
        row = f"[{hit.passage.cite()}] {hit.passage.text}\n\n"
        cost = count(row)
        if used + cost > budget:
            continue  # a shorter passage further down may still fit
        rows.append(row)
        sources.append(hit.passage.source)
        used += cost
    if not rows:
        return "", []
    return HEADING + "\n\n" + "".join(rows), sources
