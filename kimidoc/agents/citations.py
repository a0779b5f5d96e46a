"""Citations: which document sources the agent saw, and which of them its answer cites.

A source counts as *seen* when its part was packed into the agent's context, or when a tool that
read it reported it (the ``sources`` of its ``ToolResult``, or :func:`kimidoc.agents.report_sources`):
citations travel as data; only the model's own answer is parsed for labels. The answer cites with the same labels in square brackets; a cited label is matched
to seen sources by path (a trailing part of the path is enough: ``report.pdf`` matches
``/data/report.pdf``), page and overlapping line range. Labels that match nothing the agent saw are
kept apart as unverified, never passed off as citations.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from kimidoc.documents.base import Source, names_file

_BRACKET = re.compile(r"\[([^\[\]\n]{1,400})\](?!\()")  # not a Markdown link's text
_LABEL = re.compile(
    r"^\s*(?P<path>[^\s\[\]][^\[\]]*?)(?:\s+p(?:age|\.)\s*(?P<page>\d+))?(?::(?P<a>\d+)(?:\s*-\s*(?P<b>\d+))?)?\s*$"
)
_PATHISH = re.compile(r"[\\/]|\.[A-Za-z0-9]{1,8}$")


@dataclass(frozen=True)
class Label:
    path: str
    page: int | None = None
    lines: tuple[int, int] | None = None


def parse_label(text: str) -> Label | None:
    """``report.pdf p.3`` / ``src/app.py:10-20`` -> :class:`Label`; None when it does not look like one."""
    m = _LABEL.match(text)
    if not m:
        return None
    path = m.group("path").strip()
    page = int(m.group("page")) if m.group("page") else None
    lines = None
    if m.group("a"):
        a = int(m.group("a"))
        lines = (a, int(m.group("b")) if m.group("b") else a)
    if page is None and lines is None and not _PATHISH.search(path):
        return None  # "[1]", "[note]": brackets that are not source labels
    return Label(path, page, lines)


def labels_in(text: str) -> list[tuple[str, Label]]:
    """Every source label written in square brackets in ``text`` (``[a.pdf p.1; b.py:3]`` holds two)."""
    out = []
    for m in _BRACKET.finditer(text):
        for piece in re.split(r";|,\s+(?=\S+\.\w+)", m.group(1)):
            label = parse_label(piece)
            if label is not None:
                out.append((piece.strip(), label))
    return out


def _matches(label: Label, source: Source) -> bool:
    if not names_file(label.path, source.path):
        return False
    if label.page is not None and source.page != label.page:
        return False
    if label.lines is not None:
        if source.lines is None:
            return False
        return label.lines[0] <= source.lines[1] and source.lines[0] <= label.lines[1]
    return True


class SourceRegistry:
    """The sources an agent has seen, in the order it saw them."""

    def __init__(self) -> None:
        self._seen: dict[Source, None] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, source: Source) -> bool:
        return source in self._seen

    def __iter__(self) -> Iterator[Source]:
        return iter(self._seen)

    def add(self, sources: Iterable[Source]) -> None:
        for s in sources:
            self._seen.setdefault(s, None)

    def cite(self, answer: str) -> tuple[list[Source], list[str]]:
        """(sources the answer cites that the agent saw, cited labels matching nothing it saw)."""
        cited: dict[Source, None] = {}
        unverified: list[str] = []
        for text, label in labels_in(answer):
            hits = [s for s in self._seen if _matches(label, s)]
            if not hits:
                if text not in unverified:
                    unverified.append(text)
                continue
            if label.page is None and label.lines is None:
                # A whole-document citation names the document, not every part the agent read.
                hits = [Source(hits[0].path)]
            elif label.lines is None:
                # A page citation names the page once, not each block of it the agent saw.
                hits = [Source(hits[0].path, label.page)]
            for s in hits:
                cited.setdefault(s, None)
        return list(cited), unverified


def source_to_dict(s: Source) -> dict:
    d: dict = {"path": s.path}
    if s.page is not None:
        d["page"] = s.page
    if s.lines is not None:
        d["lines"] = list(s.lines)
    if s.bbox is not None:
        d["bbox"] = list(s.bbox)
    return d


def source_from_dict(d: dict) -> Source:
    return Source(
        d["path"],
        d.get("page"),
        tuple(d["lines"]) if d.get("lines") else None,
        tuple(d["bbox"]) if d.get("bbox") else None,
    )
