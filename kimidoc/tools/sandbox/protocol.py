"""Length-prefixed JSON frames between the host and the sandboxed worker (stdlib only).

Each frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON. The host
treats whatever the worker sends as untrusted: a frame over ``max_bytes`` or not a JSON object
is a protocol error, never a crash of the host.

The host's end of the channel is a :class:`Channel`: a unix stream socket on which the kernel
attaches the sending process's pid to every byte (``SO_PASSCRED``), so that once the interpreter
has introduced itself, bytes written by any other process of the sandbox (a child that kept a
copy of the socket) are refused rather than read as a reply. Its writes never block: each has a
deadline, so a stopped or stalled worker cannot hang the host.
"""

from __future__ import annotations

import io
import json
import os
import select
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

HEADER = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024
_UCRED = struct.Struct("3i")  # pid, uid, gid


class ProtocolError(RuntimeError):
    """The other side closed the channel or sent something that is not a frame."""


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with a note of how much was cut (worker and host both apply it)."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"... [{len(text) - limit} more characters truncated]"


def encode(message: dict[str, Any], max_bytes: int = MAX_FRAME) -> bytes:
    """The frame of ``message``; ProtocolError before anything is written when it is over ``max_bytes``."""
    data = json.dumps(message, ensure_ascii=False).encode("utf-8")
    if len(data) > max_bytes:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds the {max_bytes}-byte limit")
    return HEADER.pack(len(data)) + data


def _wait(fd: int, deadline: float | None, *, write: bool = False) -> None:
    left = None if deadline is None else deadline - time.monotonic()
    if left is not None and left <= 0:
        raise TimeoutError("the other side did not keep up before the deadline")
    ready = select.select([], [fd], [], left) if write else select.select([fd], [], [], left)
    if not (ready[1] if write else ready[0]):
        raise TimeoutError("the other side did not keep up before the deadline")


def write_frame(fd: int, message: dict[str, Any]) -> None:
    """Write one frame to a blocking fd (the worker's side)."""
    view = memoryview(encode(message))
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(read: Callable[[int], bytes], fd: int, n: int, deadline: float | None) -> bytes:
    """``n`` bytes; with a ``deadline`` the fd is non-blocking and is waited on only when it has nothing yet."""
    chunks: list[bytes] = []
    while n:
        try:
            chunk = read(min(n, 1 << 20))
        except BlockingIOError:
            _wait(fd, deadline)
            continue
        if not chunk:
            raise ProtocolError("pipe closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _decode(read: Callable[[int], bytes], fd: int, max_bytes: int, deadline: float | None) -> dict[str, Any]:
    (size,) = HEADER.unpack(_read_exact(read, fd, HEADER.size, deadline))
    if size > max_bytes:
        raise ProtocolError(f"frame of {size} bytes exceeds the {max_bytes}-byte limit")
    try:
        message = json.loads(_read_exact(read, fd, size, deadline).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolError(f"frame is a {type(message).__name__}, expected an object")
    return message


def read_frame(fd: int, max_bytes: int = MAX_FRAME, reader: io.BufferedReader | None = None) -> dict[str, Any]:
    """The next frame from a blocking fd (the worker's side); through ``reader`` (a buffered reader of
    ``fd``), a small frame takes one system call instead of two."""
    return _decode(reader.read if reader is not None else lambda n: os.read(fd, n), fd, max_bytes, None)


class Channel:
    """The host's end of the socket to the worker: non-blocking, sender-checked."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.setblocking(False)
        self.sock = sock
        self.sender: int | None = None  # once set, bytes from any other pid are a ProtocolError
        self.last_sender: int | None = None  # the host pid that sent the last bytes received
        self._pending = b""  # received, not yet decoded: a small reply arrives in one call

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def _recv(self, n: int) -> bytes:
        if not self._pending:
            self._pending = self._recv_checked(max(n, 1 << 16))
        data, self._pending = self._pending[:n], self._pending[n:]
        return data

    def _recv_checked(self, n: int) -> bytes:
        # the kernel never merges bytes of two senders into one recvmsg: each call has one sender
        data, ancillary, _, _ = self.sock.recvmsg(n, socket.CMSG_SPACE(_UCRED.size))
        pid = None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= _UCRED.size:
                pid = _UCRED.unpack_from(payload)[0]
        if data and self.sender is not None and pid != self.sender:
            raise ProtocolError(
                f"process {pid} wrote on the protocol channel; only the interpreter ({self.sender}) may"
            )
        self.last_sender = pid
        return data

    def send(self, message: dict[str, Any], *, deadline: float, max_bytes: int = MAX_FRAME) -> None:
        """Refuse (ProtocolError) before writing when the frame is over ``max_bytes``; TimeoutError at ``deadline``."""
        view = memoryview(encode(message, max_bytes))
        while view:
            try:
                view = view[self.sock.send(view) :]
            except BlockingIOError:
                _wait(self.fileno(), deadline, write=True)

    def receive(self, max_bytes: int, deadline: float) -> dict[str, Any]:
        if not self._pending:
            _wait(self.fileno(), deadline)  # the reply is rarely there yet: wait first rather than fail a read
        return _decode(self._recv, self.fileno(), max_bytes, deadline)
