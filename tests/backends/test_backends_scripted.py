"""Scripted: replay, simulated time and usage, and 300 concurrent calls through one instance."""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from kimidoc.backends.base import Backend
from kimidoc.backends.scripted import Scripted, ScriptExhausted
from kimidoc.messages import AssistantMessage, ToolCall, Usage, accumulate


def user(text):
    return [{"role": "user", "content": text}]


def test_replays_in_order_then_says_it_is_exhausted():
    b = Scripted(["one", {"role": "assistant", "content": "two"}])
    assert isinstance(b, Backend)
    assert [b.complete(user("a")).content, b.complete(user("b")).content] == ["one", "two"]
    with pytest.raises(ScriptExhausted, match="only 2 turns"):
        b.complete(user("c"))
    assert [c[0]["content"] for c in b.calls] == ["a", "b", "c"]


def test_stream_pieces_fold_back_and_usage_is_simulated():
    turn = AssistantMessage(
        content="The answer is 42.", reasoning="Think first.", tool_calls=[ToolCall("c1", "f", '{"x": [1, 2, 3]}')]
    )
    b = Scripted([turn, turn], chunk=3)
    deltas = list(b.stream(user("q")))
    assert len([d for d in deltas if d.tool_calls and d.tool_calls[0].arguments]) > 1
    folded = accumulate(deltas)
    assert (folded.content, folded.reasoning, folded.tool_calls) == (turn.content, turn.reasoning, turn.tool_calls)
    assert folded.finish_reason == "tool_calls"
    assert folded.usage.prompt_tokens > 0 and folded.usage.completion_tokens >= folded.usage.reasoning_tokens > 0
    assert turn.usage == Usage(), "the caller's turn object is not modified"
    given = AssistantMessage(content="x", usage=Usage(100, 20, 5))
    assert Scripted([given]).complete(user("q")).usage == Usage(100, 20, 5)


def test_simulated_decode_time_is_spent_between_pieces():
    b = Scripted(["x" * 40], tokens_per_second=100.0, chunk=4)
    stamps = [time.perf_counter() for _ in b.stream(user("q"))]
    # 40 bytes ~ 14 tokens at 100 tokens/s: the pieces are spread over ~0.14 s, not delivered at once.
    assert stamps[-1] - stamps[0] >= 0.1


async def test_300_concurrent_async_calls_cost_no_threads():
    b = Scripted(lambda messages, tools: f"reply to {messages[-1]['content']}", latency=0.2)
    start = time.perf_counter()
    results = await asyncio.gather(*(b.acomplete(user(f"agent {i}")) for i in range(300)))
    elapsed = time.perf_counter() - start
    assert [r.content for r in results] == [f"reply to agent {i}" for i in range(300)]
    # Sequential (or thread-pool bound) execution would take 300 * 0.2 s = 60 s.
    assert elapsed < 30
    streamed = await asyncio.gather(*(_fold(b.astream(user(f"s{i}"))) for i in range(50)))
    assert [m.content for m in streamed] == [f"reply to s{i}" for i in range(50)]


async def _fold(agen):
    return accumulate([d async for d in agen])


def test_300_concurrent_threads_keep_script_order_consistent():
    b = Scripted([f"turn {i}" for i in range(300)])
    with ThreadPoolExecutor(max_workers=32) as pool:
        got = list(pool.map(lambda i: b.complete(user(str(i))).content, range(300)))
    assert sorted(got, key=lambda s: int(s.split()[1])) == [f"turn {i}" for i in range(300)]
    assert len(set(got)) == 300, "no turn was handed out twice"
