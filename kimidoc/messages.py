"""The one message format every layer speaks: OpenAI-style chat messages.

Messages are plain dicts (``{"role": ..., "content": ...}``) exactly as the OpenAI
chat-completions API, vLLM and LangChain's converters write them, so adapters stay thin.
What a backend *returns* is richer than a dict (parsed and invalid tool calls, usage), so it
is an :class:`AssistantMessage`, which turns back into a dict with :meth:`AssistantMessage.to_message`.

Content is a string or a list of parts: ``{"type": "text", "text": ...}`` and
``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}``.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]
ToolSchema = dict[str, Any]  # {"type": "function", "function": {"name", "description", "parameters"}}


class ToolCallError(ValueError):
    """A tool call whose arguments are not a JSON object."""


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # raw JSON text as the model wrote it; never re-serialised (byte parity)

    def parsed_arguments(self) -> dict[str, Any]:
        try:
            value = json.loads(self.arguments) if self.arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise ToolCallError(f"tool call {self.id} ({self.name}): arguments are not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise ToolCallError(
                f"tool call {self.id} ({self.name}): arguments must be a JSON object, got {type(value).__name__}"
            )
        return value

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}

    @classmethod
    def from_openai(cls, call: dict[str, Any]) -> ToolCall:
        """The inverse of :meth:`to_openai`: one entry of a message's ``tool_calls``."""
        return cls(call["id"], call["function"]["name"], call["function"].get("arguments") or "")


@dataclass
class InvalidToolCall:
    """A tool call the model tried to make but that could not be read; kept verbatim, never raised."""

    raw: str
    error: str
    id: str | None = None
    name: str | None = None
    arguments: str | None = None


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0  # part of completion_tokens, as OpenAI counts it

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )


@dataclass
class AssistantMessage:
    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    invalid_tool_calls: list[InvalidToolCall] = field(default_factory=list)
    finish_reason: str = "stop"  # stop | length | tool_calls | error
    usage: Usage = field(default_factory=Usage)

    def to_message(self) -> Message:
        msg: Message = {"role": "assistant", "content": self.content}
        if self.reasoning:
            msg["reasoning_content"] = self.reasoning
        if self.tool_calls:
            msg["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        return msg

    @classmethod
    def from_message(cls, msg: Message) -> AssistantMessage:
        calls = [ToolCall.from_openai(c) for c in msg.get("tool_calls") or []]
        return cls(
            content=text_of(msg.get("content")),
            reasoning=msg.get("reasoning_content") or "",
            tool_calls=calls,
            finish_reason="tool_calls" if calls else "stop",
        )


@dataclass
class ToolCallDelta:
    """A fragment of a streamed tool call: ``id`` and ``name`` arrive once, ``arguments`` in pieces."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class Delta:
    """One streamed increment. The last delta of a stream carries ``finish_reason`` and ``usage``."""

    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    invalid_tool_calls: list[InvalidToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None


def accumulate(deltas: Iterable[Delta]) -> AssistantMessage:
    """Fold a stream of deltas into the message a non-streaming call would have returned."""
    out = AssistantMessage()
    content: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, list[Any]] = {}  # index -> [id, name, [argument pieces]]
    for d in deltas:
        content.append(d.content)
        reasoning.append(d.reasoning)
        for tc in d.tool_calls:
            slot = calls.setdefault(tc.index, [None, None, []])
            slot[0] = tc.id or slot[0]
            slot[1] = tc.name or slot[1]
            slot[2].append(tc.arguments)
        out.invalid_tool_calls.extend(d.invalid_tool_calls)
        if d.finish_reason:
            out.finish_reason = d.finish_reason
        if d.usage is not None:
            out.usage = d.usage
    out.content = "".join(content)
    out.reasoning = "".join(reasoning)
    for index in sorted(calls):
        cid, name, pieces = calls[index]
        args = "".join(pieces)
        if not cid or not name:
            out.invalid_tool_calls.append(
                InvalidToolCall(
                    raw=args, error="streamed tool call without id or name", id=cid, name=name, arguments=args
                )
            )
        else:
            out.tool_calls.append(ToolCall(cid, name, args))
    return out


def estimate_tokens(text: str) -> int:
    """A conservative token count for text when no tokenizer is at hand: ~3 bytes per token
    overestimates English and code, so budgets computed from it never overflow the real window."""
    return max(1, (len(text.encode("utf-8")) + 2) // 3) if text else 0


def text_of(content: Any) -> str:
    """The text of a message's content, whether a string or a list of parts (images dropped)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")


def image_part(png: bytes, mime: str = "image/png") -> dict[str, Any]:
    """An OpenAI image content part carrying the image inline as a data URL."""
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{base64.b64encode(png).decode()}"}}


def image_bytes(part: dict[str, Any]) -> bytes:
    """The raw bytes of an inline image part; remote URLs are refused (nothing is fetched at run time)."""
    url = part.get("image_url", {}).get("url", "") if part.get("type") == "image_url" else ""
    if not url.startswith("data:") or ";base64," not in url:
        raise ValueError(f"image part must be an inline base64 data URL, got {url[:60]!r}")
    return base64.b64decode(url.split(";base64,", 1)[1])


def image_of(part: dict[str, Any]) -> Any:
    """Decode an inline image part to a PIL image."""
    from PIL import Image

    return Image.open(io.BytesIO(image_bytes(part)))
