"""An agent: the settings of a tool-using run over any backend, and the way to start or resume one.

The loop itself is :class:`kimidoc.agents.loop.AgentRun`; the context a tool sees is in
:mod:`kimidoc.agents.tool_context`; the trace events and the state they fold into are in
:mod:`kimidoc.agents.state`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kimidoc.agents.blobs import BlobStore, externalize, read_output_tool
from kimidoc.agents.budget import Budget
from kimidoc.agents.citations import source_to_dict
from kimidoc.agents.compaction import Compaction
from kimidoc.agents.events import Emitter, EventCallback
from kimidoc.agents.loop import AgentResult, AgentRun
from kimidoc.agents.packing import Packer, pack_with_sources
from kimidoc.agents.state import RunState, header_event
from kimidoc.agents.toolset import agent_tools
from kimidoc.agents.trace import TraceError, has_events, iter_trace
from kimidoc.backends.base import Backend
from kimidoc.documents.base import Document, Source
from kimidoc.messages import Message
from kimidoc.tools.base import Tool

DEFAULT_SYSTEM_PROMPT = (
    "You are Kimi, an AI assistant created by Moonshot AI. Work step by step and use the tools when they help; "
    "when you have what you need, reply with a complete final answer. When you use something from a document, "
    "cite its source label in square brackets exactly as shown, for example [report.pdf p.3] or [src/app.py:10-20]."
)


class Agent:
    """A tool-using agent over any backend, with budgets, compaction, a trace and resume.

    ``compaction=None`` uses :class:`Compaction` defaults and ``False`` turns it off. ``stream``
    defaults to streaming when ``on_event`` is set (reasoning and content arrive as events).
    Tool outputs longer than ``inline_limit`` characters are stored out of line and shown as a
    ``preview_chars`` preview with a reference the ``read_output`` tool reads back.
    """

    def __init__(
        self,
        backend: Backend,
        tools: Sequence[Any] = (),
        documents: Sequence[Document] = (),
        system_prompt: str | None = None,
        budget: Budget | None = None,
        trace_path: str | Path | None = None,
        on_event: EventCallback | None = None,
        *,
        compaction: Compaction | bool | None = None,
        sampling: dict[str, Any] | None = None,
        stream: bool | None = None,
        name: str = "main",
        inline_limit: int = 20_000,
        preview_chars: int = 4_000,
        retries: int = 3,
        retry_backoff: float = 1.0,
        trace_fsync: bool = True,
        packer: Packer | None = None,
        document_share: float = 0.6,
        show_progress: bool = True,
    ) -> None:
        self.backend = backend
        self.documents = list(documents)
        self.system_prompt = DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt
        self.budget = budget or Budget()
        self.trace_path = Path(trace_path) if trace_path is not None else None
        self.compaction = Compaction() if compaction is None or compaction is True else (compaction or None)
        self.sampling = dict(sampling or {})
        self.stream = on_event is not None if stream is None else stream
        self.name = name
        self.inline_limit = inline_limit
        self.preview_chars = min(preview_chars, inline_limit)
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.packer = packer or pack_with_sources
        self.document_share = document_share
        self.show_progress = show_progress
        self.trace_fsync = trace_fsync
        self.emitter = Emitter(on_event, name)
        blob_root = self.trace_path.with_name(self.trace_path.stem + ".blobs") if self.trace_path else None
        self.store = BlobStore(blob_root)
        self.tools: dict[str, Tool] = {}
        for t in [*agent_tools(tools), read_output_tool(self.store, max(1000, inline_limit))]:
            if t.name in self.tools:
                raise ValueError(f"two tools are named {t.name!r}; tool names must be unique")
            self.tools[t.name] = t
        self.schemas = [t.schema() for t in self.tools.values()]
        self._run: AgentRun | None = None  # made by the first run, or by from_trace

    # ----------------------------------------------------------------- public API

    @property
    def messages(self) -> list[Message]:
        """The conversation as the model sees it now (after compactions)."""
        return self._run.state.messages if self._run else []

    def run(self, task: str | None = None) -> AgentResult:
        """Run to an answer or a budget (``task`` is omitted when continuing a loaded trace)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.arun(task))
        raise RuntimeError("Agent.run() was called inside a running event loop; use `await agent.arun(task)` there")

    async def arun(self, task: str | None = None) -> AgentResult:
        if self._run is None:
            if task is None:
                raise ValueError("Agent.run needs a task")
            self._run = self._begin(task)
        elif task is not None or not self._run.resuming:
            raise ValueError(
                "this agent has already run; create a new Agent for a new task, or Agent.resume(trace) to continue one"
            )
        return await self._run.run()

    @classmethod
    def from_trace(cls, trace_path: str | Path, backend: Backend, tools: Sequence[Any] = (), **kwargs: Any) -> Agent:
        """An agent holding the state of the run recorded in ``trace_path``; ``run()`` continues it.

        The trace's system prompt, budget, compaction and sampling settings are used unless given here.
        """
        path = Path(trace_path)
        events = iter_trace(path)
        header = next(events, None)
        if header is None:
            raise TraceError(f"{path}: empty trace (the run was killed before it wrote its header); start it again")
        config = header.get("config", {})
        kwargs.setdefault("system_prompt", header["system_prompt"])
        kwargs.setdefault("budget", Budget.from_dict(config.get("budget", {})))
        if "compaction" not in kwargs:
            kwargs["compaction"] = Compaction(**config["compaction"]) if config.get("compaction") else False
        kwargs.setdefault("name", header.get("agent", "main"))
        kwargs.setdefault("sampling", config.get("sampling"))
        if "inline_limit" in config:
            kwargs.setdefault("inline_limit", config["inline_limit"])
        agent = cls(backend, tools, trace_path=path, **kwargs)
        missing = [t["function"]["name"] for t in header["tools"] if t["function"]["name"] not in agent.tools]
        if missing:
            raise ValueError(f"{path}: the run used tools {', '.join(missing)}, which were not given to resume it")
        state = RunState.from_header(header, agent.store)
        for ev in events:
            state.apply(ev)
        state.flush_results()  # the last turn's results, when the kill came right after the last of them
        agent._run = AgentRun(agent, state, resuming=True)
        return agent

    @classmethod
    def resume(cls, trace_path: str | Path, backend: Backend, tools: Sequence[Any] = (), **kwargs: Any) -> AgentResult:
        """Continue the run recorded in ``trace_path`` (a finished run returns its recorded result)."""
        return cls.from_trace(trace_path, backend, tools, **kwargs).run()

    # ----------------------------------------------------------------- starting a run

    def _begin(self, task: str) -> AgentRun:
        if self.trace_path is not None and has_events(self.trace_path):
            raise FileExistsError(
                f"{self.trace_path}: a trace is already there; continue it with Agent.resume() or pick another trace_path"
            )
        content: Any = task
        packed: list[Source] = []
        if self.documents:
            parts, packed = self.packer(
                self.documents, self.backend, int(self.backend.context_window * self.document_share), task
            )
            parts = parts + [{"type": "text", "text": task}]
            content = parts if any(p.get("type") != "text" for p in parts) else "".join(p["text"] for p in parts)
        messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + [
            {"role": "user", "content": content}
        ]
        header = header_event(
            agent=self.name,
            task=task,
            system_prompt=self.system_prompt,
            tools=self.schemas,
            config={
                "budget": self.budget.to_dict(),
                "compaction": self.compaction.to_dict() if self.compaction else None,
                "backend": getattr(self.backend, "name", type(self.backend).__name__),
                "context_window": self.backend.context_window,
                "sampling": self.sampling,
                "inline_limit": self.inline_limit,
            },
            documents=[d.path for d in self.documents],
            packed=[source_to_dict(s) for s in packed],
            prefix=len(messages),
            messages=[{**m, "content": externalize(m["content"], self.store)} for m in messages],
        )
        return AgentRun.start(self, header, messages)
