"""Server-sent events, as chat-completions servers stream them, decoded line by line.

Only what the spec says matters here: ``data:`` lines of one event are joined with newlines,
a blank line ends the event, lines starting with ``:`` are comments (keep-alives), ``[DONE]``
ends the stream. Line splitting is left to the HTTP client so sync and async share this.
"""

from __future__ import annotations

import json
from typing import Any

DONE = object()  # returned by :meth:`SSEDecoder.feed` for ``data: [DONE]``


class SSEDecoder:
    """Feed lines; get back each finished event's JSON payload (or :data:`DONE`)."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> Any:
        """The payload completed by ``line``, or None while an event is still being read."""
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        if field == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None

    def flush(self) -> Any:
        """The payload of a last event not followed by a blank line."""
        return self._dispatch()

    def _dispatch(self) -> Any:
        if not self._data:
            return None
        text = "\n".join(self._data)
        self._data = []
        if text.strip() == "[DONE]":
            return DONE
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"stream sent an event that is not JSON: {text[:200]!r} ({exc})") from exc
