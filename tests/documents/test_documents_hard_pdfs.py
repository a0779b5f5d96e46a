"""Real-world PDF failure modes, each generated (tests/documents/hard_corpus.py) and checked: column
order, margin stamps and bridging footers, unruled and merged-cell tables, rotated pages, pages
with tens of thousands of paths, scans, broken page trees, the per-page budget."""

from __future__ import annotations

from pathlib import Path

import pymupdf
import pytest
from hard_corpus import (
    MARKER,
    ROTATED,
    SCAN_TEXT,
    UNRULED,
    broken_page_tree,
    many_paths_page,
    rotated_table_page,
    scan_png,
    scanned_page,
    two_column_paper,
    unruled_table_page,
)

from kimidoc.documents import DocumentError, layout, load
from kimidoc.documents import pdf as pdf_mod
from kimidoc.documents.tables import markdown


def save(tmp_path: Path, name: str, *builders) -> Path:
    doc = pymupdf.open()
    for build in builders:
        build(doc)
    path = tmp_path / name
    doc.save(path)
    return path


def md_rows(table: str) -> list[list[str]]:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table.splitlines()]
    assert set(rows[1]) == {"---"}
    return [rows[0]] + rows[2:]


def pairs_in_order(markers: list[str], expected: list[str]) -> float:
    """Share of consecutive expected markers that come out one after the other."""
    pos = {m: k for k, m in enumerate(markers)}
    return sum(pos.get(a, -2) + 1 == pos.get(b, -1) for a, b in zip(expected, expected[1:])) / (len(expected) - 1)


@pytest.mark.parametrize("interleaved", [False, True], ids=["column-order-stream", "interleaved-stream"])
@pytest.mark.parametrize("gutter", [8.0, 9.9, 24.0])
def test_latex_two_columns_read_column_by_column(tmp_path: Path, gutter: float, interleaved: bool) -> None:
    doc = pymupdf.open()
    left, right = two_column_paper(doc, gutter=gutter, interleaved=interleaved)
    path = tmp_path / "paper.pdf"
    doc.save(path)
    parts = load(path).parts
    body, stamp = parts
    assert MARKER.findall(body.text) == left + right  # the paragraph breaks at equal heights cut nothing
    assert body.text.startswith("# On Reading Two Columns in Order\n\nAbstract ")
    assert body.text.index("Footnote: the authors") > body.text.index(
        right[-1]
    )  # the bridging footer after both columns
    assert stamp.text == "Downloaded from https://journals.example.org on 12 May 2024"  # set aside, not a third column
    plain = MARKER.findall(pymupdf.open(path)[0].get_text())
    assert pairs_in_order(MARKER.findall(body.text), left + right) >= pairs_in_order(plain, left + right)


def test_single_column_page_keeps_the_pdf_order(tmp_path: Path) -> None:
    """A label/value list and a narrow side note are not columns: the content order stays."""
    doc = pymupdf.open()
    page = doc.new_page()
    labels = [
        ("Name", "Ada Lovelace, analyst of the engine"),
        ("Born", "10 December 1815 in London"),
        ("Field", "mathematics and computing"),
    ]
    labels += [
        ("Known for", "the first published program"),
        ("Partner", "Charles Babbage, its designer"),
        ("Died", "27 November 1852"),
    ]
    for k, (label, value) in enumerate(labels):
        page.insert_text((72, 100 + 16 * k), label, fontsize=10)
        page.insert_text((200, 100 + 16 * k), value, fontsize=10)
    path = tmp_path / "card.pdf"
    doc.save(path)
    (text,) = load(path).parts
    assert text.text.splitlines() == [f"{label} {value}" for label, value in labels]


def test_columns_need_text_columns_on_both_sides() -> None:
    lines = [(72.0, 100.0 + 12 * k, 290.0, 110.0 + 12 * k) for k in range(10)]
    right = [(300.0, 100.0 + 12 * k, 518.0, 110.0 + 12 * k) for k in range(10)]
    assert layout.columns(lines + right, 10.0) == [
        (72.0, pytest.approx(290.0, abs=0.6)),
        (pytest.approx(300.0, abs=0.6), 518.0),
    ]
    labels = [(72.0, 100.0 + 12 * k, 110.0 + (k % 3) * 10, 110.0 + 12 * k) for k in range(10)]  # short ragged labels
    assert layout.columns(labels + right, 10.0) == []
    stacked = [(300.0, 300.0 + 12 * k, 518.0, 310.0 + 12 * k) for k in range(10)]  # one above the other
    assert layout.columns(lines + stacked, 10.0) == []


def test_unruled_table_found_with_its_spaces(tmp_path: Path) -> None:
    parts = load(save(tmp_path, "unruled.pdf", unruled_table_page)).parts
    assert [p.kind for p in parts] == ["text", "table", "text"]
    assert md_rows(parts[1].text) == UNRULED
    assert "Lead compounds" not in parts[0].text + parts[2].text


def test_prose_and_two_columns_are_not_tables(tmp_path: Path) -> None:
    path = save(
        tmp_path,
        "prose.pdf",
        lambda d: two_column_paper(d, gutter=24.0),
        lambda d: two_column_paper(d, interleaved=True),
    )
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_textbox(
        (72, 72, 523, 700),
        " ".join(["A sentence of ordinary prose, set ragged right, with 12 numbers and 3 units."] * 40),
        fontsize=10,
    )
    doc.save(tmp_path / "ragged.pdf")
    for p in (path, tmp_path / "ragged.pdf"):
        assert all(part.kind != "table" for part in load(p).parts)


def test_merged_cells_are_not_repeated(tmp_path: Path) -> None:
    doc = pymupdf.open()
    page = doc.new_page()
    x0, y0, cw, rh = 72, 100, 120, 24
    grid = [["Region", "Sales 2024", None], ["", "H1", "H2"], ["North", "10", "12"], ["South", "7", "9"]]
    for r in range(len(grid) + 1):
        page.draw_line((x0, y0 + r * rh), (x0 + 3 * cw, y0 + r * rh))
    for c in range(4):  # no rule between the two sales columns in the first row: a merged cell
        top = y0 + rh if c == 2 else y0
        page.draw_line((x0 + c * cw, top), (x0 + c * cw, y0 + len(grid) * rh))
    for r, row in enumerate(grid):
        for c, cell in enumerate(row):
            if cell:
                page.insert_text((x0 + c * cw + 6, y0 + r * rh + 16), cell, fontsize=10)
    doc.save(tmp_path / "merged.pdf")
    (table,) = [p for p in load(tmp_path / "merged.pdf").parts if p.kind == "table"]
    rows = md_rows(table.text)
    assert rows[0] == ["Region", "Sales 2024", ""] and rows[1:] == [
        ["", "H1", "H2"],
        ["North", "10", "12"],
        ["South", "7", "9"],
    ]


def test_markdown_escapes_pipes_and_drops_empty_columns() -> None:
    assert markdown([["a", None, "b|c"], ["1", None, "2\n3"]]) == "| a | b\\|c |\n| --- | --- |\n| 1 | 2 3 |"


def test_rotated_page_in_displayed_coordinates(tmp_path: Path) -> None:
    parts = load(save(tmp_path, "rotated.pdf", rotated_table_page)).parts
    assert [p.kind for p in parts] == ["text", "table"]
    assert parts[0].text == "Table 3: measurements across nine stations, landscape."
    assert md_rows(parts[1].text) == ROTATED  # all nine columns, in displayed order
    x0, y0, x1, y1 = parts[1].source.bbox
    assert 0 <= x0 < x1 <= 842 and 0 <= y0 < y1 <= 595 and x1 - x0 > y1 - y0  # wide, like the table the reader sees


def test_page_with_tens_of_thousands_of_paths_degrades_to_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save(tmp_path, "dense.pdf", lambda d: many_paths_page(d, 30000))

    def no_finder(*a, **k):
        raise AssertionError("the table finder ran on a page over the path budget")

    monkeypatch.setattr(pymupdf.Page, "find_tables", no_finder)
    doc = load(path)
    (text,) = doc.parts
    assert "dense scatter plot" in text.text and "Figure 2" in text.text
    (note,) = doc.skipped
    assert note.action == "degraded" and note.source == f"{path} p.1" and "30000 vector paths" in note.reason


def test_page_over_its_time_budget_keeps_its_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pdf_mod, "PAGE_SECONDS", -1.0)  # every optional stage finds the budget spent
    doc = load(save(tmp_path, "unruled.pdf", unruled_table_page))
    assert [p.kind for p in doc.parts] == ["text"] and "Lead compounds" in doc.parts[0].text
    (note,) = doc.skipped
    assert note.action == "degraded" and "tables skipped" in note.reason and "figures skipped" in note.reason


def test_noisy_skewed_scan_is_read_by_ocr(tmp_path: Path) -> None:
    doc = load(save(tmp_path, "scan.pdf", lambda d: d.new_page(), scanned_page))
    text, image = [p for p in doc.parts if p.source.page == 2]
    assert text.kind == "text" and text.meta["ocr"] and text.source.cite() == f"{tmp_path / 'scan.pdf'} p.2"
    got = set(text.text.split())
    for line in SCAN_TEXT:
        words = line.split()
        assert sum(w in got for w in words) >= 0.8 * len(words), line
    assert image.kind == "image" and image.meta["scanned"]


def test_ocr_off_or_missing_leaves_the_page_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save(tmp_path, "scan.pdf", lambda d: scanned_page(d, scan_png(SCAN_TEXT[:1], noise=0)))
    assert [p.kind for p in load(path, ocr=None).parts] == ["image"]
    from kimidoc.documents import ocr

    monkeypatch.setattr(ocr, "engine_available", lambda name: False)
    doc = load(path)
    assert [p.kind for p in doc.parts] == ["image"]
    (note,) = doc.skipped
    assert "not OCRed" in note.reason and "rapidocr" in note.reason


def test_broken_page_tree_is_a_clean_error(tmp_path: Path) -> None:
    path = broken_page_tree(tmp_path / "tree.pdf")
    with pytest.raises(DocumentError, match=r"tree\.pdf: the page tree is broken"):
        load(path)


def test_sideways_page_text_keeps_its_place(tmp_path: Path) -> None:
    """A page printed sideways (no /Rotate): vertical text is the body, not a margin stamp."""
    doc = pymupdf.open()
    page = doc.new_page()
    lines = [f"Sideways line {k} of a landscape table printed on a portrait page." for k in range(5)]
    for k, line in enumerate(lines):
        page.insert_text((100 + 14 * k, 700), line, fontsize=10, rotate=90)
    page.insert_text((72, 800), "3", fontsize=9)
    doc.save(tmp_path / "sideways.pdf")
    body, number = load(tmp_path / "sideways.pdf").parts  # in the page's own order, not moved after it
    assert body.text.splitlines() == lines and number.text == "3"


def test_grids_whose_rules_miss_the_rows_are_coarse_and_text_grids_are_tidied() -> None:
    from kimidoc.documents.tables import coarse, tidy

    fine = [["Region", "Units", "Revenue"], ["North", "120", "4,500"], ["South", "95", "3,100"]]
    assert not coarse(fine)
    stacked = [["Region\nNorth\nSouth", "Units\n120\n95", "Revenue\n4,500\n3,100"]]
    assert coarse(stacked)
    spread = [["Region", "Units", "Revenue", "Cost"]] + [[f"Row {k} 120 4,500 7", None, None, None] for k in range(3)]
    assert coarse(spread)
    leaders = [
        ["Total . . . . . . .", "", "12"],
        ["Violent crime . . .", ".", "3"],
        ["Murder", "", "1"],
        ["Rape", "", "2"],
    ]
    assert tidy(leaders) == [["Total", "12"], ["Violent crime", "3"], ["Murder", "1"], ["Rape", "2"]]


def test_page_with_thousands_of_annotations_skips_its_links(tmp_path: Path) -> None:
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 72), "A form page with more widgets than a reader walks.", fontsize=10)
    for k in range(pdf_mod.MAX_ANNOTS + 1):
        page.insert_link(
            {"kind": pymupdf.LINK_URI, "from": pymupdf.Rect(10, 10, 11, 11), "uri": f"https://example.org/{k}"}
        )
    doc.save(tmp_path / "annots.pdf")
    loaded = load(tmp_path / "annots.pdf")
    assert loaded.parts[0].text.startswith("A form page") and "links" not in loaded.parts[0].meta
    (note,) = loaded.skipped
    assert note.action == "degraded" and f"{pdf_mod.MAX_ANNOTS + 1} annotations" in note.reason
