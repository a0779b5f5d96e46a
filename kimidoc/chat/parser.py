"""Incremental parser for what K2.6 generates: reasoning, content and tool calls.

Feed it text (or ids, with a tokenizer) as it arrives; it returns :class:`~kimidoc.messages.Delta`
objects as pieces complete: reasoning and content as soon as they cannot be the start of a marker,
each tool call once its ``<|tool_call_end|>`` arrives and its id and JSON arguments check out. A
malformed call (bad id, invalid JSON, arguments that are not an object, unknown tool, unterminated
call, stray text in the section) becomes an :class:`~kimidoc.messages.InvalidToolCall` carrying the
raw text; nothing raises. Folding the deltas with :func:`~kimidoc.messages.accumulate` gives the
same message whatever the chunking.

Any backend can use it, e.g. on the raw text of a server that runs without a tool parser::

    p = KimiParser(thinking=False)
    for chunk in chunks:
        yield from p.feed(chunk)
    yield from p.finish()
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Sequence

from kimidoc.chat.tokenizer import Tokenizer
from kimidoc.messages import AssistantMessage, Delta, InvalidToolCall, ToolCallDelta, accumulate

THINK_BEGIN = "<think>"
THINK_END = "</think>"
SECTION_BEGIN = ("<|tool_calls_section_begin|>", "<|tool_call_section_begin|>")
SECTION_END = ("<|tool_calls_section_end|>", "<|tool_call_section_end|>")
CALL_BEGIN = "<|tool_call_begin|>"
ARG_BEGIN = "<|tool_call_argument_begin|>"
CALL_END = "<|tool_call_end|>"
MESSAGE_END = ("<|im_end|>",)  # every marker starts with "<" (the hold-back logic relies on it)
MARKERS = (THINK_BEGIN, THINK_END, *SECTION_BEGIN, *SECTION_END, CALL_BEGIN, ARG_BEGIN, CALL_END, *MESSAGE_END)
_MARKER_RE = re.compile("|".join(re.escape(m) for m in sorted(MARKERS, key=len, reverse=True)))
_CALL_ID = re.compile(r"[^<]+:\d+")

# Modes
START, REASONING, CONTENT, SECTION, CALL_ID, CALL_ARGS, END = range(7)


def tool_name_from_id(call_id: str) -> str:
    """``functions.get_weather:0`` -> ``get_weather``."""
    return call_id.split(":")[0].split(".")[-1]


class KimiParser:
    """Splits generated text into reasoning, content and tool calls, incrementally.

    ``thinking``: the prompt ended with ``<think>`` (K2.6's default), so output starts as reasoning;
    a ``<think>`` the model writes again inside it is dropped, as the field's reasoning parsers
    (SGLang's, vLLM's) drop it. Without it, output that opens with ``<think>`` is still read as
    reasoning (K2-Thinking writes the tag itself). ``tools``: names of the declared tools; a call to any other name is invalid.
    """

    def __init__(
        self, *, thinking: bool = True, tools: Collection[str] | None = None, tokenizer: Tokenizer | None = None
    ) -> None:
        self.tools = set(tools) if tools is not None else None
        self.mode = REASONING if thinking else START
        self._buf = ""  # text not yet lexed: a possible partial marker at its end
        self._out: list[Delta] = []
        self._stray: list[str] = []  # non-whitespace text inside the section, outside any call
        self._raw: list[str] = []  # raw text of the call being read
        self._id: list[str] = []
        self._args: list[str] = []
        self._index = 0  # index of the next valid call
        self._decoder = tokenizer.stream_decoder() if tokenizer is not None else None
        self.reasoning_tokens = 0
        self.finished = False

    # ---- input --------------------------------------------------------------------------------
    def feed(self, text: str) -> list[Delta]:
        """Consume more generated text; returns the deltas it completed."""
        if self.finished:
            raise RuntimeError("KimiParser.feed after finish()")
        self._buf += text
        self._lex(final=False)
        return self._take()

    def feed_ids(self, ids: Sequence[int] | int) -> list[Delta]:
        """Consume generated ids (needs the tokenizer given at construction)."""
        if self._decoder is None:
            raise RuntimeError("KimiParser.feed_ids needs KimiParser(tokenizer=...)")
        ids = [ids] if isinstance(ids, int) else list(ids)
        deltas: list[Delta] = []
        for i in ids:  # one at a time so reasoning tokens are counted exactly
            if self.mode == REASONING:
                self.reasoning_tokens += 1
            deltas.extend(self.feed(self._decoder.feed(i)))
        return _merge(deltas)

    def finish(self) -> list[Delta]:
        """End of generation: flush held-back text and close anything left open (as invalid)."""
        if self.finished:
            return []
        if self._decoder is not None:
            self._buf += self._decoder.flush()
        self._lex(final=True)
        if self.mode in (CALL_ID, CALL_ARGS):
            self._invalid("".join(self._raw), "unterminated tool call (generation ended before <|tool_call_end|>)")
        self._flush_stray()
        self.finished = True
        return self._take()

    # ---- lexing -------------------------------------------------------------------------------
    def _lex(self, *, final: bool) -> None:
        buf = self._buf
        pos = 0
        while True:
            m = _MARKER_RE.search(buf, pos)
            if m is None:
                break
            self._text(buf[pos : m.start()])
            self._marker(m.group())
            pos = m.end()
        rest = buf[pos:]
        hold = 0
        if not final:
            # Markers contain one '<' each, so only text from the last '<' can be a marker's start.
            lt = rest.rfind("<")
            if lt >= 0 and any(mk.startswith(rest[lt:]) for mk in MARKERS):
                hold = len(rest) - lt
        self._text(rest[: len(rest) - hold])
        self._buf = rest[len(rest) - hold :]

    # ---- the state machine --------------------------------------------------------------------
    def _text(self, text: str) -> None:
        if not text:
            return
        mode = self.mode
        if mode == START:
            self.mode = CONTENT
            mode = CONTENT
        if mode == REASONING:
            self._out.append(Delta(reasoning=text))
        elif mode == CONTENT:
            self._out.append(Delta(content=text))
        elif mode == SECTION:
            self._stray.append(text)
        elif mode == CALL_ID:
            self._raw.append(text)
            self._id.append(text)
        elif mode == CALL_ARGS:
            self._raw.append(text)
            self._args.append(text)

    def _marker(self, mk: str) -> None:
        mode = self.mode
        if mode == END:
            return
        if mk in MESSAGE_END:
            if mode in (CALL_ID, CALL_ARGS):
                self._invalid("".join(self._raw), f"unterminated tool call (message ended with {mk})")
            self._flush_stray()
            self.mode = END
            return
        if mode == START:
            if mk == THINK_BEGIN:
                self.mode = REASONING
                return
            self.mode = mode = CONTENT
        if mode in (REASONING, CONTENT):
            if mode == REASONING and mk == THINK_END:
                self.mode = CONTENT
            elif mode == REASONING and mk == THINK_BEGIN:
                pass  # the model re-opening the block the prompt opened: a tag, never reasoning text
            elif mk in SECTION_BEGIN:
                self.mode = SECTION  # a section also ends reasoning that was never closed
            elif mk == CALL_BEGIN:
                self._begin_call(mk)  # a call without its section: read it anyway
            else:
                self._text(mk)
            return
        if mode == SECTION:
            if mk == CALL_BEGIN:
                self._flush_stray()
                self._begin_call(mk)
            elif mk in SECTION_END:
                self._flush_stray()
                self.mode = CONTENT
            else:
                self._stray.append(mk)
            return
        # inside a call
        if mk == CALL_BEGIN:
            self._invalid("".join(self._raw), "tool call not terminated before the next <|tool_call_begin|>")
            self._begin_call(mk)
        elif mk in SECTION_END:
            self._invalid("".join(self._raw) + mk, "tool call not terminated before the end of the section")
            self.mode = CONTENT
        elif mode == CALL_ID and mk == ARG_BEGIN:
            self._raw.append(mk)
            self.mode = CALL_ARGS
        elif mode == CALL_ID and mk == CALL_END:
            self._invalid("".join(self._raw) + mk, "tool call without <|tool_call_argument_begin|>")
            self.mode = SECTION
        elif mode == CALL_ARGS and mk == CALL_END:
            self._raw.append(mk)
            self._end_call()
            self.mode = SECTION
        else:
            self._text(mk)

    def _begin_call(self, mk: str) -> None:
        self._raw = [mk]
        self._id = []
        self._args = []
        self.mode = CALL_ID

    def _end_call(self) -> None:
        raw = "".join(self._raw)
        call_id = "".join(self._id).strip()
        args = "".join(self._args).strip()
        if not _CALL_ID.fullmatch(call_id):
            self._invalid(
                raw,
                f"malformed tool call id {call_id!r} (expected functions.NAME:IDX)",
                call_id=call_id or None,
                args=args,
            )
            return
        name = tool_name_from_id(call_id)
        if self.tools is not None and name not in self.tools:
            known = ", ".join(sorted(self.tools)) or "none declared"
            self._invalid(raw, f"unknown tool {name!r} (tools: {known})", call_id=call_id, name=name, args=args)
            return
        try:
            value = json.loads(args)
        except json.JSONDecodeError as exc:
            self._invalid(raw, f"arguments of {name} are not valid JSON: {exc}", call_id=call_id, name=name, args=args)
            return
        if not isinstance(value, dict):
            self._invalid(
                raw,
                f"arguments of {name} must be a JSON object, got {type(value).__name__}",
                call_id=call_id,
                name=name,
                args=args,
            )
            return
        self._out.append(Delta(tool_calls=[ToolCallDelta(index=self._index, id=call_id, name=name, arguments=args)]))
        self._index += 1

    def _invalid(
        self, raw: str, error: str, *, call_id: str | None = None, name: str | None = None, args: str | None = None
    ) -> None:
        if call_id is None and self._id:
            call_id = "".join(self._id).strip() or None
            name = tool_name_from_id(call_id) if call_id else None
        if args is None and self._args:
            args = "".join(self._args).strip()
        self._out.append(
            Delta(invalid_tool_calls=[InvalidToolCall(raw=raw, error=error, id=call_id, name=name, arguments=args)])
        )
        self._raw, self._id, self._args = [], [], []

    def _flush_stray(self) -> None:
        stray = "".join(self._stray)
        self._stray = []
        if stray.strip():
            self._out.append(
                Delta(
                    invalid_tool_calls=[
                        InvalidToolCall(raw=stray, error="text inside the tool-call section outside any call")
                    ]
                )
            )

    def _take(self) -> list[Delta]:
        out, self._out = _merge(self._out), []
        return out


def _merge(deltas: Iterable[Delta]) -> list[Delta]:
    """Join adjacent text-only deltas of the same kind (fewer, larger pieces; same fold)."""
    merged: list[Delta] = []
    for d in deltas:
        prev = merged[-1] if merged else None
        if prev is not None and not (
            prev.tool_calls or prev.invalid_tool_calls or d.tool_calls or d.invalid_tool_calls
        ):
            if (prev.content and d.content and not prev.reasoning and not d.reasoning) or (
                prev.reasoning and d.reasoning and not prev.content and not d.content
            ):
                prev.content += d.content
                prev.reasoning += d.reasoning
                continue
        merged.append(d)
    return merged


def parse(text: str, *, thinking: bool = True, tools: Collection[str] | None = None) -> AssistantMessage:
    """Parse a whole completion at once (``thinking``: the prompt ended with ``<think>``)."""
    p = KimiParser(thinking=thinking, tools=tools)
    deltas = p.feed(text) + p.finish()
    msg = accumulate(deltas)
    msg.finish_reason = "tool_calls" if msg.tool_calls else "stop"
    return msg
