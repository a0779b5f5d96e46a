"""Tools over the documents an agent was given: list, read a page or lines, search, render pixels.

Documents are named by their path as loaded (or a unique file name, or their 1-based number in
``list_documents``), so a tool only ever touches what the agent was handed: PDF pages come from
the ingested parts, text and repository files from disk through the confined roots, page and
region renders from the document's own file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from kimidoc.documents.base import Document, Part, Source
from kimidoc.documents.passages import part_source
from kimidoc.documents.retrieve import Index
from kimidoc.tools.base import Tool, ToolResult, tool
from kimidoc.tools.files import LINE_CHARS, MAX_CHARS, compile_pattern, numbered, read_text
from kimidoc.tools.paths import Roots

MAX_RENDER_PIXELS = 4_000_000  # a render larger than this is scaled down (the vision tower would anyway)


class DocumentNotFound(LookupError):
    pass


def find_document(documents: Sequence[Document], name: str) -> Document:
    """The document called ``name``: its path, a unique file name, or its number in the list."""
    name = name.strip()
    for doc in documents:
        if doc.path == name:
            return doc
    matches = [d for d in documents if os.path.basename(d.path.rstrip("/")) == os.path.basename(name.rstrip("/"))]
    if len(matches) == 1:
        return matches[0]
    if name.isdigit() and 1 <= int(name) <= len(documents):
        return documents[int(name) - 1]
    known = ", ".join(d.path for d in documents) or "none"
    why = "several documents have that file name; give the full path" if matches else "no such document"
    raise DocumentNotFound(f"{name!r}: {why} (documents: {known})")


def _pages(doc: Document) -> int:
    if doc.meta.get("pages"):
        return int(doc.meta["pages"])
    return max((p.source.page or 0 for p in doc.parts), default=0)


def _describe(i: int, doc: Document) -> str:
    extra = []
    if doc.kind == "pdf":
        extra.append(f"{_pages(doc)} pages")
        if doc.meta.get("title"):
            extra.append(f"title {doc.meta['title']!r}")
    elif doc.kind == "repository":
        extra.append(f"{doc.meta.get('files', len(doc.parts) - 1)} text files")
    elif doc.kind == "image" and doc.meta.get("width"):
        extra.append(f"{doc.meta['width']}x{doc.meta['height']} px")
    elif doc.kind == "text" and doc.parts and doc.parts[0].source.lines:
        extra.append(f"{doc.parts[0].source.lines[1]} lines")
    if doc.skipped:
        extra.append(f"{len(doc.skipped)} items skipped at loading")
    return f"{i}. {doc.path} [{doc.kind}]" + (f" ({', '.join(extra)})" if extra else "")


def _page_text(doc: Document, page: int) -> str:
    parts = [p for p in doc.parts if p.source.page == page]
    if not parts:
        total = _pages(doc)
        raise ValueError(
            f"{doc.path}: page {page} is not in the document (pages 1-{total})" if total else f"{doc.path}: no pages"
        )
    out = []
    for p in parts:
        if p.kind == "image":
            where = f" at {tuple(round(v) for v in p.source.bbox)}" if p.source.bbox else ""
            out.append(f"[image{where}: {p.text or 'no caption'}; render_page shows it]")
        else:
            out.append(p.text)
    return f"{Source(doc.path, page=page).cite()}\n" + "\n\n".join(out)


def _hit_source(doc: Document, part: Part, text: str, start: int) -> Source:
    """The citation of a match at ``start`` in ``part``: its page, or its exact line in the file."""
    src = part_source(doc, part)
    if src.lines is not None and part.kind == "text":
        line = src.lines[0] + text.count("\n", 0, start)
        return Source(src.path, page=src.page, lines=(line, line))
    return Source(src.path, page=src.page)


def _occurrences(scope: Sequence[Document], matcher: re.Pattern[str], query: str, max_results: int) -> ToolResult:
    """Every match of ``matcher`` in ``scope``, one line each with its exact citation."""
    hits: list[str] = []
    sources: list[Source] = []
    size = 0
    for doc in scope:
        for part in doc.parts:
            if part.kind == "image" or part.meta.get("role") == "tree" or not part.text:
                continue
            for m in matcher.finditer(part.text):
                line_start = part.text.rfind("\n", 0, m.start()) + 1
                line_end = part.text.find("\n", m.end())
                line = part.text[line_start : line_end if line_end != -1 else len(part.text)].strip()
                if len(line) > LINE_CHARS:
                    at = max(0, m.start() - line_start - LINE_CHARS // 3)
                    line = "..." + line[at : at + LINE_CHARS] + "..."
                src = _hit_source(doc, part, part.text, m.start())
                row = f"{src.cite()}: {line}"
                hits.append(row)
                sources.append(src)
                size += len(row)
                if len(hits) >= max_results or size > MAX_CHARS:
                    return ToolResult(
                        "\n".join(hits) + "\n[... more hits not shown; narrow the search]", sources=sources
                    )
    return ToolResult("\n".join(hits), sources=sources) if hits else ToolResult(f"no match for {query!r}")


def document_tools(documents: Sequence[Document], roots: Sequence[str] | None = None) -> list[Tool]:
    """``list_documents``, ``read_document``, ``search_documents`` and ``render_page``, plus
    ``list_files``/``read_file``/``grep`` when there are folder roots (by default the folders of
    the repository documents)."""
    from kimidoc.tools.files import file_tools

    documents = list(documents)
    if roots is None:
        roots = [d.path for d in documents if d.kind == "repository" and os.path.isdir(d.path)]
    doc_roots = {
        d.path: Roots([d.path]) for d in documents if d.kind in ("text", "repository") and os.path.exists(d.path)
    }

    @tool
    def list_documents() -> str:
        """List the documents you were given, with their kind and size."""
        return "\n".join(_describe(i, d) for i, d in enumerate(documents, 1)) or "(no documents)"

    @tool
    def read_document(
        document: str,
        page: int | None = None,
        start_line: int = 1,
        end_line: int | None = None,
        file: str | None = None,
    ) -> ToolResult | str:
        """Read a PDF page, or a line range of a text file or of a file inside a repository.

        Args:
            document: the document's path as listed by list_documents (or its number)
            page: PDF page to read (1-based); required for PDFs
            start_line: first line for text files (1-based)
            end_line: last line for text files (inclusive)
            file: for a repository, the file inside it (relative path)
        """
        doc = find_document(documents, document)
        if doc.kind == "pdf" or (doc.kind == "image" and page is not None):
            if page is None:
                raise ValueError(f"{doc.path} is a PDF with {_pages(doc)} pages: give page=N")
            return ToolResult(_page_text(doc, page), sources=[Source(doc.path, page=page)])
        if doc.kind == "image":
            return f"{doc.path} is an image ({doc.parts[0].text if doc.parts else ''}); render_page returns its pixels"
        roots = doc_roots.get(doc.path)
        if roots is None:  # no file on disk any more: what was ingested
            return ToolResult("\n\n".join(p.text for p in doc.parts), sources=[part_source(doc, p) for p in doc.parts])
        if doc.kind == "repository":
            if not file:
                tree = next((p.text for p in doc.parts if p.meta.get("role") == "tree"), doc.meta.get("tree"))
                return tree or "(empty repository)"
            where, text = read_text(roots, file)
            return numbered(f"{doc.path.rstrip('/')}/{where.display}", text, start_line, end_line)
        return numbered(doc.path, read_text(roots, ".")[1], start_line, end_line)

    index: list[Index] = []  # built on the first ranked search, then reused

    @tool
    def search_documents(
        query: str,
        mode: str = "ranked",
        document: str | None = None,
        case_sensitive: bool = False,
        max_results: int | None = None,
    ) -> ToolResult:
        """Search the documents; every hit comes with its citation (file p.N or file:line).

        Args:
            query: what to look for: a question or keywords (ranked), a phrase (exact) or a Python regular expression (regex)
            mode: "ranked" (the passages that best match the query, best first), "exact" (every occurrence of the text) or "regex"
            document: only this document (path or number from list_documents)
            case_sensitive: match case exactly (exact and regex modes)
            max_results: stop after this many hits (default 10 ranked, 50 otherwise)
        """
        max_results = max_results or (10 if mode == "ranked" else 50)
        if mode not in ("ranked", "exact", "regex"):
            raise ValueError(f"mode must be 'ranked', 'exact' or 'regex', got {mode!r}")
        scope = [find_document(documents, document)] if document else documents
        if mode == "ranked":
            if not index:
                index.append(Index.of(documents))
            paths = {part_source(d, p).path for d in scope for p in d.parts}
            hits = index[0].search(query, max_results, where=lambda p: p.source.path in paths)
            if not hits:
                return ToolResult(f"no passage matches {query!r}; try other words, or mode='exact' / 'regex'")
            rows = [f"[{i}] {h.passage.cite()}\n{h.passage.text}" for i, h in enumerate(hits, 1)]
            return ToolResult("\n\n".join(rows), sources=[h.passage.source for h in hits])
        return _occurrences(
            scope, compile_pattern(query, regex=mode == "regex", case_sensitive=case_sensitive), query, max_results
        )

    @tool
    def render_page(document: str, page: int = 1, zoom: float = 2.0, region: list[float] | None = None) -> ToolResult:
        """Look at a PDF page (or an image) as pixels: the whole page, or a region of it zoomed in.

        Args:
            document: the document's path as listed by list_documents (or its number)
            page: PDF page (1-based)
            zoom: scale; 1 is 72 dpi for PDFs and the original size for images, 2-4 reads small print
            region: [x0, y0, x1, y1] to crop: PDF points (as in citations' boxes) or image pixels
        """
        doc = find_document(documents, document)
        if zoom <= 0 or zoom > 16:
            raise ValueError(f"zoom must be in (0, 16], got {zoom}")
        if region is not None and (len(region) != 4 or region[2] <= region[0] or region[3] <= region[1]):
            raise ValueError(f"region must be [x0, y0, x1, y1] with x1 > x0 and y1 > y0, got {region}")
        box = tuple(region) if region is not None else None
        if doc.kind == "pdf":
            image, note = _render_pdf(doc, page, zoom, box)
        elif doc.kind == "image":
            image, note = _render_image(doc, page, zoom, box)
        else:
            raise ValueError(f"{doc.path} is a {doc.kind} document; only PDFs and images can be rendered")
        from kimidoc.documents.render import to_png
        from kimidoc.vision.budget import image_tokens

        label = Source(doc.path, page=page if doc.kind == "pdf" else None, bbox=box).cite()
        where = f" region {list(box)}" if box else ""
        text = f"{label}{where} at zoom {zoom:g}: {image.width}x{image.height} px, about {image_tokens(image.width, image.height)} image tokens{note}"
        return ToolResult(text, images=[to_png(image)])

    tools = [list_documents, read_document, search_documents, render_page]
    if roots:
        tools += file_tools(Roots(roots))
    return tools


def _capped_zoom(width: float, height: float, zoom: float) -> tuple[float, str]:
    pixels = width * zoom * height * zoom
    if pixels <= MAX_RENDER_PIXELS:
        return zoom, ""
    capped = zoom * (MAX_RENDER_PIXELS / pixels) ** 0.5
    return (
        capped,
        f" (zoom lowered from {zoom:g} to {capped:.2f} to stay under {MAX_RENDER_PIXELS // 1_000_000} megapixels; crop a region to see more detail)",
    )


def _render_pdf(doc: Document, page: int, zoom: float, box: tuple[float, ...] | None):  # noqa: ANN202
    import pymupdf

    from kimidoc.documents.pdf import open_pdf
    from kimidoc.documents.render import render_page as render

    pdf = open_pdf(Path(doc.path), display=doc.path)
    try:
        if not 1 <= page <= pdf.page_count:
            raise ValueError(f"{doc.path}: page {page} out of range 1-{pdf.page_count}")
        rect = pdf[page - 1].rect if box is None else pymupdf.Rect(box) & pdf[page - 1].rect
        zoom, note = _capped_zoom(rect.width, rect.height, zoom)
        return render(pdf, page, dpi=max(1, round(72 * zoom)), clip=box), note  # type: ignore[arg-type]
    finally:
        pdf.close()


def _render_image(doc: Document, page: int, zoom: float, box: tuple[float, ...] | None):  # noqa: ANN202
    from PIL import Image

    from kimidoc.documents.render import crop

    with Image.open(doc.path) as img:
        frames = getattr(img, "n_frames", 1)
        if not 1 <= page <= frames:
            raise ValueError(f"{doc.path}: page {page} out of range 1-{frames}")
        img.seek(page - 1)
        image = img.convert("RGB")
    box = box or (0, 0, image.width, image.height)
    zoom, note = _capped_zoom(min(box[2], image.width) - box[0], min(box[3], image.height) - box[1], zoom)
    return crop(image, box, zoom), note  # type: ignore[arg-type]
