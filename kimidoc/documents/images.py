"""Images and charts as documents: PNG, JPEG, WebP, BMP, the first frame of a GIF, every page of a
TIFF, and SVG (rasterised by PyMuPDF). Each frame becomes one image part holding PNG bytes, downsized
to what the vision tower keeps (:func:`kimidoc.vision.budget.target_size`), so no pixel is stored
that the model would never see."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageSequence, UnidentifiedImageError

from kimidoc.documents.base import Document, DocumentError, Part, Source
from kimidoc.documents.render import to_png
from kimidoc.vision.budget import target_size
from kimidoc.vision.images import to_rgb

SVG_DPI = 144


def load_image(path: Path, *, display: str | None = None) -> Document:
    name = display or str(path)
    if path.suffix.lower() == ".svg":
        return _svg(path, name)
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DocumentError(f"{name}: not a readable image ({exc})") from exc
    fmt = img.format or path.suffix[1:].upper()
    frames = getattr(img, "n_frames", 1)
    doc = Document(name, "image", meta={"format": fmt, "width": img.width, "height": img.height, "frames": frames})
    if fmt == "TIFF" and frames > 1:
        for i, frame in enumerate(ImageSequence.Iterator(img), 1):
            doc.parts.append(_part(frame, Source(name, page=i), f"[image] {Path(name).name} page {i} of {frames}"))
    else:
        # GIFs (and animated PNG/WebP): the first frame stands for the image.
        doc.parts.append(_part(img, Source(name), f"[image] {Path(name).name}"))
        if frames > 1:
            doc.meta["note"] = f"first of {frames} frames"
    return doc


def _part(img: Image.Image, source: Source, caption: str) -> Part:
    frame = to_rgb(img)
    tw, th = target_size(frame.width, frame.height)
    if (tw, th) != frame.size:
        frame = frame.resize((tw, th), Image.Resampling.BICUBIC)  # as K2.6's own processor
    return Part(
        "image",
        source,
        text=caption,
        image=to_png(frame),
        width=frame.width,
        height=frame.height,
        meta={"original_size": (img.width, img.height)},
    )


def _svg(path: Path, name: str) -> Document:
    import pymupdf

    try:
        with pymupdf.open(path, filetype="svg") as svg:
            pix = svg[0].get_pixmap(dpi=SVG_DPI, alpha=False)
    except Exception as exc:
        raise DocumentError(f"{name}: not a readable SVG ({exc})") from exc
    img = Image.frombytes("RGB", (pix.width, pix.height), pix.samples)
    doc = Document(name, "image", meta={"format": "SVG", "width": img.width, "height": img.height, "frames": 1})
    doc.parts.append(_part(img, Source(name), f"[image] {Path(name).name}"))
    return doc
