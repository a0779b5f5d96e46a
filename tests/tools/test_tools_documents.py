"""Document tools over loaded documents: list, read pages and lines, search with citations, render pixels;
and the chart round trip through the sandboxed ``python`` tool into the vision path."""

from __future__ import annotations

import io
import os
import sys

import numpy as np
import pytest
from PIL import Image

from kimidoc.documents import load
from kimidoc.messages import image_bytes
from kimidoc.tools import default_tools, document_tools


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    import pymupdf

    d = tmp_path_factory.mktemp("corpus")
    pdf = pymupdf.open()
    page = pdf.new_page(width=595, height=842)
    page.insert_text((72, 100), "Quarterly revenue grew 12 percent.", fontsize=12)
    page.draw_rect(pymupdf.Rect(100, 200, 300, 300), color=(1, 0, 0), fill=(1, 0, 0))
    page = pdf.new_page(width=595, height=842)
    page.insert_text((72, 100), "Costs fell in the second half.", fontsize=12)
    pdf.save(d / "report.pdf")
    (d / "notes.txt").write_text("alpha\nbeta revenue line\ngamma\ndelta revenue again\n")
    repo = d / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "app.py").write_text("import os\n\ndef revenue():\n    return 12\n")
    img = Image.new("RGB", (200, 100), "white")
    img.paste((0, 0, 255), (150, 50, 200, 100))
    img.save(d / "photo.png")
    (d / "sales.csv").write_text("month,sales\nJan,10\nFeb,30\nMar,20\n")
    return {k: str(d / k) for k in ("report.pdf", "notes.txt", "repo", "photo.png", "sales.csv")}


@pytest.fixture(scope="module")
def tools(corpus: dict[str, str]) -> dict:
    docs = [load(corpus[k]) for k in ("report.pdf", "notes.txt", "repo", "photo.png")]
    return {t.name: t for t in document_tools(docs)}


def test_list_documents(tools: dict, corpus: dict[str, str]) -> None:
    lines = tools["list_documents"]().text.splitlines()
    assert lines[0].startswith(f"1. {corpus['report.pdf']} [pdf] (2 pages")
    assert lines[1] == f"2. {corpus['notes.txt']} [text] (4 lines)"
    assert lines[2].startswith(f"3. {corpus['repo']} [repository] (1 text files")
    assert lines[3] == f"4. {corpus['photo.png']} [image] (200x100 px)"


def test_read_pdf_pages(tools: dict, corpus: dict[str, str]) -> None:
    r = tools["read_document"](document="report.pdf", page=2)
    assert r.text.startswith(f"{corpus['report.pdf']} p.2\n") and "Costs fell" in r.text and "revenue" not in r.text
    assert "give page=N" in tools["read_document"](document="report.pdf").text
    bad = tools["read_document"](document="report.pdf", page=9)
    assert bad.is_error and "page 9 is not in the document (pages 1-2)" in bad.text
    assert "no such document" in tools["read_document"](document="missing.pdf").text
    assert (
        tools["read_document"](document="1", page=1).text
        == tools["read_document"](document=corpus["report.pdf"], page=1).text
    )


def test_read_line_ranges_of_text_and_repository_files(tools: dict, corpus: dict[str, str]) -> None:
    r = tools["read_document"](document="notes.txt", start_line=2, end_line=3)
    assert (
        r.text
        == f"{corpus['notes.txt']}:2-3 (4 lines)\n2 | beta revenue line\n3 | gamma\n[... continue with start_line=4]"
    )
    r = tools["read_document"](document="repo", file="src/app.py", start_line=3)
    assert r.text.splitlines()[0] == f"{corpus['repo']}/src/app.py:3-4 (4 lines)"
    assert "def revenue()" in r.text
    assert "past the end" in tools["read_document"](document="notes.txt", start_line=10).text
    tree = tools["read_document"](document="repo").text  # without a file: the repository's tree
    assert "src/" in tree and "app.py" in tree


def test_search_cites_page_and_line(tools: dict, corpus: dict[str, str]) -> None:
    r = tools["search_documents"](query="revenue", mode="exact")
    hits = r.text.splitlines()
    assert f"{corpus['report.pdf']} p.1: Quarterly revenue grew 12 percent." in hits
    assert f"{corpus['notes.txt']}:2: beta revenue line" in hits
    assert f"{corpus['notes.txt']}:4: delta revenue again" in hits
    assert f"{corpus['repo']}/src/app.py:3: def revenue():" in hits
    # The citations travel as data too, one per hit, with the exact page or line.
    assert [s.cite() for s in r.sources] == [h.split(": ", 1)[0] for h in hits]
    regex = tools["search_documents"](query=r"\d+ percent", mode="regex").text
    assert regex == f"{corpus['report.pdf']} p.1: Quarterly revenue grew 12 percent."
    assert (
        tools["search_documents"](query="REVENUE", mode="exact", case_sensitive=True).text == "no match for 'REVENUE'"
    )
    assert tools["search_documents"](query="(", mode="regex").is_error
    only = tools["search_documents"](query="revenue", mode="exact", document="notes.txt").text.splitlines()
    assert len(only) == 2
    assert tools["search_documents"](query="revenue", mode="fuzzy").is_error


def test_ranked_search_puts_the_best_passage_first(tools: dict, corpus: dict[str, str]) -> None:
    r = tools["search_documents"](query="How much did quarterly revenue grow?")
    assert r.text.startswith(f"[1] {corpus['report.pdf']} p.1\nQuarterly revenue grew 12 percent.")
    assert r.sources[0].cite() == f"{corpus['report.pdf']} p.1"
    assert len(r.sources) == r.text.count("\n\n[") + 1  # one source per passage shown
    costs = tools["search_documents"](query="what happened to costs", document="report.pdf")
    assert [s.cite() for s in costs.sources] == [f"{corpus['report.pdf']} p.2"]
    assert "no passage matches" in tools["search_documents"](query="zebra giraffe").text


def test_reads_carry_their_sources(tools: dict, corpus: dict[str, str]) -> None:
    assert [s.cite() for s in tools["read_document"](document="report.pdf", page=2).sources] == [
        f"{corpus['report.pdf']} p.2"
    ]
    assert [s.cite() for s in tools["read_document"](document="notes.txt", start_line=2, end_line=3).sources] == [
        f"{corpus['notes.txt']}:2-3"
    ]
    grep = tools["grep"](pattern="revenue")
    assert [s.cite() for s in grep.sources] == [line.split(": ", 1)[0] for line in grep.text.splitlines()]


def test_render_page_and_region(tools: dict) -> None:
    from kimidoc.vision.preprocess import preprocess

    whole = tools["render_page"](document="report.pdf", page=1, zoom=1)
    assert not whole.is_error, whole.text
    page = Image.open(io.BytesIO(whole.images[0]))
    assert page.size == (595, 842)
    region = tools["render_page"](document="report.pdf", page=1, zoom=2, region=[100, 200, 300, 300])
    crop = Image.open(io.BytesIO(region.images[0])).convert("RGB")
    assert crop.size == (400, 200)
    r, g, b = crop.getpixel((200, 100))
    assert r > 200 and g < 60 and b < 60  # the red box fills the region
    assert "region [100, 200, 300, 300] at zoom 2" in region.text and "image tokens" in region.text
    inputs = preprocess([image_bytes(region.to_content()[-1])])  # what the vision path receives
    assert inputs.tokens_per_image[0] > 0
    big = tools["render_page"](document="report.pdf", page=1, zoom=16)
    assert "zoom lowered" in big.text
    w, h = Image.open(io.BytesIO(big.images[0])).size
    assert w * h <= 4_100_000
    assert tools["render_page"](document="report.pdf", page=3).is_error
    assert tools["render_page"](document="notes.txt").is_error
    assert tools["render_page"](document="report.pdf", region=[10, 10, 5, 20]).is_error


def test_render_image_region(tools: dict) -> None:
    r = tools["render_page"](document="photo.png", zoom=2, region=[150, 50, 200, 100])
    img = Image.open(io.BytesIO(r.images[0])).convert("RGB")
    assert img.size == (100, 100) and img.getpixel((50, 50)) == (0, 0, 255)


@pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0, reason="full isolation needs root on Linux (CI runs as root)"
)
def test_chart_round_trip_from_csv_to_the_vision_path(corpus: dict[str, str]) -> None:
    """The model reads a CSV it was given, computes from it, plots it, and gets a PNG the vision path accepts."""
    from kimidoc.vision.preprocess import preprocess

    tools = {t.name: t for t in default_tools([load(corpus["sales.csv"])])}
    python = tools["python"]
    try:
        code = (
            "import csv\nimport matplotlib.pyplot as plt\n"
            f"rows = list(csv.DictReader(open({os.path.realpath(corpus['sales.csv'])!r})))\n"
            "months = [r['month'] for r in rows]; sales = [int(r['sales']) for r in rows]\n"
            "fig, ax = plt.subplots(figsize=(4, 3))\nax.plot(months, sales, color='red', linewidth=4)\n"
            "sum(sales)"
        )
        result = python(code=code)
        assert not result.is_error, result.text
        assert "Out: 60" in result.text and len(result.images) == 1
        part = result.to_content()[-1]
        png = image_bytes(part)
        rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
        reds = int(((rgb[..., 0] > 200) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)).sum())
        assert reds > 100  # the plotted line is there
        inputs = preprocess([png])
        assert inputs.tokens_per_image[0] > 0 and inputs.pixel_values.shape[1:] == (3, 14, 14)
        again = python(code="len(rows), months[-1]")
        assert "Out: (3, 'Mar')" in again.text  # state survives between calls
    finally:
        python.fn.sandbox.close()
