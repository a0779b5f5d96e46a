"""The tool loop: multi-step, concurrent calls, malformed calls, events, long outputs, retries."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from kimidoc.agents import Agent, Event, read_trace
from kimidoc.backends.scripted import Scripted
from kimidoc.messages import AssistantMessage, InvalidToolCall, ToolCall, Usage, image_bytes
from kimidoc.tools.base import ToolResult, tool


def last_tool_text(messages: list[dict[str, Any]]) -> str:
    return next(m["content"] for m in reversed(messages) if m["role"] == "tool")


def test_agents_multi_step_loop_feeds_results_back(tmp_path: Path) -> None:
    @tool
    def double(x: int) -> int:
        """Double a number."""
        return 2 * x

    def turn(messages, tools):
        n = sum(m["role"] == "assistant" for m in messages)
        if n == 0:
            assert [t["function"]["name"] for t in tools] == ["double", "read_output"]
            return AssistantMessage(tool_calls=[ToolCall("c0", "double", '{"x": 3}')])
        if n < 3:  # each step uses the previous result: the loop must have fed it back
            return AssistantMessage(
                tool_calls=[ToolCall(f"c{n}", "double", json.dumps({"x": int(last_tool_text(messages))}))]
            )
        return f"result {last_tool_text(messages)}"

    backend = Scripted(turn)
    agent = Agent(backend, tools=[double], trace_path=tmp_path / "run.jsonl")
    result = agent.run("double 3 three times")
    assert (result.answer, result.stop_reason, result.steps, result.tool_calls) == ("result 24", "answer", 4, 3)
    assert [m["role"] for m in agent.messages] == ["system", "user"] + ["assistant", "tool"] * 3 + ["assistant"]
    assert [m["content"] for m in agent.messages if m["role"] == "tool"] == ["6", "12", "24"]
    assert agent.messages[3] == {"role": "tool", "tool_call_id": "c0", "name": "double", "content": "6"}
    kinds = [e["type"] for e in read_trace(tmp_path / "run.jsonl")]
    assert kinds == ["header"] + ["assistant", "tool_start", "tool_result"] * 3 + ["assistant", "stop"]
    assert result.usage.prompt_tokens > 0 and result.critical_steps == 4


def test_agents_parallel_async_calls_run_concurrently(scaled) -> None:
    arrived = {"a": asyncio.Event(), "b": asyncio.Event()}

    @tool
    async def meet(me: str, other: str) -> str:
        """Wait for the other call: finishes only if both run at the same time."""
        arrived[me].set()
        await asyncio.wait_for(arrived[other].wait(), timeout=scaled(10))
        return f"{me} met {other}"

    backend = Scripted(
        [
            AssistantMessage(
                tool_calls=[
                    ToolCall("1", "meet", '{"me": "a", "other": "b"}'),
                    ToolCall("2", "meet", '{"me": "b", "other": "a"}'),
                ]
            ),
            "done",
        ]
    )
    agent = Agent(backend, tools=[meet])
    result = agent.run("meet")
    assert result.answer == "done"
    assert [m["content"] for m in agent.messages if m["role"] == "tool"] == ["a met b", "b met a"]


def test_agents_parallel_sync_calls_run_concurrently_and_keep_call_order(scaled) -> None:
    barrier = threading.Barrier(3, timeout=scaled(10))

    @tool
    def wait(n: int) -> str:
        """Block until all three calls are running."""
        barrier.wait()
        return f"n={n}"

    calls = [ToolCall(str(i), "wait", json.dumps({"n": i})) for i in range(3)]
    agent = Agent(Scripted([AssistantMessage(tool_calls=calls), "ok"]), tools=[wait])
    assert agent.run("wait").answer == "ok"
    tool_msgs = [m for m in agent.messages if m["role"] == "tool"]
    assert [(m["tool_call_id"], m["content"]) for m in tool_msgs] == [("0", "n=0"), ("1", "n=1"), ("2", "n=2")]


def test_agents_malformed_and_unknown_calls_get_error_results_and_the_model_recovers(tmp_path: Path) -> None:
    @tool
    def lookup(key: str) -> str:
        """Look a key up."""
        return {"alpha": "1", "beta": "2"}[key]

    seen_errors: list[str] = []

    def turn(messages, tools):
        n = sum(m["role"] == "assistant" for m in messages)
        if n == 0:
            return AssistantMessage(
                tool_calls=[
                    ToolCall("bad-json", "lookup", '{"key": "alpha"'),
                    ToolCall("unknown", "search", '{"q": "x"}'),
                    ToolCall("bad-schema", "lookup", '{"name": "alpha"}'),
                    ToolCall("not-object", "lookup", '["alpha"]'),
                    ToolCall("raises", "lookup", '{"key": "gamma"}'),
                ],
                invalid_tool_calls=[
                    InvalidToolCall(
                        raw="<|tool_call_begin|>functions.lookup", error="no arguments section", name="lookup"
                    )
                ],
            )
        if n == 1:
            seen_errors.extend(m["content"] for m in messages if m["role"] in ("tool", "user"))
            return AssistantMessage(tool_calls=[ToolCall("good", "lookup", '{"key": "beta"}')])
        return f"beta is {last_tool_text(messages)}"

    agent = Agent(Scripted(turn), tools=[lookup], trace_path=tmp_path / "run.jsonl")
    result = agent.run("look up beta")
    assert result.answer == "beta is 2" and result.stop_reason == "answer"
    errors = seen_errors[1:]  # the first is the task
    assert "not valid JSON" in errors[0]
    assert "no tool named 'search'" in errors[1] and "lookup" in errors[1]
    assert "missing required argument 'key'" in errors[2]
    assert "must be a JSON object" in errors[3]
    assert "KeyError" in errors[4]
    assert "could not be read" in errors[5] and "no arguments section" in errors[5]
    results = [e for e in read_trace(tmp_path / "run.jsonl") if e["type"] == "tool_result"]
    assert [e["is_error"] for e in results] == [True] * 5 + [False]
    # Tool results answer calls in order and the feedback follows them, as the chat format needs.
    roles = [m["role"] for m in agent.messages]
    assert roles[2:10] == ["assistant"] + ["tool"] * 5 + ["user", "assistant"]


def test_agents_events_stream_thinking_content_calls_and_results() -> None:
    @tool
    def echo(text: str) -> str:
        """Echo."""
        return text

    backend = Scripted(
        [
            AssistantMessage(
                reasoning="I should echo first.",
                content="Echoing.",
                tool_calls=[ToolCall("e1", "echo", '{"text": "hello"}')],
            ),
            AssistantMessage(reasoning="Now answer.", content="The echo said hello, twice over."),
        ],
        chunk=3,
    )
    events: list[Event] = []
    result = Agent(backend, tools=[echo], on_event=events.append).run("echo hello")
    assert result.answer == "The echo said hello, twice over."
    kinds = [e.type for e in events]
    assert kinds[0] == "start" and kinds[-1] == "stop"
    thinking = "".join(e.data["text"] for e in events if e.type == "thinking")
    content = "".join(e.data["text"] for e in events if e.type == "content")
    assert thinking == "I should echo first.Now answer."
    assert content == "Echoing.The echo said hello, twice over."
    assert sum(e.type == "content" for e in events) > 2  # streamed in pieces, not at the end
    call = next(e for e in events if e.type == "tool_call")
    done = next(e for e in events if e.type == "tool_result")
    assert (call.data["name"], call.data["arguments"], done.data["preview"]) == ("echo", '{"text": "hello"}', "hello")
    assert kinds.index("tool_call") < kinds.index("tool_result") < len(kinds) - 1
    assert {e.step for e in events if e.type == "tool_result"} == {1}


def test_agents_broken_event_callback_does_not_stop_the_run() -> None:
    def explode(event: Event) -> None:
        raise RuntimeError("display crashed")

    with pytest.warns(UserWarning, match="display crashed"):
        result = Agent(Scripted(["fine"]), on_event=explode).run("x")
    assert result.answer == "fine"


def test_agents_large_output_is_stored_out_of_line_and_read_back(tmp_path: Path) -> None:
    big = "".join(f"line {i:05d}\n" for i in range(5000))  # 55,000 characters

    @tool
    def dump() -> str:
        """Produce a long output."""
        return big

    def turn(messages, tools):
        n = sum(m["role"] == "assistant" for m in messages)
        if n == 0:
            return AssistantMessage(tool_calls=[ToolCall("d", "dump", "{}")])
        if n == 1:
            ref = re.search(r'"(sha256:[0-9a-f]{64})"', messages[-1]["content"]).group(1)
            return AssistantMessage(
                tool_calls=[ToolCall("r", "read_output", json.dumps({"ref": ref, "offset": 33000, "length": 22}))]
            )
        return "read " + messages[-1]["content"].splitlines()[0]

    agent = Agent(
        Scripted(turn), tools=[dump], trace_path=tmp_path / "run.jsonl", inline_limit=10_000, preview_chars=2_000
    )
    result = agent.run("dump and read")
    shortened = agent.messages[3]["content"]
    assert shortened.startswith(big[:2000]) and len(shortened) < 2400 and "55,000 characters" in shortened
    assert result.answer == "read line 03000"
    blobs = list((tmp_path / "run.blobs").rglob("*"))
    assert any(p.is_file() and p.read_text() == big for p in blobs)
    ev = next(e for e in read_trace(tmp_path / "run.jsonl") if e["type"] == "tool_result")
    assert ev["ref"].startswith("sha256:") and len(ev["content"]) < 2400


def test_agents_unknown_output_ref_is_a_recoverable_error() -> None:
    backend = Scripted(
        [AssistantMessage(tool_calls=[ToolCall("r", "read_output", '{"ref": "sha256:' + "0" * 64 + '"}')]), "gave up"]
    )
    agent = Agent(backend)
    assert agent.run("x").answer == "gave up"
    assert "unknown output reference" in agent.messages[3]["content"]


def test_agents_image_results_survive_the_trace(tmp_path: Path) -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (30, 20), (200, 10, 10)).save(buf, format="PNG")
    png = buf.getvalue()

    @tool
    def snapshot() -> ToolResult:
        """Render something."""
        return ToolResult("a red box", images=[png])

    backend = Scripted([AssistantMessage(tool_calls=[ToolCall("s", "snapshot", "{}")]), "red"])
    agent = Agent(backend, tools=[snapshot], trace_path=tmp_path / "run.jsonl")
    agent.run("look")
    part = agent.messages[3]["content"][1]
    assert image_bytes(part) == png
    raw = (tmp_path / "run.jsonl").read_text()
    assert "base64" not in raw and "image_ref" in raw  # images live in blobs, not in trace lines
    rebuilt = Agent.from_trace(tmp_path / "run.jsonl", Scripted([]), tools=[snapshot])
    assert rebuilt.messages == agent.messages


def test_agents_backend_errors_are_retried_then_reported(tmp_path: Path) -> None:
    failures = [2]

    def flaky(messages, tools):
        if failures[0]:
            failures[0] -= 1
            raise ConnectionError("endpoint went away")
        return "recovered"

    events: list[Event] = []
    agent = Agent(Scripted(flaky), retry_backoff=0, trace_path=tmp_path / "a.jsonl", on_event=events.append)
    result = agent.run("x")
    assert result.answer == "recovered"
    assert [e["attempt"] for e in read_trace(tmp_path / "a.jsonl") if e["type"] == "retry"] == [1, 2]
    assert sum(e.type == "retry" for e in events) == 2

    def down(messages, tools):
        raise ConnectionError("endpoint went away")

    result = Agent(Scripted(down), retries=2, retry_backoff=0).run("x")
    assert result.stop_reason == "backend_error" and result.answer == ""
    assert "ConnectionError: endpoint went away" in result.detail and "3 attempts" in result.detail


async def test_agents_run_inside_an_event_loop_points_to_arun() -> None:
    agent = Agent(Scripted(["x"]))
    with pytest.raises(RuntimeError, match="await agent.arun"):
        agent.run("task")
    assert (await agent.arun("task")).answer == "x"
    with pytest.raises(ValueError, match="already run"):
        await agent.arun("again")


def test_agents_duplicate_tool_names_are_refused() -> None:
    @tool
    def read_output(ref: str) -> str:
        """Clash with the built-in tool."""
        return ref

    with pytest.raises(ValueError, match="read_output"):
        Agent(Scripted([]), tools=[read_output])


def test_agents_one_run_of_4200_tool_calls_fits_the_default_budget() -> None:
    @tool
    async def step(n: int) -> str:
        """One unit of work."""
        return str(n)

    def turn(messages, tools):
        backend.calls.clear()  # the scripted backend keeps every conversation; this run would hoard them
        n = (len(messages) - 2) // 3  # system, task, then an assistant turn and two results per step
        if n < 2100:
            calls = [ToolCall(f"{n}.{k}", "step", json.dumps({"n": 2 * n + k})) for k in range(2)]
            return AssistantMessage(
                tool_calls=calls, usage=Usage(prompt_tokens=10 * len(messages), completion_tokens=10)
            )
        return AssistantMessage(
            content=f"sum {sum(int(m['content']) for m in messages if m['role'] == 'tool')}", usage=Usage(10, 10)
        )

    backend = Scripted(turn)
    result = Agent(backend, tools=[step]).run("work")
    assert (result.stop_reason, result.tool_calls, result.steps) == ("answer", 4200, 2101)
    assert result.answer == f"sum {sum(range(4200))}"
