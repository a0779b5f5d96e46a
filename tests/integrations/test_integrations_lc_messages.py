"""LangChain <-> kimidoc message conversion: conversations with tool calls survive round trips."""

from __future__ import annotations

import base64

import pytest

pytest.importorskip("langchain_core")

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage  # noqa: E402

from kimidoc.integrations.langchain import to_kimidoc_messages, to_langchain_messages  # noqa: E402
from kimidoc.messages import image_part  # noqa: E402

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYPj/HwADAgH/pW0E1wAAAABJRU5ErkJggg=="
)

# A kimidoc conversation as K2.6 produces it: interleaved thinking, arguments written with the
# model's own spacing (not json.dumps'), parallel calls, an image in a tool result and in a question.
KIMI_CONVERSATION = [
    {"role": "system", "content": "You answer questions about documents."},
    {"role": "user", "content": [{"type": "text", "text": "What does this chart show?"}, image_part(PNG)]},
    {
        "role": "assistant",
        "content": "Let me look closer.",
        "reasoning_content": "The chart needs zooming; crop page 3.",
        "tool_calls": [
            {
                "id": "functions.crop:0",
                "type": "function",
                "function": {"name": "crop", "arguments": '{"page":3,"box":[0, 0.5,1,1]}'},
            },
            {
                "id": "functions.python:1",
                "type": "function",
                "function": {"name": "python", "arguments": '{"code": "print(\\"é\\")"}'},
            },
        ],
    },
    {
        "role": "tool",
        "tool_call_id": "functions.crop:0",
        "content": [{"type": "text", "text": "page 3, lower half"}, image_part(PNG)],
    },
    {"role": "tool", "tool_call_id": "functions.python:1", "content": "é"},
    {
        "role": "assistant",
        "content": "Revenue grew 12% (report.pdf p.3).",
        "reasoning_content": "The crop shows the bar for 2025.",
    },
]


def test_kimidoc_conversation_round_trips_through_langchain_byte_for_byte():
    lc = to_langchain_messages(KIMI_CONVERSATION)
    assert [type(m) for m in lc] == [SystemMessage, HumanMessage, AIMessage, ToolMessage, ToolMessage, AIMessage]
    ai = lc[2]
    assert ai.tool_calls[0]["args"] == {"page": 3, "box": [0, 0.5, 1, 1]}
    assert ai.additional_kwargs["reasoning_content"] == "The chart needs zooming; crop page 3."
    assert [b["type"] for b in ai.content_blocks] == ["reasoning", "text", "tool_call", "tool_call"]
    assert to_kimidoc_messages(lc) == KIMI_CONVERSATION


def test_langchain_conversation_with_tool_calls_round_trips_through_kimidoc():
    conversation = [
        SystemMessage("Be brief."),
        HumanMessage("What is 3 + 4, and what is in the picture?", name="ana"),
        AIMessage(
            "",
            additional_kwargs={"reasoning_content": "Add first."},
            tool_calls=[{"name": "add", "args": {"a": 3, "b": 4}, "id": "c1", "type": "tool_call"}],
        ),
        ToolMessage("7", tool_call_id="c1", name="add"),
        AIMessage("3 + 4 = 7."),
    ]
    kimi = to_kimidoc_messages(conversation)
    assert kimi[2] == {
        "role": "assistant",
        "content": "",
        "reasoning_content": "Add first.",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 3, "b": 4}'}}],
    }
    assert kimi[3] == {"role": "tool", "tool_call_id": "c1", "name": "add", "content": "7"}
    back = to_langchain_messages(kimi)
    for before, after in zip(conversation, back, strict=True):
        assert type(after) is type(before)
        assert after.content == before.content
        assert after.additional_kwargs.get("reasoning_content") == before.additional_kwargs.get("reasoning_content")
        assert getattr(after, "tool_calls", None) == getattr(before, "tool_calls", None)
        assert getattr(after, "tool_call_id", None) == getattr(before, "tool_call_id", None)
        assert after.name == before.name
    # and once more: the kimidoc form is a fixed point
    assert to_kimidoc_messages(back) == kimi


def test_edited_arguments_win_over_the_raw_text_the_model_wrote():
    ai = to_langchain_messages([KIMI_CONVERSATION[2]])[0]
    ai.tool_calls[0]["args"]["page"] = 4  # e.g. a human-in-the-loop edit
    call = to_kimidoc_messages([ai])[0]["tool_calls"][0]
    assert call["function"]["arguments"] == '{"page": 4, "box": [0, 0.5, 1, 1]}'
    untouched = to_kimidoc_messages([ai])[0]["tool_calls"][1]
    assert untouched["function"]["arguments"] == '{"code": "print(\\"é\\")"}'


def test_unreadable_tool_call_is_kept_verbatim_both_ways():
    msg = {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "c9", "type": "function", "function": {"name": "grep", "arguments": '{"pattern": "x"'}}],
    }
    ai = to_langchain_messages([msg])[0]
    assert ai.tool_calls == []
    assert (
        ai.invalid_tool_calls[0]["args"] == '{"pattern": "x"' and "not valid JSON" in ai.invalid_tool_calls[0]["error"]
    )
    assert to_kimidoc_messages([ai]) == [msg]


def test_content_block_dialects_become_text_and_image_parts():
    b64 = base64.b64encode(PNG).decode()
    msgs = to_kimidoc_messages(
        [
            HumanMessage(
                [{"type": "text", "text": "look"}, {"type": "image", "base64": b64, "mime_type": "image/png"}]
            ),
            AIMessage(
                [
                    {"type": "text", "text": "calling"},
                    {"type": "tool_use", "id": "t1", "name": "crop", "input": {"page": 1}},
                ],
                tool_calls=[{"name": "crop", "args": {"page": 1}, "id": "t1", "type": "tool_call"}],
            ),
            HumanMessage(
                [{"type": "tool_result", "tool_use_id": "t1", "content": "cropped"}, {"type": "text", "text": "and?"}]
            ),
            ToolMessage([{"type": "image", "base64": b64, "mime_type": "image/png"}], tool_call_id="t1"),
            # LangChain v1 output: reasoning and tool calls as content blocks
            AIMessage(
                [
                    {"type": "reasoning", "reasoning": "hmm"},
                    {"type": "text", "text": "done"},
                    {"type": "tool_call", "id": "t2", "name": "crop", "args": {}},
                ],
                tool_calls=[{"name": "crop", "args": {}, "id": "t2", "type": "tool_call"}],
            ),
        ]
    )
    assert msgs[0]["content"] == [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}},
    ]
    assert msgs[1]["content"] == "calling" and msgs[1]["tool_calls"][0]["id"] == "t1"
    # the tool result answers the call before the user's next words
    assert msgs[2] == {"role": "tool", "tool_call_id": "t1", "content": "cropped"}
    assert msgs[3] == {"role": "user", "content": "and?"}
    assert msgs[4]["content"] == [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}}]
    assert msgs[5]["content"] == "done" and msgs[5]["reasoning_content"] == "hmm"
    assert [c["id"] for c in msgs[5]["tool_calls"]] == ["t2"]


@pytest.mark.filterwarnings("ignore:OpenAI may require a filename")
def test_unsupported_block_is_refused_naming_message_and_block():
    pdf = {"type": "file", "base64": "JVBERi0=", "mime_type": "application/pdf"}
    with pytest.raises(ValueError, match=r"messages\[1\] \(user\) content\[1\].*'file'"):
        to_kimidoc_messages([SystemMessage("s"), HumanMessage([{"type": "text", "text": "read"}, pdf])])


def test_unknown_role_is_refused_by_index():
    with pytest.raises(ValueError, match=r"messages\[1\]: unknown role 'critic'"):
        to_langchain_messages([{"role": "user", "content": "a"}, {"role": "critic", "content": "b"}])
