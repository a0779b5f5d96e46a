"""KimidocLoader: kimidoc's PDF, image and repository ingestion as LangChain documents."""

from __future__ import annotations

import base64

import pytest

pytest.importorskip("langchain_core")

from kimidoc.integrations.langchain import KimidocLoader  # noqa: E402


@pytest.fixture
def corpus(tmp_path):
    import pymupdf
    from PIL import Image

    pdf = pymupdf.open()
    for i in range(2):
        pdf.new_page().insert_text((72, 72), f"Page {i + 1}: revenue grew {10 + i}%.")
    pdf.save(tmp_path / "report.pdf")
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "app.py").write_text("def f():\n    return 1\n")
    (repo / ".gitignore").write_text("build/\n")
    (repo / "build").mkdir()
    (repo / "build" / "junk.py").write_text("x = 1\n")
    Image.new("RGB", (40, 30), "blue").save(tmp_path / "chart.png")
    return tmp_path


def test_pdf_pages_become_documents_that_cite_their_page(corpus):
    docs = KimidocLoader(corpus / "report.pdf").load()
    assert [d.page_content for d in docs] == ["Page 1: revenue grew 10%.", "Page 2: revenue grew 11%."]
    assert [d.metadata["page"] for d in docs] == [1, 2]
    assert docs[1].metadata["citation"].endswith("report.pdf p.2")
    assert docs[0].metadata["kind"] == "text" and docs[0].metadata["document_kind"] == "pdf"
    assert len(docs[0].metadata["bbox"]) == 4


def test_repository_files_keep_line_ranges_and_gitignore(corpus):
    docs = KimidocLoader(corpus / "repo").load()
    by_source = {d.metadata["source"]: d for d in docs}
    app = by_source["src/app.py"]
    assert app.page_content == "def f():\n    return 1\n"
    assert (app.metadata["start_line"], app.metadata["end_line"]) == (1, 2)
    assert app.metadata["citation"] == "src/app.py:1-2" and app.metadata["language"] == "python"
    assert not any("junk" in s for s in by_source)  # ignored by .gitignore


def test_image_parts_follow_the_images_option(corpus):
    png = corpus / "chart.png"
    (caption,) = KimidocLoader(png).load()
    assert caption.metadata["kind"] == "image" and (caption.metadata["width"], caption.metadata["height"]) == (40, 30)
    assert "image_base64" not in caption.metadata
    (inline,) = KimidocLoader(png, images="base64").load()
    assert base64.b64decode(inline.metadata["image_base64"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert KimidocLoader(png, images="skip").load() == []
    with pytest.raises(ValueError, match="images must be"):
        KimidocLoader(png, images="pixels")


def test_several_paths_load_lazily_in_order(corpus):
    it = KimidocLoader([corpus / "report.pdf", corpus / "chart.png"], images="skip").lazy_load()
    assert next(it).metadata["page"] == 1
    assert [d.metadata["page"] for d in it] == [2]


def test_load_options_pass_through_and_errors_name_the_file(corpus):
    docs = KimidocLoader(corpus / "report.pdf", pages=[2]).load()
    assert [d.metadata["page"] for d in docs] == [2]
    with pytest.raises(Exception, match="missing.pdf"):
        KimidocLoader(corpus / "missing.pdf").load()
