"""K2.6's chat template: OpenAI-style messages and tool schemas to the exact prompt the model reads.

``render`` returns the prompt text, byte for byte what the official template writes.
``encode_chat`` returns its token ids; it encodes message *content* as ordinary text, so a document
that happens to contain ``<|im_end|>`` cannot end a turn early (the official template tokenizes
the rendered string, specials included; for content without special spellings both agree).
Each image becomes ``<|media_begin|>image<|media_content|><|media_pad|><|media_end|>`` in the text and
one ``<|media_pad|>`` id per merged vision token in the ids.

Tool-call ids are written verbatim, as the official template and the servers that render it (vLLM,
SGLang) write them, so the local and the endpoint backends see the same prompt for the same
conversation. ``call_ids="kimi"`` opts into one deviation: ids that are not in the model's own
``functions.NAME:IDX`` shape (``call_abc`` from another provider) are rewritten to it, IDX counting
calls across the conversation, and the tool results that answer them follow. The model only ever
produced ids of that shape; a conversation carried over from another provider may read more
naturally to it that way, at the price of a prompt no server would build.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from kimidoc.chat.tokenizer import Tokenizer
from kimidoc.chat.tool_declare import declare_tools
from kimidoc.messages import Message, ToolSchema

DEFAULT_SYSTEM = "You are Kimi, an AI assistant created by Moonshot AI."
MEDIA_PAD = "<|media_pad|>"
IMAGE_PART_TYPES = ("image_url", "image")
_CALL_ID = re.compile(r"[^<]+:\d+")
_HEADER = {"user": "<|im_user|>", "assistant": "<|im_assistant|>"}

DeclareStyle = Literal["typescript", "json"]
CallIds = Literal["verbatim", "kimi"]
Segment = tuple[str, bool]  # (text, is a special token)
ImageTokens = Sequence[int] | Callable[[dict[str, Any]], int] | None


class ChatTemplateError(ValueError):
    """A conversation that cannot be rendered (names the message and what is wrong with it)."""


def declare_style_for(config: dict[str, Any]) -> DeclareStyle:
    """TypeScript declarations for K2.5 / K2.6 checkpoints, JSON for K2 / K2-Thinking."""
    model_type = config.get("model_type", "")
    return "typescript" if model_type == "kimi_k25" or "vision_config" in config else "json"


class _Out:
    def __init__(self) -> None:
        self.segments: list[Segment] = []

    def special(self, token: str) -> None:
        self.segments.append((token, True))

    def text(self, text: str) -> None:
        if text:
            self.segments.append((text, False))


def _is_image(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") in IMAGE_PART_TYPES


def _content(out: _Out, content: Any, where: str) -> None:
    if content is None:
        return
    if isinstance(content, str):
        out.text(content)
        return
    if not isinstance(content, list):
        raise ChatTemplateError(f"{where}: content must be a string or a list of parts, got {type(content).__name__}")
    for j, part in enumerate(content):
        if _is_image(part):
            out.special("<|media_begin|>")
            out.text("image")
            out.special("<|media_content|>")
            out.special(MEDIA_PAD)
            out.special("<|media_end|>")
        elif isinstance(part, dict) and part.get("type") == "text":
            out.text(str(part.get("text", "")))
        else:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise ChatTemplateError(f"{where}, part {j}: unsupported content part {kind!r} (text and image_url only)")


def _call_ids(messages: Sequence[Message], call_ids: CallIds) -> tuple[dict[tuple[int, int], str], dict[str, str]]:
    """The id each call is written with: verbatim, or (``call_ids="kimi"``) rewritten to
    ``functions.NAME:IDX`` unless already in that shape. Returns ((message, call) -> id,
    original id -> written id) so that tool results follow a rewrite."""
    if call_ids not in ("verbatim", "kimi"):
        raise ChatTemplateError(f"call_ids must be 'verbatim' or 'kimi', got {call_ids!r}")
    per_call: dict[tuple[int, int], str] = {}
    renamed: dict[str, str] = {}
    idx = 0
    for i, m in enumerate(messages):
        if m.get("role") != "assistant":
            continue
        for j, call in enumerate(m.get("tool_calls") or []):
            try:
                name = call["function"]["name"]
            except (KeyError, TypeError):
                raise ChatTemplateError(
                    f"messages[{i}].tool_calls[{j}]: expected {{'id', 'function': {{'name', 'arguments'}}}}"
                ) from None
            original = call.get("id") or ""
            keep = call_ids == "verbatim" or _CALL_ID.fullmatch(original)
            new = original if keep else f"functions.{name}:{idx}"
            per_call[(i, j)] = new
            if original:
                renamed.setdefault(original, new)
            idx += 1
    return per_call, renamed


def render_segments(
    messages: Sequence[Message],
    tools: Sequence[ToolSchema] | None = None,
    *,
    thinking: bool = True,
    preserve_thinking: bool = False,
    add_generation_prompt: bool = True,
    declare_style: DeclareStyle = "typescript",
    call_ids: CallIds = "verbatim",
) -> list[Segment]:
    """The prompt as segments of ordinary text and special tokens (see :func:`render`)."""
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ChatTemplateError(f"messages[{i}]: expected a dict with a 'role', got {m!r:.80}")
    out = _Out()
    if tools:
        out.special("<|im_system|>")
        out.text("tool_declare")
        out.special("<|im_middle|>")
        out.text(declare_tools(tools, declare_style))
        out.special("<|im_end|>")
    if not messages or messages[0]["role"] != "system":
        out.special("<|im_system|>")
        out.text("system")
        out.special("<|im_middle|>")
        out.text(DEFAULT_SYSTEM)
        out.special("<|im_end|>")

    # Reasoning is kept only after the last plain answer: the turns of the current tool loop.
    last_plain = -1
    if not preserve_thinking:
        for i in range(len(messages) - 1, -1, -1):
            if messages[i]["role"] == "assistant" and not messages[i].get("tool_calls"):
                last_plain = i
                break
    per_call, renamed = _call_ids(messages, call_ids)

    for i, m in enumerate(messages):
        role = m["role"]
        where = f"messages[{i}] ({role})"
        out.special(_HEADER.get(role, "<|im_system|>"))
        out.text(m.get("name") or role)  # a tool result without a name is headed "tool", as officially
        out.special("<|im_middle|>")
        if role == "assistant":
            out.special("<think>")
            if i > last_plain and thinking:
                out.text(m.get("reasoning_content") or "")
            out.special("</think>")
            _content(out, m.get("content"), where)
            calls = m.get("tool_calls") or []
            if calls:
                out.special("<|tool_calls_section_begin|>")
                for j, call in enumerate(calls):
                    args = call["function"].get("arguments")
                    out.special("<|tool_call_begin|>")
                    out.text(per_call[(i, j)])
                    out.special("<|tool_call_argument_begin|>")
                    out.text(
                        args
                        if isinstance(args, str)
                        else json.dumps(args if args is not None else {}, ensure_ascii=False)
                    )
                    out.special("<|tool_call_end|>")
                out.special("<|tool_calls_section_end|>")
        elif role == "tool":
            call_id = m.get("tool_call_id") or ""
            out.text(f"## Return of {renamed.get(call_id, call_id)}\n")
            _content(out, m.get("content"), where)
        else:
            _content(out, m.get("content"), where)
        out.special("<|im_end|>")

    if add_generation_prompt:
        out.special("<|im_assistant|>")
        out.text("assistant")
        out.special("<|im_middle|>")
        out.special("<think>")
        if not thinking:
            out.special("</think>")
    return out.segments


def render(
    messages: Sequence[Message],
    tools: Sequence[ToolSchema] | None = None,
    *,
    thinking: bool = True,
    preserve_thinking: bool = False,
    add_generation_prompt: bool = True,
    declare_style: DeclareStyle = "typescript",
    call_ids: CallIds = "verbatim",
) -> str:
    """The prompt text K2.6 reads for ``messages`` (and ``tools``), ending with the generation
    prompt ``<|im_assistant|>assistant<|im_middle|><think>`` (``<think></think>`` with thinking off).

    ``preserve_thinking`` keeps every assistant turn's reasoning; by default only the turns after
    the last assistant answer without tool calls keep theirs. ``declare_style="json"`` declares
    tools as K2 did (compact JSON); use :func:`declare_style_for` to pick it from a config.
    ``call_ids="kimi"`` rewrites foreign tool-call ids to ``functions.NAME:IDX`` (see the module
    docstring); the default writes them verbatim, as the official template does.
    """
    return "".join(
        text
        for text, _ in render_segments(
            messages,
            tools,
            thinking=thinking,
            preserve_thinking=preserve_thinking,
            add_generation_prompt=add_generation_prompt,
            declare_style=declare_style,
            call_ids=call_ids,
        )
    )


def image_parts(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Every image part of the conversation, in prompt order (the order the vision tower sees)."""
    return [p for m in messages if isinstance(m.get("content"), list) for p in m["content"] if _is_image(p)]


def _default_image_tokens(part: dict[str, Any]) -> int:
    from kimidoc.messages import image_of
    from kimidoc.vision.budget import image_tokens

    width, height = image_of(part).size
    return image_tokens(width, height)


def encode_chat(
    tokenizer: Tokenizer,
    messages: Sequence[Message],
    tools: Sequence[ToolSchema] | None = None,
    *,
    thinking: bool = True,
    preserve_thinking: bool = False,
    add_generation_prompt: bool = True,
    declare_style: DeclareStyle = "typescript",
    image_tokens: ImageTokens = None,
    call_ids: CallIds = "verbatim",
) -> list[int]:
    """Token ids of :func:`render`'s prompt, each image's ``<|media_pad|>`` repeated once per
    vision token. ``image_tokens`` gives those counts (a list in image order, or a function of the
    part); by default they come from each image's size (:mod:`kimidoc.vision.budget`)."""
    segments = render_segments(
        messages,
        tools,
        thinking=thinking,
        preserve_thinking=preserve_thinking,
        add_generation_prompt=add_generation_prompt,
        declare_style=declare_style,
        call_ids=call_ids,
    )
    images = image_parts(messages)
    if image_tokens is None:
        counts = [_default_image_tokens(p) for p in images]
    elif callable(image_tokens):
        counts = [int(image_tokens(p)) for p in images]
    else:
        counts = [int(n) for n in image_tokens]
    if len(counts) != len(images):
        raise ChatTemplateError(f"image_tokens gives {len(counts)} counts for {len(images)} images")
    pad = tokenizer.token_id(MEDIA_PAD)
    ids: list[int] = []
    pending: list[str] = []  # adjacent ordinary text is encoded in one piece, as the official template does
    image = 0
    for text, special in segments:
        if not special:
            pending.append(text)
            continue
        if pending:
            ids.extend(tokenizer.encode_ordinary("".join(pending)))
            pending.clear()
        if text == MEDIA_PAD:
            ids.extend([pad] * counts[image])
            image += 1
        else:
            ids.append(tokenizer.token_id(text))
    if pending:
        ids.extend(tokenizer.encode_ordinary("".join(pending)))
    return ids
