"""Documents cut into passages: the units that retrieval ranks, answers quote and verification reads.

A passage is small enough to quote and precise enough to cite:
- prose: a paragraph with its page (the nearest heading travels with it as context; a paragraph
  longer than ``max_chars`` is cut between sentences);
- tables: one passage per row, carrying the header row, so "Q4 | 12.4" still says what 12.4 is;
- code and text files: chunks of lines with their ``file:a-b`` range.
Every passage carries the full citable :class:`Source` (a repository file's path includes the
repository's folder, as the document tools print it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from kimidoc.documents.base import Document, Part, Source, names_file

MAX_CHARS = 700  # a quotable passage: a long paragraph is cut between sentences near this size
CODE_LINES = 24  # lines per code chunk
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
_TABLE_RULE = re.compile(r"^\|?\s*:?-{3,}")


@dataclass(frozen=True)
class Passage:
    source: Source
    text: str  # verbatim from the document (a table row: its header row, then the row)
    kind: str  # "text" | "table" | "code"
    context: str = ""  # the heading it stands under: searched with the text, never quoted as it

    def cite(self) -> str:
        return self.source.cite()


def part_source(doc: Document, part: Part) -> Source:
    """The citable source of a part: repository files are named with the repository's folder."""
    src = part.source
    if doc.kind == "repository" and part.meta.get("role") != "tree":
        return Source(f"{doc.path.rstrip('/')}/{src.path}", page=src.page, lines=src.lines, bbox=src.bbox)
    return src


def passages(documents: Iterable[Document], max_chars: int = MAX_CHARS) -> list[Passage]:
    """Every passage of ``documents`` in reading order (image parts and repository trees have none)."""
    out: list[Passage] = []
    for doc in documents:
        for part in doc.parts:
            if part.kind == "image" or part.meta.get("role") == "tree" or not part.text.strip():
                continue
            out.extend(part_passages(part_source(doc, part), part, max_chars))
    return out


def part_passages(source: Source, part: Part, max_chars: int = MAX_CHARS) -> Iterator[Passage]:
    if part.kind == "table":
        yield from _table_rows(source, part.text)
    elif source.lines is not None and source.page is None:
        yield from _line_chunks(
            source, part.text, "code" if part.meta.get("language") not in (None, "text", "markdown") else "text"
        )
    else:
        yield from _paragraphs(source, part.text, max_chars)


def _paragraphs(source: Source, text: str, max_chars: int) -> Iterator[Passage]:
    heading = ""
    for block in re.split(r"\n\s*\n", text):
        block = block.strip()
        if not block:
            continue
        if block.startswith("#") and "\n" not in block:
            heading = block.lstrip("#").strip()  # kept with the paragraph it titles (the nearest heading)
            continue
        for piece in _cut(block, max_chars):
            yield Passage(source, piece, "text", heading)
        heading = ""


def _cut(block: str, max_chars: int) -> Iterator[str]:
    """A paragraph as pieces of at most about ``max_chars``, cut between sentences."""
    block = re.sub(r"\s*\n\s*", " ", block)  # lines of a paragraph re-joined: quotes read as prose
    if len(block) <= max_chars:
        yield block
        return
    piece = ""
    for sentence in _SENTENCE_END.split(block):
        if piece and len(piece) + 1 + len(sentence) > max_chars:
            yield piece
            piece = sentence
        else:
            piece = f"{piece} {sentence}" if piece else sentence
    if piece:
        yield piece


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table_rows(source: Source, table: str) -> Iterator[Passage]:
    """One passage per body row of a Markdown table, written under its header row."""
    lines = [ln for ln in table.splitlines() if ln.strip()]
    rows = [ln for ln in lines if not _TABLE_RULE.match(ln.strip())]
    if len(rows) < 2:
        if rows:
            yield Passage(source, table.strip(), "table")
        return
    header = rows[0]
    for k, row in enumerate(rows[1:], 1):
        # A CSV file's table: row k is line k after the header's (a quoted field holding a line break
        # would shift this; such files are rare and the citation stays within the table).
        where = (
            source if source.lines is None else Source(source.path, lines=(source.lines[0] + k, source.lines[0] + k))
        )
        yield Passage(where, f"{header.strip()}\n{row.strip()}", "table")


def header_and_row(passage: Passage) -> tuple[list[str], list[str]] | None:
    """The (header cells, row cells) of a table-row passage; None for other passages."""
    if passage.kind != "table" or "\n" not in passage.text:
        return None
    head, row = passage.text.split("\n", 1)
    return _cells(head), _cells(row)


def _line_chunks(source: Source, text: str, kind: str) -> Iterator[Passage]:
    """Blocks between blank lines with their line range; code blocks are merged up to ``CODE_LINES``
    lines (a function with its neighbours), prose keeps one paragraph per passage."""
    assert source.lines is not None
    blocks: list[tuple[int, list[str]]] = []  # (first line number, its lines), split at blank lines
    previous_blank = True
    for n, line in enumerate(text.split("\n"), source.lines[0]):
        if not line.strip():
            previous_blank = True
            continue
        if previous_blank:
            blocks.append((n, []))
        blocks[-1][1].append(line)
        previous_blank = False
    chunk: list[str] = []
    start = 0
    for first, lines in blocks:
        if kind == "text" and len(lines) >= 2 and all(ln.lstrip().startswith("|") for ln in lines):
            yield from _pipe_table(source, first, lines)
            continue
        if chunk and (kind != "code" or (first - start) + len(lines) > CODE_LINES):
            yield _chunk(source.path, start, chunk, kind)
            chunk = []
        if not chunk:
            start = first
        else:
            chunk += [""] * (first - start - len(chunk))  # the blank lines between merged blocks
        chunk += lines
        while len(chunk) > CODE_LINES:
            yield _chunk(source.path, start, chunk[:CODE_LINES], kind)
            chunk, start = chunk[CODE_LINES:], start + CODE_LINES
    if chunk:
        yield _chunk(source.path, start, chunk, kind)


def _pipe_table(source: Source, first: int, lines: list[str]) -> Iterator[Passage]:
    """A Markdown pipe table inside a text file: its rows under the header, cited by line."""
    rows = [(first + i, ln.strip()) for i, ln in enumerate(lines) if not _TABLE_RULE.match(ln.strip())]
    for n, row in rows[1:]:
        yield Passage(Source(source.path, lines=(n, n)), f"{rows[0][1]}\n{row}", "table")


def _chunk(path: str, start: int, lines: list[str], kind: str) -> Passage:
    return Passage(Source(path, lines=(start, start + len(lines) - 1)), "\n".join(lines), kind)


def passages_of(documents: Sequence[Document], sources: Iterable[Source]) -> list[Passage]:
    """The passages of ``documents`` that the given sources cover (same file and page, or an
    overlapping line range; a source without page or lines covers its whole file)."""
    wanted = list(sources)
    if not wanted:
        return []
    return [p for p in passages(documents) if any(covers(s, p.source) for s in wanted)]


def covers(seen: Source, source: Source) -> bool:
    """Whether having seen ``seen`` means having seen the passage at ``source``."""
    if not (names_file(seen.path, source.path) or names_file(source.path, seen.path)):
        return False
    if seen.page is not None and seen.page != source.page:
        return False
    if seen.lines is not None and source.lines is not None:
        return seen.lines[0] <= source.lines[1] and source.lines[0] <= seen.lines[1]
    return True
