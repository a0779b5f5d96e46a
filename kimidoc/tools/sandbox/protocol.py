"""Length-prefixed JSON frames between the host and the sandboxed worker (stdlib only).

Each frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON. The host
treats whatever the worker sends as untrusted: a frame over ``max_bytes`` or not a JSON object
is a protocol error, never a crash of the host.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from typing import Any

HEADER = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024


class ProtocolError(RuntimeError):
    """The other side closed the pipe or sent something that is not a frame."""


def write_frame(fd: int, message: dict[str, Any]) -> None:
    data = json.dumps(message, ensure_ascii=False).encode("utf-8")
    view = memoryview(HEADER.pack(len(data)) + data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks: list[bytes] = []
    while n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("no complete frame before the deadline")
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise ProtocolError("pipe closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, max_bytes: int = MAX_FRAME, deadline: float | None = None) -> dict[str, Any]:
    """The next frame; ``deadline`` (a ``time.monotonic()`` value) bounds the wait with TimeoutError."""
    (size,) = HEADER.unpack(_read_exact(fd, HEADER.size, deadline))
    if size > max_bytes:
        raise ProtocolError(f"frame of {size} bytes exceeds the {max_bytes}-byte limit")
    try:
        message = json.loads(_read_exact(fd, size, deadline).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolError(f"frame is a {type(message).__name__}, expected an object")
    return message
