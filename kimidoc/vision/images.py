"""Decode one image from a path, bytes or a PIL image into upright 8-bit RGB, or fail clearly.

Every failure is an :class:`ImageError` (a ``ValueError``, like the documents floor's errors) whose
message names the file: truncated PNG/JPEG, non-image bytes, a zero-size image, or a decompression
bomb (more pixels than ``max_pixels``, checked from the header before any pixel is decoded).

Conversions, chosen so documents keep their ink:

* EXIF orientation is applied first (phone photos come out upright);
* alpha (RGBA, LA, palette with transparency, ...) is composited over white, because transparent
  diagrams usually hold black ink on transparent *black* pixels and a plain ``convert("RGB")``
  would turn them solid black;
* 16-bit and 32-bit integer greyscale (``I;16*``, ``I``) is scaled to 8 bits (``convert`` would clip
  everything above 255 to white); float images (``F``) are read as 0..1 when they fit, else 0..255;
* CMYK, YCbCr, LAB, HSV and 1-bit go through Pillow's own conversion.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageSource = Image.Image | bytes | bytearray | memoryview | str | os.PathLike

# Pillow's own default bomb limit; a 16384-patch image needs only ~3.2M pixels, so anything
# above this is far past what the tower can see and is refused rather than decoded.
MAX_PIXELS = 89_478_485


class ImageError(ValueError):
    """An image that cannot be used; the message names the file (or ``<bytes>`` / ``<image N>``)."""


def describe(source: ImageSource, index: int | None = None) -> str:
    """A short name for an image source, for error messages."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, Image.Image):
        name = getattr(source, "filename", "") or ""
        if name:
            return name
    kind = "bytes" if isinstance(source, (bytes, bytearray, memoryview)) else "image"
    return f"<{kind}>" if index is None else f"<{kind} {index}>"


def decode_image(source: ImageSource, *, name: str | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode ``source`` into an upright RGB image; raise :class:`ImageError` naming it on bad input."""
    name = name or describe(source)
    try:
        image = _open(source, name)
        _check_size(image, name, max_pixels)
        return to_rgb(_upright(image))
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, MemoryError) as exc:
        # Truncated data surfaces from load() as OSError ("image file is truncated") or
        # SyntaxError (broken PNG chunks); both mean the file is damaged, not that we are.
        raise ImageError(f"{name}: cannot decode image ({type(exc).__name__}: {exc})") from exc


def peek_size(source: ImageSource, *, name: str | None = None, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) from the file header alone, no pixel decoded: what
    :func:`kimidoc.vision.budget.image_tokens` needs to budget an image before loading it.
    (EXIF rotation swaps the sides, which does not change the token count.)"""
    name = name or describe(source)
    image = _open(source, name)
    _check_size(image, name, max_pixels)
    return image.size


def _upright(image: Image.Image) -> Image.Image:
    image.load()  # decode first, so damaged pixel data fails here with its own message
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a damaged EXIF block (struct/key/type errors) must not cost the image
        return image


def _open(source: ImageSource, name: str) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"{name}: no such image file")
        data = path.read_bytes()
    else:
        raise ImageError(f"{name}: expected a PIL image, bytes or a path, got {type(source).__name__}")
    if not data:
        raise ImageError(f"{name}: empty file, not an image")
    try:
        with warnings.catch_warnings():
            # Pillow only *warns* between its limit and twice it; we decide with our own limit below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: not an image (unrecognised format)") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: refused as a possible decompression bomb ({exc})") from exc


def _check_size(image: Image.Image, name: str, max_pixels: int) -> None:
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageError(f"{name}: image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: {width}x{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,} "
            "(possible decompression bomb); raise max_pixels to allow it"
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB with alpha composited over white and high bit depths scaled, not clipped."""
    mode = image.mode
    if mode == "RGB":
        image.load()
        return image
    if mode == "P" and "transparency" in image.info or mode in ("PA", "LA", "La", "RGBA", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(image), mode), mode="L").convert("RGB")
    return image.convert("RGB")


def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    values = values.astype(np.float64)
    if mode == "F":
        top = 1.0 if values.size and np.nanmax(values) <= 1.0 else 255.0
    elif mode.startswith("I;16") or (values.size and values.max() > 255):
        top = 65535.0
    else:
        top = 255.0
    return np.clip(np.rint(np.nan_to_num(values) * (255.0 / top)), 0, 255).astype(np.uint8)
