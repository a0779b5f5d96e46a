"""Reading order for a PDF page: lines cut into segments, columns taken apart on clear evidence.

MuPDF returns text in content-stream order. That is right for most pages, and for two-column
pages typeset column after column; some producers interleave the columns line by line. So the
order is changed only where the page shows columns beyond doubt (gutters measured against the
gap actually present, text-like columns on both sides, items crossing the gutter read as
separators between bands); anything less clear keeps the PDF's own order. Headings (by size) and
paragraph breaks (by vertical gap) are marked for the Markdown-ish text.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

Box = tuple[float, float, float, float]
T = TypeVar("T")


@dataclass
class Segment:
    """A run of text on one line (no wide gap inside), with its style for heading detection."""

    bbox: Box
    text: str
    size: float
    bold: bool
    vertical: bool = False  # written up or down the page (margin stamps, rotated labels)


def line_segments(
    page_dict: dict[str, Any], links: Sequence[tuple[Box, str]] = (), exclude: Sequence[Box] = ()
) -> tuple[list[Segment], list[Segment]]:
    """Segments of the page's text lines, and separately those whose centre lies in an ``exclude``
    box (tables and figures, whose text is kept with them). Spans under a link become ``[text](uri)``."""
    segments: list[Segment] = []
    for block in page_dict.get("blocks", ()):
        for line in block.get("lines", ()):
            vertical = abs(line.get("dir", (1, 0))[0]) < 0.5
            if vertical:  # keep it in one piece
                spans = line["spans"]
            else:
                spans = sorted(line["spans"], key=lambda s: s["bbox"][0])
            segments += _split(spans, links, vertical)
    return partition(segments, exclude)


def partition(segments: Sequence[Segment], boxes: Sequence[Box]) -> tuple[list[Segment], list[Segment]]:
    """``segments`` outside all ``boxes``, and those whose centre lies inside one."""
    kept: list[Segment] = []
    inside: list[Segment] = []
    for seg in segments:
        cx, cy = (seg.bbox[0] + seg.bbox[2]) / 2, (seg.bbox[1] + seg.bbox[3]) / 2
        (inside if any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in boxes) else kept).append(seg)
    return kept, inside


def _split(spans: list[dict[str, Any]], links: Sequence[tuple[Box, str]], vertical: bool = False) -> list[Segment]:
    out: list[Segment] = []
    pieces: list[tuple[str, str | None]] = []
    box: list[float] = []
    sizes: list[tuple[float, int]] = []
    bold = True

    def flush() -> None:
        nonlocal pieces, box, sizes, bold
        text = _linked(pieces)
        if text.strip():
            size = max(sizes, key=lambda s: s[1])[0]
            out.append(Segment((box[0], box[1], box[2], box[3]), text.strip(), size, bold, vertical))
        pieces, box, sizes, bold = [], [], [], True

    for span in spans:
        text = span["text"]
        if not text:
            continue
        if not text.strip():  # a space MuPDF put into a gap: the gap is measured between the ink
            if box:
                pieces.append((text, None))
            continue
        x0, y0, x1, y1 = span["bbox"]
        size = span["size"]
        # A gap wider than a word space (LaTeX's column gap is one font size) starts a new segment.
        if box and not vertical and x0 - box[2] > max(0.6 * size, 3.0):
            flush()
        uri = _link_at(span["bbox"], links) if links else None
        pieces.append((text, uri))
        box = [x0, y0, x1, y1] if not box else [min(box[0], x0), min(box[1], y0), max(box[2], x1), max(box[3], y1)]
        sizes.append((round(size, 1), len(text)))
        bold = bold and bool(span["flags"] & 16)
    if box:
        flush()
    return out


def _link_at(bbox: Sequence[float], links: Sequence[tuple[Box, str]]) -> str | None:
    cx, cy = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    for (x0, y0, x1, y1), uri in links:
        if x0 <= cx <= x1 and y0 <= cy <= y1:
            return uri
    return None


def _linked(pieces: list[tuple[str, str | None]]) -> str:
    out: list[str] = []
    i = 0
    while i < len(pieces):
        text, uri = pieces[i]
        j = i + 1
        while uri and j < len(pieces) and pieces[j][1] == uri:
            text += pieces[j][0]
            j += 1
        if uri and text.strip():
            lead, core, trail = text[: len(text) - len(text.lstrip())], text.strip(), text[len(text.rstrip()) :]
            out.append(f"{lead}[{core}]({uri}){trail}")
        else:
            out.append(text)
        i = j
    return "".join(out)


def reading_order(
    items: Sequence[T],
    boxes: Sequence[Box],
    *,
    font: float = 10.0,
    floats: Collection[int] = (),
    aside: Collection[int] = (),
) -> list[T]:
    """``items`` (with their ``boxes``, given in the PDF's own content order) in reading order.

    Columns are taken apart only on clear evidence (:func:`columns`): then each band between the
    items that cross a gutter (titles, abstracts, wide figures, footers) is read column by column.
    Without such evidence the PDF's own order is kept, which is never worse than PyMuPDF's. Running
    heads and feet are read first and last. ``floats`` (tables, figures: boxes with no place in
    the content stream) go after the last item above them; ``aside`` (margin stamps,
    vertical text) come last, in their own order.
    """
    float_set, aside_set = set(floats), set(aside)
    body = [i for i in range(len(items)) if i not in aside_set]
    order = _order(body, boxes, font, float_set, top=True)
    return [items[i] for i in order] + [items[i] for i in range(len(items)) if i in aside_set]


def _order(idx: list[int], boxes: Sequence[Box], font: float, floats: set[int], *, top: bool = False) -> list[int]:
    if len(idx) <= 1:
        return idx
    head: list[int] = []
    foot: list[int] = []
    if top:
        head, idx, foot = _head_foot(idx, boxes, font)
    cols = columns([boxes[i] for i in idx], font)
    if not cols:
        return _leaf(head, boxes, floats) + _leaf(idx, boxes, floats) + _leaf(foot, boxes, floats)
    placed: list[list[int]] = [[] for _ in cols]
    spanning: list[int] = []
    for i in idx:
        k = _column_of(boxes[i], cols)
        (spanning if k is None else placed[k]).append(i)
    spanning.sort(key=lambda i: (boxes[i][1] + boxes[i][3]) / 2)
    out = _leaf(head, boxes, floats)
    lo = float("-inf")
    for hi_item in spanning + [None]:
        hi = float("inf") if hi_item is None else (boxes[hi_item][1] + boxes[hi_item][3]) / 2
        for col in placed:
            band = [i for i in col if lo <= (boxes[i][1] + boxes[i][3]) / 2 < hi]
            out += _order(band, boxes, font, floats)
        if hi_item is not None:
            out.append(hi_item)
        lo = hi
    return out + _leaf(foot, boxes, floats)


def _leaf(idx: list[int], boxes: Sequence[Box], floats: set[int]) -> list[int]:
    """Content order for text; each float goes after the last text item that lies above it (the
    content stream need not run top to bottom, so "before the first item below" can land early)."""
    out = [i for i in idx if i not in floats]
    for f in sorted((i for i in idx if i in floats), key=lambda i: boxes[i][1]):
        above = [k for k, i in enumerate(out) if i not in floats and boxes[i][3] <= boxes[f][1] + 1]
        out.insert(above[-1] + 1 if above else 0, f)
    return out


def _head_foot(idx: list[int], boxes: Sequence[Box], font: float) -> tuple[list[int], list[int], list[int]]:
    """Split off a running head / foot: at most two lines at the top (bottom) of the page, set
    apart from the body by more than a line of white space, with most of the page below (above)."""
    gaps = _gaps(idx, boxes, 1)
    if not gaps:
        return [], idx, []
    y0 = min(boxes[i][1] for i in idx)
    y1 = max(boxes[i][3] for i in idx)
    head_end = next((a for a, b in gaps if b - a > 1.2 * font), None)
    foot_start = next((b for a, b in reversed(gaps) if b - a > 1.2 * font), None)
    head_cut = head_end if head_end is not None and head_end - y0 <= 2.5 * font else None
    foot_cut = foot_start if foot_start is not None and y1 - foot_start <= 2.5 * font else None
    head = [i for i in idx if head_cut is not None and boxes[i][3] <= head_cut]
    foot = [i for i in idx if foot_cut is not None and boxes[i][1] >= foot_cut and i not in head]
    body = [i for i in idx if i not in head and i not in foot]
    if len(body) < 4 * (len(head) + len(foot)):  # not a head and a foot, just a short page
        return [], idx, []
    return head, body, foot


def columns(boxes: Sequence[Box], font: float = 10.0) -> list[tuple[float, float]]:
    """The x-ranges of the page's text columns, or ``[]`` when there is no clear evidence of more
    than one.

    A gutter is a vertical strip that (almost) no item narrower than half the page crosses, at
    least 0.4 font sizes wide: the gap present, not a fixed width (LaTeX's 10 pt column gap at
    10 pt text qualifies). Items crossing it (titles, abstracts, footers) are set aside for the
    search. A gutter counts only if the columns on both sides look like text columns: at least
    three lines each, lines that fill most of the column, columns of comparable width (so a
    label/value list or a table is not read column-wise) and side by side on the page.
    """
    if len(boxes) < 6:
        return []
    x0, x1 = min(b[0] for b in boxes), max(b[2] for b in boxes)
    width = x1 - x0
    if width <= 0:
        return []
    narrow = [b for b in boxes if b[2] - b[0] <= 0.55 * width]
    if len(narrow) < 6:
        return []
    step = max(0.25, font / 20)
    n = int(width / step) + 2
    cover = [0] * (n + 1)
    for b in narrow:
        cover[max(0, int((b[0] - x0) / step))] += 1
        cover[min(n, int((b[2] - x0) / step) + 1)] -= 1
    tol = max(1, len(narrow) // 40)
    gutters: list[tuple[float, float]] = []
    run, start = 0, None
    for k in range(n):
        run += cover[k]
        if run <= tol and 0 < k < n - 1:
            start = k if start is None else start
        elif start is not None:
            if (k - start) * step >= 0.4 * font:
                gutters.append((x0 + start * step, x0 + k * step))
            start = None
    # Widest first: keep each gutter only while every column it makes still looks like text.
    chosen: list[tuple[float, float]] = []
    for g in sorted(gutters, key=lambda g: g[0] - g[1]):
        trial = sorted(chosen + [g])
        cols = _cols_between(trial, x0, x1)
        if _text_columns(cols, boxes, width, font):
            chosen = trial
    if not chosen:
        return []
    return _cols_between(chosen, x0, x1)


def _cols_between(gutters: list[tuple[float, float]], x0: float, x1: float) -> list[tuple[float, float]]:
    edges = [x0] + [v for g in gutters for v in g] + [x1]
    return [(edges[k], edges[k + 1]) for k in range(0, len(edges), 2)]


def _column_of(b: Box, cols: list[tuple[float, float]]) -> int | None:
    """The column holding ``b``, or None when it reaches into a second column."""
    over = [max(0.0, min(b[2], c1) - max(b[0], c0)) for c0, c1 in cols]
    k = max(range(len(cols)), key=lambda j: over[j])
    if any(over[j] > 0.1 * (cols[j][1] - cols[j][0]) for j in range(len(cols)) if j != k):
        return None
    return k


def _text_columns(cols: list[tuple[float, float]], boxes: Sequence[Box], width: float, font: float) -> bool:
    members: list[list[Box]] = [[] for _ in cols]
    for b in boxes:
        k = _column_of(b, cols)
        if k is not None:
            members[k].append(b)
    widths = []
    spans = []
    for mem in members:
        if len(mem) < 3:
            return False
        left, right = min(b[0] for b in mem), max(b[2] for b in mem)
        w = right - left
        if w < 0.2 * width:
            return False
        rows = _rows(mem, font)
        if len(rows) < 3:
            return False
        fill = sorted((r[2] - r[0]) / w for r in rows)
        if fill[len(fill) // 2] < 0.6:  # most lines of a text column reach across it
            return False
        widths.append(w)
        spans.append((min(b[1] for b in mem), max(b[3] for b in mem)))
    if min(widths) < 0.5 * max(widths):
        return False
    for (a0, a1), (b0, b1) in zip(spans, spans[1:]):  # neighbours sit side by side, not one above the other
        if min(a1, b1) - max(a0, b0) < 0.3 * min(a1 - a0, b1 - b0):
            return False
    return True


def _rows(boxes: Sequence[Box], font: float) -> list[Box]:
    """Boxes on the same line merged: the extent of each text line."""
    rows: list[list[float]] = []
    for b in sorted(boxes, key=lambda b: (b[1] + b[3]) / 2):
        cy = (b[1] + b[3]) / 2
        if rows and abs(cy - (rows[-1][1] + rows[-1][3]) / 2) < 0.4 * font:
            r = rows[-1]
            r[0], r[1], r[2], r[3] = min(r[0], b[0]), min(r[1], b[1]), max(r[2], b[2]), max(r[3], b[3])
        else:
            rows.append(list(b))
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def _gaps(idx: list[int], boxes: Sequence[Box], axis: int) -> list[tuple[float, float]]:
    """Empty intervals (start, end) between the projections of the boxes on ``axis`` (0=x, 1=y)."""
    spans = sorted((boxes[i][axis], boxes[i][axis + 2]) for i in idx)
    out = []
    end = spans[0][1]
    for a, b in spans[1:]:
        if a > end:
            out.append((end, a))
        end = max(end, b)
    return out


def body_size(segments: Sequence[Segment]) -> float:
    """The font size most of the page's characters are set in."""
    weights: dict[float, int] = {}
    for s in segments:
        weights[s.size] = weights.get(s.size, 0) + len(s.text)
    return max(weights, key=lambda k: weights[k]) if weights else 10.0


def heading_level(seg: Segment, body: float) -> int:
    """1-3 for a line set clearly larger than body text, 0 for body text."""
    if len(seg.text) > 150 or seg.size < body * 1.15:
        return 0
    return 1 if seg.size >= body * 1.6 else 2 if seg.size >= body * 1.3 else 3


def to_text(segments: Sequence[Segment], body: float) -> str:
    """Ordered segments as Markdown-ish text: headings marked, lines of a paragraph joined with
    newlines, a blank line where the vertical gap (or a column change) shows a new paragraph."""
    out: list[str] = []
    prev: Segment | None = None
    for seg in segments:
        level = heading_level(seg, body)
        text = f"{'#' * level} {seg.text}" if level else seg.text
        if prev is not None:
            gap = seg.bbox[1] - prev.bbox[3]
            same_line = (
                not seg.vertical
                and not prev.vertical
                and seg.bbox[0] >= prev.bbox[2]
                and _same_line(prev.bbox, seg.bbox)
            )
            if same_line and not level and not heading_level(prev, body):
                out.append(" " + text)
                prev = seg
                continue
            if seg.vertical and prev.vertical:  # lines side by side: no vertical gap to read paragraphs from
                new_para = bool(level)
            else:
                new_para = level or heading_level(prev, body) or gap > 0.6 * body or gap < -body
            out.append("\n\n" if new_para else "\n")
        out.append(text)
        prev = seg
    return "".join(out)


def _same_line(a: Box, b: Box) -> bool:
    overlap = min(a[3], b[3]) - max(a[1], b[1])
    return overlap > 0.5 * min(a[3] - a[1], b[3] - b[1])


def union(boxes: Sequence[Box]) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


__all__ = [
    "Segment",
    "line_segments",
    "partition",
    "reading_order",
    "columns",
    "body_size",
    "heading_level",
    "to_text",
    "union",
]
