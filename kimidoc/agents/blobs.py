"""Content-addressed storage for what is too big to keep inline: long tool outputs and images.

A long tool output enters the conversation as a preview plus a reference; the full text lives in
the store and the agent's ``read_output`` tool reads it back in slices. In the trace, images are
replaced by references too, so a JSONL line stays small and the same bytes are stored once.
With a trace the store is a folder next to it (``run.jsonl`` -> ``run.blobs/``); without one it
is kept in memory.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from kimidoc.messages import image_bytes, image_part
from kimidoc.tools.base import Tool

REF_PREFIX = "sha256:"


class BlobStore:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else None
        self._memory: dict[str, bytes] = {}

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if self.root is None:
            self._memory.setdefault(digest, data)
            return digest
        path = self.root / digest[:2] / digest
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename, so a crash never leaves a truncated blob under its final name.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        return digest

    def get(self, digest: str) -> bytes:
        digest = digest.removeprefix(REF_PREFIX)
        if self.root is None:
            if digest not in self._memory:
                raise KeyError(f"no stored output {REF_PREFIX}{digest}")
            return self._memory[digest]
        path = self.root / digest[:2] / digest
        if len(digest) != 64 or not path.is_file():
            raise KeyError(f"no stored output {REF_PREFIX}{digest} under {self.root}")
        return path.read_bytes()

    def __contains__(self, digest: str) -> bool:
        try:
            self.get(digest)
        except KeyError:
            return False
        return True


def externalize(content: Any, store: BlobStore) -> Any:
    """Message content with inline images replaced by ``{"type": "image_ref", ...}`` parts."""
    if not isinstance(content, list):
        return content
    out = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "image_url":
            url = part["image_url"]["url"]
            mime = url[5:].split(";", 1)[0] if url.startswith("data:") else "image/png"
            out.append({"type": "image_ref", "blob": store.put(image_bytes(part)), "mime": mime})
        else:
            out.append(part)
    return out


def internalize(content: Any, store: BlobStore) -> Any:
    """The inverse of :func:`externalize`."""
    if not isinstance(content, list):
        return content
    return [
        image_part(store.get(p["blob"]), p.get("mime", "image/png"))
        if isinstance(p, dict) and p.get("type") == "image_ref"
        else p
        for p in content
    ]


def shorten(text: str, store: BlobStore, limit: int, preview: int) -> tuple[str, str | None]:
    """``text`` itself when within ``limit`` characters, else a preview and the reference it is stored under."""
    if len(text) <= limit:
        return text, None
    ref = REF_PREFIX + store.put(text.encode("utf-8"))
    head = text[:preview]
    note = (
        f"\n\n[output shortened: {len(text):,} characters in total, {len(head):,} shown. "
        f'The full text is stored as "{ref}"; call read_output(ref="{ref}", offset={len(head)}) to read on.]'
    )
    return head + note, ref


def read_output_tool(store: BlobStore, chunk: int) -> Tool:
    """The tool an agent uses to read a shortened output back, slice by slice."""

    async def read_output(ref: str, offset: int = 0, length: int = chunk) -> str:  # no thread hop for a small read
        try:
            text = store.get(ref).decode("utf-8")
        except (KeyError, UnicodeDecodeError):
            raise ValueError(
                f"unknown output reference {ref!r}; use a ref exactly as a shortened output gave it"
            ) from None
        offset = max(0, offset)
        piece = text[offset : offset + max(1, min(length, chunk))]
        end = offset + len(piece)
        tail = f"\n[characters {offset:,}-{end:,} of {len(text):,}" + (
            f"; continue with offset={end}]" if end < len(text) else "; end of output]"
        )
        return piece + tail

    return Tool(
        name="read_output",
        description="Read a slice of a tool output that was shortened because it was long.",
        parameters={
            "type": "object",
            "properties": {
                "ref": {"type": "string", "description": 'the reference the shortened output gave, "sha256:..."'},
                "offset": {"type": "integer", "minimum": 0, "default": 0, "description": "first character to read"},
                "length": {
                    "type": "integer",
                    "minimum": 1,
                    "default": chunk,
                    "description": f"characters to read, at most {chunk}",
                },
            },
            "required": ["ref"],
        },
        fn=read_output,
    )
