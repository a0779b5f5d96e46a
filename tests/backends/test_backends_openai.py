"""OpenAICompatible against a local fault-injecting server: protocol details, retries, timeouts."""

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from kimidoc.backends.base import Backend, BackendError
from kimidoc.backends.openai.client import OpenAICompatible, pick_model
from kimidoc.backends.openai.providers import api_key_for
from kimidoc.backends.openai.retry import RetryPolicy, parse_retry_after
from kimidoc.messages import accumulate, image_part

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up.",
            "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
        },
    }
]


def backend(server, **kw):
    kw.setdefault("backoff", 0.01)
    kw.setdefault("timeout", 5)
    return OpenAICompatible(server.url, model=kw.pop("model", "fake"), api_key=kw.pop("api_key", "sk-test"), **kw)


def user(text):
    return [{"role": "user", "content": text}]


def test_complete_and_stream_agree(fault_server):
    b = backend(fault_server)
    assert isinstance(b, Backend)
    msg = b.complete(user("hello there"), temperature=0.2, max_tokens=5, stop=["\n"])
    assert msg.content == "echo: hello there" and msg.finish_reason == "stop"
    assert (msg.usage.prompt_tokens, msg.usage.completion_tokens) == (11, 7)
    streamed = list(b.stream(user("hello there")))
    assert len(streamed) > 3, "content must arrive in pieces"
    assert all(d.finish_reason is None and d.usage is None for d in streamed[:-1])
    folded = accumulate(streamed)
    assert folded.content == msg.content and folded.usage == msg.usage
    sent = fault_server.requests[0]
    assert (sent["model"], sent["temperature"], sent["max_tokens"], sent["stop"]) == ("fake", 0.2, 5, ["\n"])
    assert "stream" not in sent
    assert fault_server.requests[1]["stream"] is True and fault_server.requests[1]["stream_options"] == {
        "include_usage": True
    }
    assert fault_server.headers[0]["authorization"] == "Bearer sk-test"


def test_tool_calls_split_across_chunks(fault_server):
    b = backend(fault_server)
    args = '{"word": "caf\\u00e9 \\"quoted\\""}'
    msg = b.complete(user(f"call lookup {args}"), TOOLS, tool_choice="auto")
    assert msg.finish_reason == "tool_calls" and [c.name for c in msg.tool_calls] == ["lookup"]
    assert msg.tool_calls[0].arguments == args, "arguments are kept byte for byte"
    deltas = list(
        b.stream(user(f"call lookup {args}"), TOOLS, tool_choice={"type": "function", "function": {"name": "lookup"}})
    )
    pieces = [tc.arguments for d in deltas for tc in d.tool_calls if tc.arguments]
    assert len(pieces) > 3
    folded = accumulate(deltas)
    assert folded.tool_calls[0].parsed_arguments() == {"word": 'café "quoted"'} and folded.finish_reason == "tool_calls"
    assert fault_server.requests[0]["tool_choice"] == "auto" and fault_server.requests[0]["tools"] == TOOLS
    assert fault_server.requests[1]["tool_choice"]["function"]["name"] == "lookup"


def test_bad_tool_arguments_are_set_aside_not_raised(fault_server):
    msg = backend(fault_server).complete(user("call lookup {not json"), TOOLS)
    assert msg.tool_calls == [] and msg.finish_reason == "stop"
    assert msg.invalid_tool_calls[0].name == "lookup" and msg.invalid_tool_calls[0].raw == "{not json"


def test_reasoning_content_and_openrouter_reasoning(fault_server):
    b = backend(fault_server)
    fault_server.queue(("content", "Answer.", "Let me think."))
    msg = b.complete(user("q"))
    assert (msg.reasoning, msg.content, msg.usage.reasoning_tokens) == (
        "Let me think.",
        "Answer.",
        len("Let me think."),
    )
    fault_server.queue(("content", "Answer.", "Let me think."))
    folded = accumulate(b.stream(user("q")))
    assert (folded.reasoning, folded.content) == ("Let me think.", "Answer.")
    # OpenRouter spells it "reasoning"; a server sending both must not double it.
    events = [
        {"choices": [{"index": 0, "delta": {"reasoning": "abc"}}]},
        {"choices": [{"index": 0, "delta": {"reasoning": "def", "reasoning_content": "def"}}]},
        {"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]},
    ]
    fault_server.queue(("raw_stream", ["".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"]))
    folded = accumulate(b.stream(user("q")))
    assert (folded.reasoning, folded.content) == ("abcdef", "ok")
    assert folded.usage.completion_tokens > 0, "usage is estimated when a server sends none"


def test_thinking_switch_per_provider(fault_server):
    backend(fault_server).complete(user("a"), thinking=False)
    assert fault_server.requests[-1]["chat_template_kwargs"] == {"thinking": False}
    backend(fault_server, thinking_style="moonshot").complete(user("a"), thinking=True)
    assert fault_server.requests[-1]["thinking"] == {"type": "enabled"}
    backend(fault_server, thinking_style="openrouter").complete(user("a"), thinking=False)
    assert fault_server.requests[-1]["reasoning"] == {"enabled": False}
    backend(fault_server).complete(user("a"))
    assert not {"thinking", "reasoning", "chat_template_kwargs"} & set(fault_server.requests[-1])


def test_images_travel_as_data_urls(fault_server):
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    msgs = [{"role": "user", "content": [{"type": "text", "text": "what is this"}, image_part(png)]}]
    assert backend(fault_server).complete(msgs).content == "echo: what is this"
    part = fault_server.requests[0]["messages"][0]["content"][1]
    assert part == image_part(png)


def test_429_then_success_honours_retry_after(fault_server):
    fault_server.queue(("status", 429, {"Retry-After": "0"}), ("status", 503))
    msg = backend(fault_server).complete(user("after limits"))
    assert msg.content == "echo: after limits" and len(fault_server.requests) == 3
    fault_server.queue(("status", 429, {"Retry-After": "0"}))
    assert accumulate(backend(fault_server).stream(user("s"))).content == "echo: s"


def test_persistent_503_reports_after_retries(fault_server):
    fault_server.queue(*[("status", 503)] * 3)
    with pytest.raises(BackendError, match=r"HTTP 503.*injected 503") as err:
        backend(fault_server, max_retries=2).complete(user("x"))
    assert err.value.status == 503 and len(fault_server.requests) == 3


def test_client_errors_fail_at_once(fault_server):
    fault_server.queue(("status", 401))
    with pytest.raises(BackendError, match="check the API key"):
        backend(fault_server).complete(user("x"))
    assert len(fault_server.requests) == 1


def test_hang_times_out_then_retries(fault_server, scaled):
    # The timeout must outlast a normal local reply (which a loaded machine slows) and the hang
    # must outlast the timeout, so both scale together.
    timeout = scaled(0.3)
    fault_server.queue(("hang", 4 * timeout))
    msg = backend(fault_server, timeout=timeout).complete(user("after hang"))
    assert msg.content == "echo: after hang"
    fault_server.queue(("hang", 4 * timeout), ("hang", 4 * timeout))
    with pytest.raises(BackendError, match="timed out"):
        list(backend(fault_server, timeout=timeout, max_retries=1).stream(user("x")))


def test_broken_stream_after_output_is_reported_not_repeated(fault_server):
    fault_server.queue(("drop_mid_stream",))
    got = []
    with pytest.raises(BackendError, match="middle of a stream"):
        for d in backend(fault_server).stream(user("x")):
            got.append(d.content)
    assert got == ["partial"] and len(fault_server.requests) == 1


def test_raw_kimi_markup_in_content_is_parsed(fault_server):
    raw = 'Let me look.<|tool_calls_section_begin|><|tool_call_begin|>functions.lookup:0<|tool_call_argument_begin|>{"word": "moon"}<|tool_call_end|><|tool_calls_section_end|>'
    fault_server.queue(("content", raw))
    msg = backend(fault_server).complete(user("x"), TOOLS)
    assert msg.content == "Let me look." and msg.tool_calls[0].name == "lookup" and msg.finish_reason == "tool_calls"
    # Streamed, with the markers cut into pieces.
    pieces = [raw[i : i + 5] for i in range(0, len(raw), 5)]
    events = "".join(f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': p}}]})}\n\n" for p in pieces)
    fault_server.queue(("raw_stream", [events, "data: [DONE]\n\n"]))
    deltas = list(backend(fault_server).stream(user("x"), TOOLS))
    assert not any("<|" in d.content for d in deltas)
    folded = accumulate(deltas)
    assert (
        folded.content == "Let me look."
        and folded.tool_calls[0].parsed_arguments() == {"word": "moon"}
        and folded.finish_reason == "tool_calls"
    )


def test_plain_text_with_angle_brackets_is_untouched(fault_server):
    text = "a <b> and x<y and <|weird"
    fault_server.queue(("content", text), ("content", text))
    b = backend(fault_server)
    assert b.complete(user("x")).content == text
    assert accumulate(b.stream(user("x"))).content == text


def test_model_discovery_and_window(fault_server):
    b = OpenAICompatible(fault_server.url, backoff=0.01)
    assert b.complete(user("m")).content == "echo: m"
    assert b.model == "fake-kimi-k2.6" and b.context_window == 32768
    assert fault_server.requests[0]["model"] == "fake-kimi-k2.6"
    assert pick_model({"data": [{"id": "gpt-x"}, {"id": "moonshotai/kimi-k2.6", "context_length": 262144}]}, "u") == (
        "moonshotai/kimi-k2.6",
        262144,
    )
    with pytest.raises(BackendError, match="none is Kimi"):
        pick_model({"data": [{"id": "a"}, {"id": "b"}]}, "u")


def test_api_keys_from_environment(monkeypatch):
    for var in ("KIMIDOC_API_KEY", "MOONSHOT_API_KEY", "OPENROUTER_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MOONSHOT_API_KEY", "moon")
    monkeypatch.setenv("OPENAI_API_KEY", "oai")
    assert api_key_for("https://api.moonshot.ai/v1") == "moon"
    assert api_key_for("https://openrouter.ai/api/v1") is None, "a provider never gets another provider's key"
    assert api_key_for("http://gpu-node:8000/v1") == "oai"
    monkeypatch.setenv("KIMIDOC_API_KEY", "kd")
    assert api_key_for("https://openrouter.ai/api/v1") == "kd"
    assert api_key_for("http://x/v1", "explicit") == "explicit"


def test_retry_policy():
    p = RetryPolicy(max_retries=3, backoff=1.0, max_backoff=4.0)
    assert p.should_retry(0, status=429) and p.should_retry(2, status=502) and not p.should_retry(3, status=503)
    assert not p.should_retry(0, status=400)
    for attempt in range(6):
        base = min(2**attempt, 4.0)
        assert base / 2 <= p.delay(attempt) <= base
    assert p.delay(0, "2.5") == 2.5 and p.delay(0, "999") == 4.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0 and parse_retry_after("soon") is None


def test_300_concurrent_threads_no_mixups(fault_server):
    b = backend(fault_server, max_concurrency=32)
    with ThreadPoolExecutor(max_workers=100) as pool:
        results = list(pool.map(lambda i: b.complete(user(f"question {i}")).content, range(300)))
    assert results == [f"echo: question {i}" for i in range(300)]
    assert fault_server.max_in_flight <= 32
    b.close()


async def test_300_concurrent_tasks_no_mixups(fault_server):
    b = backend(fault_server, max_concurrency=48)

    async def one(i):
        if i % 3 == 0:
            deltas = [d async for d in b.astream(user(f"task {i}"))]
            return accumulate(deltas).content
        return (await b.acomplete(user(f"task {i}"))).content

    fault_server.queue(*[("status", 429, {"Retry-After": "0"})] * 20)
    results = await asyncio.gather(*(one(i) for i in range(300)))
    assert list(results) == [f"echo: task {i}" for i in range(300)]
    assert fault_server.max_in_flight <= 48
    await b.aclose()


def test_sse_decoder_follows_the_spec():
    from kimidoc.backends.openai.sse import DONE, SSEDecoder

    d = SSEDecoder()
    lines = [": keep-alive", "event: message", 'data: {"a":', "data: 1}", "", "data:[DONE]", ""]
    assert [p for p in map(d.feed, lines) if p is not None] == [{"a": 1}, DONE]
    d.feed('data: {"last": true}')
    assert d.flush() == {"last": True}, "a final event without its blank line is not lost"
    with pytest.raises(ValueError, match="not JSON"):
        d.feed("data: <html>")
        d.feed("")


def test_error_event_inside_a_stream_is_raised(fault_server):
    fault_server.queue(("raw_stream", ['data: {"error": {"message": "context length exceeded", "code": 400}}\n\n']))
    with pytest.raises(BackendError, match="context length exceeded"):
        list(backend(fault_server).stream(user("x")))
