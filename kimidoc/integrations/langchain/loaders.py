"""kimidoc's ingestion (PDFs, images, repositories) as a LangChain document loader.

Each kimidoc :class:`~kimidoc.documents.base.Part` becomes one LangChain ``Document`` whose
metadata keeps the part's source (file, page, line range, box) and a ready citation, so a
retriever's hits can still be cited as ``report.pdf p.12`` or ``src/app.py:40-88``.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.document_loaders import BaseLoader
from langchain_core.documents import Document as LCDocument

if TYPE_CHECKING:
    from kimidoc.documents.base import Document, Part

PathLike = str | os.PathLike[str]
Images = Literal["caption", "base64", "skip"]


class KimidocLoader(BaseLoader):
    """Load PDFs, images, text files and repositories with kimidoc, one LangChain document per part.

    ``images``: ``"caption"`` keeps image parts as their caption / alt text (skipping those
    without any), ``"base64"`` also puts the PNG in ``metadata["image_base64"]`` for multimodal
    pipelines, ``"skip"`` leaves image parts out.
    """

    def __init__(
        self, paths: PathLike | Sequence[PathLike], *, images: Images = "caption", **load_options: Any
    ) -> None:
        if images not in ("caption", "base64", "skip"):
            raise ValueError(f"KimidocLoader: images must be 'caption', 'base64' or 'skip', got {images!r}")
        self.paths = [os.fspath(paths)] if isinstance(paths, (str, os.PathLike)) else [os.fspath(p) for p in paths]
        self.images = images
        self.load_options = load_options

    def lazy_load(self) -> Iterator[LCDocument]:
        import kimidoc.documents

        for path in self.paths:
            doc = kimidoc.documents.load(path, **self.load_options)
            for index, part in enumerate(doc.parts):
                lc = part_to_document(doc, part, index, images=self.images)
                if lc is not None:
                    yield lc


def part_to_document(doc: Document, part: Part, index: int, *, images: Images = "caption") -> LCDocument | None:
    """One kimidoc part as a LangChain document (None for an image part the caller does not keep)."""
    if part.kind == "image" and (images == "skip" or (images == "caption" and not part.text)):
        return None
    src = part.source
    meta: dict[str, Any] = {
        "source": src.path,
        "document": doc.path,
        "document_kind": doc.kind,
        "kind": part.kind,
        "part_index": index,
        "citation": src.cite(),
    }
    if src.page is not None:
        meta["page"] = src.page
    if src.lines is not None:
        meta["start_line"], meta["end_line"] = src.lines
    if src.bbox is not None:
        meta["bbox"] = list(src.bbox)
    if part.kind == "image":
        meta["width"], meta["height"] = part.width, part.height
        if images == "base64" and part.image is not None:
            meta["image_base64"] = base64.b64encode(part.image).decode()
            meta["mime_type"] = "image/png"
    # Part metadata (language, heading, table shape...) rides along where it is plain data.
    for key, value in part.meta.items():
        if isinstance(value, (str, int, float, bool)) and key not in meta:
            meta[key] = value
    return LCDocument(page_content=part.text, metadata=meta)
