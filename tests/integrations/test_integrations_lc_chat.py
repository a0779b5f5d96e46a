"""ChatKimi over the Scripted backend: what reaches the backend and what comes back to LangChain."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402
from langchain_core.tools import tool as lc_tool  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from kimidoc.backends.scripted import Scripted  # noqa: E402
from kimidoc.integrations.langchain import ChatKimi  # noqa: E402
from kimidoc.messages import AssistantMessage, Delta, InvalidToolCall, Message, ToolCall, ToolSchema, Usage  # noqa: E402
from kimidoc.tools.base import tool as kimi_tool  # noqa: E402

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYPj/HwADAgH/pW0E1wAAAABJRU5ErkJggg=="
)


class Recording(Scripted):
    """Scripted, also remembering the tools and sampling keywords of every request."""

    def __init__(self, turns: Any, **kw: Any) -> None:
        super().__init__(turns, **kw)
        self.requests: list[tuple[list[ToolSchema] | None, dict[str, Any]]] = []

    def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None, **sampling: Any
    ) -> Iterator[Delta]:
        self.requests.append((list(tools) if tools else None, sampling))
        return super().stream(messages, tools, **sampling)


TOOL_TURN = AssistantMessage(
    content="Checking.",
    reasoning="I should add the numbers.",
    tool_calls=[ToolCall("c1", "add", '{"a":2, "b":40}'), ToolCall("c2", "add", '["a", 1]')],
    invalid_tool_calls=[InvalidToolCall(raw="<|tool_call_begin|>oops", error="no tool name", id="c3")],
    finish_reason="tool_calls",
    usage=Usage(prompt_tokens=30, completion_tokens=20, reasoning_tokens=8),
)


def _check_tool_turn(msg: AIMessage) -> None:
    assert msg.content == "Checking."
    assert msg.additional_kwargs["reasoning_content"] == "I should add the numbers."
    assert msg.tool_calls == [{"name": "add", "args": {"a": 2, "b": 40}, "id": "c1", "type": "tool_call"}]
    assert [(c["id"], c["args"]) for c in msg.invalid_tool_calls] == [
        ("c2", '["a", 1]'),
        ("c3", "<|tool_call_begin|>oops"),
    ]
    assert msg.usage_metadata == {
        "input_tokens": 30,
        "output_tokens": 20,
        "total_tokens": 50,
        "output_token_details": {"reasoning": 8},
    }
    assert msg.response_metadata["finish_reason"] == "tool_calls"


def test_invoke_returns_calls_invalid_calls_reasoning_and_usage():
    _check_tool_turn(ChatKimi(backend=Scripted([TOOL_TURN])).invoke("add 2 and 40"))


def test_stream_sends_tool_call_chunks_and_merges_to_the_invoke_result():
    chunks = list(ChatKimi(backend=Scripted([TOOL_TURN], chunk=3)).stream("add 2 and 40"))
    pieces = [c for chunk in chunks for c in chunk.tool_call_chunks if c["index"] == 0]
    assert len(pieces) > 3 and "".join(p["args"] for p in pieces) == '{"a":2, "b":40}'
    assert sum(1 for c in chunks if c.usage_metadata) == 1  # usage counted once
    assert [c.chunk_position for c in chunks].count("last") == 1 and chunks[-1].chunk_position == "last"
    full = chunks[0]
    for c in chunks[1:]:
        full = full + c
    _check_tool_turn(full)
    # the raw argument text survives streaming, as it does invoke
    assert full.additional_kwargs["tool_calls"][0]["function"]["arguments"] == '{"a":2, "b":40}'


async def test_async_forms_match_the_sync_ones():
    model = ChatKimi(backend=Scripted(lambda msgs, tools: f"echo: {msgs[-1]['content']}"))
    assert (await model.ainvoke("one")).content == "echo: one"
    assert [m.content for m in await model.abatch(["a", "b"])] == ["echo: a", "echo: b"]
    text = "".join([c.content async for c in model.astream("stream me please")])
    assert text == "echo: stream me please"
    assert [m.content for m in model.batch(["x", "y"])] == ["echo: x", "echo: y"]


class Weather(BaseModel):
    """Weather in a city."""

    city: str = Field(description="city name")


def test_bind_tools_accepts_every_tool_form_and_maps_tool_choice():
    @lc_tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    def mul(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    @kimi_tool
    def grep(pattern: str) -> str:
        """Search the documents."""
        return pattern

    openai_dict = {
        "type": "function",
        "function": {"name": "noop", "description": "Nothing.", "parameters": {"type": "object", "properties": {}}},
    }
    backend = Recording(["ok"] * 6)
    model = ChatKimi(backend=backend)
    tools = [add, mul, Weather, openai_dict, grep]
    expected = {
        None: None,
        "auto": "auto",
        "any": "required",
        True: "required",
        "grep": {"type": "function", "function": {"name": "grep"}},
    }
    for choice, sent in expected.items():
        model.bind_tools(tools, tool_choice=choice).invoke("hi")
        sent_tools, sampling = backend.requests[-1]
        assert [t["function"]["name"] for t in sent_tools] == ["add", "mul", "Weather", "noop", "grep"]
        assert sampling.get("tool_choice") == sent
    assert sent_tools[0]["function"]["parameters"]["required"] == ["a", "b"]
    assert sent_tools[4] == grep.schema()
    with pytest.raises(ValueError, match="tool_choice 'nope' names no bound tool"):
        model.bind_tools(tools, tool_choice="nope")


def test_sampling_and_stop_sequences_reach_the_backend():
    backend = Recording(["ok"] * 4)
    model = ChatKimi(
        backend=backend, temperature=0.6, max_tokens=64, stop=["\nUser:"], thinking=False, model_kwargs={"top_k": 5}
    )
    model.invoke("hi")
    assert backend.requests[-1][1] == {
        "temperature": 0.6,
        "max_tokens": 64,
        "thinking": False,
        "top_k": 5,
        "stop": ["\nUser:"],
    }
    model.invoke("hi", stop=["END"], temperature=0.0)
    assert backend.requests[-1][1]["stop"] == ["END"] and backend.requests[-1][1]["temperature"] == 0.0
    ChatKimi(backend=backend, stop=[]).invoke("hi")
    assert "stop" not in backend.requests[-1][1]
    params = model._get_ls_params(stop=["END"])
    assert params["ls_provider"] == "kimidoc" and params["ls_stop"] == ["END"] and params["ls_max_tokens"] == 64


def test_image_blocks_reach_the_backend_as_image_parts():
    backend = Scripted(["a chart"])
    b64 = base64.b64encode(PNG).decode()
    ChatKimi(backend=backend).invoke(
        [
            HumanMessage(
                [{"type": "text", "text": "what is this?"}, {"type": "image", "base64": b64, "mime_type": "image/png"}]
            )
        ]
    )
    (sent,) = backend.calls[0]
    assert sent["content"][1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}}


def test_reasoning_is_sent_back_on_the_next_turn():
    backend = Scripted(
        [AssistantMessage(content="", reasoning="Need the tool.", tool_calls=[ToolCall("c1", "add", '{"a":1}')]), "2"]
    )
    model = ChatKimi(backend=backend)
    first = model.invoke("q")
    model.invoke([HumanMessage("q"), first, ToolMessage("2", tool_call_id="c1")])
    replayed = backend.calls[1][1]
    assert (
        replayed["reasoning_content"] == "Need the tool."
        and replayed["tool_calls"][0]["function"]["arguments"] == '{"a":1}'
    )


def test_structured_output_by_function_calling_json_schema_and_json_mode():
    def answer(msgs: Sequence[Message], tools: Sequence[ToolSchema] | None) -> AssistantMessage:
        if tools:
            return AssistantMessage(tool_calls=[ToolCall("s1", tools[0]["function"]["name"], '{"city": "Oslo"}')])
        return AssistantMessage(content='```json\n{"city": "Lima"}\n```')

    backend = Recording(answer)
    model = ChatKimi(backend=backend)
    assert model.with_structured_output(Weather).invoke("weather?") == Weather(city="Oslo")
    assert backend.requests[-1][1]["tool_choice"] == "required"
    raw = model.with_structured_output(Weather.model_json_schema(), include_raw=True).invoke("weather?")
    assert raw["parsed"] == {"city": "Oslo"} and raw["parsing_error"] is None and raw["raw"].tool_calls

    assert model.with_structured_output(Weather, method="json_schema", strict=True).invoke("weather?") == Weather(
        city="Lima"
    )
    fmt = backend.requests[-1][1]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["properties"]["city"]["type"] == "string"
    assert model.with_structured_output(Weather, method="json_mode").invoke("weather?") == Weather(city="Lima")
    assert backend.requests[-1][1]["response_format"] == {"type": "json_object"}
    with pytest.raises(ValueError, match="method must be"):
        model.with_structured_output(Weather, method="xml")


def test_structured_output_parsing_error_is_returned_with_include_raw():
    model = ChatKimi(backend=Scripted(["not json at all"]))
    out = model.with_structured_output(Weather, method="json_mode", include_raw=True).invoke("weather?")
    assert out["parsed"] is None and out["parsing_error"] is not None and out["raw"].content == "not json at all"


def test_streaming_flag_makes_invoke_stream():
    backend = Recording(["streamed answer"])
    tokens: list[str] = []

    from langchain_core.callbacks import BaseCallbackHandler

    class Collect(BaseCallbackHandler):
        def on_llm_new_token(self, token: str, **kw: Any) -> None:
            tokens.append(token)

    msg = ChatKimi(backend=backend, streaming=True).invoke("hi", config={"callbacks": [Collect()]})
    assert msg.content == "streamed answer" and len(tokens) > 1 and "".join(tokens) == "streamed answer"
    assert msg.usage_metadata["output_tokens"] > 0


def test_stream_chunks_use_standard_content_blocks_in_v1_output():
    turn = AssistantMessage(content="Sure.", reasoning="think", tool_calls=[ToolCall("c1", "add", '{"a": 1}')])
    full = None
    for c in ChatKimi(backend=Scripted([turn]), output_version="v1").stream("hi"):
        full = c if full is None else full + c
    assert [b["type"] for b in full.content] == ["reasoning", "text", "tool_call"]
    assert full.content[2]["args"] == {"a": 1}


def test_backend_must_be_a_kimidoc_backend():
    with pytest.raises(TypeError, match="must implement kimidoc.backends.base.Backend"):
        ChatKimi(backend=object())


def test_model_name_comes_from_the_backend_unless_given():
    assert ChatKimi(backend=Scripted(["x"])).invoke("hi").response_metadata["model_name"] == "scripted"
    assert (
        ChatKimi(backend=Scripted(["x"]), model="kimi-k2.6").invoke("hi").response_metadata["model_name"] == "kimi-k2.6"
    )
    assert json.loads(json.dumps(ChatKimi(backend=Scripted(["x"]))._identifying_params))["backend"] == "scripted"


def test_without_a_backend_kimidoc_connects_one(monkeypatch):
    for var in ("KIMIDOC_ENDPOINT", "KIMIDOC_MODEL", "MOONSHOT_API_KEY", "OPENROUTER_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    remote = ChatKimi(endpoint="http://127.0.0.1:9/v1", model="kimi-k2.6", api_key="k", timeout=5, max_retries=0)
    assert remote.backend.name == "openai-compatible" and remote.backend.base_url == "http://127.0.0.1:9/v1"
    assert remote.backend.retry.max_retries == 0 and remote.model_name == "kimi-k2.6"
    monkeypatch.setenv("KIMIDOC_ENDPOINT", "http://127.0.0.1:9/v1")
    assert ChatKimi(model="served-name").backend.model == "served-name"
    monkeypatch.delenv("KIMIDOC_ENDPOINT")
    with pytest.raises(ValueError, match="no endpoint is set"):
        ChatKimi(model="served-name")
