"""One question about documents, answered the way the backend can answer it well, and printed.

``ask`` picks how: a tool-using :class:`~kimidoc.agents.Agent` whose figures are checked after
(K2.6 and any capable model), or evidence first (:mod:`kimidoc.agents.evidence`) for a model too
small to write a grounded answer (``backend.evidence_first``, the embedded default).
``format_answer`` prints the result as a person should read it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kimidoc.agents.agent import Agent, AgentResult
from kimidoc.agents.budget import Budget
from kimidoc.agents.events import EventCallback
from kimidoc.agents.evidence import ask_with_evidence
from kimidoc.backends.base import Backend
from kimidoc.documents.base import Document
from kimidoc.documents.passages import Passage, header_and_row

MODES = ("auto", "agent", "evidence")


def ask(
    backend: Backend,
    documents: Sequence[Document],
    question: str,
    *,
    mode: str = "auto",
    tools: Callable[[], Sequence[Any]] | None = None,
    budget: Budget | None = None,
    on_event: EventCallback | None = None,
    trace_path: str | Path | None = None,
    sampling: dict[str, Any] | None = None,
) -> AgentResult:
    """Answer ``question`` about ``documents``; ``tools`` makes the agent's tools (default: the document tools)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "evidence" or (mode == "auto" and getattr(backend, "evidence_first", False)):
        if trace_path is not None:
            print(
                "kimidoc: no trace is written in evidence mode (one retrieval and one choice: nothing to resume)",
                file=sys.stderr,
            )
        return ask_with_evidence(documents, question, on_event=on_event)
    if tools is None:
        from kimidoc.tools import document_tools

        made: Sequence[Any] = document_tools(documents)
    else:
        made = tools()
    agent = Agent(
        backend,
        tools=made,
        documents=documents,
        budget=budget,
        trace_path=trace_path,
        on_event=on_event,
        sampling=sampling,
        show_progress=False,
    )
    return agent.run(question)


def _quote(p: Passage, width: int = 400) -> str:
    """A passage quoted on one line: prose as written, a table row as its cells under their headers."""
    table = header_and_row(p)
    if table is not None:
        head, row = table
        one = f"{row[0]}: " + "; ".join(f"{h} {c}" for h, c in zip(head[1:], row[1:]))
    else:
        one = " ".join(p.text.split())
    return "\u201c" + (one if len(one) <= width else one[: width - 3] + "...") + "\u201d"


def format_answer(result: Any) -> str:
    """The answer as a person reads it: checked figures with their pages; anything found in no
    passage said plainly and never listed under Sources; the evidence quoted when that is all there is."""
    out: list[str] = []
    checked = [c for c in result.claims if c.supported]
    unsupported = [c.text for c in result.claims if not c.supported]
    evidence = "\n".join(f"  [{p.cite()}] {_quote(p)}" for p in result.evidence)
    if not result.answer.strip():
        if result.evidence:
            out.append("No short answer could be given; the passages that best match the question:\n" + evidence)
        elif result.ok:
            out.append("Nothing in the documents matches the question.")
        return "\n".join(out)
    if unsupported:
        out.append(
            f"The model's answer could not be checked: {', '.join(unsupported)} appear(s) in none of the passages it read."
        )
        out.append("Its answer, NOT verified:\n  " + result.answer.strip().replace("\n", "\n  "))
        if evidence:
            out.append("What the documents say:\n" + evidence)
        return "\n\n".join(out)
    out.append(result.answer.strip())
    if checked:
        out.append(
            "Found in the documents: "
            + "; ".join(
                f"{c.text} ({c.source.cite()}{', ' + c.how if c.how.startswith('derived') else ''})" for c in checked
            )
        )
    if result.evidence:
        out.append("Evidence:\n" + evidence)
    cites = [s.cite() for s in result.citations]
    if cites:
        how = " (matched to the answer's checked figures; the model cited none)" if result.citations_inferred else ""
        out.append(f"Sources{how}: " + "; ".join(cites))
    if result.unverified_citations:
        out.append("Cited but never read by the agent (not sources): " + "; ".join(result.unverified_citations))
    return "\n\n".join(out)
