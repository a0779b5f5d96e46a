"""The embedded model's tool format: rendering, forgiving parsing, stream splitting (no model needed)."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kimidoc.backends.embedded.prompt import (
    CALL_OPEN,
    ReplySplitter,
    call_schema,
    chat_messages,
    extract_json,
    forced_tool,
    parse_reply,
)
from kimidoc.messages import image_part

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look up a word.",
            "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add.",
            "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}},
        },
    },
]


def test_tools_go_into_one_system_turn_and_history_round_trips():
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "look at"}, image_part(b"\x89PNG\r\n\x1a\n")]},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"word": "moon"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "name": "lookup", "content": "a satellite"},
    ]
    out = chat_messages(msgs, TOOLS)
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert (
        out[0]["content"].startswith("Be brief.")
        and '"name": "lookup"' in out[0]["content"]
        and "<tools>" in out[0]["content"]
    )
    assert "1 image(s) omitted" in out[1]["content"]
    assert out[2]["content"] == CALL_OPEN + '[{"name": "lookup", "arguments": {"word": "moon"}}]</tool_call>'
    assert out[3]["content"] == '<tool_response name="lookup">\na satellite\n</tool_response>'
    # Reading the rendered call back gives the same call.
    _, calls, invalid = parse_reply(out[2]["content"], TOOLS)
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("lookup", {"word": "moon"})] and not invalid
    assert "<tools>" not in chat_messages(msgs, TOOLS, "none")[0]["content"]
    only_add = chat_messages(msgs, TOOLS, {"type": "function", "function": {"name": "add"}})[0]["content"]
    assert '"add"' in only_add and '"lookup"' not in only_add


def test_parse_reply_reads_calls_and_rejects_bad_ones_without_raising():
    text = 'Sure. <tool_call>[{"name": "lookup", "arguments": {"word": "sun"}}, {"name": "nope", "arguments": {}}, {"name": "add", "arguments": [1]}]</tool_call> Done.'
    content, calls, invalid = parse_reply(text, TOOLS)
    assert content == "Sure.  Done."
    assert [c.name for c in calls] == ["lookup"] and json.loads(calls[0].arguments) == {"word": "sun"}
    assert (
        [i.name for i in invalid] == ["nope", "add"]
        and "unknown tool" in invalid[0].error
        and "must be a JSON object" in invalid[1].error
    )
    _, calls, invalid = parse_reply("<tool_call>{not json at all</tool_call>", TOOLS)
    assert not calls and "not valid JSON" in invalid[0].error
    _, calls, invalid = parse_reply('<tool_call>```json\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n```', TOOLS)
    assert calls[0].name == "add" and not invalid, "an unterminated block with a fenced object is still read"
    _, calls, _ = parse_reply('{"name": "add", "arguments": {"a": 1}}', TOOLS, forced=True)
    assert calls[0].name == "add"
    assert parse_reply("plain <b>text</b>", TOOLS) == ("plain <b>text</b>", [], [])
    assert parse_reply("<tool_call>[]</tool_call>", None)[0] == "<tool_call>[]</tool_call>", (
        "without tools nothing is a call"
    )


def test_forced_tool_and_schema():
    assert forced_tool(TOOLS, "auto") is None and forced_tool(TOOLS, "required") == TOOLS
    assert forced_tool(TOOLS, {"type": "function", "function": {"name": "add"}}) == [TOOLS[1]]
    with pytest.raises(ValueError, match="'zap', which is not among the tools"):
        forced_tool(TOOLS, {"type": "function", "function": {"name": "zap"}})
    schema = call_schema(TOOLS)
    assert [o["properties"]["name"]["const"] for o in schema["anyOf"]] == ["lookup", "add"]
    assert call_schema(TOOLS[:1])["properties"]["arguments"] == TOOLS[0]["function"]["parameters"]


def test_extract_json_skips_prose():
    assert extract_json('I will call {"a": [1, {"b": 2}]} now') == ({"a": [1, {"b": 2}]}, None)
    assert extract_json("no json")[1].startswith("no JSON")


def _split(text, cuts, **kw):
    s = ReplySplitter(**kw)
    shown, pos = [], 0
    for c in sorted(set(cuts)) + [len(text)]:
        shown.append(s.feed(text[pos:c]))
        pos = c
    shown.append(s.finish())
    return "".join(shown), "".join(s.captured), s.stopped


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="ab<tol_c>/ \n", max_size=40), st.lists(st.integers(0, 80), max_size=8))
def test_splitter_output_does_not_depend_on_chunking(text, cuts):
    cuts = [c for c in cuts if c <= len(text)]
    whole = _split(text, [], capture_calls=True, stop=["\n\n"])
    assert _split(text, cuts, capture_calls=True, stop=["\n\n"]) == whole
    shown, captured, stopped = whole
    if stopped:
        assert "\n\n" not in shown
    elif CALL_OPEN in text:
        assert shown == text[: text.find(CALL_OPEN)] and captured == text[text.find(CALL_OPEN) :]
    else:
        assert shown == text and captured == ""
