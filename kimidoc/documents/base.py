"""Documents as lists of parts that remember where they came from, so answers can cite them."""

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
