"""PDF ingestion speed and quality: kimidoc against pymupdf4llm and markitdown, side by side.

Corpus (generated here, as in tests/documents): a report with a ruled table on every page, a
two-column paper whose stream order interleaves the columns, and pages with a chart image. Each
tool converts the same files; we print pages/s, the ratio to kimidoc, and two quality checks:
tables that came out as Markdown tables, and two-column pages read column by column.

    python3 benchmarks/bench_ingest.py [--scale 1.0] [--skip-layout]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("KIMIDOC_PROGRESS", "0")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "documents")]  # run from a checkout, installed or not

import pymupdf  # noqa: E402
from documents_corpus import chart_page, table_page, two_column_page  # noqa: E402

TABLE_ROW = re.compile(r"\|\s*\**Region\**\s*\|\s*\**Units\**\s*\|")


def build(dirpath: Path, scale: float) -> dict[str, tuple[Path, int]]:
    files = {"report": (table_page, 40), "paper": (two_column_page, 20), "figures": (chart_page, 10)}
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


def columns_ok(text: str) -> int:
    """Pages of the paper whose left column ends before the right one starts."""
    ok = 0
    for chunk in text.split("Fruit Quarterly Report")[1:]:
        a, b = chunk.find("Alpha line 17"), chunk.find("Omega line 00")
        ok += 0 <= a < b
    return ok


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0, help="corpus size factor (1.0: 70 pages)")
    ap.add_argument("--skip-layout", action="store_true", help="skip pymupdf4llm's default (layout model) run, the slowest")
    args = ap.parse_args()
    tools: list[tuple[str, Callable[[Path], str]]] = [
        ("kimidoc load (default)", kimidoc_md),
        ("PyMuPDF get_text (no structure)", plain_get_text),
        ("pymupdf4llm to_markdown, legacy (layout off)", p4llm_legacy),
        ("markitdown", markitdown_md),
    ]
    if not args.skip_layout:
        tools.insert(2, ("pymupdf4llm to_markdown (default, layout on)", p4llm_default))
    with tempfile.TemporaryDirectory() as tmp:
        corpus = build(Path(tmp), args.scale)
        pages = sum(n for _, n in corpus.values())
        print(f"corpus: {', '.join(f'{k} {n} pages' for k, (_, n) in corpus.items())}; {pages} pages")
        for _, fn in tools:  # warm imports and caches outside the timing
            fn(corpus["figures"][0])
        rows = []
        for label, fn in tools:
            t0 = time.perf_counter()
            texts = {k: fn(p) for k, (p, _) in corpus.items()}
            dt = time.perf_counter() - t0
            tables = len(TABLE_ROW.findall(texts["report"]))
            rows.append((label, pages / dt, tables, columns_ok(texts["paper"])))
        base = rows[0][1]
        n_tables, n_paper = corpus["report"][1], corpus["paper"][1]
        print(f"{'tool':48} {'pages/s':>9} {'vs kimidoc':>11} {'tables':>8} {'2-col ok':>9}")
        for label, speed, tables, cols in rows:
            print(f"{label:48} {speed:9.1f} {speed / base:10.2f}x {tables:>3}/{n_tables:<4} {cols:>3}/{n_paper:<4}")


if __name__ == "__main__":
    main()
