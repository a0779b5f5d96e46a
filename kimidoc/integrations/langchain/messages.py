"""LangChain messages <-> kimidoc's OpenAI-style messages, without loss.

LangChain -> kimidoc goes through langchain-core's own ``convert_to_openai_messages`` (so every
content-block dialect it knows, OpenAI, Anthropic, Bedrock, LangChain v1 blocks, is accepted) and
then adds what that converter leaves out and K2.6 needs: the reasoning (``reasoning_content``,
which interleaved thinking replays), the raw JSON text of tool-call arguments as the model wrote
it (byte parity keeps a server's prefix cache valid), and invalid tool calls.

kimidoc -> LangChain follows langchain-openai's conventions: reasoning in
``additional_kwargs["reasoning_content"]``, raw tool calls in ``additional_kwargs["tool_calls"]``,
parsed calls in ``tool_calls`` and unreadable ones in ``invalid_tool_calls``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    convert_to_messages,
    convert_to_openai_messages,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.block_translators import register_translator
from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk

from kimidoc.messages import AssistantMessage, Delta, InvalidToolCall, Message, ToolCall, ToolCallError, Usage, text_of

PROVIDER = "kimidoc"

# Content blocks that describe what an AIMessage already carries elsewhere (tool_calls,
# invalid_tool_calls): dropped from content rather than sent twice.
_CALL_BLOCKS = {"tool_call", "tool_call_chunk", "invalid_tool_call", "tool_use", "function_call"}
_REASONING_BLOCKS = {"reasoning", "thinking"}
_SENDABLE = {"text", "image_url"}


# --------------------------------------------------------------------------- LangChain -> kimidoc


def to_kimidoc_messages(messages: Sequence[Any]) -> list[Message]:
    """Convert LangChain messages (or anything ``convert_to_messages`` accepts) to kimidoc dicts."""
    out: list[Message] = []
    for i, message in enumerate(convert_to_messages(list(messages))):
        converted = convert_to_openai_messages([message], text_format="string", pass_through_unknown_blocks=True)
        # Anthropic-style tool_result blocks in a user turn answer the previous calls, so their
        # tool messages go first (langchain-core puts them after the user's text).
        converted.sort(key=lambda m: m["role"] != "tool")
        for msg in converted:
            if msg["role"] == "developer":
                msg["role"] = "system"
            if msg["role"] == "assistant" and isinstance(message, AIMessage):
                msg = _assistant_to_kimidoc(message, msg, i)
            else:
                msg["content"] = _sendable_content(msg.get("content"), i, msg["role"])
            out.append(msg)
    return out


def _assistant_to_kimidoc(message: AIMessage, msg: Message, index: int) -> Message:
    reasoning = message.additional_kwargs.get("reasoning_content")
    blocks = msg.get("content") if isinstance(msg.get("content"), list) else []
    if not isinstance(reasoning, str):
        reasoning = "".join(
            b.get("reasoning") or b.get("thinking") or ""
            for b in blocks
            if isinstance(b, dict) and b.get("type") in _REASONING_BLOCKS
        )
    out: Message = {"role": "assistant", "content": _sendable_content(msg.get("content"), index, "assistant")}
    if msg.get("name"):
        out["name"] = msg["name"]
    if reasoning:
        out["reasoning_content"] = reasoning
    raw = _raw_arguments(message)
    calls = []
    for tc in message.tool_calls:
        args = raw.get(tc["id"] or "")
        if args is None or _loads(args) != tc["args"]:  # edited after the model wrote it: the edit wins
            args = json.dumps(tc["args"], ensure_ascii=False)
        calls.append(ToolCall(tc["id"] or "", tc["name"], args).to_openai())
    # An unreadable call stays in the history (its tool message answers it by id), verbatim.
    calls += [
        ToolCall(bad["id"], bad["name"], bad.get("args") or "").to_openai()
        for bad in message.invalid_tool_calls
        if bad.get("id") and bad.get("name")
    ]
    # Calls that only exist as content blocks (Anthropic tool_use, Responses function_call) were
    # turned into tool_calls by langchain-core's converter; keep those it found.
    known = {c["id"] for c in calls}
    calls += [c for c in msg.get("tool_calls") or [] if c["id"] not in known]
    if calls:
        out["tool_calls"] = calls
    return out


def _raw_arguments(message: AIMessage) -> dict[str, str]:
    """Tool-call id -> the argument text the model wrote, where the message still has it."""
    raw: dict[str, str] = {}
    for c in message.additional_kwargs.get("tool_calls") or []:
        fn = c.get("function") if isinstance(c, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("arguments"), str) and c.get("id"):
            raw[c["id"]] = fn["arguments"]
    return raw


def _loads(text: str) -> Any:
    try:
        return json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return None


def _sendable_content(content: Any, index: int, role: str) -> Any:
    """Text and image parts only (an assistant's reasoning and call blocks travel in their own
    fields); a string when only text remains. Anything else is refused by name."""
    if content is None or isinstance(content, str):
        return content or ""
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind in _REASONING_BLOCKS | _CALL_BLOCKS and role == "assistant":
            continue
        if kind not in _SENDABLE:
            raise ValueError(
                f"messages[{index}] ({role}) content[{j}]: kimidoc cannot send a content block of type {kind!r}; "
                "send text and images (load PDFs and files with kimidoc.documents or KimidocLoader)"
            )
        parts.append(
            {"type": "text", "text": block["text"]}
            if kind == "text"
            else {"type": "image_url", "image_url": block["image_url"]}
        )
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


# --------------------------------------------------------------------------- kimidoc -> LangChain


def to_langchain_messages(messages: Sequence[Message]) -> list[BaseMessage]:
    """Convert kimidoc (OpenAI-style) message dicts to LangChain messages."""
    return [to_langchain_message(m, i) for i, m in enumerate(messages)]


def to_langchain_message(msg: Message, index: int = 0) -> BaseMessage:
    role = msg.get("role")
    content = msg.get("content")
    content = "" if content is None else content
    extra = {"name": msg["name"]} if msg.get("name") else {}
    if role == "system":
        return SystemMessage(content=content, **extra)
    if role == "user":
        return HumanMessage(content=content, **extra)
    if role == "tool":
        if not msg.get("tool_call_id"):
            raise ValueError(f"messages[{index}] (tool): missing tool_call_id")
        return ToolMessage(content=content, tool_call_id=msg["tool_call_id"], **extra)
    if role == "assistant":
        calls = [ToolCall.from_openai(c) for c in msg.get("tool_calls") or []]
        reply = AssistantMessage(
            content=text_of(content), reasoning=msg.get("reasoning_content") or "", tool_calls=calls
        )
        # list content keeps the image parts an assistant message may carry
        return AIMessage(**{**_ai_fields(reply), "content": content, **extra})
    raise ValueError(f"messages[{index}]: unknown role {role!r} (expected system, user, assistant or tool)")


def usage_metadata(usage: Usage) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        output_token_details={"reasoning": usage.reasoning_tokens},
    )


def _split_calls(calls: Sequence[ToolCall], invalid: Sequence[InvalidToolCall]) -> tuple[list[Any], list[Any]]:
    good, bad = [], []
    for c in calls:
        try:
            good.append(tool_call(name=c.name, args=c.parsed_arguments(), id=c.id))
        except ToolCallError as exc:
            bad.append(invalid_tool_call(name=c.name, args=c.arguments, id=c.id, error=str(exc)))
    bad += [
        invalid_tool_call(name=b.name, args=b.arguments if b.arguments is not None else b.raw, id=b.id, error=b.error)
        for b in invalid
    ]
    return good, bad


def _ai_fields(result: AssistantMessage) -> dict[str, Any]:
    """Content, reasoning and tool calls of a kimidoc assistant message, as AIMessage fields."""
    good, bad = _split_calls(result.tool_calls, result.invalid_tool_calls)
    additional: dict[str, Any] = {}
    if result.reasoning:
        additional["reasoning_content"] = result.reasoning
    if result.tool_calls:
        additional["tool_calls"] = [c.to_openai() for c in result.tool_calls]
    return {"content": result.content, "additional_kwargs": additional, "tool_calls": good, "invalid_tool_calls": bad}


def ai_message(result: AssistantMessage, model_name: str = "") -> AIMessage:
    """The AIMessage for a backend's reply: parsed and invalid calls, reasoning, usage, finish reason."""
    return AIMessage(
        **_ai_fields(result),
        usage_metadata=usage_metadata(result.usage),
        response_metadata=_response_metadata(result.finish_reason, model_name),
    )


def _response_metadata(finish_reason: str, model_name: str) -> dict[str, Any]:
    return {"finish_reason": finish_reason, "model_name": model_name, "model_provider": PROVIDER}


class ChunkBuilder:
    """Turns a backend's deltas into AIMessageChunks; the caller marks the last one.

    Argument pieces go out twice, as langchain-openai sends them: as tool-call chunks (which
    LangChain parses) and as raw OpenAI pieces in ``additional_kwargs["tool_calls"]`` (which
    LangChain concatenates by index), so the merged message keeps the exact argument text.
    Finish reason, usage and invalid calls go out once, on the last chunk, whichever deltas
    brought them, so nothing is counted twice. The last chunk carries no tool-call pieces:
    LangChain re-parses a last chunk's own pieces alone, which would split a call in two.
    """

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self._invalid: list[InvalidToolCall] = []
        self._finish = "stop"
        self._usage: Usage | None = None

    def chunk(self, d: Delta, *, last: bool = False) -> AIMessageChunk:
        additional: dict[str, Any] = {"reasoning_content": d.reasoning} if d.reasoning else {}
        chunks, raw = [], []
        for tc in d.tool_calls:
            chunks.append(tool_call_chunk(name=tc.name, args=tc.arguments, id=tc.id, index=tc.index))
            piece: dict[str, Any] = {"index": tc.index, "function": {"arguments": tc.arguments}}
            if tc.id:
                piece.update(id=tc.id, type="function")
            if tc.name:
                piece["function"]["name"] = tc.name
            raw.append(piece)
        if raw:
            additional["tool_calls"] = raw
        self._invalid += d.invalid_tool_calls
        self._finish = d.finish_reason or self._finish
        self._usage = d.usage if d.usage is not None else self._usage
        if not last:
            # Every chunk names the provider, so LangChain derives its content blocks with ours.
            return AIMessageChunk(
                content=d.content,
                additional_kwargs=additional,
                tool_call_chunks=chunks,
                response_metadata={"model_provider": PROVIDER},
            )
        if chunks:
            raise ValueError("the last chunk of a stream must not carry tool-call pieces (emit them first)")
        _, invalid = _split_calls([], self._invalid)
        return AIMessageChunk(
            content=d.content,
            additional_kwargs=additional,
            invalid_tool_calls=invalid,
            usage_metadata=usage_metadata(self._usage) if self._usage is not None else None,
            response_metadata=_response_metadata(self._finish, self.model_name),
            chunk_position="last",
        )


# --------------------------------------------------------------------------- standard content blocks


def _content_blocks(message: AIMessage) -> list[dict[str, Any]]:
    """Standard (v1) content blocks of a ChatKimi message or chunk: reasoning, text, tool calls.

    Streamed blocks get string indices of their own kind, so LangChain's index-based merging
    never fuses the reasoning, the text and a tool call into one block.
    """
    streaming = isinstance(message, AIMessageChunk) and message.chunk_position != "last"
    blocks: list[dict[str, Any]] = []
    reasoning = message.additional_kwargs.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        blocks.append({"type": "reasoning", "reasoning": reasoning, **({"index": "lc_reasoning"} if streaming else {})})
    if isinstance(message.content, str):
        if message.content:
            blocks.append({"type": "text", "text": message.content, **({"index": "lc_text"} if streaming else {})})
    else:
        blocks += [
            b for b in message.content if isinstance(b, dict) and b.get("type") not in _REASONING_BLOCKS | _CALL_BLOCKS
        ]
    if streaming:  # pieces only: LangChain's per-piece parses are not calls yet
        for c in message.tool_call_chunks:  # type: ignore[attr-defined]
            blocks.append(
                {
                    "type": "tool_call_chunk",
                    "id": c.get("id"),
                    "name": c.get("name"),
                    "args": c.get("args"),
                    "index": f"lc_tc_{c.get('index')}",
                }
            )
        return blocks
    blocks += [
        {"type": "tool_call", "id": c.get("id"), "name": c["name"], "args": c["args"]} for c in message.tool_calls
    ]
    blocks += [
        {
            "type": "invalid_tool_call",
            "id": c.get("id"),
            "name": c.get("name"),
            "args": c.get("args"),
            "error": c.get("error"),
        }
        for c in message.invalid_tool_calls
    ]
    return blocks


register_translator(PROVIDER, _content_blocks, _content_blocks)
