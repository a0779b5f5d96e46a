import weakref
from pathlib import Path

import pymupdf
import pytest
from documents_corpus import LEFT, LINK, RIGHT, TABLE, many_pages
from PIL import Image

from kimidoc.documents import DocumentError, iter_parts, load
from kimidoc.documents import pdf as pdf_mod
from kimidoc.documents.ocr import ENGINES


def parts_on(doc, page):
    return [p for p in doc.parts if p.source.page == page]


def test_two_columns_read_in_column_order(report_pdf: Path) -> None:
    doc = load(report_pdf)
    (text,) = [p for p in parts_on(doc, 1) if p.kind == "text"]
    lines = [line for line in text.text.split("\n") if line.strip()]
    assert lines[0] == "# Fruit Quarterly Report"
    assert lines[1:] == LEFT + RIGHT  # every left line before any right line, each column in order
    assert text.source.cite() == f"{report_pdf} p.1"


def test_ruled_table_becomes_markdown_table(report_pdf: Path) -> None:
    doc = load(report_pdf)
    page = parts_on(doc, 2)
    assert [p.kind for p in page] == ["text", "table", "text"]  # in reading order
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in page[1].text.splitlines()]
    assert rows[0] == TABLE[0] and set(rows[1]) == {"---"} and rows[2:] == TABLE[1:]
    assert page[1].source.bbox[1] > page[0].source.bbox[3]  # below the intro text
    assert "Units" not in page[0].text + page[2].text  # table text is not repeated as prose


def test_headings_links_outline_and_metadata(report_pdf: Path) -> None:
    doc = load(report_pdf)
    assert parts_on(doc, 2)[0].text.startswith("# Sales by region\n\n")
    assert parts_on(doc, 2)[2].text == f"[See the specification for the method.]({LINK})"
    assert parts_on(doc, 2)[2].meta["links"] == [LINK]
    assert doc.meta["outline"] == [(1, "Report", 1), (2, "Sales", 2), (2, "Results", 3)]
    assert doc.meta["title"] == "Fruit report" and doc.meta["pages"] == 4


def test_chart_becomes_image_part_between_its_text(report_pdf: Path) -> None:
    page = parts_on(load(report_pdf), 3)
    assert [p.kind for p in page] == ["text", "image", "text"]
    chart = page[1]
    assert chart.source.bbox == (72.0, 120.0, 392.0, 360.0)
    img = Image.open(__import__("io").BytesIO(chart.image))
    assert img.format == "PNG" and img.size == (chart.width, chart.height) == (640, 480)  # 320x240 pt at 144 dpi
    assert img.convert("L").getextrema()[0] < 100  # the chart's dark pixels, not a blank render
    assert "Figure 1" in page[2].text


def test_vector_chart_is_detected_as_figure(tmp_path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(range(30), [i * i % 17 for i in range(30)], marker="o")
    buf = io.BytesIO()
    fig.savefig(buf, format="pdf")
    plt.close(fig)
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 72), "A vector chart drawn by matplotlib follows below this paragraph of text.", fontsize=10)
    page.show_pdf_page(pymupdf.Rect(72, 100, 360, 316), pymupdf.open("pdf", buf.getvalue()), 0)
    path = tmp_path / "vector.pdf"
    doc.save(path)
    parts = load(path).parts
    figures = [p for p in parts if p.kind == "image"]
    assert len(figures) == 1 and figures[0].source.bbox[1] >= 99 and figures[0].source.bbox[3] <= 317
    assert parts[0].kind == "text" and "vector chart" in parts[0].text


def test_scanned_page_is_sent_as_ocr_text_and_page_image(report_pdf: Path) -> None:
    text, scan = parts_on(load(report_pdf), 4)
    assert text.kind == "text" and text.meta["ocr"] in ENGINES and text.source.cite() == f"{report_pdf} p.4"
    assert "words are pixels only" in text.text
    assert scan.kind == "image" and scan.meta["scanned"] and scan.source.bbox is None
    assert (scan.width, scan.height) == (1190, 1684)  # an A4 page at 144 dpi, under the tower's cap


def test_encrypted_pdf_needs_the_password(report_pdf: Path, tmp_path: Path) -> None:
    path = tmp_path / "secret.pdf"
    pymupdf.open(report_pdf).save(path, encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="s3cret", owner_pw="owner")
    with pytest.raises(DocumentError, match=r"secret\.pdf: the PDF is encrypted; pass password="):
        load(path)
    with pytest.raises(DocumentError, match=r"secret\.pdf: wrong password"):
        load(path, password="guess")
    doc = load(path, password="s3cret")
    assert doc.meta["encrypted"] and doc.parts[0].text.startswith("# Fruit Quarterly Report")


def test_truncated_pdf_is_repaired_or_rejected_clearly(report_pdf: Path, tmp_path: Path) -> None:
    data = report_pdf.read_bytes()
    cut = tmp_path / "cut.pdf"
    cut.write_bytes(data[: len(data) // 2])
    doc = load(cut)  # the xref is gone with the tail: MuPDF rebuilds it from the objects
    assert doc.meta["repaired"] and doc.meta["warnings"]
    assert LEFT[5] in doc.parts[0].text
    stub = tmp_path / "stub.pdf"
    stub.write_bytes(data[:100])
    with pytest.raises(DocumentError, match=r"stub\.pdf: not a readable PDF"):
        load(stub)


def test_page_that_fails_is_recorded_not_fatal(report_pdf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = pdf_mod.page_parts

    def flaky(page, name, **kw):
        if page.number == 1:
            raise RuntimeError("bad content stream")
        return real(page, name, **kw)

    monkeypatch.setattr(pdf_mod, "page_parts", flaky)
    doc = load(report_pdf)
    assert 2 not in {p.source.page for p in doc.parts} and {1, 3, 4} <= {p.source.page for p in doc.parts}
    (o,) = doc.skipped
    assert o.source == f"{report_pdf} p.2" and "bad content stream" in o.reason


def test_thousand_pages_stream_in_bounded_memory(tmp_path: Path) -> None:
    path = many_pages(tmp_path / "long.pdf", 1000)
    assert pymupdf.open(path).page_count == 1000
    stream = iter_parts(path, render_pages=True, dpi=24)
    alive: list[weakref.ref] = []
    pages = set()
    most_alive = 0
    for part in stream:  # each part is dropped by the loop as the next one comes
        pages.add(part.source.page)
        if part.kind == "image":
            alive.append(weakref.ref(part))
        most_alive = max(most_alive, sum(r() is not None for r in alive[-50:]))
    del part
    assert pages == set(range(1, 1001)) and len(alive) == 1000  # every page, each with its render
    assert most_alive <= 2  # renders are not accumulated anywhere while streaming
    assert sum(r() is not None for r in alive) == 0


def test_bad_page_number_and_missing_file(report_pdf: Path, tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match=r"page 9 out of range 1-4"):
        load(report_pdf, pages=[9])
    with pytest.raises(DocumentError, match=r"nothing\.pdf: no such file"):
        load(tmp_path / "nothing.pdf")
    assert {p.source.page for p in load(report_pdf, pages=[2, 3]).parts} == {2, 3}


def test_pymupdf4llm_engine_on_request(report_pdf: Path) -> None:
    (part,) = load(report_pdf, pages=[2], engine="pymupdf4llm").parts
    assert part.meta["engine"] == "pymupdf4llm" and part.source.cite() == f"{report_pdf} p.2"
    assert "|Region|Units|Revenue|" in part.text.replace(" ", "")
    with pytest.raises(ValueError, match="unknown PDF engine 'ocr'"):
        load(report_pdf, engine="ocr")
