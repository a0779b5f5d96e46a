"""Plain text, Markdown, source code, CSV and JSON files as documents.

A text file becomes one part covering lines 1..n (cited ``src/app.py:1-120``); a small, regular
CSV/TSV becomes a Markdown table part instead. Undecodable bytes never fail a load: see
:func:`kimidoc.documents.detect.decode`.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from kimidoc.documents.base import Document, DocumentError, Part, Source
from kimidoc.documents.detect import decode, is_binary
from kimidoc.documents.languages import language_of

CSV_TABLE_MAX_ROWS = 500  # larger CSVs stay raw text: a Markdown table would only add pipes


def markdown_table(rows: list[list[str]]) -> str:
    """A GitHub Markdown table whose first row is the header; pipes and newlines in cells escaped."""
    width = max(len(r) for r in rows)

    def cell(v: str | None) -> str:
        return " ".join((v or "").split()).replace("|", "\\|")

    lines = []
    for i, row in enumerate(rows):
        cells = [cell(v) for v in row] + [""] * (width - len(row))
        lines.append("| " + " | ".join(cells) + " |")
        if i == 0:
            lines.append("|" + "---|" * width)
    return "\n".join(lines)


def text_part(text: str, source_path: str, language: str, encoding: str) -> Part:
    """One part holding a whole text file, with its line range for citations."""
    n = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    lines = (1, n) if n else None
    kind = "text"
    body = text
    if language == "csv" and text.strip():
        table = _csv_table(text, tab=source_path.lower().endswith(".tsv"))
        if table is not None:
            kind, body = "table", table
    meta = {"language": language, "encoding": encoding}
    if language == "json" and source_path.lower().endswith(".json") and text.strip():
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            meta["warning"] = f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
    return Part(kind, Source(source_path, lines=lines), text=body, meta=meta)


def load_text(path: Path, *, display: str | None = None) -> Document:
    """A text document from ``path``; binary content is refused with a :class:`DocumentError`."""
    name = display or str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DocumentError(f"{name}: cannot read ({exc.strerror or exc})") from exc
    if is_binary(data[:8192]):
        raise DocumentError(f"{name}: binary content (not text, PDF or a known image format)")
    text, encoding = decode(data)
    first = text[:200].split("\n", 1)[0]
    part = text_part(text, name, language_of(path, first), encoding)
    doc = Document(name, "text", [part], {"encoding": encoding, "language": part.meta["language"], "bytes": len(data)})
    return doc


def _csv_table(text: str, *, tab: bool) -> str | None:
    sample = text[:8192]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters="\t" if tab else ",;|\t")
    except csv.Error:
        return None
    rows = list(csv.reader(io.StringIO(text), dialect))
    rows = [r for r in rows if r]
    if not rows or len(rows) > CSV_TABLE_MAX_ROWS or len({len(r) for r in rows}) != 1 or len(rows[0]) < 2:
        return None
    return markdown_table(rows)
