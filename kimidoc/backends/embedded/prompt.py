"""How the embedded small model sees tools, and how its replies are read back.

The model's own chat template (ChatML, from the GGUF) has no notion of tools, so tools are
described in the system prompt in the format SmolLM2's instruct data used: the schemas inside
``<tools>...</tools>`` and calls written as ``<tool_call>[{"name": ..., "arguments": {...}}]</tool_call>``.
Earlier calls and their results are rendered the same way, so a conversation round-trips.
Replies are read with forgiving JSON extraction; whatever cannot be read becomes an
:class:`~kimidoc.messages.InvalidToolCall`, never an exception.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any

from kimidoc.messages import InvalidToolCall, Message, ToolCall, ToolSchema, text_of
from kimidoc.tools.schema import validate

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"

TOOL_INSTRUCTIONS = (
    "You have access to the following tools:\n<tools>{tools}</tools>\n"
    "To call tools, reply with only this and nothing else:\n"
    '<tool_call>[{{"name": "tool name", "arguments": {{"argument": "value"}}}}]</tool_call>\n'
    "If no tool is needed, answer the user directly."
)


def tool_names(tools: Sequence[ToolSchema] | None) -> list[str]:
    return [t["function"]["name"] for t in tools or []]


def forced_tool(tools: Sequence[ToolSchema] | None, tool_choice: Any) -> list[ToolSchema] | None:
    """The tools a reply *must* call from (``required`` or a named function), else None."""
    if not tools:
        return None
    if tool_choice == "required":
        return list(tools)
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        chosen = [t for t in tools if t["function"]["name"] == name]
        if not chosen:
            raise ValueError(
                f"tool_choice names {name!r}, which is not among the tools ({', '.join(tool_names(tools))})"
            )
        return chosen
    return None


def chat_messages(
    messages: Sequence[Message], tools: Sequence[ToolSchema] | None, tool_choice: Any = None
) -> list[dict[str, str]]:
    """OpenAI messages as the plain ``{role, content}`` list the model's template renders."""
    offered = None if tool_choice == "none" else (forced_tool(tools, tool_choice) or tools)
    system: list[str] = []
    rest: list[dict[str, str]] = []
    for m in messages:
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(text_of(m.get("content")))
        elif role == "assistant":
            text = text_of(m.get("content"))
            calls = [
                {"name": c["function"]["name"], "arguments": _loads_or_raw(c["function"].get("arguments") or "{}")}
                for c in m.get("tool_calls") or []
            ]
            if calls:
                text = (text + "\n" if text else "") + CALL_OPEN + json.dumps(calls, ensure_ascii=False) + CALL_CLOSE
            rest.append({"role": "assistant", "content": text})
        elif role == "tool":
            name = m.get("name") or "tool"
            rest.append(
                {
                    "role": "user",
                    "content": f'<tool_response name="{name}">\n{text_of(m.get("content"))}\n</tool_response>',
                }
            )
        else:
            rest.append({"role": "user", "content": _user_text(m.get("content"))})
    if offered:
        specs = [t["function"] for t in offered]
        system.append(TOOL_INSTRUCTIONS.format(tools=json.dumps(specs, ensure_ascii=False)))
    head = [{"role": "system", "content": "\n\n".join(s for s in system if s)}] if system else []
    return head + rest


def _user_text(content: Any) -> str:
    if isinstance(content, list):
        images = sum(1 for p in content if isinstance(p, dict) and p.get("type") == "image_url")
        note = f"\n[{images} image(s) omitted: the embedded model cannot see images]" if images else ""
        return text_of(content) + note
    return text_of(content)


def _loads_or_raw(args: str) -> Any:
    try:
        return json.loads(args)
    except json.JSONDecodeError:
        return args


def call_schema(tools: Sequence[ToolSchema]) -> dict[str, Any]:
    """JSON schema of one call to any of ``tools``: the grammar a constrained engine follows."""
    options = []
    for t in tools:
        fn = t["function"]
        params = fn.get("parameters") or {"type": "object"}
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": fn["name"]}, "arguments": params},
                "required": ["name", "arguments"],
            }
        )
    return options[0] if len(options) == 1 else {"anyOf": options}


def parse_reply(
    text: str, tools: Sequence[ToolSchema] | None, *, forced: bool = False
) -> tuple[str, list[ToolCall], list[InvalidToolCall]]:
    """Split a finished reply into (content, valid calls, invalid calls).

    Calls are read from ``<tool_call>`` blocks; with ``forced`` (a constrained reply) the whole
    text is the call. A JSON object or list of them is accepted; a name that is not a declared
    tool, or arguments that are not an object or break the tool's schema, make the call invalid:
    a 135M model without a grammar often invents argument names.
    """
    names = {t["function"]["name"]: t["function"].get("parameters") or {} for t in tools or []}
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    if not names:
        return text, calls, invalid
    blocks: list[str] = []
    content = text
    if forced and CALL_OPEN not in text:
        blocks, content = [text], ""
    else:
        pieces: list[str] = []
        rest = text
        while CALL_OPEN in rest:
            before, _, after = rest.partition(CALL_OPEN)
            pieces.append(before)
            block, closed, rest = after.partition(CALL_CLOSE)
            blocks.append(block)
            if not closed:
                rest = ""
        pieces.append(rest)
        content = "".join(pieces).strip() if blocks else text
    for block in blocks:
        _read_block(block, names, calls, invalid)
    return content, calls, invalid


def _read_block(block: str, names: dict[str, Any], calls: list[ToolCall], invalid: list[InvalidToolCall]) -> None:
    value, error = extract_json(block)
    if error:
        invalid.append(InvalidToolCall(raw=block, error=error))
        return
    items = value if isinstance(value, list) else [value]
    for item in items:
        raw = json.dumps(item, ensure_ascii=False)
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            invalid.append(InvalidToolCall(raw=raw, error='a tool call must be an object with a "name" string'))
            continue
        name = item["name"]
        args = item.get("arguments", item.get("parameters", {}))
        args_text = json.dumps(args, ensure_ascii=False)
        if name not in names:
            invalid.append(
                InvalidToolCall(
                    raw=raw,
                    error=f"unknown tool {name!r} (tools: {', '.join(sorted(names))})",
                    name=name,
                    arguments=args_text,
                )
            )
        elif not isinstance(args, dict):
            invalid.append(
                InvalidToolCall(
                    raw=raw,
                    error=f"arguments of {name} must be a JSON object, got {type(args).__name__}",
                    name=name,
                    arguments=args_text,
                )
            )
        elif problem := validate(args, names[name], name):
            invalid.append(InvalidToolCall(raw=raw, error=problem, name=name, arguments=args_text))
        else:
            calls.append(ToolCall(f"call_{secrets.token_hex(6)}", name, args_text))


def extract_json(text: str) -> tuple[Any, str | None]:
    """The first JSON object or array in ``text`` (prose and code fences around it ignored)."""
    decoder = json.JSONDecoder()
    starts = [i for i, ch in enumerate(text) if ch in "{["]
    if not starts:
        return None, f"no JSON in tool call: {text[:120]!r}"
    last_error = ""
    for i in starts[:20]:
        try:
            value, _ = decoder.raw_decode(text, i)
            return value, None
        except json.JSONDecodeError as exc:
            last_error = str(exc)
    return None, f"tool call is not valid JSON ({last_error}): {text[:120]!r}"


class ReplySplitter:
    """Streams reply text as content while holding back what may be a tool call or a stop string.

    ``feed`` returns content safe to show now; text from ``<tool_call>`` on is captured for
    parsing at the end; a stop string ends the reply (``stopped``).
    """

    def __init__(self, *, capture_calls: bool, stop: Sequence[str] = (), capturing: bool = False) -> None:
        self.capture_calls = capture_calls
        self.stop = [s for s in stop if s]
        self.pending = ""
        self.captured: list[str] = []
        self.capturing = capturing  # from the first character: a reply constrained to be a call
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        if self.capturing:
            return self._capture(text)
        buf = self.pending + text
        cut = [(buf.find(s), s) for s in self.stop if s in buf]
        opened = buf.find(CALL_OPEN) if self.capture_calls else -1
        if cut and (opened < 0 or min(cut)[0] < opened):
            self.stopped = True
            self.pending = ""
            return buf[: min(cut)[0]]
        if opened >= 0:
            self.capturing = True
            self.pending = ""
            return buf[:opened] + self._capture(buf[opened:])
        hold = self._partial(buf)
        self.pending = buf[len(buf) - hold :] if hold else ""
        return buf[: len(buf) - hold]

    def _capture(self, text: str) -> str:
        self.captured.append(text)
        # Stop strings still end a reply inside a call (the call is then unterminated).
        joined = "".join(self.captured)
        for s in self.stop:
            if s in joined:
                self.captured = [joined[: joined.find(s)]]
                self.stopped = True
        return ""

    def _partial(self, buf: str) -> int:
        markers = self.stop + ([CALL_OPEN] if self.capture_calls else [])
        best = 0
        for m in markers:
            for k in range(min(len(m) - 1, len(buf)), 0, -1):
                if buf.endswith(m[:k]):
                    best = max(best, k)
                    break
        return best

    def finish(self) -> str:
        """Content still held (a partial marker that never completed)."""
        out, self.pending = self.pending, ""
        return "" if self.stopped else out
