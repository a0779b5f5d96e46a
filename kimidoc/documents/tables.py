"""Tables without ruling lines: where to look for them, whether what was found is one, and Markdown.

PyMuPDF's table finder has a text strategy (columns from aligned word edges, as pdfplumber's and
camelot's "stream" mode) that finds tables drawn with white space only, but run over a whole page
it turns prose, lists and two-column text into "tables". So it only runs where the page's lines
show a table (:func:`aligned_regions`: several consecutive lines cut into three or more short
pieces whose edges line up), and what it returns is kept only when it reads like one
(:func:`looks_like_table`).

Cell text is the page's own words (MuPDF's, with the spaces the PDF has) placed into the cells of
the table's grid (:func:`cell_texts`): the finder's character-gap word split glues words set
closer than 3 pt ("THRESHOLDFORRELEASES"). A cell that a merged cell covers is ``None`` in the
grid and stays empty (PyMuPDF's ``to_markdown`` copies it into every column it spans, and
guesses headers by rendering the page, which can take minutes).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from kimidoc.documents.layout import Box, Segment, union

MIN_ROWS = 3  # lines in a run before it can be a table
MIN_COLUMNS = 3  # two aligned pieces per line is a label/value list or two text columns: read as text
MAX_CELL_WORDS = 6  # prose lines run longer than table cells


def markdown(rows: Sequence[Sequence[str | None]]) -> str:
    """A GitHub Markdown table; the first row is the header. Empty rows and columns are dropped,
    whitespace inside a cell collapses to single spaces, ``|`` is escaped."""
    cells = [[" ".join((c or "").split()).replace("|", "\\|") for c in row] for row in rows]
    cells = [row for row in cells if any(row)]
    if not cells:
        return ""
    width = max(len(row) for row in cells)
    cells = [row + [""] * (width - len(row)) for row in cells]
    keep = [j for j in range(width) if any(row[j] for row in cells)]
    cells = [[row[j] for j in keep] for row in cells]
    lines = ["| " + " | ".join(cells[0]) + " |", "| " + " | ".join("---" for _ in keep) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    return "\n".join(lines)


def cell_texts(
    grid: Sequence[Sequence[Box | None]], words: Sequence[tuple[Box, str, tuple[int, int, int]]]
) -> list[list[str | None]]:
    """The text of each cell of ``grid`` (rows of cell boxes, None where a merged cell covers the
    slot): the ``words`` (box, text, MuPDF's (block, line, word) numbers) whose centre lies in the
    cell, in MuPDF's order, joined by spaces within a text line and by newlines across lines."""
    centres = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, key, w) for b, w, key in words]
    out: list[list[str | None]] = []
    for row in grid:
        boxes = [c for c in row if c is not None]
        top, bottom = min((c[1] for c in boxes), default=0.0), max((c[3] for c in boxes), default=-1.0)
        in_row = [c for c in centres if top <= c[1] <= bottom]  # rows first: cells x words grows fast
        texts: list[str | None] = []
        for cell in row:
            if cell is None:
                texts.append(None)
                continue
            inside = sorted((key, w) for x, y, key, w in in_row if cell[0] <= x <= cell[2] and cell[1] <= y <= cell[3])
            text = ""
            for k, (key, w) in enumerate(inside):
                text += ("\n" if key[:2] != inside[k - 1][0][:2] else " ") + w if k else w
            texts.append(text)
        out.append(texts)
    return out


def coarse(rows: Sequence[Sequence[str | None]]) -> bool:
    """Whether a grid's rules miss the table's rows: many cells hold several text lines (rules
    only under the header and above the totals), or several rows of values sit in one cell that
    spans the row (column rules that stop short)."""
    filled = [c for row in rows for c in row if c]
    if not filled:
        return False
    stacked = sum(c.count("\n") >= 2 for c in filled)
    # A cell that a merged slot extends over three or more columns, holding a row of values.
    spread = sum(
        1 for row in rows for j, c in enumerate(row) if c and len(c.split()) >= 4 and row[j + 1 : j + 3] == [None, None]
    )
    return stacked + spread >= 0.3 * len(filled) or spread >= 3


LEADER = re.compile(r"(?:\s*\.){3,}\s*$")  # dot leaders: "Total . . . . . . ." before the figures


def tidy(rows: Sequence[Sequence[str | None]]) -> list[list[str | None]]:
    """A text-strategy grid cleaned up: dot leaders cut, and columns filled in fewer than a third
    of the rows (a leader's dots or a header word that stuck out became a "column") folded into
    their left neighbour, cell by cell. Merged-cell slots (None) stay None."""
    grid = [[_unlead(c) for c in row] for row in rows]
    width = max((len(r) for r in grid), default=0)
    grid = [r + [""] * (width - len(r)) for r in grid]
    j = width - 1
    while j > 0:
        if sum(bool(r[j]) for r in grid) < len(grid) / 3:
            for r in grid:
                if r[j]:
                    r[j - 1] = f"{r[j - 1]} {r[j]}" if r[j - 1] else r[j]
                del r[j]
        j -= 1
    return grid


def _unlead(cell: str | None) -> str | None:
    if not cell:
        return cell
    cell = LEADER.sub("", cell)
    return "" if not cell.strip(". ") else cell  # a leader's dots split off into a column of their own


def looks_like_table(rows: Sequence[Sequence[str | None]]) -> bool:
    """At least :data:`MIN_ROWS` rows and :data:`MIN_COLUMNS` non-empty columns, most cells
    filled, and short cells (prose cut into columns has long ones)."""
    cells = [[" ".join((c or "").split()) for c in row] for row in rows]
    cells = [row for row in cells if any(row)]
    if len(cells) < MIN_ROWS:
        return False
    width = max(len(row) for row in cells)
    cols = [j for j in range(width) if any(j < len(row) and row[j] for row in cells)]
    if len(cols) < MIN_COLUMNS:
        return False
    filled = [row[j] for row in cells for j in cols if j < len(row) and row[j]]
    if len(filled) < 0.5 * len(cells) * len(cols):
        return False
    return sum(len(c.split()) for c in filled) / len(filled) <= MAX_CELL_WORDS


def aligned_regions(segments: Sequence[Segment], font: float, taken: Sequence[Box] = ()) -> list[Box]:
    """Boxes around runs of lines that look like table rows: consecutive lines (no more than 2.5
    lines apart) each cut into pieces by gaps wider than a font size, at least :data:`MIN_ROWS` of
    them with :data:`MIN_COLUMNS` or more short pieces, whose left or right edges line up in at
    least :data:`MIN_COLUMNS` places. Regions overlapping ``taken`` (ruled tables) are left out."""
    rows = _rows([s for s in segments if not s.vertical], font)
    out: list[Box] = []
    run: list[list[Segment]] = []
    for row in rows + [[]]:
        cells = _cells(row, font) if row else []
        near = run and row and row[0].bbox[1] - max(s.bbox[3] for s in run[-1]) <= 2.5 * font
        if len(cells) >= 2 and (near or not run):
            run.append(row)
            continue
        region = _region(run, font)
        if region is not None and not any(_overlap(region, t) for t in taken):
            out.append(region)
        run = [row] if len(cells) >= 2 else []
    return out


def _rows(segments: Sequence[Segment], font: float) -> list[list[Segment]]:
    rows: list[list[Segment]] = []
    for s in sorted(segments, key=lambda s: (s.bbox[1] + s.bbox[3]) / 2):
        cy = (s.bbox[1] + s.bbox[3]) / 2
        if rows and abs(cy - sum((t.bbox[1] + t.bbox[3]) / 2 for t in rows[-1]) / len(rows[-1])) < 0.4 * font:
            rows[-1].append(s)
        else:
            rows.append([s])
    return [sorted(r, key=lambda s: s.bbox[0]) for r in rows]


def _cells(row: list[Segment], font: float) -> list[Box]:
    """The row's pieces, neighbours closer than a font size merged (justified word gaps)."""
    cells: list[list[float]] = []
    for s in row:
        if cells and s.bbox[0] - cells[-1][2] < font:
            cells[-1][2] = max(cells[-1][2], s.bbox[2])
            cells[-1][4] += len(s.text.split())
        else:
            cells.append([s.bbox[0], s.bbox[1], s.bbox[2], s.bbox[3], len(s.text.split())])
    return [tuple(c) for c in cells]  # type: ignore[misc]


def _region(run: list[list[Segment]], font: float) -> Box | None:
    if len(run) < MIN_ROWS:
        return None
    rows = [_cells(r, font) for r in run]
    if sum(len(c) >= MIN_COLUMNS for c in rows) < MIN_ROWS:
        return None
    pieces = [c for r in rows for c in r]
    words = sorted(c[4] for c in pieces)
    if words[len(words) // 2] > MAX_CELL_WORDS // 2 + 1:  # most pieces are phrases, not cells
        return None
    anchors = _anchors([[c[0] for c in r] for r in rows], font) + _anchors([[c[2] for c in r] for r in rows], font)
    if len({round(a / font) for a in anchors}) < MIN_COLUMNS:
        return None
    return union([s.bbox for r in run for s in r])


def _anchors(edges_per_row: list[list[float]], font: float) -> list[float]:
    """x positions that an edge in at least half the rows (and three) sits on, within half a font size."""
    need = max(MIN_ROWS, len(edges_per_row) // 2)
    xs = sorted((x, k) for k, row in enumerate(edges_per_row) for x in row)
    out: list[float] = []
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1][0] - xs[i][0] <= 0.5 * font:
            j += 1
        if len({k for _, k in xs[i : j + 1]}) >= need:
            out.append(xs[i][0])
        i = j + 1
    return out


def _overlap(a: Box, b: Box) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


__all__ = ["aligned_regions", "cell_texts", "coarse", "tidy", "looks_like_table", "markdown"]
