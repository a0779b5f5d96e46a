"""Text for pages that have none: optical character recognition of scanned pages.

Two engines: Tesseract through PyMuPDF (needs the ``tesseract`` binary and its language data,
e.g. apt's ``tesseract-ocr``) and RapidOCR (PaddleOCR's detection and recognition models, shipped
inside the ``rapidocr-onnxruntime`` wheel, run by onnxruntime on the CPU: nothing to download, no
system binary). Measured here (``benchmarks/bench_ocr.py`` on generated scans with noise and skew,
and a real dense A4 scan from PyMuPDF's test files): Tesseract read three of four noise levels
without error and kept the spaces between words, at 7 s for the real page against RapidOCR's 80 s
(2-core machine under load); on the noisiest level (grey noise sigma 35, 9 pt type) it returned
garbage where RapidOCR still had 3% character errors, and RapidOCR often drops word spaces. So
``"auto"`` takes Tesseract where its binary is installed and RapidOCR otherwise, which any
``pip install`` has.

Lines come back in the page's displayed coordinates (points), like the rest of the page's text.
"""

from __future__ import annotations

import functools
import shutil
from typing import Any

import pymupdf

Box = tuple[float, float, float, float]
ENGINES = ("tesseract", "rapidocr")  # the order "auto" tries them in
# Resolution each engine reads the page at: the best of 150/200/300 dpi in bench_ocr.py (Tesseract
# turns noise into letters at higher resolutions; RapidOCR needs ~8 px per x-height of small type).
OCR_DPI = {"tesseract": 150, "rapidocr": 200}


class OCRUnavailable(RuntimeError):
    """No OCR engine is installed (or the one asked for is not)."""


def engine_available(name: str) -> bool:
    if name == "rapidocr":
        try:
            import rapidocr_onnxruntime  # noqa: F401
        except Exception:  # ImportError, or onnxruntime failing to load its library
            return False
        return True
    if name == "tesseract":
        return shutil.which("tesseract") is not None and _tessdata() is not None
    raise ValueError(f"unknown OCR engine {name!r}; use one of {', '.join(ENGINES)} or 'auto'")


def pick_engine(name: str = "auto") -> str:
    """The engine ``name`` stands for; ``"auto"``: the first available of :data:`ENGINES`."""
    if name == "auto":
        for candidate in ENGINES:
            if engine_available(candidate):
                return candidate
        raise OCRUnavailable("no OCR engine: pip install rapidocr-onnxruntime (or install tesseract-ocr)")
    if not engine_available(name):
        raise OCRUnavailable(f"OCR engine {name!r} is not installed")
    return name


def ocr_page(page: pymupdf.Page, engine: str = "auto", dpi: int | None = None) -> list[tuple[Box, str]]:
    """Recognised text lines of ``page`` as (bbox in displayed points, text), top to bottom;
    ``dpi`` defaults to the engine's :data:`OCR_DPI`."""
    name = pick_engine(engine)
    dpi = dpi or OCR_DPI[name]
    if name == "rapidocr":
        lines = _rapidocr(page, dpi)
    else:
        lines = _tesseract(page, dpi)
    return sorted(lines, key=lambda line: (round(line[0][1] / 4), line[0][0]))


@functools.lru_cache(maxsize=1)
def _rapid_engine() -> Any:
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR()


def _rapidocr(page: pymupdf.Page, dpi: int) -> list[tuple[Box, str]]:
    import numpy as np

    pix = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csRGB, alpha=False)
    image = np.frombuffer(pix.samples, dtype=np.uint8).reshape(pix.height, pix.width, 3)
    result, _ = _rapid_engine()(image)
    scale = 72.0 / dpi
    out = []
    for quad, text, _score in result or ():
        xs = [p[0] * scale for p in quad]
        ys = [p[1] * scale for p in quad]
        if text.strip():
            out.append(((min(xs), min(ys), max(xs), max(ys)), text.strip()))
    return out


@functools.lru_cache(maxsize=1)
def _tessdata() -> str | None:
    try:
        return pymupdf.get_tessdata()
    except Exception:  # RuntimeError when no tessdata folder is found
        return None


def _tesseract(page: pymupdf.Page, dpi: int) -> list[tuple[Box, str]]:
    textpage = page.get_textpage_ocr(dpi=dpi, full=True, tessdata=_tessdata())
    out = []
    derotate = page.rotation_matrix
    for block in page.get_text("dict", textpage=textpage)["blocks"]:
        for line in block.get("lines", ()):
            text = "".join(span["text"] for span in line["spans"]).strip()
            if text:
                r = pymupdf.Rect(line["bbox"]) * derotate
                out.append(((r.x0, r.y0, r.x1, r.y1), text))
    return out
