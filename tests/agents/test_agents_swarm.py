"""Swarms: 300 sub-agents x 14 tool calls, failure isolation, an orchestrator, resume of the whole swarm."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import weakref
from pathlib import Path
from typing import Any

import pytest

from kimidoc.agents import Agent, Budget, Swarm, logical_events, read_trace, report_sources, run_swarm, swarm_tool
from kimidoc.backends.scripted import Scripted
from kimidoc.documents.base import Source
from kimidoc.messages import AssistantMessage, ToolCall
from kimidoc.tools.base import tool

CALLS = 14


class Crash(BaseException):
    pass


def sub_index(messages) -> int:
    return int(re.search(r"sub-task (\d+)", messages[1]["content"]).group(1))


def sub_turn(messages) -> AssistantMessage:
    """A sub-agent: CALLS sequential work calls, then the sum of their results."""
    i = sub_index(messages)
    results = [int(m["content"]) for m in messages if m["role"] == "tool"]
    if len(results) < CALLS:
        j = len(results)
        return AssistantMessage(tool_calls=[ToolCall(f"functions.work:{j}", "work", json.dumps({"i": i, "j": j}))])
    return AssistantMessage(content=f"sub-task {i} total {sum(results)}")


def expected_total(i: int) -> int:
    return sum(i * 1000 + j for j in range(CALLS))


class Worker:
    def __init__(self, crash_on: tuple[int, int] | None = None) -> None:
        self.calls: list[tuple[int, int]] = []
        self.crash_on = crash_on

    def tool(self):
        @tool
        async def work(i: int, j: int) -> str:
            """Do unit j of sub-task i."""
            await asyncio.sleep(0)  # yield, as real work does, so sub-agents interleave
            self.calls.append((i, j))
            if (i, j) == self.crash_on:
                self.crash_on = None
                raise Crash
            return str(i * 1000 + j)

        return work


def test_agents_swarm_300_subagents_4200_tool_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    live: weakref.WeakSet[Agent] = weakref.WeakSet()
    most_alive = [0]
    init = Agent.__init__

    def tracked_init(self, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        live.add(self)
        most_alive[0] = max(most_alive[0], len(live))

    monkeypatch.setattr(Agent, "__init__", tracked_init)
    worker = Worker()
    backend = Scripted(lambda messages, tools: sub_turn(messages))
    tasks = [f"sub-task {i}" for i in range(300)]
    result = run_swarm(backend, tasks, concurrency=100, tools=[worker.tool()])
    assert len(result.results) == 300 and all(r.ok for r in result.results)
    assert [r.index for r in result.results] == list(range(300))
    assert [r.answer for r in result.results] == [f"sub-task {i} total {expected_total(i)}" for i in range(300)]
    assert sorted(worker.calls) == [(i, j) for i in range(300) for j in range(CALLS)]  # each call exactly once
    totals = result.totals()
    assert (totals["agents"], totals["answered"], totals["tool_calls"], totals["steps"]) == (300, 300, 4200, 4500)
    assert result.critical_steps == CALLS + 1
    # Bounded memory: at most `concurrency` conversations exist at once, and a finished sub-agent
    # leaves only its answer behind.
    assert 50 < most_alive[0] <= 100  # they ran side by side, never more than the bound
    gc.collect()
    assert len(live) == 0


def test_agents_swarm_isolates_failures() -> None:
    worker = Worker()

    def tools_for(index: int):
        if index == 2:
            raise RuntimeError("sandbox for sub-task 2 could not start")
        return [worker.tool()]

    def turn(messages, tools):
        if sub_index(messages) == 4:
            raise ConnectionError("endpoint refused sub-task 4")
        return sub_turn(messages)

    result = Swarm(Scripted(turn), tools_for, concurrency=3, agent_options={"retries": 0}).run(
        [f"sub-task {i}" for i in range(6)]
    )
    by = {r.index: r for r in result.results}
    assert by[2].stop_reason == "failed" and "sandbox for sub-task 2 could not start" in by[2].detail
    assert by[4].stop_reason == "backend_error" and "endpoint refused" in by[4].detail
    assert all(by[i].ok and by[i].answer == f"sub-task {i} total {expected_total(i)}" for i in (0, 1, 3, 5))
    totals = result.totals()
    assert (totals["answered"], totals["failed"], totals["stopped"]) == (4, 1, 1)
    report = result.report()
    assert "4 answered, 1 stopped by a budget, 1 failed" in report
    assert "FAILED: RuntimeError: sandbox for sub-task 2" in report and "STOPPED (backend_error)" in report


def test_agents_swarm_per_task_budget_and_tools() -> None:
    worker = Worker()
    other = Worker()

    @tool
    def spare() -> str:
        """Unused."""
        return ""

    seen_tools: dict[int, list[str]] = {}

    def turn(messages, tools):
        seen_tools[sub_index(messages)] = [t["function"]["name"] for t in tools]
        return sub_turn(messages)

    swarm = Swarm(Scripted(turn), [worker.tool(), spare], budget=Budget(max_steps=50))
    result = swarm.run([{"task": "sub-task 0", "max_steps": 3}, {"task": "sub-task 1", "tools": ["work"]}])
    assert result.results[0].stop_reason == "max_steps" and result.results[0].steps == 3
    assert result.results[1].ok
    assert seen_tools[0] == ["work", "spare", "read_output"] and seen_tools[1] == ["work", "read_output"]
    assert other.calls == []


def orchestrator_backend(n: int, worker_crash: Worker | None = None) -> Scripted:
    """Orchestrator: spawn n sub-agents, then answer from their report, citing what they cited."""

    def turn(messages, tools):
        if re.search(r"sub-task \d+", messages[1]["content"]):
            # A sub-agent: read its page of the book, then CALLS work calls, then the cited total.
            i = sub_index(messages)
            results = [m for m in messages if m["role"] == "tool"]
            if not results:
                return AssistantMessage(tool_calls=[ToolCall("functions.read:0", "read", json.dumps({"page": i + 1}))])
            work = [int(m["content"]) for m in results[1:]]
            if len(work) < CALLS:
                return AssistantMessage(
                    tool_calls=[
                        ToolCall(f"functions.work:{len(work) + 1}", "work", json.dumps({"i": i, "j": len(work)}))
                    ]
                )
            return AssistantMessage(content=f"sub-task {i} total {sum(work)} [book.pdf p.{i + 1}]")
        if not any(m["role"] == "tool" for m in messages):
            return AssistantMessage(
                tool_calls=[
                    ToolCall(
                        "functions.run_subagents:0",
                        "run_subagents",
                        json.dumps({"tasks": [f"sub-task {i}" for i in range(n)]}),
                    )
                ]
            )
        report = messages[-1]["content"]
        totals = re.findall(r"sub-task (\d+) total (\d+)", report)
        return "Totals: " + ", ".join(f"{i}={t} [book.pdf p.{int(i) + 1}]" for i, t in totals)

    return Scripted(turn)


def sub_tools(worker: Worker):
    @tool
    def read(page: int) -> str:
        """Read a page of the book."""
        report_sources(Source("book.pdf", page=page))
        return "0"

    def make(index: int):
        return [read, worker.tool()]

    return make


def test_agents_orchestrator_spawns_swarm_and_cites_through_it(tmp_path: Path) -> None:
    worker = Worker()
    path = tmp_path / "orchestrator.jsonl"
    spawn = swarm_tool(orchestrator_backend(5), tools=sub_tools(worker), concurrency=5)
    events: list = []
    result = Agent(orchestrator_backend(5), tools=[spawn], trace_path=path, on_event=events.append).run(
        "Add up five sub-tasks."
    )
    assert result.ok and all(f"{i}={expected_total(i)}" in result.answer for i in range(5))
    # Sub-agents' events reach the orchestrator's callback, tagged with who sent them.
    sub_calls = [e for e in events if e.type == "tool_call" and e.agent.startswith("main/sub-")]
    assert len(sub_calls) == 5 * (CALLS + 1) and {e.agent for e in sub_calls} == {f"main/sub-{i:04d}" for i in range(5)}
    assert [e.data["answered"] for e in events if e.type == "swarm"] == [5]
    assert "".join(e.data["text"] for e in events if e.type == "content" and e.agent == "main") == result.answer
    assert result.citations == [Source("book.pdf", page=i + 1) for i in range(5)]  # seen by sub-agents, reported up
    assert result.critical_steps == 1 + (CALLS + 2) + 1  # spawn step, one sub-agent's chain, answer
    swarm_event = next(e for e in read_trace(path) if e["type"] == "swarm")
    assert (swarm_event["agents"], swarm_event["tool_calls"], swarm_event["critical_steps"]) == (
        5,
        5 * (CALLS + 1),
        CALLS + 2,
    )
    sub_traces = sorted(path.parent.glob("orchestrator.calls/*/sub-*.jsonl"))
    assert len(sub_traces) == 5


def test_agents_killed_swarm_resumes_without_repeating_finished_work(tmp_path: Path) -> None:
    ref_worker = Worker()
    ref_path = tmp_path / "ref" / "orchestrator.jsonl"
    reference = Agent(
        orchestrator_backend(6),
        tools=[swarm_tool(orchestrator_backend(6), tools=sub_tools(ref_worker), concurrency=2)],
        trace_path=ref_path,
    ).run("six")

    worker = Worker(crash_on=(3, 5))
    path = tmp_path / "run" / "orchestrator.jsonl"

    def agent_tools():
        return [swarm_tool(orchestrator_backend(6), tools=sub_tools(worker), concurrency=2)]

    with pytest.raises(Crash):
        Agent(orchestrator_backend(6), tools=agent_tools(), trace_path=path).run("six")
    done_before = [
        r
        for r in read_trace(path.parent / "orchestrator.calls" / "00001-functions_run_subagents_0" / "swarm.jsonl")
        if r["type"] == "subagent"
    ]
    assert 0 < len(done_before) < 6
    calls_before = len(worker.calls)
    result = Agent.resume(path, orchestrator_backend(6), tools=agent_tools())
    assert result.answer == reference.answer and result.citations == reference.citations
    # Finished sub-agents were not run again; only the call in flight at the kill ran twice.
    assert len(worker.calls) == len(ref_worker.calls) + 1 and calls_before < len(ref_worker.calls)
    assert sorted(set(worker.calls)) == sorted(set(ref_worker.calls))
    for ref_sub in sorted(ref_path.parent.glob("orchestrator.calls/*/sub-*.jsonl")):
        sub = path.parent / ref_sub.relative_to(ref_path.parent)
        assert logical_events(read_trace(sub)) == logical_events(read_trace(ref_sub)), sub.name
    assert [e["rerun"] for e in read_trace(path) if e["type"] == "tool_result"] == [True]


def test_agents_run_swarm_resumes_from_its_folder(tmp_path: Path) -> None:
    worker = Worker(crash_on=(4, 7))
    backend = Scripted(lambda messages, tools: sub_turn(messages))
    tasks = [f"sub-task {i}" for i in range(8)]
    with pytest.raises(Crash):
        run_swarm(backend, tasks, concurrency=3, tools=[worker.tool()], trace_dir=tmp_path)
    result = run_swarm(backend, tasks, concurrency=3, tools=[worker.tool()], trace_dir=tmp_path)
    assert [r.answer for r in result.results] == [f"sub-task {i} total {expected_total(i)}" for i in range(8)]
    assert len(worker.calls) == 8 * CALLS + 1
    with pytest.raises(ValueError, match="different sub-tasks"):
        run_swarm(backend, tasks[:3], tools=[worker.tool()], trace_dir=tmp_path)
