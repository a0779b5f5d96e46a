"""Documents as lists of parts that remember where they came from, so answers can cite them.

A :class:`Document` holds its parts in reading order. Text and tables are kept in full; image
parts hold PNG bytes already sized for the vision tower (never larger than what it would see).
Whatever a loader leaves out (an ignored, binary, oversized or unreadable file, a page that cannot
be parsed) is recorded as an :class:`Omission` in ``meta["skipped"]``, so nothing is lost silently:
the context packer lists those next to what it dropped for the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

PartKind = Literal["text", "table", "image"]


class DocumentError(ValueError):
    """A document that cannot be read; the message names the file (and page or line)."""


@dataclass(frozen=True)
class Source:
    path: str
    page: int | None = None  # 1-based page of a PDF or TIFF
    lines: tuple[int, int] | None = None  # 1-based, inclusive line range of a text file
    bbox: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1 in page points

    def cite(self) -> str:
        """A short citation: ``report.pdf p.12``, ``src/app.py:40-88``."""
        out = self.path
        if self.page is not None:
            out += f" p.{self.page}"
        if self.lines is not None:
            a, b = self.lines
            out += f":{a}" if a == b else f":{a}-{b}"
        return out


def names_file(cited: str, actual: str) -> bool:
    """Whether the path ``cited`` names the file at ``actual``: the same path, or a trailing part of
    it (``report.pdf`` and ``data/report.pdf`` name ``/abs/data/report.pdf``; ``port.pdf`` does not)."""
    cited = cited.replace("\\", "/").removeprefix("./")
    actual = actual.replace("\\", "/").removeprefix("./")
    return actual == cited or actual.endswith("/" + cited)


@dataclass(frozen=True)
class Omission:
    """Something left out of a document or a packed context, and why (shown to the agent)."""

    source: str  # a citation or path: "report.pdf p.7", "assets/logo.bin"
    reason: str  # "binary file", "larger than the 1 MB cap (52.4 MB)", "over the token budget"...
    action: str = "skipped"  # skipped (by a loader) | degraded (a page read as text only) | dropped (by the packer) | compressed (signatures only)
    tokens: int | None = None  # what the full item would have cost, when known


@dataclass
class Part:
    kind: PartKind
    source: Source
    text: str = ""  # text, or a Markdown table; for images, a caption or alt text
    image: bytes | None = None  # PNG bytes for image parts
    width: int = 0  # image size in pixels (image parts), for token budgeting without decoding
    height: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Document:
    path: str
    kind: str  # pdf | image | repository | text
    parts: list[Part] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)  # title, outline, page count, tree, dropped files...

    @property
    def skipped(self) -> list[Omission]:
        """What the loader left out of this document, with reasons."""
        return self.meta.setdefault("skipped", [])

    def text(self) -> str:
        """All text and table parts joined in reading order (image parts contribute their caption)."""
        return "\n\n".join(p.text for p in self.parts if p.text)
