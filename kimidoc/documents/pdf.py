"""PDF pages as parts: text in reading order with headings and links, tables as Markdown,
figures and scanned pages as images (scans also as OCR text), with the outline and metadata on the
document.

Built on PyMuPDF: its text extraction (``get_text("dict")``), its table finder
(``page.find_tables``, ruled tables by their lines, unruled ones by its text strategy where
:mod:`kimidoc.documents.tables` sees aligned columns), its drawing clusters for vector figures
and its renderer. Reading order (columns) is :mod:`kimidoc.documents.layout`, OCR
:mod:`kimidoc.documents.ocr`. pymupdf4llm's ``to_markdown`` with its layout model runs only on
request (``engine="pymupdf4llm"``); ``benchmarks/bench_ingest.py`` measures both.

Real files break in every way, so every PyMuPDF call that can raise runs inside a guard that
turns it into a :class:`DocumentError` naming the file, or, for one page, an :class:`Omission`;
and each page's optional work (tables, figures, OCR) runs under a work and time budget, so one
page with 100,000 vector paths cannot stall a document.

Pages stream: :func:`iter_pdf_parts` holds one page at a time, so a 1,000-page file is read in
bounded memory; :func:`load_pdf` collects the parts into a :class:`Document`.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pymupdf

from kimidoc.documents import layout
from kimidoc.documents import tables as tables_mod
from kimidoc.documents.base import Document, DocumentError, Omission, Part, Source
from kimidoc.progress import progress

SCAN_CHARS = 40  # fewer visible characters than this and the page is a picture (scan, chart, slide)
MIN_FIGURE = 0.02  # figures smaller than this share of the page are decoration (logos, bullets, rules)
MIN_FIGURE_PATHS = 12  # a vector drawing needs this many paths to count as a figure (not a frame or rule)
MIN_TABLE_LINES = 4  # pages with fewer ruling lines/rects than this skip the (costly) ruled-table finder
# Work budget of one page. PyMuPDF's table finder and drawing clustering grow faster than
# linearly with the paths (16,384 paths: 48 s and 38 s); past these the page keeps its text only.
MAX_PATHS = 3000
MAX_ANNOTS = 2000  # more annotations than this on one page: its links are not read
MAX_TABLE_WORDS = 3000  # an "aligned" region this large is a page of prose or a data dump, not a table
CLUSTER_CELL = 8.0  # paths closer than about this (points) belong to one drawing
PAGE_SECONDS = 15.0  # optional stages (tables, figures, OCR) do not start once a page has used this

_TABLES_TAKE_LAYOUT = (
    "use_layout" in inspect.signature(pymupdf.table.find_tables).parameters
)  # PyMuPDF >= 1.27: skip its layout model
_TEXT_FLAGS = (
    pymupdf.TEXT_PRESERVE_LIGATURES
    | pymupdf.TEXT_PRESERVE_WHITESPACE
    | pymupdf.TEXT_MEDIABOX_CLIP
    | pymupdf.TEXT_DEHYPHENATE
)


def open_pdf(path: Path, *, password: str | None = None, display: str | None = None) -> pymupdf.Document:
    """Open (and, where MuPDF can, repair) a PDF; encrypted files need ``password``."""
    name = display or str(path)
    if not path.exists():
        raise DocumentError(f"{name}: no such file")
    pymupdf.TOOLS.reset_mupdf_warnings()
    try:
        doc = pymupdf.open(path, filetype="pdf")
    except Exception as exc:  # FileDataError, RuntimeError: MuPDF could not even repair the xref
        raise DocumentError(f"{name}: not a readable PDF, and PyMuPDF could not repair it ({exc})") from exc
    try:
        if doc.needs_pass:
            if password is None:
                raise DocumentError(f"{name}: the PDF is encrypted; pass password=... to open it")
            if not doc.authenticate(password):
                raise DocumentError(f"{name}: wrong password for the encrypted PDF")
        count = doc.page_count  # raises on a broken page tree ("Invalid number of pages")
    except DocumentError:
        doc.close()
        raise
    except Exception as exc:
        doc.close()
        raise DocumentError(f"{name}: the page tree is broken beyond repair ({exc})") from exc
    if count == 0:
        doc.close()
        raise DocumentError(f"{name}: no pages could be recovered (truncated or damaged beyond repair)")
    return doc


def pdf_meta(doc: pymupdf.Document) -> dict[str, Any]:
    """Title, author, page count, outline (level, title, page), and whether the file was encrypted/repaired."""
    meta: dict[str, Any] = {"pages": doc.page_count}
    problems: list[str] = []
    info: dict[str, Any] = {}
    try:
        info = doc.metadata or {}
    except Exception as exc:  # a damaged /Info dictionary costs the metadata, not the document
        problems.append(f"metadata unreadable ({exc})")
    for key in ("title", "author", "subject"):
        if info.get(key):
            meta[key] = info[key]
    try:
        toc = doc.get_toc(simple=True)
    except Exception as exc:  # outlines with cycles or dangling references
        problems.append(f"outline unreadable ({exc})")
        toc = []
    if toc:
        meta["outline"] = [(level, title, page) for level, title, page in toc]
    meta["encrypted"] = bool(doc.is_encrypted or info.get("encryption"))
    meta["repaired"] = bool(getattr(doc, "is_repaired", False))
    if meta["repaired"]:
        meta["warnings"] = pymupdf.TOOLS.mupdf_warnings().splitlines()[:20]  # what MuPDF found broken
    if problems:
        meta.setdefault("warnings", []).extend(problems)
    return meta


def iter_pdf_parts(
    path: Path,
    *,
    password: str | None = None,
    display: str | None = None,
    pages: Iterable[int] | None = None,
    dpi: int = 144,
    tables: bool = True,
    figures: bool = True,
    render_pages: bool = False,
    engine: str = "fast",
    ocr: str | None = "auto",
    skipped: list[Omission] | None = None,
    meta: dict[str, Any] | None = None,
) -> Iterator[Part]:
    """Parts of each page in order, one page in memory at a time.

    ``pages``: 1-based page numbers (default all). ``render_pages`` adds a full-page image to every
    page for the vision path (figures and scanned pages get images regardless). Pages that fail are
    recorded in ``skipped`` (when given) and the rest still come; ``meta`` (when given) receives
    :func:`pdf_meta`. ``engine="pymupdf4llm"`` hands each page to pymupdf4llm's ``to_markdown``
    (its layout model, much slower); the default ``"fast"`` is :func:`page_parts`, whose pages
    over their work budget keep their text and are listed in ``skipped`` as "degraded". ``ocr``:
    the OCR engine for pages without a text layer (see :mod:`kimidoc.documents.ocr`; None: off).
    """
    if engine not in ("fast", "pymupdf4llm"):
        raise ValueError(f"unknown PDF engine {engine!r}; use 'fast' or 'pymupdf4llm'")
    name = display or str(path)
    doc = open_pdf(path, password=password, display=name)
    try:
        if meta is not None:
            meta.update(pdf_meta(doc))
        count = doc.page_count  # open_pdf has read it without error
        numbers = list(pages) if pages is not None else list(range(1, count + 1))
        for n in progress(numbers, desc=f"reading {Path(name).name}", unit="page"):
            if not 1 <= n <= count:
                raise DocumentError(f"{name}: page {n} out of range 1-{count}")
            try:
                page = doc.load_page(n - 1)
                notes: list[str] = []
                if engine == "pymupdf4llm":
                    parts = _pymupdf4llm_parts(doc, page, name, dpi=dpi, render_page=render_pages)
                else:
                    parts = page_parts(
                        page,
                        name,
                        dpi=dpi,
                        tables=tables,
                        figures=figures,
                        render_page=render_pages,
                        ocr=ocr,
                        notes=notes,
                    )
            except Exception as exc:  # a damaged page (or one its renderer rejects) must not cost the others
                if skipped is None:
                    raise DocumentError(f"{name} p.{n}: cannot be read ({exc})") from exc
                skipped.append(Omission(f"{name} p.{n}", f"page cannot be read ({exc})"))
                continue
            if notes and skipped is not None:
                skipped.append(Omission(f"{name} p.{n}", "; ".join(notes), action="degraded"))
            yield from parts
    finally:
        doc.close()


def load_pdf(path: Path, *, password: str | None = None, display: str | None = None, **options: Any) -> Document:
    """The whole PDF as a :class:`Document` (see :func:`iter_pdf_parts` for ``options``)."""
    name = display or str(path)
    doc = Document(name, "pdf")
    doc.parts = list(
        iter_pdf_parts(path, password=password, display=name, skipped=doc.skipped, meta=doc.meta, **options)
    )
    return doc


def page_parts(
    page: pymupdf.Page,
    name: str,
    *,
    dpi: int = 144,
    tables: bool = True,
    figures: bool = True,
    render_page: bool = False,
    ocr: str | None = "auto",
    notes: list[str] | None = None,
) -> list[Part]:
    """Text, table and image parts of one page, in reading order.

    The page's optional work (tables, vector figures, OCR) runs under a work and time budget: a
    page with more than :data:`MAX_PATHS` vector paths, or past :data:`PAGE_SECONDS`, keeps its
    plain text and the reason goes to ``notes``. All boxes are in the page's displayed
    coordinates (``/Rotate`` applied), as a viewer and :func:`render_page` show it. ``ocr``: the
    engine for pages without a text layer (``"auto"``, ``"rapidocr"``, ``"tesseract"``, None).
    """
    n = page.number + 1
    notes = notes if notes is not None else []
    deadline = time.monotonic() + PAGE_SECONDS
    area = abs(page.rect)
    turn = page.rotation_matrix if page.rotation % 360 else None

    drawings: list[dict[str, Any]] = []
    if tables or figures:
        drawings = page.get_cdrawings()
        if len(drawings) > MAX_PATHS:
            notes.append(
                f"{len(drawings)} vector paths (over {MAX_PATHS}): tables and vector figures not searched, the page is read as text"
            )
            drawings = []
        elif turn is not None:
            drawings = [dict(d, rect=pymupdf.Rect(d["rect"]) * turn) for d in drawings]

    links: list[tuple[layout.Box, str]] = []
    annots = _annotation_count(page)
    if annots > MAX_ANNOTS:
        notes.append(f"{annots} annotations (over {MAX_ANNOTS}): links not read")
    else:
        links = [(tuple(link["from"]), link["uri"]) for link in page.get_links() if link.get("uri")]
    page_dict = page.get_text("dict", flags=_TEXT_FLAGS)
    if turn is not None:
        _turn_dict(page_dict, turn)
    segments = layout.line_segments(page_dict, links)[0]
    body = layout.body_size(segments) if segments else 10.0

    found_tables: list[tuple[layout.Box, str]] = []
    if tables and _in_time(deadline, notes, "tables"):
        found_tables = _tables(page, drawings, segments, body, notes)
    table_boxes = [t[0] for t in found_tables]
    figure_boxes: list[layout.Box] = []
    if figures and _in_time(deadline, notes, "figures"):
        figure_boxes = _figures(page, drawings, table_boxes, area, turn)
    segments, inside = layout.partition(segments, table_boxes + figure_boxes)
    chars = sum(len(s.text.replace(" ", "")) for s in segments + inside)

    if chars < SCAN_CHARS and figure_boxes:
        # A scan, a chart or a slide with a few words: the picture carries the page, and OCR
        # gives its words to every backend (the embedded default reads no images).
        caption = " ".join(s.text for s in segments + inside)
        parts = _ocr_parts(page, name, ocr, notes) if ocr and _in_time(deadline, notes, "OCR") else []
        return parts + [_render_part(page, name, None, dpi, caption, scanned=True)]

    items: list[Any] = (
        list(segments) + [("table", b, md) for b, md in found_tables] + [("figure", b) for b in figure_boxes]
    )
    boxes = [s.bbox for s in segments] + table_boxes + figure_boxes
    floats = range(len(segments), len(items))
    # Vertical lines on a page of horizontal text are margin stamps and labels: read after the
    # page. On a page set sideways they are the text itself and keep their place.
    vertical = [i for i, s in enumerate(segments) if s.vertical]
    aside = vertical if 2 * sum(len(segments[i].text) for i in vertical) < sum(len(s.text) for s in segments) else []
    ordered = layout.reading_order(items, boxes, font=body, floats=floats, aside=aside)

    parts: list[Part] = []
    run: list[layout.Segment] = []

    def flush() -> None:
        if run:
            text = layout.to_text(run, body)
            meta = {"links": [u for _, u in links if u in text]} if links else {}
            parts.append(
                Part(
                    "text",
                    Source(name, page=n, bbox=_rounded(layout.union([s.bbox for s in run]))),
                    text=text,
                    meta=meta,
                )
            )
            run.clear()

    for item in ordered:
        if isinstance(item, layout.Segment):
            if run and run[-1].vertical != item.vertical:
                flush()  # a margin stamp is its own part, not glued to the last paragraph
            run.append(item)
            continue
        flush()
        if item[0] == "table":
            parts.append(Part("table", Source(name, page=n, bbox=_rounded(item[1])), text=item[2]))
        else:
            caption = " ".join(s.text for s in inside if _center_in(s.bbox, item[1]))
            parts.append(_render_part(page, name, item[1], dpi, caption))
    flush()
    if render_page:
        parts.append(_render_part(page, name, None, dpi, "", page_render=True))
    return parts


def _annotation_count(page: pymupdf.Page) -> int:
    """Entries of the page's /Annots array, read from the raw object (PyMuPDF's link reader walks
    them one by one: minutes for 32,768)."""
    doc = page.parent
    kind, value = doc.xref_get_key(page.xref, "Annots")
    if kind == "xref":
        value = doc.xref_object(int(value.split()[0]), compressed=True)
    return value.count(" R") if kind in ("array", "xref") else 0


def _in_time(deadline: float, notes: list[str], stage: str) -> bool:
    if time.monotonic() <= deadline:
        return True
    notes.append(f"over the {PAGE_SECONDS:.0f} s page budget: {stage} skipped")
    return False


def _turn_dict(page_dict: dict[str, Any], turn: pymupdf.Matrix) -> None:
    """Text boxes and directions from the unrotated page into displayed coordinates, in place."""
    origin = pymupdf.Point(0, 0) * turn
    for block in page_dict.get("blocks", ()):
        block["bbox"] = tuple(pymupdf.Rect(block["bbox"]) * turn)
        for line in block.get("lines", ()):
            line["bbox"] = tuple(pymupdf.Rect(line["bbox"]) * turn)
            d = pymupdf.Point(line.get("dir", (1, 0))) * turn - origin
            line["dir"] = (d.x, d.y)
            for span in line["spans"]:
                span["bbox"] = tuple(pymupdf.Rect(span["bbox"]) * turn)


def _ocr_parts(page: pymupdf.Page, name: str, engine: str, notes: list[str]) -> list[Part]:
    from kimidoc.documents import ocr

    try:
        picked = ocr.pick_engine(engine)
    except ocr.OCRUnavailable as exc:
        notes.append(f"scanned page not OCRed: {exc}")
        return []
    lines = ocr.ocr_page(page, picked)
    if not lines:
        return []
    text = "\n".join(t for _, t in lines)
    bbox = layout.union([b for b, _ in lines])
    return [Part("text", Source(name, page=page.number + 1, bbox=_rounded(bbox)), text=text, meta={"ocr": picked})]


def _pymupdf4llm_parts(
    doc: pymupdf.Document, page: pymupdf.Page, name: str, *, dpi: int, render_page: bool
) -> list[Part]:
    import pymupdf4llm

    (chunk,) = pymupdf4llm.to_markdown(doc, pages=[page.number], page_chunks=True, show_progress=False)
    text = chunk["text"].strip()
    if len(text.replace(" ", "")) < SCAN_CHARS:
        return [_render_part(page, name, None, dpi, text, scanned=True)]
    parts = [Part("text", Source(name, page=page.number + 1), text=text, meta={"engine": "pymupdf4llm"})]
    if render_page:
        parts.append(_render_part(page, name, None, dpi, "", page_render=True))
    return parts


def _tables(
    page: pymupdf.Page, drawings: list[dict[str, Any]], segments: list[layout.Segment], body: float, notes: list[str]
) -> list[tuple[layout.Box, str]]:
    """Ruled tables (where the drawings have lines) and unruled ones (where text lines align in
    columns), each as (displayed bbox, Markdown). The finder works in displayed coordinates."""
    kw = {"use_layout": False} if _TABLES_TAKE_LAYOUT else {}
    out: list[tuple[layout.Box, str]] = []
    words: list[tuple[layout.Box, str, tuple[int, int, int]]] | None = None

    def cells(table: Any) -> list[list[str | None]]:
        nonlocal words
        if words is None:
            turn = page.rotation_matrix
            words = [
                (tuple(pymupdf.Rect(w[:4]) * turn), w[4], (w[5], w[6], w[7]))
                for w in page.get_text("words", flags=_TEXT_FLAGS)
            ]
        return tables_mod.cell_texts([row.cells for row in table.rows], words)

    ruled = [
        pymupdf.Rect(d["rect"]) for d in drawings if any(item[0] in ("l", "re", "qu") for item in d.get("items", ()))
    ]
    if sum(len(d.get("items", ())) for d in drawings) >= MIN_TABLE_LINES and ruled:
        # Only look where the rules are: the finder's cost is the characters it has to place.
        clip = pymupdf.Rect(layout.union([tuple(r) for r in ruled])) + (-3, -3, 3, 3)
        for table in page.find_tables(clip=clip & page.rect, **kw).tables:
            if table.row_count < 2 or table.col_count < 2:
                continue
            rows = cells(table)
            if tables_mod.coarse(rows):  # rules between groups of rows: the rows are in the text
                box = pymupdf.Rect(table.bbox) + (-1, -1, 1, 1)
                by_text = [
                    (t, tables_mod.tidy(cells(t)))
                    for t in page.find_tables(clip=box & page.rect, strategy="text", **kw).tables
                ]
                by_text = [(t, g) for t, g in by_text if tables_mod.looks_like_table(g)]
                if by_text:
                    out += [(tuple(t.bbox), tables_mod.markdown(g)) for t, g in by_text]
                    continue
            md = tables_mod.markdown(rows)
            if md:
                out.append((tuple(table.bbox), md))
    for region in tables_mod.aligned_regions(segments, body, taken=[b for b, _ in out]):
        size = sum(len(s.text.split()) for s in segments if _center_in(s.bbox, region))
        if size > MAX_TABLE_WORDS:
            notes.append(f"an aligned region of {size} words (over {MAX_TABLE_WORDS}): not searched for tables")
            continue
        clip = pymupdf.Rect(region) + (-2, -2, 2, 2)
        for table in page.find_tables(clip=clip & page.rect, strategy="text", **kw).tables:
            rows = tables_mod.tidy(cells(table))
            if tables_mod.looks_like_table(rows):
                out.append((tuple(table.bbox), tables_mod.markdown(rows)))
    return out


def _figures(
    page: pymupdf.Page,
    drawings: list[dict[str, Any]],
    tables: list[layout.Box],
    area: float,
    turn: pymupdf.Matrix | None,
) -> list[layout.Box]:
    boxes: list[pymupdf.Rect] = []
    for info in page.get_image_info():
        r = pymupdf.Rect(info["bbox"]) * turn if turn is not None else pymupdf.Rect(info["bbox"])
        r &= page.rect
        if not r.is_empty and abs(r) >= MIN_FIGURE * area:
            boxes.append(r)
    # Invisible white fills and page-sized backgrounds would merge everything into one "figure".
    ink = [d for d in drawings if not _blank(d) and abs(pymupdf.Rect(d["rect"])) < 0.9 * area]
    if len(ink) >= MIN_FIGURE_PATHS:
        for box, count in _clusters([tuple(d["rect"]) for d in ink]):
            r = pymupdf.Rect(box) & page.rect
            if r.is_empty or abs(r) < MIN_FIGURE * area or count < MIN_FIGURE_PATHS:
                continue
            boxes.append(r)
    merged: list[pymupdf.Rect] = []
    for r in sorted(boxes, key=lambda r: -abs(r)):
        if any(abs(r & pymupdf.Rect(t)) > 0.5 * abs(r) for t in tables):
            continue
        for m in merged:
            if m.intersects(r):
                m |= r
                break
        else:
            merged.append(pymupdf.Rect(r))
    return [tuple(m) for m in merged]


def _clusters(rects: list[layout.Box], cell: float = CLUSTER_CELL) -> list[tuple[layout.Box, int]]:
    """Paths grouped into drawings: rects that share a cell of a ``cell``-point grid are joined
    (union-find), so the cost grows with the area the paths cover, not with their pairs
    (PyMuPDF's ``cluster_drawings`` compares pairs: 38 s for 16,384 paths)."""
    parent = list(range(len(rects)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[tuple[int, int], int] = {}
    for i, (x0, y0, x1, y1) in enumerate(rects):
        for gx in range(int(x0 // cell), int(x1 // cell) + 1):
            for gy in range(int(y0 // cell), int(y1 // cell) + 1):
                j = owner.setdefault((gx, gy), i)
                if j != i:
                    parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(rects)):
        groups.setdefault(find(i), []).append(i)
    return [(layout.union([rects[i] for i in g]), len(g)) for g in groups.values()]


def _blank(drawing: dict[str, Any]) -> bool:
    return drawing.get("type") == "f" and tuple(drawing.get("fill") or ()) == (1.0, 1.0, 1.0)


def _render_part(
    page: pymupdf.Page,
    name: str,
    clip: layout.Box | None,
    dpi: int,
    caption: str,
    *,
    scanned: bool = False,
    page_render: bool = False,
) -> Part:
    from kimidoc.documents.render import render_page, to_png
    from kimidoc.vision.budget import target_size

    region = pymupdf.Rect(clip) if clip is not None else page.rect
    # Never render more pixels than the vision tower keeps: lower the dpi to its target size.
    w, h = region.width * dpi / 72, region.height * dpi / 72
    tw, th = target_size(max(1, int(w)), max(1, int(h)))
    scale = min(1.0, tw / max(w, 1), th / max(h, 1))
    image = render_page(page.parent, page.number + 1, dpi=max(1, int(dpi * scale)), clip=clip)
    meta: dict[str, Any] = {"dpi": int(dpi * scale)}
    if scanned:
        meta["scanned"] = True
    if page_render:
        meta["page_render"] = True
    src = Source(name, page=page.number + 1, bbox=_rounded(clip) if clip is not None else None)
    label = "page image" if clip is None else "figure"
    text = f"[{label}] {caption}".strip() if caption else f"[{label}]"
    return Part("image", src, text=text, image=to_png(image), width=image.width, height=image.height, meta=meta)


def _center_in(b: layout.Box, r: layout.Box) -> bool:
    cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    return r[0] <= cx <= r[2] and r[1] <= cy <= r[3]


def _rounded(b: Any) -> layout.Box:
    return tuple(round(float(v), 1) for v in b)  # type: ignore[return-value]
