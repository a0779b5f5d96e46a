"""Reading order for a PDF page: lines cut into segments, ordered by recursive XY-cut.

MuPDF returns text in content-stream order, which for a two-column page can interleave the
columns line by line. Splitting each line where a wide gap separates its spans and then cutting
the page recursively along its widest empty bands (horizontal bands first, column gutters when a
band has one) yields top-to-bottom, left-to-right column order, with titles that span the columns
kept in front of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

Box = tuple[float, float, float, float]
T = TypeVar("T")


@dataclass
class Segment:
    """A run of text on one line (no wide gap inside), with its style for heading detection."""

    bbox: Box
    text: str
    size: float
    bold: bool


def line_segments(page_dict: dict[str, Any], links: Sequence[tuple[Box, str]] = (), exclude: Sequence[Box] = ()) -> tuple[list[Segment], list[Segment]]:
    """Segments of the page's text lines, and separately those whose centre lies in an ``exclude``
    box (tables and figures, whose text is kept with them). Spans under a link become ``[text](uri)``."""
    kept: list[Segment] = []
    inside: list[Segment] = []
    for block in page_dict.get("blocks", ()):
        for line in block.get("lines", ()):
            if line.get("dir", (1, 0))[0] < 0.5:  # vertical or rotated text: keep it, in one piece
                spans = line["spans"]
            else:
                spans = sorted(line["spans"], key=lambda s: s["bbox"][0])
            for seg in _split(spans, links):
                cx, cy = (seg.bbox[0] + seg.bbox[2]) / 2, (seg.bbox[1] + seg.bbox[3]) / 2
                (inside if any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in exclude) else kept).append(seg)
    return kept, inside


def _split(spans: list[dict[str, Any]], links: Sequence[tuple[Box, str]]) -> list[Segment]:
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
            out.append(Segment((box[0], box[1], box[2], box[3]), text.strip(), size, bold))
        pieces, box, sizes, bold = [], [], [], True

    for span in spans:
        text = span["text"]
        if not text:
            continue
        x0, y0, x1, y1 = span["bbox"]
        size = span["size"]
        if box and x0 - box[2] > max(size, 6.0):  # a gap wider than a character or two: new segment
            flush()
        uri = _link_at(span["bbox"], links) if links else None
        pieces.append((text, uri))
        box = [x0, y0, x1, y1] if not box else [min(box[0], x0), min(box[1], y0), max(box[2], x1), max(box[3], y1)]
        if text.strip():
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
            lead, core, trail = text[: len(text) - len(text.lstrip())], text.strip(), text[len(text.rstrip()):]
            out.append(f"{lead}[{core}]({uri}){trail}")
        else:
            out.append(text)
        i = j
    return "".join(out)


def reading_order(items: Sequence[T], boxes: Sequence[Box], *, font: float = 10.0) -> list[T]:
    """``items`` (with their ``boxes``) in reading order by recursive XY-cut.

    Bands separated by blank space taller than ~0.8 line are cut first, then column gutters wider
    than a character where every column is at least a quarter of the band wide (so a label/value
    list is not mistaken for columns), then single lines.
    """
    order = _xycut(list(range(len(items))), boxes, font)
    return [items[i] for i in order]


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


def _split_at(idx: list[int], boxes: Sequence[Box], axis: int, cuts: list[tuple[float, float]]) -> list[list[int]]:
    groups: list[list[int]] = [[] for _ in range(len(cuts) + 1)]
    for i in idx:
        c = (boxes[i][axis] + boxes[i][axis + 2]) / 2
        k = sum(1 for a, _ in cuts if c > a)
        groups[k].append(i)
    return [g for g in groups if g]


def _xycut(idx: list[int], boxes: Sequence[Box], font: float) -> list[int]:
    if len(idx) <= 1:
        return idx
    ygaps = _gaps(idx, boxes, 1)
    big = [g for g in ygaps if g[1] - g[0] >= 0.8 * font]
    if big:
        return [i for g in _split_at(idx, boxes, 1, big) for i in _xycut(g, boxes, font)]
    xgaps = [g for g in _gaps(idx, boxes, 0) if g[1] - g[0] >= font]
    if xgaps:
        cols = _split_at(idx, boxes, 0, xgaps)
        width = max(boxes[i][2] for i in idx) - min(boxes[i][0] for i in idx)
        if len(cols) > 1 and all(
            len(c) >= 2 and max(boxes[i][2] for i in c) - min(boxes[i][0] for i in c) >= 0.25 * width / (len(cols) - 1) for c in cols
        ):
            return [i for c in cols for i in _xycut(c, boxes, font)]
    if ygaps:
        return [i for g in _split_at(idx, boxes, 1, ygaps) for i in _xycut(g, boxes, font)]
    return sorted(idx, key=lambda i: (round(boxes[i][1] / max(font * 0.5, 1.0)), boxes[i][0]))


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
            new_para = level or heading_level(prev, body) or gap > 0.6 * body or gap < -body
            out.append("\n\n" if new_para else "\n")
        out.append(text)
        prev = seg
    return "".join(out)


def union(boxes: Sequence[Box]) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


__all__ = ["Segment", "line_segments", "reading_order", "body_size", "heading_level", "to_text", "union"]
