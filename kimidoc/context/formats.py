"""How packed documents are written out: Markdown or XML.

A renderer turns one packing unit (a file, a PDF page, an image frame) into a block of text, and
writes document headers and the list of what was left out. The packer counts tokens on exactly
these strings, so what it budgets is what the model reads. Output depends only on the documents
(no times, no absolute paths added), so the same inputs give the same bytes, and a prompt cache
keeps its prefix when only later documents change.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from kimidoc.documents.base import Document, Omission, Part

FORMATS = ("markdown", "xml")
_PAGE = re.compile(r"^(?P<doc>.*) p\.(?P<page>\d+)$")


@dataclass
class Block:
    """A rendered unit: its text with image markers, and the image parts those markers stand for."""

    text: str
    images: list[Part]
    markers: list[str] = field(default_factory=list)  # the marker text standing for each image
    first_image: int = 1  # the number of its first image marker


class Renderer:
    """Markdown (the default) or XML (``<documents>``, for tools and prompts that want tags)."""

    def __init__(self, fmt: str = "markdown", *, line_numbers: bool = False) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown context format {fmt!r}; use one of {', '.join(FORMATS)}")
        self.xml = fmt == "xml"
        self.line_numbers = line_numbers

    # -- whole output -------------------------------------------------------------------------
    def preamble(self) -> str:
        return "<documents>\n" if self.xml else ""

    def postamble(self) -> str:
        return "</documents>\n" if self.xml else ""

    def doc_open(self, doc: Document) -> str:
        desc = _describe(doc)
        if self.xml:
            return f"<document path={quoteattr(doc.path)} kind={quoteattr(doc.kind)}{''.join(f' {k}={quoteattr(str(v))}' for k, v, _ in desc)}>\n"
        extra = ", ".join(phrase for _, _, phrase in desc)
        return f"# {doc.path} ({doc.kind}{', ' + extra if extra else ''})\n\n"

    def doc_close(self, doc: Document) -> str:
        return "</document>\n" if self.xml else ""

    # -- units --------------------------------------------------------------------------------
    def unit(self, parts: Sequence[Part], first_image: int, *, compressed: str | None = None) -> Block:
        """``parts`` of one unit; ``compressed`` replaces their text with a signatures-only view.
        Image markers are numbered from ``first_image``."""
        head = parts[0]
        if compressed is not None:
            return Block(self._compressed(head, compressed), [])
        out: list[str] = []
        images: list[Part] = []
        markers: list[str] = []
        for part in parts:
            if part.kind == "image" and part.image is not None:
                markers.append(self._image(part, first_image + len(images)))
                out.append(markers[-1])
                images.append(part)
            elif part.meta.get("language") is not None:
                out.append(self._file(part))
            else:
                out.append(self._part(part))
        if self.xml:
            return Block("".join(out), images, markers, first_image)
        title = unit_cite(head) + (" (folder tree)" if head.meta.get("role") == "tree" else "")
        return Block(
            f"## {title}\n\n" + "\n\n".join(s.rstrip("\n") for s in out) + "\n\n", images, markers, first_image
        )

    def _part(self, part: Part) -> str:
        if self.xml:
            tag = "table" if part.kind == "table" else "tree" if part.meta.get("role") == "tree" else "text"
            return f"<{tag} source={quoteattr(part.source.cite())}>\n{escape(part.text)}\n</{tag}>\n"
        return part.text

    def _file(self, part: Part) -> str:
        text = _numbered(part.text) if self.line_numbers and part.kind == "text" else part.text
        lang = part.meta["language"]
        if self.xml:
            return (
                f"<file source={quoteattr(part.source.cite())} language={quoteattr(lang)}>\n{escape(text)}\n</file>\n"
            )
        if part.kind == "table" or lang in ("markdown", "text") and not self.line_numbers:
            return text
        fence = _fence(text)
        return f"{fence}{lang}\n{text.rstrip(chr(10))}\n{fence}"

    def _compressed(self, part: Part, view: str) -> str:
        what = "folders" if part.meta.get("role") == "tree" else "signatures"
        if self.xml:
            return f'<file source={quoteattr(part.source.cite())} view="{what}">\n{escape(view)}\n</file>\n'
        fence = _fence(view)
        return f"## {part.source.cite()} ({what} only; read the rest with the document tools)\n\n{fence}\n{view}\n{fence}\n\n"

    def _image(self, part: Part, index: int) -> str:
        if self.xml:
            return f'<image id="{index}" source={quoteattr(part.source.cite())} width="{part.width}" height="{part.height}">{escape(part.text)}</image>\n'
        label = part.text.replace("]", ")").replace("[", "(").replace("\n", " ")
        return f"![{label}](image:{index} {part.source.cite()})"

    # -- what was left out --------------------------------------------------------------------
    def omitted(self, omissions: Sequence[Omission], *, limit: int | None = None) -> str:
        """The list of what is not in the context, with reasons (see :func:`omission_lines`);
        ``limit`` caps the lines, and the rest are counted in a last line."""
        if not omissions:
            return ""
        lines = omission_lines(omissions)
        if limit is not None and len(lines) > limit:
            lines = lines[:limit] + [f"... and {len(lines) - limit} more entries (listed in PackResult.omitted)"]
        return self.omitted_header() + "".join(self.omitted_item(line) for line in lines) + self.omitted_footer()

    def omitted_header(self) -> str:
        if self.xml:
            return '<omitted note="not in this context; read with the document tools">\n'
        return "# Not included (read these with the document tools)\n\n"

    def omitted_item(self, line: str) -> str:
        return f"<item>{escape(line)}</item>\n" if self.xml else f"- {line}\n"

    def omitted_footer(self) -> str:
        return "</omitted>\n" if self.xml else ""


def mergeable(a: Omission, b: Omission) -> bool:
    """True when ``b`` is the page right after ``a`` in the same file, left out the same way."""
    ma, mb = _PAGE.match(a.source), _PAGE.match(b.source)
    return bool(
        ma
        and mb
        and ma["doc"] == mb["doc"]
        and int(mb["page"]) == int(ma["page"]) + 1
        and a.action == b.action
        and a.reason == b.reason
    )


def omission_lines(omissions: Sequence[Omission]) -> list[str]:
    """One line per omission; consecutive pages of one file left out for the same reason are
    merged (``report.pdf p.40-212``), and paths ignored by ``.gitignore`` are counted per rule file."""
    lines: list[str] = []
    ignored: dict[str, int] = {}
    run: list[Omission] = []

    def flush() -> None:
        if not run:
            return
        first, last = run[0], run[-1]
        where = first.source if len(run) == 1 else f"{first.source}-{_PAGE.match(last.source)['page']}"  # type: ignore[index]
        tokens = sum(o.tokens or 0 for o in run)
        lines.append(f"{where}: {first.action}, {first.reason}" + (f" (~{tokens:,} tokens)" if tokens else ""))
        run.clear()

    for o in omissions:
        if o.action == "ignored":
            ignored[o.reason] = ignored.get(o.reason, 0) + 1
            continue
        if run and not mergeable(run[-1], o):
            flush()
        run.append(o)
    flush()
    for reason, n in ignored.items():
        lines.append(f"{n:,} path{'s' if n != 1 else ''} {reason}")
    return lines


def _describe(doc: Document) -> list[tuple[str, object, str]]:
    """(XML attribute, value, Markdown phrase) facts shown in a document's header."""
    out: list[tuple[str, object, str]] = []
    if doc.kind == "pdf" and "pages" in doc.meta:
        out.append(("pages", doc.meta["pages"], f"{doc.meta['pages']} pages"))
    if doc.kind == "repository" and "files" in doc.meta:
        out.append(("files", doc.meta["files"], f"{doc.meta['files']} files"))
    if doc.kind == "image" and doc.meta.get("frames", 1) > 1:
        out.append(("frames", doc.meta["frames"], f"{doc.meta['frames']} frames"))
    if doc.meta.get("repaired"):
        out.append(("repaired", "true", "damaged file repaired by PyMuPDF: some content may be missing"))
    return out


def unit_cite(part: Part) -> str:
    """How a unit is cited: its page for PDFs and TIFFs, its line range for text files."""
    if part.source.page is not None:
        return f"{part.source.path} p.{part.source.page}"
    return part.source.cite()


def _fence(text: str) -> str:
    if "```" not in text:
        return "```"
    longest = max(len(m) for m in re.findall(r"`{3,}", text))
    return "`" * (longest + 1)


def _numbered(text: str) -> str:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    width = len(str(len(lines)))
    return "\n".join(f"{i:>{width}}| {line}" for i, line in enumerate(lines, 1))
