"""A swarm: many sub-agents on independent sub-tasks, in parallel under a concurrency bound.

Each sub-agent is a full :class:`~kimidoc.agents.Agent` with its own conversation, tools, budget
and trace (``sub-0007.jsonl`` in the swarm's folder), run as an asyncio task, so hundreds share
one event loop. A sub-agent that raises is reported as failed; the others carry on. Run again on
the same folder, a swarm resumes: finished sub-agents return their recorded results and
interrupted ones continue from their traces. An orchestrator gets the swarm as a tool
(:meth:`Swarm.as_tool`); under an orchestrator with a trace, the sub-traces live in the folder of
the spawning call, so resuming the orchestrator resumes the swarm too.

The swarm's critical path is its longest chain of dependent steps: sub-agents are independent,
so it is the longest sub-agent chain, and the orchestrator adds it to its own steps.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kimidoc.agents.agent import Agent, AgentResult
from kimidoc.agents.budget import Budget
from kimidoc.agents.events import Event, EventCallback
from kimidoc.agents.tool_context import current_tool_context
from kimidoc.agents.toolset import agent_tools
from kimidoc.agents.trace import TRACE_VERSION, TraceWriter, has_events, iter_trace, usage_to_dict
from kimidoc.backends.base import Backend
from kimidoc.documents.base import Source
from kimidoc.messages import Usage
from kimidoc.progress import progress
from kimidoc.tools.base import Tool

SUBAGENT_PROMPT = (
    "You are a sub-agent doing one part of a larger task. Do that part only, using the tools, and finish with a "
    "concise, self-contained answer reporting what you found. When you use something from a document, cite its "
    "source label in square brackets exactly as shown, for example [report.pdf p.3]."
)

ToolsSpec = Sequence[Any] | Callable[[int], Sequence[Any]]  # tools, or a factory giving each sub-agent fresh ones


@dataclass
class SubTask:
    task: str
    tools: Sequence[str] | None = None  # names of the swarm's tools this sub-agent may use; None: all
    budget: Budget | None = None  # None: the swarm's budget
    system_prompt: str | None = None


@dataclass
class SubResult:
    index: int
    task: str
    stop_reason: str  # an AgentResult stop reason, or "failed" when the sub-agent raised
    answer: str = ""
    detail: str = ""
    steps: int = 0
    tool_calls: int = 0
    usage: Usage = field(default_factory=Usage)
    citations: list[Source] = field(default_factory=list)
    critical_steps: int = 0
    critical_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.stop_reason == "answer"

    @classmethod
    def of(cls, index: int, task: str, r: AgentResult) -> SubResult:
        return cls(
            index,
            task,
            r.stop_reason,
            r.answer,
            r.detail,
            r.steps,
            r.tool_calls,
            r.usage,
            r.citations,
            r.critical_steps,
            r.critical_seconds,
        )


@dataclass
class SwarmResult:
    results: list[SubResult]
    wall_seconds: float

    @property
    def critical_steps(self) -> int:
        return max((r.critical_steps for r in self.results), default=0)

    @property
    def critical_seconds(self) -> float:
        return max((r.critical_seconds for r in self.results), default=0.0)

    @property
    def usage(self) -> Usage:
        total = Usage()
        for r in self.results:
            total = total + r.usage
        return total

    @property
    def citations(self) -> list[Source]:
        return list(dict.fromkeys(s for r in self.results for s in r.citations))

    def totals(self) -> dict[str, Any]:
        return {
            "agents": len(self.results),
            "answered": sum(r.ok for r in self.results),
            "failed": sum(r.stop_reason == "failed" for r in self.results),
            "stopped": sum(not r.ok and r.stop_reason != "failed" for r in self.results),
            "steps": sum(r.steps for r in self.results),
            "tool_calls": sum(r.tool_calls for r in self.results),
            "usage": usage_to_dict(self.usage),
            "critical_steps": self.critical_steps,
            "critical_seconds": self.critical_seconds,
            "wall_seconds": self.wall_seconds,
        }

    def report(self) -> str:
        """The swarm's outcome as text for an orchestrating model."""
        t = self.totals()
        lines = [
            f"{t['agents']} sub-agents: {t['answered']} answered, {t['stopped']} stopped by a budget, {t['failed']} failed; "
            f"{t['tool_calls']:,} tool calls in {t['steps']:,} steps; longest chain {t['critical_steps']} steps."
        ]
        for r in self.results:
            head = f"\n### Sub-task {r.index + 1}: {r.task[:120]}"
            if r.ok:
                lines.append(f"{head}\n{r.answer}")
            elif r.stop_reason == "failed":
                lines.append(f"{head}\nFAILED: {r.detail}")
            else:
                lines.append(f"{head}\nSTOPPED ({r.stop_reason}): {r.detail}")
        return "\n".join(lines)


class Swarm:
    """Runs sub-agents on a list of sub-tasks with at most ``concurrency`` running at once.

    ``agent_options`` are passed to every sub-agent (``sampling``, ``compaction``, ``inline_limit``...).
    Sub-traces are flushed per event but not fsynced (a process kill loses nothing; a power cut may
    lose a sub-agent's last steps), which keeps hundreds of agents off the disk's sync path.
    """

    def __init__(
        self,
        backend: Backend,
        tools: ToolsSpec = (),
        *,
        system_prompt: str = SUBAGENT_PROMPT,
        budget: Budget | None = None,
        concurrency: int = 300,
        trace_dir: str | Path | None = None,
        on_event: EventCallback | None = None,
        name: str = "swarm",
        max_tasks: int = 300,
        agent_options: dict[str, Any] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"Swarm concurrency must be at least 1, got {concurrency}")
        self.backend = backend
        self.tools = tools
        self.system_prompt = system_prompt
        self.budget = budget or Budget()
        self.concurrency = concurrency
        self.trace_dir = Path(trace_dir) if trace_dir is not None else None
        self.on_event = on_event
        self.name = name
        self.max_tasks = max_tasks
        self.agent_options = dict(agent_options or {})

    def run(self, tasks: Sequence[str | SubTask | dict[str, Any]]) -> SwarmResult:
        return asyncio.run(self.arun(tasks))

    async def arun(
        self,
        tasks: Sequence[str | SubTask | dict[str, Any]],
        *,
        trace_dir: str | Path | None = None,
        on_event: EventCallback | None = None,
        parent: str | None = None,
        step: int = 0,
    ) -> SwarmResult:
        subtasks = [_subtask(t, i, self.budget) for i, t in enumerate(tasks)]
        folder = Path(trace_dir) if trace_dir is not None else self.trace_dir
        emit = on_event or self.on_event
        parent = parent or self.name
        log = self._open_log(folder, subtasks) if folder is not None else None
        results: list[SubResult | None] = [None] * len(subtasks)
        pending = iter(range(len(subtasks)))
        t0 = time.monotonic()
        bar = progress(total=len(subtasks), desc=f"{parent} sub-agents", unit="agent")

        async def worker() -> None:
            for i in pending:  # one shared iterator: each index is taken by exactly one worker
                r = await self._one(i, subtasks[i], folder, emit, f"{parent}/sub-{i:04d}")
                results[i] = r
                if log is not None:
                    log.write(
                        {
                            "type": "subagent",
                            "index": i,
                            "stop_reason": r.stop_reason,
                            "detail": r.detail,
                            "steps": r.steps,
                            "tool_calls": r.tool_calls,
                            "critical_steps": r.critical_steps,
                            "critical_seconds": r.critical_seconds,
                        }
                    )
                bar.update(1)

        try:
            await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(subtasks)))))
            done = SwarmResult([r for r in results if r is not None], time.monotonic() - t0)
            totals = done.totals()
            if log is not None:
                log.write({"type": "summary", **totals})
        finally:
            bar.close()
            if log is not None:
                log.close()
        if emit is not None:
            emit(Event("swarm", step, totals, parent))
        return done

    def as_tool(self, name: str = "run_subagents") -> Tool:
        """The swarm as a tool an orchestrator agent calls with a list of sub-tasks."""
        swarm = self

        async def run_subagents(tasks: list) -> str:
            for i, t in enumerate(tasks):
                names = t.get("tools") if isinstance(t, dict) else None
                unknown = [n for n in names or [] if n not in swarm._tool_names()]
                if unknown:
                    raise ValueError(
                        f"sub-task {i + 1} asks for unknown tools {unknown}; available: {swarm._tool_names()}"
                    )
            ctx = current_tool_context()
            folder = None
            if ctx is not None and ctx.work_dir is not None:
                folder = ctx.work_dir
            elif swarm.trace_dir is not None:
                folder = swarm.trace_dir / re.sub(r"[^A-Za-z0-9_-]+", "_", ctx.call_id) if ctx else swarm.trace_dir
            result = await swarm.arun(
                tasks,
                trace_dir=folder,
                on_event=ctx.emit if ctx else self.on_event,
                parent=ctx.agent if ctx else None,
                step=ctx.step if ctx else 0,
            )
            if ctx is not None:
                ctx.chain = (result.critical_steps, result.critical_seconds)
                ctx.sources.extend(result.citations)
                ctx.record({"type": "swarm", "call_id": ctx.call_id, **result.totals()})
            return result.report()

        item = {
            "anyOf": [
                {"type": "string", "description": "the sub-task"},
                {
                    "type": "object",
                    "properties": {
                        "task": {"type": "string", "description": "the sub-task"},
                        "tools": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "names of the tools it may use (default: all)",
                        },
                        "max_steps": {"type": "integer", "minimum": 1},
                        "max_tool_calls": {"type": "integer", "minimum": 1},
                    },
                    "required": ["task"],
                },
            ]
        }
        return Tool(
            name=name,
            description=(
                "Split work into independent sub-tasks and run one sub-agent per sub-task, in parallel. Each sub-agent "
                "has its own context, tools and budget and returns its final answer; failures are reported per sub-task. "
                f"At most {self.max_tasks} sub-tasks per call."
            ),
            parameters={
                "type": "object",
                "properties": {
                    "tasks": {
                        "type": "array",
                        "items": item,
                        "minItems": 1,
                        "maxItems": self.max_tasks,
                        "description": "the sub-tasks",
                    }
                },
                "required": ["tasks"],
            },
            fn=run_subagents,
        )

    # ----------------------------------------------------------------- internals

    def _tools_for(self, index: int, names: Sequence[str] | None) -> list[Tool]:
        tools = agent_tools(self.tools(index) if callable(self.tools) else self.tools)
        return tools if names is None else [t for t in tools if t.name in names]

    def _tool_names(self) -> list[str]:
        return [t.name for t in self._tools_for(0, None)]

    async def _one(
        self, index: int, sub: SubTask, folder: Path | None, emit: EventCallback | None, name: str
    ) -> SubResult:
        path = folder / f"sub-{index:04d}.jsonl" if folder is not None else None
        common: dict[str, Any] = {
            **self.agent_options,
            "on_event": emit,
            "stream": False,
            "show_progress": False,
            "trace_fsync": False,
            "name": name,
        }
        try:
            tools = self._tools_for(index, sub.tools)
            if path is not None and has_events(path):
                agent = Agent.from_trace(path, self.backend, tools, **common)
                result = await agent.arun()
            else:
                agent = Agent(
                    self.backend,
                    tools,
                    system_prompt=sub.system_prompt or self.system_prompt,
                    budget=sub.budget or self.budget,
                    trace_path=path,
                    **common,
                )
                result = await agent.arun(sub.task)
            return SubResult.of(index, sub.task, result)
        except Exception as exc:  # one sub-agent's failure must not take the swarm down
            return SubResult(index, sub.task, "failed", detail=f"{type(exc).__name__}: {exc}")

    def _open_log(self, folder: Path, subtasks: list[SubTask]) -> TraceWriter:
        path = folder / "swarm.jsonl"
        tasks = [s.task for s in subtasks]
        if has_events(path):
            header = next(iter_trace(path), None)
            if header is not None and header.get("tasks") != tasks:
                raise ValueError(
                    f"{path}: this folder holds a swarm over different sub-tasks; resume it with the same tasks or use another folder"
                )
            writer = TraceWriter(path, fsync=False)
            writer.write({"type": "resume"})
            return writer
        writer = TraceWriter(path, fsync=False)
        writer.write(
            {
                "type": "header",
                "version": TRACE_VERSION,
                "swarm": self.name,
                "tasks": tasks,
                "concurrency": self.concurrency,
                "budget": self.budget.to_dict(),
            }
        )
        return writer


def _subtask(item: str | SubTask | dict[str, Any], index: int, budget: Budget) -> SubTask:
    if isinstance(item, SubTask):
        return item
    if isinstance(item, str):
        return SubTask(item)
    if isinstance(item, dict) and isinstance(item.get("task"), str):
        limits = {
            k: item[k]
            for k in ("max_steps", "max_tool_calls", "max_tokens", "max_wall_time")
            if item.get(k) is not None
        }
        return SubTask(
            item["task"], item.get("tools"), replace(budget, **limits) if limits else None, item.get("system_prompt")
        )
    raise ValueError(
        f"sub-task {index + 1}: expected a string or an object with a 'task' string, got {json.dumps(item, default=str)[:200]}"
    )


def run_swarm(
    backend: Backend, tasks: Sequence[str | SubTask | dict[str, Any]], concurrency: int = 300, **kwargs: Any
) -> SwarmResult:
    """Run one sub-agent per task, in parallel; ``kwargs`` as for :class:`Swarm`."""
    return Swarm(backend, concurrency=concurrency, **kwargs).run(tasks)


def swarm_tool(backend: Backend, name: str = "run_subagents", **kwargs: Any) -> Tool:
    """A tool that lets an orchestrator agent spawn a swarm; ``kwargs`` as for :class:`Swarm`."""
    return Swarm(backend, **kwargs).as_tool(name)
