"""The OpenAI chat-completions wire format: request bodies out, messages and deltas back in.

Servers differ in small ways this module absorbs, so the client stays one code path:
vLLM and SGLang (with the ``kimi_k2`` parsers) and Moonshot's API put reasoning in
``reasoning_content``; OpenRouter (and newer vLLM) use ``reasoning``; thinking is switched by
``chat_template_kwargs`` on self-hosted servers, by ``thinking`` on Moonshot's API and by
``reasoning`` on OpenRouter. Anything else in ``sampling`` goes into the body unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from kimidoc.backends.base import BackendError
from kimidoc.messages import (
    AssistantMessage,
    Delta,
    InvalidToolCall,
    Message,
    ToolCall,
    ToolCallDelta,
    ToolSchema,
    Usage,
    text_of,
)

# How each kind of server is told to think or not (``thinking=True/False``; None sends nothing).
THINKING_STYLES = ("chat_template_kwargs", "moonshot", "openrouter")

_FINISH = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "error",
    "error": "error",
    "eos": "stop",
}


def request_body(
    model: str,
    messages: Sequence[Message],
    tools: Sequence[ToolSchema] | None,
    sampling: dict[str, Any],
    *,
    stream: bool,
    thinking_style: str = "chat_template_kwargs",
) -> dict[str, Any]:
    """The JSON body of one ``/chat/completions`` request."""
    extra = dict(sampling)
    thinking = extra.pop("thinking", None)
    tool_choice = extra.pop("tool_choice", None)
    extra_body = extra.pop("extra_body", None) or {}
    body: dict[str, Any] = {"model": model, "messages": [dict(m) for m in messages]}
    if tools:
        body["tools"] = list(tools)
        if tool_choice is not None:
            body["tool_choice"] = tool_choice
    for key, value in extra.items():
        if value is not None:
            body[key] = list(value) if key == "stop" and not isinstance(value, str) else value
    if thinking is not None:
        if thinking_style == "moonshot":
            body["thinking"] = {"type": "enabled" if thinking else "disabled"}
        elif thinking_style == "openrouter":
            body["reasoning"] = {"enabled": bool(thinking)}
        else:
            kwargs = dict(body.get("chat_template_kwargs") or {})
            kwargs["thinking"] = bool(thinking)
            body["chat_template_kwargs"] = kwargs
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    body.update(extra_body)
    return body


def usage_of(data: dict[str, Any] | None) -> Usage | None:
    """Usage counts from a response or final chunk (``None`` when the server sent none)."""
    if not data:
        return None
    details = data.get("completion_tokens_details") or {}
    return Usage(
        prompt_tokens=int(data.get("prompt_tokens") or 0),
        completion_tokens=int(data.get("completion_tokens") or 0),
        reasoning_tokens=int(details.get("reasoning_tokens") or data.get("reasoning_tokens") or 0),
    )


def finish_of(reason: str | None, has_calls: bool) -> str:
    """Map a server's finish reason to ours; a turn that made tool calls finishes in ``tool_calls``."""
    mapped = _FINISH.get(reason or "stop", "stop")
    return "tool_calls" if has_calls and mapped == "stop" else mapped


def _reasoning_of(obj: dict[str, Any]) -> str:
    # Some servers send both spellings with the same text: take one, never both.
    value = obj.get("reasoning_content") or obj.get("reasoning") or ""
    return value if isinstance(value, str) else ""


def server_error(data: dict[str, Any]) -> BackendError | None:
    """The error a server reported inside a 200 body or an SSE event, if any."""
    err = data.get("error")
    if not err:
        return None
    message = err.get("message", str(err)) if isinstance(err, dict) else str(err)
    status = err.get("code") if isinstance(err, dict) and isinstance(err.get("code"), int) else None
    return BackendError(f"server reported an error: {message}", status=status, body=json.dumps(data)[:2000])


def message_of(data: dict[str, Any]) -> AssistantMessage:
    """An :class:`AssistantMessage` from a non-streaming response body."""
    err = server_error(data)
    if err:
        raise err
    choices = data.get("choices") or []
    if not choices:
        raise BackendError(f"response has no choices: {json.dumps(data)[:300]}", body=json.dumps(data)[:2000])
    choice = choices[0]
    msg = choice.get("message") or {}
    calls = []
    for i, c in enumerate(msg.get("tool_calls") or []):
        fn = c.get("function") or {}
        args = fn.get("arguments")
        if not isinstance(args, str):  # a few servers send the object itself
            args = json.dumps(args if args is not None else {}, ensure_ascii=False)
        calls.append(ToolCall(c.get("id") or f"call_{i}", fn.get("name") or "", args))
    out = AssistantMessage(
        content=text_of(msg.get("content")),
        reasoning=_reasoning_of(msg),
        tool_calls=calls,
        finish_reason=finish_of(choice.get("finish_reason"), bool(calls)),
        usage=usage_of(data.get("usage")) or Usage(),
    )
    return out


def delta_of(chunk: dict[str, Any]) -> Delta:
    """One streamed chunk as a :class:`Delta` (usage-only chunks have no choices)."""
    err = server_error(chunk)
    if err:
        raise err
    out = Delta(usage=usage_of(chunk.get("usage")))
    for choice in chunk.get("choices") or []:
        d = choice.get("delta") or {}
        content = d.get("content")
        out.content += content if isinstance(content, str) else text_of(content)
        out.reasoning += _reasoning_of(d)
        for pos, c in enumerate(d.get("tool_calls") or []):
            fn = c.get("function") or {}
            args = fn.get("arguments")
            if args is not None and not isinstance(args, str):
                args = json.dumps(args, ensure_ascii=False)
            index = c.get("index")
            out.tool_calls.append(
                ToolCallDelta(
                    index=pos if index is None else int(index),
                    id=c.get("id"),
                    name=fn.get("name"),
                    arguments=args or "",
                )
            )
        if choice.get("finish_reason"):
            out.finish_reason = choice["finish_reason"]
    return out


def check_tool_calls(msg: AssistantMessage) -> AssistantMessage:
    """Move calls whose name is empty or whose arguments are not a JSON object to ``invalid_tool_calls``.

    An agent then only sees calls it can run; the rest stay visible, verbatim, for the trace.
    """
    good: list[ToolCall] = []
    for call in msg.tool_calls:
        problem = None
        if not call.name:
            problem = "tool call without a function name"
        else:
            try:
                call.parsed_arguments()
            except ValueError as exc:
                problem = str(exc)
        if problem:
            msg.invalid_tool_calls.append(
                InvalidToolCall(
                    raw=call.arguments, error=problem, id=call.id, name=call.name or None, arguments=call.arguments
                )
            )
        else:
            good.append(call)
    msg.tool_calls = good
    if not good and msg.finish_reason == "tool_calls":
        msg.finish_reason = "stop"
    return msg
