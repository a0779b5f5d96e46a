"""The incremental tool-call / reasoning parser: examples, malformed input, and properties."""

from __future__ import annotations

import json

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kimidoc.chat.parser import MARKERS, KimiParser, parse
from kimidoc.chat.template import render
from kimidoc.chat.tokenizer import Tokenizer
from kimidoc.messages import accumulate
from kimidoc.testing.tokenizer import write_tokenizer

PROPS = settings(max_examples=80, derandomize=True, deadline=None)
B, E = "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"


def _call(cid: str, args: str) -> str:
    return f"<|tool_call_begin|>{cid}<|tool_call_argument_begin|>{args}<|tool_call_end|>"


def test_reasoning_content_and_calls():
    text = (
        "Let me look.</think>Checking."
        + B
        + _call("functions.get_weather:0", ' {"city": "Paris"} ')
        + _call(" functions.now:1 ", "{}")
        + E
    )
    msg = parse(text)
    assert msg.reasoning == "Let me look." and msg.content == "Checking."
    assert [(c.id, c.name, c.arguments) for c in msg.tool_calls] == [
        ("functions.get_weather:0", "get_weather", '{"city": "Paris"}'),
        ("functions.now:1", "now", "{}"),
    ]
    assert msg.invalid_tool_calls == [] and msg.finish_reason == "tool_calls"


def test_instant_mode_and_self_opened_think():
    assert parse("Hi there", thinking=False).content == "Hi there"
    msg = parse("<think>hmm</think>Hi", thinking=False)
    assert (msg.reasoning, msg.content) == ("hmm", "Hi")
    # reasoning cut off by max_tokens stays reasoning
    assert parse("still thinking").reasoning == "still thinking"


def test_reopened_think_is_stripped_from_reasoning():
    # the prompt ended with <think> and the model wrote it again: a tag, not reasoning text
    m = parse("<think>abc</think>x", thinking=True)
    assert (m.reasoning, m.content) == ("abc", "x")
    assert parse("\n<think>abc</think>x", thinking=True).reasoning == "\nabc"
    p = KimiParser(thinking=True)
    deltas = [d for chunk in ("<th", "ink", ">ab", "c</thi", "nk>x") for d in p.feed(chunk)] + p.finish()
    assert (accumulate(deltas).reasoning, accumulate(deltas).content) == ("abc", "x")
    assert parse("a<think>b", thinking=False).content == "a<think>b"  # in the answer it stays text


def test_singular_section_spelling_and_text_after_message_end():
    text = (
        "</think><|tool_call_section_begin|>"
        + _call("functions.f:0", '{"a": 1}')
        + "<|tool_call_section_end|><|im_end|>ignored"
    )
    msg = parse(text)
    assert [c.name for c in msg.tool_calls] == ["f"] and msg.content == ""
    # a call written without its section is still read
    assert [c.id for c in parse("ok" + _call("functions.f:0", "{}"), thinking=False).tool_calls] == ["functions.f:0"]


def test_malformed_calls_become_invalid_records_with_raw_text():
    bad_json = _call("functions.f:0", "{oops")
    not_object = _call("functions.f:1", "[1, 2]")
    bad_id = _call("get_weather", "{}")
    unknown = _call("functions.rm_rf:2", "{}")
    good = _call("functions.f:3", '{"ok": true}')
    text = "</think>" + B + bad_json + not_object + bad_id + unknown + " junk " + good + E
    msg = parse(text, tools={"f"})
    assert [c.arguments for c in msg.tool_calls] == ['{"ok": true}']
    records = [(r.raw, r.error.split(" ")[0]) for r in msg.invalid_tool_calls]
    assert records == [
        (bad_json, "arguments"),
        (not_object, "arguments"),
        (bad_id, "malformed"),
        (unknown, "unknown"),
        (" junk ", "text"),
    ]
    assert "not valid JSON" in msg.invalid_tool_calls[0].error
    assert msg.invalid_tool_calls[3].name == "rm_rf" and msg.invalid_tool_calls[3].id == "functions.rm_rf:2"


def test_unterminated_section_is_reported_not_raised():
    text = "</think>ok" + B + '<|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{"a": '
    msg = parse(text)
    assert msg.content == "ok" and msg.tool_calls == []
    (rec,) = msg.invalid_tool_calls
    assert rec.raw == '<|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{"a": '
    assert "unterminated" in rec.error and rec.arguments == '{"a":'
    # a call cut short by the next call
    msg = parse("</think>" + B + "<|tool_call_begin|>functions.f:0" + _call("functions.f:1", "{}") + E)
    assert [c.id for c in msg.tool_calls] == ["functions.f:1"] and len(msg.invalid_tool_calls) == 1


def test_streaming_emits_calls_as_they_complete():
    p = KimiParser(thinking=False)
    assert p.feed("Hello <|tool_calls_sec")[0].content == "Hello "
    assert p.feed("tion_begin|><|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{}") == []
    (d,) = p.feed("<|tool_call_end|>")
    assert d.tool_calls[0].id == "functions.f:0" and d.tool_calls[0].arguments == "{}"
    assert p.finish() == []


def test_feed_ids_counts_reasoning_tokens(tmp_path):
    tok = Tokenizer.load(write_tokenizer(tmp_path))
    ids = tok.encode("a b c</think>done" + B + _call("functions.f:0", '{"x": "é"}') + E)
    p = KimiParser(tokenizer=tok)
    msg = accumulate([d for i in ids for d in p.feed_ids(i)] + p.finish())
    assert (msg.reasoning, msg.content, msg.tool_calls[0].arguments) == ("a b c", "done", '{"x": "é"}')
    assert p.reasoning_tokens == ids.index(tok.token_id("</think>")) + 1


# ---- properties -----------------------------------------------------------------------------
pieces = st.lists(
    st.one_of(
        st.sampled_from(MARKERS + ("<|tool_call", "<", "functions.f:0", "{}", '{"a": 1}', " ")), st.text(max_size=12)
    ),
    max_size=25,
)


@PROPS
@given(pieces, st.booleans())
def test_any_text_never_raises(parts, thinking):
    msg = parse("".join(parts), thinking=thinking)
    for c in msg.tool_calls:
        assert isinstance(c.parsed_arguments(), dict)


def _fold(text: str, cuts: list[int], thinking: bool):
    p = KimiParser(thinking=thinking)
    deltas, pos = [], 0
    for n in cuts:
        deltas += p.feed(text[pos : pos + n])
        pos += n
    deltas += p.feed(text[pos:]) + p.finish()
    return accumulate(deltas)


@PROPS
@given(pieces, st.lists(st.integers(min_value=0, max_value=9), max_size=60), st.booleans())
def test_streaming_in_any_chunks_equals_parsing_at_once(parts, cuts, thinking):
    text = "".join(parts)
    once, streamed = parse(text, thinking=thinking), _fold(text, cuts, thinking)
    assert (streamed.reasoning, streamed.content, streamed.tool_calls, streamed.invalid_tool_calls) == (
        once.reasoning,
        once.content,
        once.tool_calls,
        once.invalid_tool_calls,
    )


def _clean(s: str) -> bool:
    return not any(m in s for m in MARKERS) and not s.endswith(tuple(m[:k] for m in MARKERS for k in range(1, len(m))))


names = st.from_regex(r"[a-z_][a-z0-9_]{0,11}", fullmatch=True)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda v: st.lists(v, max_size=3) | st.dictionaries(st.text(max_size=5), v, max_size=3),
    max_leaves=6,
)
calls = st.lists(
    st.tuples(names, st.dictionaries(st.text(max_size=6), json_values, max_size=3), st.booleans()), max_size=3
)


@PROPS
@given(st.text(max_size=40), st.text(max_size=40), calls)
def test_rendered_assistant_turn_parses_back(reasoning, content, tool_calls):
    assume(_clean(reasoning) and _clean(content))
    user = {"role": "user", "content": "go"}
    assistant = {
        "role": "assistant",
        "content": content,
        "reasoning_content": reasoning,
        "tool_calls": [
            {
                "id": f"functions.{n}:{i}",
                "type": "function",
                "function": {"name": n, "arguments": json.dumps(a, ensure_ascii=ascii_)},
            }
            for i, (n, a, ascii_) in enumerate(tool_calls)
        ],
    }
    prompt = render([user])
    full = render([user, assistant], add_generation_prompt=False, preserve_thinking=True)
    assert full.startswith(prompt) and prompt.endswith("<think>")
    msg = parse(full[len(prompt) :], thinking=True)
    assert msg.reasoning == reasoning and msg.content == content and msg.invalid_tool_calls == []
    assert [c.to_openai() for c in msg.tool_calls] == assistant["tool_calls"]
