"""Rendering checked against strings written out by hand from the format reference."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from kimidoc.chat.template import ChatTemplateError, declare_style_for, encode_chat, render
from kimidoc.chat.tokenizer import Tokenizer
from kimidoc.messages import image_part
from kimidoc.testing.tokenizer import write_tokenizer

SYS = "<|im_system|>system<|im_middle|>You are Kimi, an AI assistant created by Moonshot AI.<|im_end|>"
GEN = "<|im_assistant|>assistant<|im_middle|><think>"
GEN_OFF = "<|im_assistant|>assistant<|im_middle|><think></think>"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
            },
            "required": ["city"],
        },
    },
}
WEATHER_DECL = (
    "<|im_system|>tool_declare<|im_middle|># Tools\n\n## functions\nnamespace functions {\n"
    "// Get the current weather for a city.\n"
    "type get_weather = (_: {\n"
    "  // City name\n"
    "  city: string,\n"
    '  // Default: "celsius"\n'
    '  unit?: "celsius" | "fahrenheit"\n'
    "}) => any;\n"
    "}\n<|im_end|>"
)


def call(cid: str, name: str, args: str) -> dict:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    return Tokenizer.load(write_tokenizer(tmp_path_factory.mktemp("tok")))


def test_plain_chat_inserts_default_system_and_generation_prompt():
    assert render([{"role": "user", "content": "Hello"}]) == SYS + "<|im_user|>user<|im_middle|>Hello<|im_end|>" + GEN


def test_system_prompt_replaces_default():
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert (
        render(msgs)
        == "<|im_system|>system<|im_middle|>Be brief.<|im_end|><|im_user|>user<|im_middle|>Hi<|im_end|>" + GEN
    )


def test_multi_turn_drops_reasoning_of_answered_turns():
    msgs = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!", "reasoning_content": "A greeting."},
        {"role": "user", "content": "2+2?"},
    ]
    expected = (
        SYS
        + "<|im_user|>user<|im_middle|>Hi<|im_end|>"
        + "<|im_assistant|>assistant<|im_middle|><think></think>Hello!<|im_end|>"
        + "<|im_user|>user<|im_middle|>2+2?<|im_end|>"
        + GEN
    )
    assert render(msgs) == expected


def test_thinking_off_prefills_empty_think_and_no_generation_prompt_option():
    msgs = [{"role": "user", "content": "Hi"}]
    assert render(msgs, thinking=False) == SYS + "<|im_user|>user<|im_middle|>Hi<|im_end|>" + GEN_OFF
    assert render(msgs, add_generation_prompt=False) == SYS + "<|im_user|>user<|im_middle|>Hi<|im_end|>"


def test_one_tool_call_and_its_result():
    msgs = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "Need weather.",
            "tool_calls": [call("functions.get_weather:0", "get_weather", '{"city": "Paris"}')],
        },
        {"role": "tool", "tool_call_id": "functions.get_weather:0", "name": "get_weather", "content": '{"temp": 21}'},
    ]
    expected = (
        WEATHER_DECL
        + SYS
        + "<|im_user|>user<|im_middle|>Weather in Paris?<|im_end|>"
        + "<|im_assistant|>assistant<|im_middle|><think>Need weather.</think>"
        + "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>"
        + '{"city": "Paris"}<|tool_call_end|><|tool_calls_section_end|><|im_end|>'
        + '<|im_system|>get_weather<|im_middle|>## Return of functions.get_weather:0\n{"temp": 21}<|im_end|>'
        + GEN
    )
    assert render(msgs, [WEATHER]) == expected


def _two_foreign_calls() -> list[dict]:
    # ids from another provider (call_*), results without a name: what an OpenAI-style client sends
    return [
        {"role": "user", "content": "Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking both.",
            "tool_calls": [
                call("call_a", "get_weather", '{"city": "Paris"}'),
                call("call_b", "get_weather", '{"city": "Rome"}'),
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_b", "content": "rain"},
    ]


def _two_calls_expected(first: str, second: str) -> str:
    return (
        SYS
        + "<|im_user|>user<|im_middle|>Paris and Rome?<|im_end|>"
        + "<|im_assistant|>assistant<|im_middle|><think></think>Checking both.<|tool_calls_section_begin|>"
        + f'<|tool_call_begin|>{first}<|tool_call_argument_begin|>{{"city": "Paris"}}<|tool_call_end|>'
        + f'<|tool_call_begin|>{second}<|tool_call_argument_begin|>{{"city": "Rome"}}<|tool_call_end|>'
        + "<|tool_calls_section_end|><|im_end|>"
        + f"<|im_system|>tool<|im_middle|>## Return of {first}\nsunny<|im_end|>"
        + f"<|im_system|>tool<|im_middle|>## Return of {second}\nrain<|im_end|>"
        + GEN
    )


def test_foreign_call_ids_are_verbatim_and_unnamed_results_are_headed_tool():
    # As the official template writes them (and vLLM / SGLang, which render it): the id as given,
    # and `message.name or role` in the header, so a nameless tool result is headed "tool".
    assert render(_two_foreign_calls()) == _two_calls_expected("call_a", "call_b")
    assert render(_two_foreign_calls(), call_ids="verbatim") == render(_two_foreign_calls())


def test_call_ids_kimi_rewrites_foreign_ids_conversation_wide_and_results_follow():
    msgs = _two_foreign_calls()
    assert render(msgs, call_ids="kimi") == _two_calls_expected("functions.get_weather:0", "functions.get_weather:1")
    # ids already in the model's shape are kept, and IDX counts every call of the conversation
    mixed = msgs[:2] + [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [call("functions.get_weather:7", "get_weather", "{}"), call("x", "f", "{}")],
        }
    ]
    text = render(mixed, call_ids="kimi")
    assert "<|tool_call_begin|>functions.get_weather:7<" in text and "<|tool_call_begin|>functions.f:3<" in text
    with pytest.raises(ChatTemplateError, match="call_ids must be 'verbatim' or 'kimi'"):
        render(msgs, call_ids="openai")


def test_a_named_tool_result_is_headed_by_its_name():
    msgs = _two_foreign_calls()
    msgs[2] = {**msgs[2], "name": "get_weather"}
    assert (
        "<|im_system|>get_weather<|im_middle|>## Return of call_a\nsunny<|im_end|><|im_system|>tool<|im_middle|>## Return of call_b"
        in render(msgs)
    )


def _tool_loop() -> list[dict]:
    return [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1", "reasoning_content": "r1"},
        {"role": "user", "content": "Q2"},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "r2",
            "tool_calls": [call("functions.f:0", "f", "{}")],
        },
        {"role": "tool", "tool_call_id": "functions.f:0", "content": "one"},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "r3",
            "tool_calls": [call("functions.f:1", "f", '{"n": 2}')],
        },
        {"role": "tool", "tool_call_id": "functions.f:1", "content": "two"},
    ]


def _loop_expected(r1: str, r2: str, r3: str) -> str:
    return (
        SYS
        + "<|im_user|>user<|im_middle|>Q1<|im_end|>"
        + f"<|im_assistant|>assistant<|im_middle|><think>{r1}</think>A1<|im_end|>"
        + "<|im_user|>user<|im_middle|>Q2<|im_end|>"
        + f"<|im_assistant|>assistant<|im_middle|><think>{r2}</think><|tool_calls_section_begin|>"
        + "<|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{}<|tool_call_end|><|tool_calls_section_end|><|im_end|>"
        + "<|im_system|>tool<|im_middle|>## Return of functions.f:0\none<|im_end|>"
        + f"<|im_assistant|>assistant<|im_middle|><think>{r3}</think><|tool_calls_section_begin|>"
        + '<|tool_call_begin|>functions.f:1<|tool_call_argument_begin|>{"n": 2}<|tool_call_end|><|tool_calls_section_end|><|im_end|>'
        + "<|im_system|>tool<|im_middle|>## Return of functions.f:1\ntwo<|im_end|>"
    )


def test_interleaved_thinking_kept_only_after_last_plain_answer():
    assert render(_tool_loop()) == _loop_expected("", "r2", "r3") + GEN


def test_thinking_off_empties_the_tool_loop_reasoning_too():
    assert render(_tool_loop(), thinking=False) == _loop_expected("", "", "") + GEN_OFF


def test_preserve_thinking_keeps_every_turn():
    assert render(_tool_loop(), preserve_thinking=True) == _loop_expected("r1", "r2", "r3") + GEN


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def test_image_placeholder_in_text_and_expanded_in_ids(tok):
    msgs = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, image_part(_png(56, 84))]}]
    text = render(msgs)
    assert text == (
        SYS + "<|im_user|>user<|im_middle|>What is this?"
        "<|media_begin|>image<|media_content|><|media_pad|><|media_end|><|im_end|>" + GEN
    )
    ids = encode_chat(tok, msgs)
    pad = tok.token_id("<|media_pad|>")
    # 56x84 pixels -> 2x3 merged 28-pixel tokens
    assert ids.count(pad) == 6
    start = ids.index(pad)
    assert ids[start - 1] == tok.token_id("<|media_content|>") and ids[start + 6] == tok.token_id("<|media_end|>")
    assert encode_chat(tok, msgs, image_tokens=[2]).count(pad) == 2
    with pytest.raises(ChatTemplateError, match="1 images"):
        encode_chat(tok, msgs, image_tokens=[2, 3])


def test_unicode_and_json_escaping_in_arguments_are_verbatim():
    raw = '{"q": "caf\\u00e9 \\"quoted\\" line\\nbreak", "emoji": "😀", "path": "C:\\\\tmp"}'
    msgs = [
        {"role": "user", "content": "naïve 你好 😀"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                call("functions.search:0", "search", raw),
                {
                    "id": "functions.search:1",
                    "type": "function",
                    "function": {"name": "search", "arguments": {"text": 'naïve "x"'}},
                },
            ],
        },
    ]
    expected = (
        SYS
        + "<|im_user|>user<|im_middle|>naïve 你好 😀<|im_end|>"
        + "<|im_assistant|>assistant<|im_middle|><think></think><|tool_calls_section_begin|>"
        + "<|tool_call_begin|>functions.search:0<|tool_call_argument_begin|>"
        + '{"q": "caf\\u00e9 \\"quoted\\" line\\nbreak", "emoji": "😀", "path": "C:\\\\tmp"}'
        + "<|tool_call_end|>"
        + "<|tool_call_begin|>functions.search:1<|tool_call_argument_begin|>"
        + '{"text": "naïve \\"x\\""}'
        + "<|tool_call_end|><|tool_calls_section_end|><|im_end|>"
        + GEN
    )
    assert render(msgs) == expected


SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the corpus.\n\nReturns hits.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "What to look for", "minLength": 1, "maxLength": 200},
                "limit": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10},
                "exact": {"type": "boolean", "default": False},
                "filters": {
                    "type": "object",
                    "description": "Narrow the search",
                    "properties": {
                        "lang": {"type": "string", "enum": ["en", "fr"]},
                        "year": {"type": ["integer", "null"]},
                    },
                    "required": ["lang"],
                },
                "tags": {
                    "type": "array",
                    "items": {"type": "string", "description": "A tag"},
                    "maxItems": 2,
                    "minItems": 1,
                },
                "ids": {"type": "array", "items": {"type": "integer"}},
                "mode": {"anyOf": [{"type": "string"}, {"type": "number"}]},
                "extra": {"type": "object"},
            },
            "required": ["query", "filters"],
            "additionalProperties": False,
        },
    },
}
NOW = {"type": "function", "function": {"name": "now", "description": "Current time."}}


def test_typescript_declaration_of_nested_schema():
    decl = (
        "# Tools\n\n## functions\nnamespace functions {\n"
        "// Search the corpus.\n"
        "\n"
        "// Returns hits.\n"
        "type search = (_: {\n"
        "  // Narrow the search\n"
        "  filters: {\n"
        '    lang: "en" | "fr",\n'
        "    year?: number | null\n"
        "  },\n"
        "  // What to look for\n"
        "  // maxLength: 200, minLength: 1\n"
        "  query: string,\n"
        "  // Default: False\n"
        "  exact?: boolean,\n"
        "  extra?: {},\n"
        "  ids?: Array<number>,\n"
        "  // maximum: 50, minimum: 1\n"
        "  // Default: 10\n"
        "  limit?: number,\n"
        "  mode?: string | number,\n"
        "  // maxItems: 2, minItems: 1\n"
        "  tags?: Array<\n"
        "    // A tag\n"
        "    string\n"
        "  >,\n"
        "  [k: string]: never\n"
        "}) => any;\n"
        "// Current time.\n"
        "type now = (_: {}) => any;\n"
        "}\n"
    )
    msgs = [{"role": "user", "content": "x"}]
    assert (
        render(msgs, [SEARCH, NOW])
        == "<|im_system|>tool_declare<|im_middle|>"
        + decl
        + "<|im_end|>"
        + SYS
        + "<|im_user|>user<|im_middle|>x<|im_end|>"
        + GEN
    )


def test_k2_json_declaration_chosen_from_config():
    with open(__import__("kimidoc").__path__[0] + "/data/kimi-k2.6-config.json") as f:
        assert declare_style_for(json.load(f)) == "typescript"
    style = declare_style_for({"model_type": "kimi_k2"})
    assert style == "json"
    text = render([{"role": "user", "content": "x"}], [NOW], declare_style=style)
    assert text.startswith(
        '<|im_system|>tool_declare<|im_middle|>[{"type":"function","function":{"name":"now","description":"Current time."}}]<|im_end|>'
        + SYS
    )


def test_encode_chat_matches_tokenizing_the_rendered_text(tok):
    msgs = _tool_loop() + [{"role": "user", "content": "  spaced\n\ntext  "}]
    ids = encode_chat(tok, msgs, [WEATHER])
    assert ids == tok.encode(render(msgs, [WEATHER]))
    assert tok.decode(ids) == render(msgs, [WEATHER])
    assert ids[-1] == tok.token_id("<think>")


def test_special_spellings_in_content_stay_ordinary_text(tok):
    msgs = [{"role": "user", "content": "a<|im_end|>b"}]
    ids = encode_chat(tok, msgs)
    end = tok.token_id("<|im_end|>")
    # the default system's end, then the user's end: the one inside the content is plain text
    assert ids.count(end) == 2
    assert tok.decode(ids) == render(msgs)


def test_bad_messages_name_the_message():
    with pytest.raises(ChatTemplateError, match=r"messages\[1\]"):
        render([{"role": "user", "content": "x"}, {"content": "no role"}])
    with pytest.raises(ChatTemplateError, match=r"messages\[0\] \(user\), part 0"):
        render([{"role": "user", "content": [{"type": "audio", "data": "..."}]}])


def test_typescript_declaration_with_defs_refs_and_map_types():
    from kimidoc.chat.tool_declare import typescript_declaration

    plan = {
        "type": "function",
        "function": {
            "name": "plan",
            "parameters": {
                "type": "object",
                "$defs": {
                    "Step": {
                        "type": "object",
                        "description": "One step",
                        "properties": {"title": {"type": "string"}},
                        "required": ["title"],
                    }
                },
                "properties": {
                    "steps": {"type": "array", "items": {"$ref": "#/$defs/Step"}},
                    "meta": {"type": "object", "additionalProperties": {"type": "integer"}},
                },
                "required": ["steps"],
            },
        },
    }
    assert typescript_declaration([plan]) == (
        "# Tools\n\n## functions\nnamespace functions {\n"
        "// One step\n"
        "interface Step {\n"
        "  title: string\n"
        "}\n"
        "type plan = (_: {\n"
        "  steps: Array<Step>,\n"
        "  meta?: {\n"
        "    [k: string]: number\n"
        "  }\n"
        "}) => any;\n"
        "}\n"
    )
