"""Pixels from documents: render a PDF page (or a region of it), crop and zoom an image, encode PNG.

Shared by the PDF loader (figures, scanned pages), the page/region tools and the vision path, so
every page image in kimidoc is produced the same way.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image

Box = tuple[float, float, float, float]


def render_page(
    pdf: Any, page_number: int, *, dpi: int = 144, clip: Box | None = None, password: str | None = None
) -> Image.Image:
    """Render 1-based ``page_number`` of ``pdf`` (a path or an open ``pymupdf.Document``) to an RGB image.

    ``clip`` is a region in page points (x0, y0, x1, y1), as stored in a part's ``Source.bbox``.
    """
    import pymupdf

    from kimidoc.documents.base import DocumentError

    own = not isinstance(pdf, pymupdf.Document)
    doc = pdf
    if own:
        from kimidoc.documents.pdf import open_pdf

        doc = open_pdf(Path(pdf), password=password)
    try:
        if not 1 <= page_number <= doc.page_count:
            raise DocumentError(f"{doc.name or 'pdf'}: page {page_number} out of range 1-{doc.page_count}")
        page = doc[page_number - 1]
        rect = None
        if clip is not None:
            rect = pymupdf.Rect(clip) & page.rect
            if rect.is_empty:
                raise DocumentError(
                    f"{doc.name or 'pdf'} p.{page_number}: region {tuple(clip)} lies outside the page {tuple(page.rect)}"
                )
        pix = page.get_pixmap(dpi=dpi, clip=rect, alpha=False)
        return Image.frombytes("RGB", (pix.width, pix.height), pix.samples)
    finally:
        if own:
            doc.close()


def crop(image: Image.Image, box: Box, zoom: float = 1.0) -> Image.Image:
    """The region ``box`` (pixels, x0, y0, x1, y1; clamped to the image) of ``image``, scaled by ``zoom``."""
    if zoom <= 0:
        raise ValueError(f"zoom must be positive, got {zoom}")
    x0, y0, x1, y1 = (max(0, min(int(round(v)), lim)) for v, lim in zip(box, (image.width, image.height) * 2))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"crop box {tuple(box)} is empty inside a {image.width}x{image.height} image")
    out = image.crop((x0, y0, x1, y1))
    if zoom != 1.0:
        size = (max(1, round(out.width * zoom)), max(1, round(out.height * zoom)))
        out = out.resize(size, Image.Resampling.LANCZOS)
    return out


def to_png(image: Image.Image) -> bytes:
    """PNG bytes of ``image``; low compression, because encoding dominates page-render time."""
    if image.mode not in ("RGB", "RGBA", "L", "LA", "P", "1", "I;16"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
