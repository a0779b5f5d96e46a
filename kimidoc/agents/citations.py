"""Citations: which document sources the agent saw, and which of them its answer cites.

A source counts as *seen* when its part was packed into the agent's context, when a tool that read
it reported it (:func:`kimidoc.agents.report_sources`, or a ``sources`` attribute on the
``ToolResult``), or when a tool output carries its label (``[report.pdf p.3]``) for a document the
agent was given. The answer cites with the same labels in square brackets; a cited label is matched
to seen sources by path (a trailing part of the path is enough: ``report.pdf`` matches
``/data/report.pdf``), page and overlapping line range. Labels that match nothing the agent saw are
kept apart as unverified, never passed off as citations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from kimidoc.documents.base import Source

_BRACKET = re.compile(r"\[([^\[\]\n]{1,400})\](?!\()")  # not a Markdown link's text
_LABEL = re.compile(r"^\s*(?P<path>[^\s\[\]][^\[\]]*?)(?:\s+p(?:age|\.)\s*(?P<page>\d+))?(?::(?P<a>\d+)(?:\s*-\s*(?P<b>\d+))?)?\s*$")
_PATHISH = re.compile(r"[\\/]|\.[A-Za-z0-9]{1,8}$")
# A label written without brackets, as tools print them: a path with a page or a line range (a page
# range such as "p.2-3" names no single page and is skipped).
_BARE = re.compile(r"(?<![\w./\\-])(?P<path>[\w.~/\\+-]*\w)(?:\s+p\.(?P<page>\d+)(?![\d-])|:(?P<a>\d+)(?:-(?P<b>\d+))?(?![\d-]))")


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


def _path_matches(cited: str, actual: str) -> bool:
    cited = cited.replace("\\", "/").removeprefix("./")
    actual = actual.replace("\\", "/")
    return actual == cited or actual.endswith("/" + cited)


def _matches(label: Label, source: Source) -> bool:
    if not _path_matches(label.path, source.path):
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
        self._by_name: dict[str, list[str]] = {}  # file name -> paths of the agent's documents, to spot labels in tool output

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, source: Source) -> bool:
        return source in self._seen

    def add(self, sources: Iterable[Source]) -> None:
        for s in sources:
            self._seen.setdefault(s, None)

    def know_documents(self, paths: Iterable[str]) -> None:
        for path in paths:
            names = self._by_name.setdefault(path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1], [])
            if path not in names:
                names.append(path)

    def sources_in(self, text: str) -> list[Source]:
        """Sources of the given documents whose labels a tool's output shows, bracketed or bare
        (``[report.pdf p.3]``, ``report.pdf p.3: ...``, ``src/app.py:40: ...``)."""
        if not self._by_name:
            return []
        out = []
        labels = [label for _, label in labels_in(text)]
        labels += [Label(m["path"], int(m["page"]) if m["page"] else None, (int(m["a"]), int(m["b"] or m["a"])) if m["a"] else None) for m in _BARE.finditer(text)]
        for label in labels:
            for path in self._by_name.get(label.path.replace("\\", "/").rsplit("/", 1)[-1], ()):
                if _path_matches(label.path, path):
                    out.append(Source(path, label.page, label.lines))
        return out

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


_NUMBER = re.compile(r"\d+(?:[.,]\d+)*%?")
_WORD = re.compile(r"[A-Za-z][A-Za-z-]{4,}")
_COMMON = frozenset("about after again being below between could every first their there these those through under where which while would years other shows".split())


def _salient(text: str) -> dict[str, float]:
    """Tokens that can tie an answer to a passage: numbers (weighted 3) and longer words (1)."""
    out: dict[str, float] = {n: 3.0 for n in _NUMBER.findall(text) if len(n) >= 2}
    for w in _WORD.findall(text):
        w = w.lower()
        if w not in _COMMON:
            out.setdefault(w, 1.0)
    return out


def supporting_sources(answer: str, passages: Iterable[tuple[Source, str]], most: int = 3) -> list[Source]:
    """Sources whose text supports an answer that cites nothing, for models too small to cite.

    Each passage scores the answer's numbers and words it contains, each weighted down by how many
    passages share it (a figure found on one page says more than a year found on all); the best
    passages, within 60% of the top score, are returned. No overlap, no source.
    """
    items = [(src, _salient(text)) for src, text in passages]
    want = _salient(answer)
    df: dict[str, int] = {}
    for _, toks in items:
        for t in toks.keys() & want.keys():
            df[t] = df.get(t, 0) + 1
    scored = []
    for src, toks in items:
        shared = toks.keys() & want.keys()
        score = sum(want[t] / df[t] for t in shared)
        if score >= 2.0 and any(want[t] == 3.0 for t in shared):  # at least one shared figure
            scored.append((score, src))
    if not scored:
        return []
    top = max(score for score, _ in scored)
    best = sorted((x for x in scored if x[0] >= 0.6 * top), key=lambda x: -x[0])
    return list(dict.fromkeys(src for _, src in best[:most]))


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
    return Source(d["path"], d.get("page"), tuple(d["lines"]) if d.get("lines") else None, tuple(d["bbox"]) if d.get("bbox") else None)

