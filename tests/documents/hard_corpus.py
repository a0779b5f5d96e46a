"""Hard real-world PDF cases, generated (never fetched): LaTeX-like two columns with a 10 pt gutter,
margin stamps, footers that bridge the gutter, unruled tables, rotated pages, a page with tens of
thousands of vector paths, scanned pages and a broken page tree.

Every line of column text starts with a marker word (``L03``, ``R11``) so a test can read the order
back from any extractor's output."""

from __future__ import annotations

import io
import random
import re
from pathlib import Path

import pymupdf

FILLER = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore "
    "magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip ex ea commodo "
    "consequat duis aute irure in reprehenderit voluptate velit esse cillum fugiat nulla pariatur excepteur sint"
).split()
MARKER = re.compile(r"\b([LR]\d\d)\b")
A4 = (595.0, 842.0)

UNRULED = [
    ["Substance", "Threshold for releases", "Reported sites", "Change vs 2019"],
    ["Lead compounds", "10 kg per year", "1,204", "-3.5 %"],
    ["Mercury", "1 kg per year", "318", "+0.8 %"],
    ["Nitrogen oxides", "100 tonnes per year", "2,977", "-11.2 %"],
    ["Benzene", "1 tonne per year", "455", "+2.1 %"],
    ["Cadmium", "5 kg per year", "87", "-0.4 %"],
]
ROTATED = [[f"H{c}" for c in range(9)]] + [[f"r{r}c{c}" for c in range(9)] for r in range(1, 5)]
SCAN_TEXT = [
    "Quarterly maintenance report for the northern pumping station.",
    "The main valve was replaced on 14 March after pressure dropped.",
    "Total repair cost came to 18,400 euros including labour.",
    "Next inspection is scheduled for the first week of September.",
]


def _words(prefix: str, i: int) -> list[str]:
    rnd = random.Random(f"{prefix}{i}")  # str seeds are stable across processes
    return [f"{prefix}{i:02d}"] + [rnd.choice(FILLER) for _ in range(40)]


def _justified(
    tw: pymupdf.TextWriter, font: pymupdf.Font, x0: float, x1: float, y: float, words: list[str], size: float
) -> None:
    """Words placed one by one so the line fills x0..x1 exactly, as TeX sets justified text."""
    line: list[str] = []
    for w in words:
        if font.text_length(" ".join(line + [w]), fontsize=size) > x1 - x0:
            break
        line.append(w)
    widths = [font.text_length(w, fontsize=size) for w in line]
    gap = (x1 - x0 - sum(widths)) / max(len(line) - 1, 1)
    x = x0
    for w, wd in zip(line, widths):
        tw.append((x, y), w, font=font, fontsize=size)
        x += wd + gap


def two_column_paper(
    doc: pymupdf.Document,
    *,
    gutter: float = 9.9,
    lines: int = 40,
    interleaved: bool = False,
    stamp: bool = True,
    footer: bool = True,
    para_every: int = 8,
) -> tuple[list[str], list[str]]:
    """A LaTeX-like page: a title and an abstract across the page, two justified columns of 10 pt
    text ``gutter`` points apart, paragraph breaks at the same heights in both columns, a vertical
    "Downloaded from" stamp in the left margin and a footnote rule plus footer that bridge the
    gutter. ``interleaved`` writes the columns line by line (left, right) into one text object, so
    MuPDF sees both columns on one baseline; otherwise column after column, as TeX does.
    Returns the left and right markers in reading order."""
    page = doc.new_page(width=A4[0], height=A4[1])
    font = pymupdf.Font("tiro")
    tw = pymupdf.TextWriter(page.rect)
    x0, x1 = 72.0, A4[0] - 72.0
    col = (x1 - x0 - gutter) / 2
    tw.append((x0 + 80, 80), "On Reading Two Columns in Order", font=font, fontsize=17)
    y = 110.0
    for k in range(3):
        _justified(tw, font, x0 + 30, x1 - 30, y, ["Abstract"] * (k == 0) + _words("A", k)[1:], 9)
        y += 11
    top = y + 20
    rows: dict[str, list[tuple[float, list[str]]]] = {"L": [], "R": []}
    for side in "LR":
        yy = top
        for i in range(lines):
            rows[side].append((yy, _words(side, i)))
            yy += 12 + (6 if (i + 1) % para_every == 0 else 0)
    spans = {"L": (x0, x0 + col), "R": (x0 + col + gutter, x1)}
    if interleaved:
        for (yl, wl), (yr, wr) in zip(rows["L"], rows["R"]):
            _justified(tw, font, *spans["L"], yl, wl, 10)
            _justified(tw, font, *spans["R"], yr, wr, 10)
    else:
        for side in "LR":
            for yy, ws in rows[side]:
                _justified(tw, font, *spans[side], yy, ws, 10)
    bottom = max(yy for yy, _ in rows["L"] + rows["R"])
    if footer:
        page.draw_line((x0, bottom + 16), (x0 + 120, bottom + 16), width=0.4)
        note = "Footnote: the authors thank the reviewers of the conference for many helpful comments on drafts of this paper, and the agency for funding."
        tw.append((x0, bottom + 28), note, font=font, fontsize=8)  # one run across both columns
        tw.append((A4[0] / 2 - 4, A4[1] - 40), "7", font=font, fontsize=9)
    tw.write_text(page)
    if stamp:
        page.insert_text(
            (30, 700), "Downloaded from https://journals.example.org on 12 May 2024", fontsize=8, rotate=90
        )
    return [w[0] for _, w in rows["L"]], [w[0] for _, w in rows["R"]]


def unruled_table_page(doc: pymupdf.Document) -> None:
    """Prose, then a table whose columns are set apart by white space only, then prose."""
    page = doc.new_page(width=A4[0], height=A4[1])
    page.insert_textbox(
        (72, 72, 523, 160),
        "Releases of pollutants are reported by every site above a threshold. The table below summarises the "
        "reporting thresholds and the number of sites that reported in the last year, with the change since 2019.",
        fontsize=10,
    )
    xs = [72, 190, 330, 440]
    y = 180.0
    for r, row in enumerate(UNRULED):
        for x, cell in zip(xs, row):
            page.insert_text((x, y), cell, fontsize=9, fontname="hebo" if r == 0 else "helv")
        y += 16
    page.insert_textbox(
        (72, y + 20, 523, y + 120),
        "Sites below the threshold are not required to report, so the totals understate the releases of small "
        "emitters. The thresholds have not changed since the register was set up.",
        fontsize=10,
    )


def rotated_table_page(doc: pymupdf.Document) -> None:
    """A landscape page stored as portrait with /Rotate 90: a 9-column ruled table and a caption,
    upright as displayed."""
    src = pymupdf.open()
    land = src.new_page(width=A4[1], height=A4[0])
    land.insert_text((60, 60), "Table 3: measurements across nine stations, landscape.", fontsize=11)
    x0, y0, cw, rh = 60, 90, 80, 22
    for r in range(len(ROTATED) + 1):
        land.draw_line((x0, y0 + r * rh), (x0 + 9 * cw, y0 + r * rh))
    for c in range(10):
        land.draw_line((x0 + c * cw, y0), (x0 + c * cw, y0 + len(ROTATED) * rh))
    for r, row in enumerate(ROTATED):
        for c, cell in enumerate(row):
            land.insert_text((x0 + c * cw + 5, y0 + r * rh + 15), cell, fontsize=10)
    page = doc.new_page(width=A4[0], height=A4[1])
    page.set_rotation(90)
    page.show_pdf_page(pymupdf.Rect(0, 0, *A4), src, 0, rotate=90)  # upright once the viewer turns the page


def many_paths_page(doc: pymupdf.Document, paths: int = 30000) -> None:
    """A paragraph over a plot of ``paths`` separate tiny strokes (a scatter plot or map export)."""
    page = doc.new_page(width=A4[0], height=A4[1])
    page.insert_text((72, 72), "A dense scatter plot follows; every point is its own vector path.", fontsize=10)
    rnd = random.Random(7)
    shape = page.new_shape()
    for _ in range(paths):
        x, y = 72 + rnd.random() * 450, 100 + rnd.random() * 600
        shape.draw_line((x, y), (x + 1.5, y + 1.5))
        shape.finish(width=0.3)
    shape.commit()
    page.insert_text((72, 760), "Figure 2: every measurement of the campaign.", fontsize=10)


def scan_png(
    lines: list[str] = SCAN_TEXT, *, dpi: int = 200, skew: float = 1.5, noise: int = 18, seed: int = 3, size: float = 12
) -> bytes:
    """Text rendered to pixels, rotated by ``skew`` degrees with salt-and-pepper-like grey noise: a
    scanner's output."""
    import numpy as np
    from PIL import Image

    src = pymupdf.open()
    p = src.new_page(width=A4[0], height=A4[1])
    for i, line in enumerate(lines):
        p.insert_text((72, 110 + 1.8 * size * i), line, fontsize=size, fontname="tiro")
    pix = p.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
    img = Image.frombytes("L", (pix.width, pix.height), pix.samples).rotate(
        skew, fillcolor=255, resample=Image.BILINEAR
    )
    arr = np.asarray(img).astype(np.int16)
    rng = np.random.default_rng(seed)
    arr = np.clip(arr + rng.normal(0, noise, arr.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def scanned_page(doc: pymupdf.Document, png: bytes | None = None) -> None:
    page = doc.new_page(width=A4[0], height=A4[1])
    page.insert_image(page.rect, stream=png or scan_png())


def broken_page_tree(path: Path) -> Path:
    """Three pages whose /Pages node claims a negative /Count: MuPDF raises from page_count."""
    doc = pymupdf.open()
    for i in range(3):
        doc.new_page().insert_text((72, 72), f"page {i + 1} of a file with a broken page tree", fontsize=10)
    data = doc.tobytes(garbage=0)
    path.write_bytes(data.replace(b"/Count 3", b"/Count -5"))
    return path


def hard_pdf(path: Path) -> Path:
    """p.1 LaTeX-like two columns (column order in the stream), p.2 the same interleaved line by
    line, p.3 an unruled table, p.4 a rotated table, p.5 a scan."""
    doc = pymupdf.open()
    two_column_paper(doc)
    two_column_paper(doc, interleaved=True)
    unruled_table_page(doc)
    rotated_table_page(doc)
    scanned_page(doc)
    doc.save(path)
    return path
