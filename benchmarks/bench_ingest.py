"""PDF ingestion speed and quality: kimidoc against pymupdf4llm, PyMuPDF get_text and markitdown,
side by side in one run.

Corpus (generated here, tests/documents/documents_corpus.py and hard_corpus.py): ruled tables,
unruled tables, LaTeX-like two-column pages (column-ordered and line-interleaved content streams,
10 pt gutter, margin stamp, bridging footer), rotated table pages and chart pages. Each tool
converts every file; we print pages/s over all pages (total pages / total seconds, not a per-file
median), the ratio to kimidoc, and three checks: ruled tables that came out as Markdown tables,
cells of the unruled tables recovered as table cells, and two-column pages read column by column.

    python3 benchmarks/bench_ingest.py [--scale 1.0] [--skip-layout]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("KIMIDOC_PROGRESS", "0")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "documents")]  # run from a checkout, installed or not

import pymupdf  # noqa: E402
from documents_corpus import chart_page, table_page  # noqa: E402
from hard_corpus import MARKER, UNRULED, rotated_table_page, two_column_paper, unruled_table_page  # noqa: E402
from real_pdfs import table_cells  # noqa: E402

TABLE_ROW = re.compile(r"\|\s*\**Region\**\s*\|\s*\**Units\**\s*\|")


def build(dirpath: Path, scale: float) -> dict[str, tuple[Path, int]]:
    files: dict[str, tuple[Callable[[pymupdf.Document], object], int]] = {
        "report": (table_page, 40),
        "paper": (lambda d: two_column_paper(d), 10),
        "paper-interleaved": (lambda d: two_column_paper(d, interleaved=True), 10),
        "unruled": (unruled_table_page, 20),
        "rotated": (rotated_table_page, 5),
        "figures": (chart_page, 10),
    }
    out = {}
    for name, (make, n) in files.items():
        n = max(1, int(n * scale))
        doc = pymupdf.open()
        for _ in range(n):
            make(doc)
        path = dirpath / f"{name}.pdf"
        doc.save(path)
        out[name] = (path, n)
    return out


def kimidoc_md(path: Path) -> str:
    from kimidoc.documents import load

    return load(path).text()


def plain_get_text(path: Path) -> str:
    with pymupdf.open(path) as doc:
        return "\n".join(page.get_text() for page in doc)


def p4llm_default(path: Path) -> str:
    import pymupdf4llm

    pymupdf4llm.use_layout(True)
    return pymupdf4llm.to_markdown(str(path))


def p4llm_legacy(path: Path) -> str:
    import pymupdf4llm

    pymupdf4llm.use_layout(False)
    try:
        return pymupdf4llm.to_markdown(str(path))
    finally:
        pymupdf4llm.use_layout(True)


def markitdown_md(path: Path) -> str:
    from markitdown import MarkItDown

    return MarkItDown().convert(str(path)).text_content


def unruled_cells(text: str, pages: int) -> float:
    """Share of the unruled tables' cells found as cells of a Markdown table row that holds the
    row's first cell (so a cell counts only in its own row), over all ``pages`` copies."""
    rows = table_cells(text)
    found = 0
    for want in UNRULED:
        found += sum(sum(c in r for c in want) for r in rows if want[0] in r)
    total = sum(len(r) for r in UNRULED)
    return min(1.0, found / (total * pages)) if pages else 0.0


def columns_ok(text: str) -> int:
    """Two-column pages whose markers come out as all left lines, then all right lines."""
    ok = 0
    for chunk in text.split("On Reading Two Columns in Order")[1:]:
        markers = MARKER.findall(chunk)
        ok += (
            markers == sorted(m for m in markers if m[0] == "L") + sorted(m for m in markers if m[0] == "R")
            and len(markers) == 80
        )
    return ok


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0, help="corpus size factor (1.0: 95 pages)")
    ap.add_argument(
        "--skip-layout", action="store_true", help="skip pymupdf4llm's default (layout model) run, the slowest"
    )
    args = ap.parse_args()
    tools: list[tuple[str, Callable[[Path], str]]] = [
        ("kimidoc load (default)", kimidoc_md),
        ("PyMuPDF get_text (no structure)", plain_get_text),
        ("pymupdf4llm to_markdown, legacy (layout off)", p4llm_legacy),
    ]
    if not args.skip_layout:
        tools.insert(2, ("pymupdf4llm to_markdown (default, layout on)", p4llm_default))
    try:
        import markitdown  # noqa: F401

        tools.append(("markitdown", markitdown_md))
    except ImportError:
        print("markitdown not installed (pip install 'markitdown[pdf]'): left out")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = build(Path(tmp), args.scale)
        pages = sum(n for _, n in corpus.values())
        print(
            f"corpus: {', '.join(f'{k} {n}' for k, (_, n) in corpus.items())}: {pages} pages; load average {os.getloadavg()[0]:.1f}"
        )
        for _, fn in tools:  # warm imports and caches outside the timing
            fn(corpus["figures"][0])
        rows = []
        for label, fn in tools:
            t0 = time.perf_counter()
            texts = {k: fn(p) for k, (p, _) in corpus.items()}
            dt = time.perf_counter() - t0
            tables = len(TABLE_ROW.findall(texts["report"]))
            cells = unruled_cells(texts["unruled"], corpus["unruled"][1])
            cols = columns_ok(texts["paper"]) + columns_ok(texts["paper-interleaved"])
            rows.append((label, pages / dt, tables, cells, cols))
        base = rows[0][1]
        n_tables, n_paper = corpus["report"][1], corpus["paper"][1] + corpus["paper-interleaved"][1]
        print(
            f"{'tool':48} {'pages/s':>8} {'vs kimidoc':>11} {'ruled tables':>13} {'unruled cells':>14} {'2-col ok':>9}"
        )
        for label, speed, tables, cells, cols in rows:
            print(
                f"{label:48} {speed:8.1f} {speed / base:10.2f}x {tables:>6}/{n_tables:<6} {cells:13.0%} {cols:>4}/{n_paper:<4}"
            )
        print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
