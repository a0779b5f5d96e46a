"""What a file is: its kind (pdf, image, text, binary), its text encoding, its language."""

from __future__ import annotations

import codecs
from pathlib import Path

PDF_EXT = {".pdf"}
IMAGE_EXT = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".tif", ".tiff", ".bmp", ".svg"}
SNIFF = 8192  # bytes read to decide text or binary, as git does

_MAGIC = (
    (b"%PDF-", "pdf"),
    (b"\x89PNG\r\n\x1a\n", "image"),
    (b"\xff\xd8\xff", "image"),
    (b"GIF87a", "image"),
    (b"GIF89a", "image"),
    (b"II*\x00", "image"),
    (b"MM\x00*", "image"),
    (b"BM", "image"),
)
# Bytes that never occur in text files; tab, newlines, form feed, backspace and escape do.
_CONTROL = bytes(set(range(32)) - {8, 9, 10, 12, 13, 27})
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def kind_of(path: Path, head: bytes | None = None) -> str:
    """``pdf``, ``image`` or ``text`` (binary files are told apart later, by content)."""
    ext = path.suffix.lower()
    if ext in PDF_EXT:
        return "pdf"
    if ext in IMAGE_EXT:
        return "image"
    if head is None:
        with open(path, "rb") as f:
            head = f.read(SNIFF)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head[:12].startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image"
    return "text"


def is_binary(head: bytes) -> bool:
    """True for content that is not text: a NUL byte (outside UTF-16/32), or many control bytes."""
    if not head:
        return False
    if any(head.startswith(bom) for bom, enc in _BOMS if enc.startswith("utf-16") or enc == "utf-32"):
        return False
    if b"\x00" in head:
        return True
    return len(head.translate(None, _CONTROL)) < len(head) * 0.9


def decode(data: bytes) -> tuple[str, str]:
    """(text, encoding): UTF-8 (or a BOM's encoding) when valid, else charset-normalizer's best
    guess, else Latin-1, which maps every byte, so decoding never fails and nothing is dropped."""
    for bom, enc in _BOMS:
        if data.startswith(bom):
            return data.decode(enc, errors="replace"), enc
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data[:65536]).best()
    if best is not None and best.encoding not in ("utf_8", "ascii"):
        try:
            return data.decode(best.encoding), best.encoding
        except (UnicodeDecodeError, LookupError):
            pass
    return data.decode("latin-1"), "latin-1"
