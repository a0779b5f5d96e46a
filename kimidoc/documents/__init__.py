"""Documents in: PDFs, images, repositories and text files, as parts that cite their source.

``load(path)`` picks the loader by what the path is; ``iter_parts(path)`` streams a PDF page by
page for files too big to hold; ``load_many(paths)`` loads several in order.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from kimidoc.documents.base import Document, DocumentError, Omission, Part, PartKind, Source
from kimidoc.documents.detect import kind_of
from kimidoc.progress import progress

PathLike = str | os.PathLike[str]


def load(
    path: PathLike,
    *,
    password: str | None = None,
    pages: Iterable[int] | None = None,
    dpi: int = 144,
    render_pages: bool = False,
    engine: str = "fast",
    ocr: str | None = "auto",
    ignore: Sequence[str] = (),
    max_file_bytes: int | None = None,
    max_files: int | None = None,
) -> Document:
    """Load a folder/repository, PDF, image or text file as a :class:`Document`.

    PDF options: ``password`` (encrypted files), ``pages`` (1-based numbers), ``dpi`` (figure and
    scanned-page renders), ``render_pages`` (a full-page image for every page), ``engine``
    (``"fast"``, or ``"pymupdf4llm"`` for its layout model, much slower), ``ocr`` (the OCR engine
    for pages without a text layer: ``"auto"``, ``"rapidocr"``, ``"tesseract"``, None). Folder options:
    ``ignore`` (extra gitignore patterns), ``max_file_bytes``, ``max_files``.
    Raises :class:`DocumentError` naming the file (and page) when it cannot be read.
    """
    p = Path(path)
    name = os.fspath(path)
    if not p.exists():
        raise DocumentError(f"{name}: no such file or folder")
    if p.is_dir():
        from kimidoc.documents.repo import MAX_FILE_BYTES, MAX_FILES, load_repository

        return load_repository(
            p,
            display=name,
            ignore=ignore,
            max_file_bytes=max_file_bytes or MAX_FILE_BYTES,
            max_files=max_files or MAX_FILES,
        )
    kind = _kind(p, name)
    if kind == "pdf":
        from kimidoc.documents.pdf import load_pdf

        return load_pdf(
            p, password=password, display=name, pages=pages, dpi=dpi, render_pages=render_pages, engine=engine, ocr=ocr
        )
    if kind == "image":
        from kimidoc.documents.images import load_image

        return load_image(p, display=name)
    from kimidoc.documents.text import load_text

    return load_text(p, display=name)


def iter_parts(
    path: PathLike, *, password: str | None = None, skipped: list[Omission] | None = None, **options
) -> Iterator[Part]:
    """The parts of ``path`` as a stream: a PDF is read one page at a time (bounded memory, for
    files of any length); other kinds are loaded whole (they are bounded by their size caps).
    Pages or files the loader leaves out are appended to ``skipped`` when given."""
    p = Path(path)
    if p.is_file() and _kind(p, os.fspath(path)) == "pdf":
        from kimidoc.documents.pdf import iter_pdf_parts

        yield from iter_pdf_parts(p, password=password, display=os.fspath(path), skipped=skipped, **options)
        return
    doc = load(path, password=password, **options)
    if skipped is not None:
        skipped.extend(doc.skipped)
    yield from doc.parts


def load_many(paths: Sequence[PathLike], *, password: str | None = None, **options) -> list[Document]:
    """:func:`load` for each path, in the order given (with a progress bar for many paths)."""
    return [
        load(p, password=password, **options) for p in progress(paths, desc="loading", unit="doc", total=len(paths))
    ]


def _kind(p: Path, name: str) -> str:
    try:
        return kind_of(p)
    except OSError as exc:
        raise DocumentError(f"{name}: cannot read ({exc.strerror or exc})") from exc


__all__ = ["Document", "DocumentError", "Omission", "Part", "PartKind", "Source", "load", "load_many", "iter_parts"]
