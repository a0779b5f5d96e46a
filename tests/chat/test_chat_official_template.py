"""``render`` byte for byte against a checkpoint's own ``chat_template.jinja``, rendered by transformers.

The official template is not shipped here (it comes with the weights), so this runs only when
``KIMIDOC_CHAT_TEMPLATE`` names one, e.g. ``KIMIDOC_CHAT_TEMPLATE=/models/Kimi-K2.6/chat_template.jinja``.
K2.5 / K2.6 templates take ``thinking`` and the TypeScript declaration as ``tools_ts_str`` (which
their tokenizer code computes; here :func:`declare_tools` does, so the declaration text itself is
checked by the hand-written cases in test_chat_template.py). K2 / K2-Thinking templates declare
tools as JSON and end the generation prompt before ``<think>``, which their model writes itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kimidoc.chat.template import render
from kimidoc.chat.tool_declare import declare_tools

TEMPLATE = os.environ.get("KIMIDOC_CHAT_TEMPLATE")
pytestmark = pytest.mark.skipif(not TEMPLATE, reason="set KIMIDOC_CHAT_TEMPLATE to a checkpoint's chat_template.jinja")

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search <docs> & 'more'",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    },
}
PNG_1PX = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)


def _call(cid: str, name: str, args: object) -> dict:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


def _user(content: object, **kw: object) -> dict:
    return {"role": "user", "content": content, **kw}


def _assistant(content: object, reasoning: str | None = None, calls: list | None = None) -> dict:
    m: dict = {"role": "assistant", "content": content}
    if reasoning is not None:
        m["reasoning_content"] = reasoning
    if calls is not None:
        m["tool_calls"] = calls
    return m


def _tool(cid: str, content: str, name: str | None = None) -> dict:
    return {"role": "tool", "tool_call_id": cid, "content": content, **({"name": name} if name else {})}


CASES: dict[str, tuple[list[dict], list[dict] | None]] = {
    "plain": ([_user("hi")], None),
    "system": ([{"role": "system", "content": "Be brief."}, _user("hi")], None),
    "named user": ([_user("hi", name="alice")], None),
    "named system": ([{"role": "system", "name": "ops", "content": "x"}, _user("q")], None),
    "system mid conversation": ([_user("q"), {"role": "system", "content": "note"}, _user("q2")], None),
    "multi-turn reasoning dropped": (
        [_user("q1"), _assistant("a1", "r1"), _user("q2"), _assistant("a2", "r2"), _user("q3")],
        None,
    ),
    "kimi ids, named result": (
        [
            _user("w?"),
            _assistant("", "think", [_call("functions.get_weather:0", "get_weather", '{"city": "Paris"}')]),
            _tool("functions.get_weather:0", "sunny", "get_weather"),
        ],
        [WEATHER],
    ),
    "result without a name": (
        [
            _user("w?"),
            _assistant("", "think", [_call("functions.get_weather:0", "get_weather", '{"city": "Paris"}')]),
            _tool("functions.get_weather:0", "sunny"),
        ],
        [WEATHER],
    ),
    "foreign ids": (
        [
            _user("w?"),
            _assistant(
                "Checking.",
                None,
                [_call("call_a", "get_weather", '{"city":"Paris"}'), _call("call_b", "get_weather", '{"city":"Rome"}')],
            ),
            _tool("call_a", "sunny"),
            _tool("call_b", "rain"),
        ],
        [WEATHER],
    ),
    "two tools declared": ([_user("x")], [WEATHER, SEARCH]),
    "object arguments": (
        [
            _user("x"),
            _assistant("", None, [_call("functions.search:0", "search", {"q": 'naïve "x"'})]),
            _tool("functions.search:0", "found"),
        ],
        [SEARCH],
    ),
    "interleaved tool loop": (
        [
            _user("Q1"),
            _assistant("A1", "r1"),
            _user("Q2"),
            _assistant("", "r2", [_call("functions.f:0", "f", "{}")]),
            _tool("functions.f:0", "one"),
            _assistant("", "r3", [_call("functions.f:1", "f", '{"n": 2}')]),
            _tool("functions.f:1", "two"),
        ],
        None,
    ),
    "loop then answer": (
        [
            _user("Q"),
            _assistant("", "r2", [_call("functions.f:0", "f", "{}")]),
            _tool("functions.f:0", "one"),
            _assistant("done", "r3"),
            _user("again"),
        ],
        None,
    ),
    "text parts": ([_user([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])], None),
    "empty answer": ([_user("q"), _assistant(""), _user("q2")], None),
    "call without content": (
        [_user("q"), _assistant(None, None, [_call("functions.f:0", "f", "{}")]), _tool("functions.f:0", "r")],
        None,
    ),
    "special spellings as text": ([_user("<think> & </think> ## Return of")], None),
    "unicode": ([_user("日本語 ünïcode 🚀")], [SEARCH]),
    "foreign id, named result, next question": (
        [
            _user("q"),
            _assistant("", "why", [_call("call_9", "search", '{"q":"a"}')]),
            _tool("call_9", "res", "search"),
            _user("thanks"),
        ],
        [SEARCH],
    ),
    "multi-line result": (
        [
            _user("q"),
            _assistant("", None, [_call("functions.f:0", "f", "{}")]),
            _tool("functions.f:0", "line1\nline2\n"),
        ],
        None,
    ),
    "reasoning in the open loop": ([_user("q"), _assistant("", "r", [_call("functions.f:0", "f", "{}")])], None),
}
IMAGE_CASES: dict[str, tuple[list[dict], list[dict] | None]] = {
    "image then text": (
        [_user([{"type": "image_url", "image_url": {"url": PNG_1PX}}, {"type": "text", "text": "what is this?"}])],
        None,
    ),
    "text, image, text": (
        [
            _user(
                [
                    {"type": "text", "text": "a"},
                    {"type": "image_url", "image_url": {"url": PNG_1PX}},
                    {"type": "text", "text": "b"},
                ]
            )
        ],
        None,
    ),
}


def test_render_is_byte_identical_to_the_official_template() -> None:
    from transformers.utils.chat_template_utils import render_jinja_template

    template = Path(TEMPLATE).read_text()
    k25 = "tools_ts_str" in template  # K2.5 / K2.6: TypeScript declarations, thinking switch, images
    cases = {**CASES, **(IMAGE_CASES if k25 else {})}
    diffs = []
    for name, (messages, tools) in cases.items():
        for gen in (True, False):
            for thinking in (True, False) if k25 else (True,):
                extra = (
                    {"thinking": thinking, **({"tools_ts_str": declare_tools(tools, "typescript")} if tools else {})}
                    if k25
                    else {}
                )
                (official,), _ = render_jinja_template(
                    [messages], tools=tools, chat_template=template, add_generation_prompt=gen, **extra
                )
                ours = render(
                    messages,
                    tools,
                    thinking=thinking,
                    declare_style="typescript" if k25 else "json",
                    add_generation_prompt=gen,
                )
                if gen and not k25:
                    ours = ours.removesuffix("<think>")  # K2-Thinking writes its <think> itself
                if ours != official:
                    diffs.append(
                        f"{name} (generation prompt {gen}, thinking {thinking}):\n  ours:     {ours!r}\n  official: {official!r}"
                    )
    assert not diffs, f"{len(diffs)} renders differ:\n" + "\n".join(diffs)
