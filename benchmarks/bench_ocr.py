"""OCR engines on generated scans: character error rate and seconds per page, side by side.

Scans are made here (text rendered to pixels, skewed, grey noise added, wrapped in a PDF page,
see tests/documents/hard_corpus.py) at several noise and skew levels; each available engine of
kimidoc.documents.ocr reads every page. CER = edit distance / reference length, over the words
joined by single spaces.

    python3 benchmarks/bench_ocr.py [--pages 6]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KIMIDOC_PROGRESS", "0")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "documents")]

import pymupdf
from hard_corpus import FILLER, scan_png

from kimidoc.documents.ocr import ENGINES, engine_available, ocr_page


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def normal(text: str) -> str:
    return " ".join(text.split())


def pages(n: int) -> list[tuple[str, list[str], bytes]]:
    import random

    out = []
    levels = [(0.0, 0, 12), (1.0, 12, 9), (2.0, 25, 12), (3.0, 35, 9)]  # skew (degrees), noise (grey levels), type size
    for k in range(n):
        rnd = random.Random(k)
        lines = [
            f"Invoice {rnd.randint(1000, 9999)} dated {rnd.randint(1, 28)} March 2024 totals {rnd.randint(10, 999)},{rnd.randint(100, 999)} EUR."
        ] + [" ".join(rnd.choice(FILLER) for _ in range(9)).capitalize() + "." for _ in range(7)]
        skew, noise, size = levels[k % len(levels)]
        out.append(
            (f"skew {skew} noise {noise} {size}pt", lines, scan_png(lines, skew=skew, noise=noise, seed=k, size=size))
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=8)
    ap.add_argument("--dpi", default="150,200,300", help="resolutions the engines read the page at")
    args = ap.parse_args()
    scans = pages(args.pages)
    doc = pymupdf.open()
    for _, _, png in scans:
        page = doc.new_page(width=595, height=842)
        page.insert_image(page.rect, stream=png)
    engines = [e for e in ENGINES if engine_available(e)]
    print(
        f"{len(scans)} scanned A4 pages, engines: {', '.join(engines) or 'none installed'}; load {os.getloadavg()[0]:.2f}"
    )
    print(f"{'engine':12} {'dpi':>4} {'CER':>7} {'s/page':>8}  per level (CER)")
    for engine in engines:
        ocr_page(doc[0], engine)  # load models outside the timing
        for dpi in (int(v) for v in args.dpi.split(",")):
            errors = chars = 0
            per: dict[str, list[float]] = {}
            t0 = time.perf_counter()
            for page, (level, lines, _) in zip(doc, scans):
                got = normal(" ".join(text for _, text in ocr_page(page, engine, dpi)))
                ref = normal(" ".join(lines))
                d = edit_distance(got, ref)
                errors += d
                chars += len(ref)
                per.setdefault(level, []).append(d / len(ref))
            dt = (time.perf_counter() - t0) / len(scans)
            levels = "  ".join(f"{k}: {sum(v) / len(v):.3f}" for k, v in per.items())
            print(f"{engine:12} {dpi:4} {errors / chars:7.3f} {dt:8.2f}  {levels}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
