"""PDFs built by the document tests and benchmarks (PyMuPDF and matplotlib), never fetched."""

from __future__ import annotations

import io
from pathlib import Path

import pymupdf

LEFT = [f"Alpha line {i:02d} of the left column." for i in range(18)]
RIGHT = [f"Omega line {i:02d} of the right column." for i in range(18)]
TABLE = [["Region", "Units", "Revenue"], ["North", "120", "4,500"], ["South", "95", "3,100"], ["East", "143", "5,020"]]
LINK = "https://example.org/spec"


def two_column_page(doc: pymupdf.Document) -> None:
    """A title across the page, then two columns written line by line alternately (right first),
    so content-stream order interleaves them and only column detection reads them right."""
    page = doc.new_page()
    page.insert_text((72, 72), "Fruit Quarterly Report", fontsize=20)
    y = 120.0
    for left, right in zip(LEFT, RIGHT):
        page.insert_text((320, y), right, fontsize=10)
        page.insert_text((72, y), left, fontsize=10)
        y += 14


def table_page(doc: pymupdf.Document) -> None:
    page = doc.new_page()
    page.insert_text((72, 72), "Sales by region", fontsize=16)
    page.insert_text((72, 100), "The table below lists the quarter's units and revenue per region.", fontsize=10)
    x0, y0, cw, rh = 72, 130, 140, 24
    rows, cols = len(TABLE), len(TABLE[0])
    for r in range(rows + 1):
        page.draw_line((x0, y0 + r * rh), (x0 + cols * cw, y0 + r * rh))
    for c in range(cols + 1):
        page.draw_line((x0 + c * cw, y0), (x0 + c * cw, y0 + rows * rh))
    for r, row in enumerate(TABLE):
        for c, cell in enumerate(row):
            page.insert_text((x0 + c * cw + 6, y0 + r * rh + 16), cell, fontsize=10)
    page.insert_text((72, 260), "See the specification for the method.", fontsize=10)
    rect = pymupdf.Rect(72, 250, 260, 264)
    page.insert_link({"kind": pymupdf.LINK_URI, "from": rect, "uri": LINK})


def chart_png() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3), dpi=80)
    ax.bar(["Q1", "Q2", "Q3", "Q4"], [3, 5, 2, 6], color="tab:blue")
    ax.set_title("Revenue by quarter")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def chart_page(doc: pymupdf.Document) -> None:
    page = doc.new_page()
    page.insert_text((72, 72), "Results", fontsize=16)
    page.insert_text((72, 96), "Revenue grew in the fourth quarter, as the chart below shows in detail.", fontsize=10)
    page.insert_image(pymupdf.Rect(72, 120, 392, 360), stream=chart_png())
    page.insert_text((72, 380), "Figure 1: revenue by quarter.", fontsize=10)


def scanned_page(doc: pymupdf.Document) -> None:
    """A page that is only a picture of text (no text layer), as a scanner makes."""
    src = pymupdf.open()
    p = src.new_page()
    p.insert_text((72, 100), "This page was scanned: its words are pixels only.", fontsize=14)
    pix = p.get_pixmap(dpi=72)
    page = doc.new_page()
    page.insert_image(page.rect, stream=pix.tobytes("png"))


def report(path: Path) -> Path:
    """p.1 two columns, p.2 a ruled table and a link, p.3 a chart, p.4 a scanned page; an outline."""
    doc = pymupdf.open()
    two_column_page(doc)
    table_page(doc)
    chart_page(doc)
    scanned_page(doc)
    doc.set_toc([[1, "Report", 1], [2, "Sales", 2], [2, "Results", 3]])
    doc.set_metadata({"title": "Fruit report", "author": "kimidoc tests"})
    doc.save(path)
    return path


def many_pages(path: Path, n: int) -> Path:
    """An ``n``-page PDF made fast: one page of text, then the file doubled onto a copy of itself."""
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 72), "Streaming test page: a heading", fontsize=16)
    page.insert_text((72, 100), "One paragraph of body text that every page repeats for the test.", fontsize=10)
    while doc.page_count < n:
        copy = pymupdf.open("pdf", doc.tobytes())
        doc.insert_pdf(copy, to_page=min(copy.page_count, n - doc.page_count) - 1)
    doc.save(path)
    return path
