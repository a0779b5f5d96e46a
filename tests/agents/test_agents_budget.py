"""Every budget stops the run with a clear reason, and a stopped run continues under a bigger one."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from kimidoc.agents import Agent, Budget, read_trace
from kimidoc.backends.scripted import Scripted
from kimidoc.messages import AssistantMessage, ToolCall, Usage
from kimidoc.tools.base import tool


@tool
def tick(n: int) -> str:
    """Count."""
    return str(n)


def forever(calls_per_turn: int = 1, usage: Usage | None = None):
    """A model that never stops calling tools."""

    def turn(messages, tools):
        n = sum(m["role"] == "assistant" for m in messages)
        calls = [ToolCall(f"{n}-{i}", "tick", json.dumps({"n": n})) for i in range(calls_per_turn)]
        return AssistantMessage(tool_calls=calls, usage=usage or Usage())

    return turn


def answers_after(steps: int):
    def turn(messages, tools):
        n = sum(m["role"] == "assistant" for m in messages)
        if n < steps:
            return AssistantMessage(tool_calls=[ToolCall(f"{n}", "tick", json.dumps({"n": n}))])
        return f"counted to {n}"

    return turn


def test_agents_step_budget(tmp_path: Path) -> None:
    result = Agent(Scripted(forever()), tools=[tick], budget=Budget(max_steps=3), trace_path=tmp_path / "r.jsonl").run(
        "count"
    )
    assert (result.stop_reason, result.steps, result.tool_calls) == ("max_steps", 3, 3)
    assert "step budget of 3" in result.detail and result.answer == ""
    assert read_trace(tmp_path / "r.jsonl")[-1]["reason"] == "max_steps"


def test_agents_tool_call_budget_does_not_start_a_turn_that_would_exceed_it() -> None:
    agent = Agent(Scripted(forever(calls_per_turn=2)), tools=[tick], budget=Budget(max_tool_calls=5))
    result = agent.run("count")
    assert (result.stop_reason, result.tool_calls, result.steps) == ("max_tool_calls", 4, 3)
    assert "tool-call budget of 5" in result.detail and "asked for 2 more" in result.detail


def test_agents_token_budget_counts_the_backend_usage() -> None:
    backend = Scripted(forever(usage=Usage(prompt_tokens=100, completion_tokens=50)))
    result = Agent(backend, tools=[tick], budget=Budget(max_tokens=400)).run("count")
    assert (result.stop_reason, result.steps, result.usage.total_tokens) == ("max_tokens", 3, 450)
    assert "token budget of 400" in result.detail


def test_agents_wall_time_budget_during_model_calls() -> None:
    result = Agent(Scripted(forever(), latency=0.05), tools=[tick], budget=Budget(max_wall_time=0.3)).run("count")
    assert result.stop_reason == "max_wall_time" and "wall-time budget of 0.3 s" in result.detail


def test_agents_wall_time_budget_interrupts_a_hanging_tool_which_reruns_on_resume(tmp_path: Path, scaled) -> None:
    hang = [True]

    @tool
    async def slow(n: int) -> str:
        """Sometimes hangs."""
        if hang[0]:
            await asyncio.sleep(60)
        return f"slow {n}"

    def turn(messages, tools):
        if not any(m["role"] == "tool" for m in messages):
            return AssistantMessage(tool_calls=[ToolCall("s", "slow", '{"n": 1}')])
        return "finished " + messages[-1]["content"]

    path = tmp_path / "r.jsonl"
    # the budget must outlast step 1's model call (slower on a loaded machine) and end in the hang
    result = Agent(
        Scripted(turn), tools=[slow], budget=Budget(max_wall_time=min(scaled(1.0), 30.0)), trace_path=path
    ).run("go")
    assert result.stop_reason == "max_wall_time" and "during the tool calls of step 1" in result.detail
    hang[0] = False
    resumed = Agent.resume(path, Scripted(turn), tools=[slow], budget=Budget(max_wall_time=scaled(60)))
    assert resumed.answer == "finished slow 1" and resumed.tool_calls == 1
    assert [e.get("rerun") for e in read_trace(path) if e["type"] == "tool_result"] == [True]


@pytest.mark.parametrize("budget", [Budget(max_steps=2), Budget(max_tool_calls=2)])
def test_agents_stopped_run_resumes_with_a_bigger_budget(tmp_path: Path, budget: Budget) -> None:
    path = tmp_path / "r.jsonl"
    first = Agent(Scripted(answers_after(4)), tools=[tick], budget=budget, trace_path=path).run("count")
    assert first.stop_reason in ("max_steps", "max_tool_calls")
    # Under the recorded budget the resumed run stops again at once, without calling the model.
    backend = Scripted(answers_after(4))
    again = Agent.resume(path, backend, tools=[tick])
    assert again.stop_reason == first.stop_reason and backend.calls == []
    done = Agent.resume(path, Scripted(answers_after(4)), tools=[tick], budget=Budget(max_steps=10))
    assert (done.stop_reason, done.answer, done.steps, done.tool_calls) == ("answer", "counted to 4", 5, 4)
    reference = Agent(Scripted(answers_after(4)), tools=[tick]).run("count")
    assert (reference.steps, reference.tool_calls) == (done.steps, done.tool_calls)


def test_agents_budget_values_are_checked() -> None:
    with pytest.raises(ValueError, match="max_steps"):
        Budget(max_steps=0)
    assert Budget().max_tool_calls >= 4200 and Budget().max_wall_time >= 12 * 3600
