"""The agent loop: ask the backend, run the turn's tool calls, feed the results back, until an answer.

Everything the loop does is recorded as a trace event before it moves on (see
:mod:`kimidoc.agents.state`), which is what makes :meth:`Agent.resume` exact: a run killed at any
point continues from its trace, finished tool calls are never repeated, and a call that was in
flight at the kill is run again and marked ``rerun``. The loop is asyncio-native so a swarm of
hundreds of agents is hundreds of tasks on one event loop.
"""

from __future__ import annotations

import asyncio
import re
import time
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from kimidoc.agents.blobs import BlobStore, externalize, read_output_tool, shorten
from kimidoc.agents.budget import Budget, Stop, check_step, check_tool_calls, check_wall_time, wall_time_left
from kimidoc.agents.citations import source_from_dict, source_to_dict, supporting_sources
from kimidoc.agents.compaction import Compaction, choose_cut, fold, ledger_message, ledger_of, transcript
from kimidoc.agents.events import Event, EventCallback, Emitter
from kimidoc.agents.packing import Packer, known_paths, pack_with_sources
from kimidoc.agents.state import RunState
from kimidoc.agents.toolset import agent_tools
from kimidoc.agents.trace import TRACE_VERSION, TraceError, TraceWriter, has_events, iter_trace, usage_from_dict, usage_to_dict
from kimidoc.backends.base import Backend
from kimidoc.documents.base import Document, Source
from kimidoc.messages import AssistantMessage, Message, ToolCall, Usage, accumulate
from kimidoc.progress import progress
from kimidoc.tools.base import Tool, ToolResult, run_tool_call

DEFAULT_SYSTEM_PROMPT = (
    "You are Kimi, an AI assistant created by Moonshot AI. Work step by step and use the tools when they help; "
    "when you have what you need, reply with a complete final answer. When you use something from a document, "
    "cite its source label in square brackets exactly as shown, for example [report.pdf p.3] or [src/app.py:10-20]."
)


@dataclass
class AgentResult:
    answer: str
    citations: list[Source]
    stop_reason: str  # answer | length | max_steps | max_tool_calls | max_tokens | max_wall_time | backend_error
    steps: int
    tool_calls: int
    usage: Usage
    trace_path: Path | None
    detail: str = ""  # why a budget or an error stopped the run
    unverified_citations: list[str] = field(default_factory=list)  # cited labels matching nothing the agent saw
    citations_inferred: bool = False  # the answer cited nothing; citations are the passages containing its figures
    elapsed: float = 0.0  # running seconds over all sessions
    critical_steps: int = 0  # model calls on the longest chain of dependent steps (sub-agents included)
    critical_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.stop_reason == "answer"


@dataclass
class ToolContext:
    """What a tool can learn about the call it is serving (see :func:`current_tool_context`)."""

    agent: str
    call_id: str
    step: int
    trace_path: Path | None
    emit: Callable[[Event], None] | None  # the agent's event callback, None when nobody listens
    record: Callable[[dict[str, Any]], None]  # append an informational event to the agent's trace
    sources: list[Source] = field(default_factory=list)
    chain: tuple[int, float] | None = None  # (steps, seconds) of dependent work the tool ran, e.g. a swarm

    @property
    def work_dir(self) -> Path | None:
        """A folder tied to this call and stable across resumes (None when the run has no trace)."""
        if self.trace_path is None:
            return None
        safe_id = re.sub(r"[^A-Za-z0-9_-]+", "_", self.call_id)
        return self.trace_path.with_name(f"{self.trace_path.stem}.calls") / f"{self.step:05d}-{safe_id}"


_CONTEXT: ContextVar[ToolContext | None] = ContextVar("kimidoc_tool_context", default=None)


def current_tool_context() -> ToolContext | None:
    """The context of the tool call running in this task or thread, or None outside an agent."""
    return _CONTEXT.get()


def report_sources(*sources: Source) -> None:
    """Called by a tool that read document parts: they become citable in the agent's answer."""
    ctx = _CONTEXT.get()
    if ctx is not None:
        ctx.sources.extend(sources)


class _Stopped(Exception):
    def __init__(self, stop: Stop) -> None:
        self.stop = stop


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
        self._trace_fsync = trace_fsync
        self._emit = Emitter(on_event, name)
        blob_root = self.trace_path.with_name(self.trace_path.stem + ".blobs") if self.trace_path else None
        self.store = BlobStore(blob_root)
        self.tools: dict[str, Tool] = {}
        for t in [*agent_tools(tools), read_output_tool(self.store, max(1000, inline_limit))]:
            if t.name in self.tools:
                raise ValueError(f"two tools are named {t.name!r}; tool names must be unique")
            self.tools[t.name] = t
        self._schemas = [t.schema() for t in self.tools.values()]
        self._state: RunState | None = None
        self._trace: TraceWriter | None = None
        self._resuming = False
        self._t0 = 0.0
        self._elapsed0 = 0.0
        self._phase: tuple[str, int] = ("starting", 0)  # what the run is doing, for a wall-time stop's message

    # ----------------------------------------------------------------- public API

    @property
    def messages(self) -> list[Message]:
        """The conversation as the model sees it now (after compactions)."""
        return self._state.messages if self._state else []

    def run(self, task: str | None = None) -> AgentResult:
        """Run to an answer or a budget (``task`` is omitted when continuing a loaded trace)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.arun(task))
        raise RuntimeError("Agent.run() was called inside a running event loop; use `await agent.arun(task)` there")

    async def arun(self, task: str | None = None) -> AgentResult:
        if self._state is None:
            if task is None:
                raise ValueError("Agent.run needs a task")
            self._begin(task)
        elif task is not None or not self._resuming:
            raise ValueError("this agent has already run; create a new Agent for a new task, or Agent.resume(trace) to continue one")
        try:
            return await self._loop()
        finally:
            self._resuming = False
            if self._trace is not None:
                self._trace.close()
                self._trace = None

    @classmethod
    def from_trace(cls, trace_path: str | Path, backend: Backend, tools: Sequence[Any] = (), **kwargs: Any) -> "Agent":
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
        agent._state = state
        agent._resuming = True
        return agent

    @classmethod
    def resume(cls, trace_path: str | Path, backend: Backend, tools: Sequence[Any] = (), **kwargs: Any) -> AgentResult:
        """Continue the run recorded in ``trace_path`` (a finished run returns its recorded result)."""
        return cls.from_trace(trace_path, backend, tools, **kwargs).run()

    # ----------------------------------------------------------------- the loop

    def _begin(self, task: str) -> None:
        if self.trace_path is not None and has_events(self.trace_path):
            raise FileExistsError(f"{self.trace_path}: a trace is already there; continue it with Agent.resume() or pick another trace_path")
        content: Any = task
        packed: list[Source] = []
        if self.documents:
            parts, packed = self.packer(self.documents, self.backend, int(self.backend.context_window * self.document_share))
            parts = parts + [{"type": "text", "text": task}]
            content = parts if any(p.get("type") != "text" for p in parts) else "".join(p["text"] for p in parts)
        messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + [{"role": "user", "content": content}]
        header = {
            "type": "header",
            "version": TRACE_VERSION,
            "agent": self.name,
            "task": task,
            "system_prompt": self.system_prompt,
            "tools": self._schemas,
            "config": {
                "budget": self.budget.to_dict(),
                "compaction": self.compaction.to_dict() if self.compaction else None,
                "backend": getattr(self.backend, "name", type(self.backend).__name__),
                "context_window": self.backend.context_window,
                "sampling": self.sampling,
                "inline_limit": self.inline_limit,
            },
            "documents": known_paths(self.documents),
            "packed": [source_to_dict(s) for s in packed],
            "prefix": len(messages),
            "messages": [{**m, "content": externalize(m["content"], self.store)} for m in messages],
            "t": time.time(),
        }
        self._open_trace()
        if self._trace is not None:
            self._trace.write(header)
        self._state = RunState.from_header(header, self.store)
        self._state.messages = messages  # the live ones, images inline, identical to the rebuilt ones

    def _open_trace(self) -> None:
        if self.trace_path is not None:
            self._trace = TraceWriter(self.trace_path, fsync=self._trace_fsync)

    def _record(self, ev: dict[str, Any], message: Message | None = None, *, flush: bool = True) -> None:
        ev.setdefault("t", time.time())
        if self._trace is not None:
            self._trace.write(ev, flush=flush)
        assert self._state is not None
        self._state.apply(ev, message)

    def _elapsed(self) -> float:
        return self._elapsed0 + time.monotonic() - self._t0

    async def _loop(self) -> AgentResult:
        st = self._state
        assert st is not None
        if st.stop is not None and st.stop["reason"] in ("answer", "length"):
            return self._result(st.stop)
        self._t0 = time.monotonic()
        self._elapsed0 = st.elapsed
        if self._resuming:
            self._open_trace()
            self._record({"type": "resume", "step": st.step})
        self._emit("start", st.step, task=st.task, resumed=self._resuming)
        self._phase = ("starting", 0)
        try:
            # One deadline for the whole session: an expiry cancels whatever is awaited (a model call,
            # tools, a summary); every state change is a recorded event, so the trace stays consistent.
            return await _within(self._steps(), wall_time_left(self.budget, self._elapsed()))
        except asyncio.TimeoutError:
            stop = check_wall_time(self.budget, self._elapsed() + 1e-3)
            if stop is None:
                raise
            what, step = self._phase
            return self._stop(Stop(stop.reason, f"{stop.detail} during {what}" + (f" of step {step}" if step else "")))

    async def _steps(self) -> AgentResult:
        st = self._state
        assert st is not None
        bar = progress(desc=f"agent {self.name}", unit="step", initial=st.step) if self.show_progress else None
        try:
            stop = await self._finish_interrupted_turn()
            if stop is not None:
                return self._stop(stop)
            while st.final is None:
                stop = check_step(self.budget, st.step, st.usage, self._elapsed())
                if stop is None and self.compaction is not None:
                    self._phase = ("compaction", 0)
                    stop = await self._maybe_compact()
                if stop is not None:
                    return self._stop(stop)
                step = st.step + 1
                self._emit("step", step)
                self._phase = ("the model call", step)
                t = time.monotonic()
                reply = await self._ask(st.messages, step)
                if isinstance(reply, Stop):
                    return self._stop(reply)
                self._record_reply(reply, step, time.monotonic() - t)
                if bar is not None:
                    bar.update(1)
                if st.pending:
                    stop = check_tool_calls(self.budget, st.tool_calls, len(st.pending))
                    if stop is None:
                        await self._execute(list(range(len(st.pending))), rerun=set())
                    else:
                        return self._stop(stop)
                if st.invalid_due:
                    self._feedback()
                if self._trace is not None:
                    self._trace.sync()  # a step boundary: make the step durable
            reason = "length" if st.final_reason == "length" else "answer"
            return self._finish(st.final, reason)
        finally:
            if bar is not None:
                bar.close()

    async def _finish_interrupted_turn(self) -> Stop | None:
        """Complete the turn a kill or a tool budget interrupted: run its unanswered calls, answer bad ones."""
        st = self._state
        assert st is not None
        todo = st.unanswered()
        if todo:
            stop = check_tool_calls(self.budget, st.tool_calls, len(todo))
            if stop is not None:
                return stop
            await self._execute(todo, rerun={i for i in todo if i in st.started})
        if st.invalid_due:
            self._feedback()
        return None

    def _record_reply(self, reply: AssistantMessage, step: int, duration: float) -> None:
        st = self._state
        assert st is not None
        usage = reply.usage
        if not usage.total_tokens:  # a backend that reports no usage: count it ourselves, budgets still hold
            usage = Usage(
                prompt_tokens=self.backend.count_message_tokens(st.messages, self._schemas),
                completion_tokens=self.backend.count_message_tokens([reply.to_message()]),
            )
        ev: dict[str, Any] = {
            "type": "assistant",
            "step": step,
            "message": reply.to_message(),
            "usage": usage_to_dict(usage),
            "finish_reason": reply.finish_reason,
            "duration": duration,
        }
        if reply.invalid_tool_calls:
            ev["invalid"] = [asdict(c) for c in reply.invalid_tool_calls]
        # A turn with tool calls reaches the disk with their start events, in one flush; until then a
        # kill only costs this model call again.
        self._record(ev, flush=not reply.tool_calls)

    async def _ask(self, messages: list[Message], step: int, tools: bool = True) -> AssistantMessage | Stop:
        """One model call (with the tools, or without for a summary), retried with backoff on errors."""
        schemas = self._schemas if tools else None
        for attempt in range(self.retries + 1):
            try:
                return await self._call(messages, schemas, step)
            except Exception as exc:  # a kill, a cancellation or the wall deadline passes through
                error = exc
            if attempt == self.retries:
                return Stop("backend_error", f"{getattr(self.backend, 'name', 'backend')}: {type(error).__name__}: {error} (after {attempt + 1} attempts)")
            wait = self.retry_backoff * 2**attempt
            self._record({"type": "retry", "step": step, "attempt": attempt + 1, "error": f"{type(error).__name__}: {error}"})
            self._emit("retry", step, error=f"{type(error).__name__}: {error}", attempt=attempt + 1, wait=wait)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def _call(self, messages: list[Message], tools: list[dict[str, Any]] | None, step: int) -> AssistantMessage:
        if not self.stream:
            return await self.backend.acomplete(messages, tools, **self.sampling)
        deltas = []
        async for d in self.backend.astream(messages, tools, **self.sampling):
            if d.reasoning:
                self._emit("thinking", step, text=d.reasoning)
            if d.content:
                self._emit("content", step, text=d.content)
            deltas.append(d)
        return accumulate(deltas)

    # ----------------------------------------------------------------- tools

    async def _execute(self, indexes: list[int], rerun: set[int]) -> None:
        """Run the pending calls at ``indexes`` concurrently, recording each result as it lands."""
        st = self._state
        assert st is not None
        self._phase = ("the tool calls", st.step)
        calls = [(i, st.pending[i]) for i in indexes]
        # Every start is on disk before any call runs (one flush for the turn, its assistant event included),
        # so a call in flight at a kill is known and marked when it runs again.
        for n, (i, call) in enumerate(calls):
            start: dict[str, Any] = {"type": "tool_start", "step": st.step, "index": i, "id": call.id, "name": call.name}
            if i in rerun:
                start["rerun"] = True
            self._record(start, flush=n == len(calls) - 1)
        if len(calls) == 1:
            await self._run_call(*calls[0], calls[0][0] in rerun)
        else:
            await asyncio.gather(*(self._run_call(i, c, i in rerun) for i, c in calls))
        st.flush_results()

    async def _run_call(self, index: int, call: ToolCall, rerun: bool) -> None:
        st = self._state
        assert st is not None
        step = st.step
        if self._emit.active:
            self._emit("tool_call", step, id=call.id, name=call.name, arguments=call.arguments, rerun=rerun)
        ctx = ToolContext(self.name, call.id, step, self.trace_path, self._emit.send if self._emit.active else None, self._record_info)
        token = _CONTEXT.set(ctx)
        t = time.monotonic()
        try:
            result = await run_tool_call(self.tools, call)  # unknown tools and bad arguments come back as errors
        finally:
            _CONTEXT.reset(token)
        duration = time.monotonic() - t
        text, ref = shorten(result.text, self.store, self.inline_limit, self.preview_chars)
        content = (result if ref is None else ToolResult(text, result.images, result.is_error)).to_content()
        sources = ctx.sources + list(getattr(result, "sources", None) or []) + st.sources.sources_in(result.text)
        ev: dict[str, Any] = {
            "type": "tool_result",
            "step": step,
            "index": index,
            "id": call.id,
            "name": call.name,
            "content": externalize(content, self.store),
            "is_error": result.is_error,
            "duration": duration,
        }
        if ref:
            ev["ref"] = ref
        if sources:
            ev["sources"] = [source_to_dict(s) for s in dict.fromkeys(sources)]
        if ctx.chain is not None:
            ev["chain"] = list(ctx.chain)
        if rerun:
            ev["rerun"] = True
        self._record(ev, {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": content})
        if self._emit.active:
            self._emit("tool_result", step, id=call.id, name=call.name, preview=result.text[:300], is_error=result.is_error, ref=ref, rerun=rerun)

    def _record_info(self, ev: dict[str, Any]) -> None:
        assert self._state is not None
        self._record({**ev, "step": self._state.step})

    def _feedback(self) -> None:
        st = self._state
        assert st is not None
        lines = [
            f"- {c.get('name') or 'unnamed call'}: {c['error']}; as written: {(c.get('raw') or c.get('arguments') or '')[:300]!r}"
            for c in st.invalid_due
        ]
        text = "These tool calls could not be read, so they were not run:\n" + "\n".join(lines) + "\nIssue them again with a tool name and a JSON object of arguments."
        self._emit("invalid_call", st.step, errors=[c["error"] for c in st.invalid_due])
        self._record({"type": "feedback", "step": st.step, "content": text})

    # ----------------------------------------------------------------- context

    def _context_tokens(self, limit: int) -> int:
        """Tokens in the conversation: the backend's own count at the last call plus what came after.

        Returns early with a bound when that is clearly under ``limit``: a byte-level tokenizer
        never makes more tokens than bytes, so text bytes (plus per-message overhead) bound the
        count, and a swarm of short conversations skips the tokenizer on every step.
        """
        st = self._state
        assert st is not None
        if st.anchor is None or st.anchor[0] > len(st.messages):
            return self.backend.count_message_tokens(st.messages, self._schemas)
        tail = st.messages[st.anchor[0] :]
        if all(isinstance(m.get("content"), str) for m in tail):  # images have no byte bound
            bound = st.anchor[1] + sum(_byte_bound(m) for m in tail)
            if bound <= limit:
                return bound
        return st.anchor[1] + self.backend.count_message_tokens(tail)

    async def _maybe_compact(self) -> Stop | None:
        st = self._state
        cfg = self.compaction
        assert st is not None and cfg is not None
        window = self.backend.context_window
        limit = cfg.limit(window)
        before = self._context_tokens(limit)
        if before <= limit:
            return None
        cut = choose_cut(st.messages, st.prefix, cfg.keep_turns, self.backend.count_message_tokens, limit // 2)
        if cut is None:
            return None  # nothing older than the turns that must stay; the window may still suffice
        start, keep_from = cut
        previous = ledger_of(st.messages[st.prefix]) if start > st.prefix else None
        budget = int(window * cfg.summary_share)
        blocks = transcript(st.messages[start:keep_from], max_chars=budget // 4)  # <= 4 bytes a character, <= 1 token a byte

        async def ask(request: list[Message]) -> AssistantMessage:
            reply = await self._ask(request, st.step, tools=False)
            if isinstance(reply, Stop):
                raise _Stopped(reply)
            return reply

        try:
            ledger, usage = await fold(ask, cfg, st.task, previous or "", blocks, self.backend.count_tokens, budget)
        except _Stopped as stopped:
            return stopped.stop
        kept = st.messages[keep_from:]
        after = self.backend.count_message_tokens(st.messages[: st.prefix] + [ledger_message(ledger)] + kept, self._schemas)
        self._record(
            {
                "type": "compaction",
                "step": st.step,
                "prefix": st.prefix,
                "keep": len(kept),
                "ledger": ledger,
                "usage": usage_to_dict(usage),
                "tokens_before": before,
                "tokens_after": after,
            }
        )
        self._emit("compaction", st.step, tokens_before=before, tokens_after=after, dropped=keep_from - start)
        return None

    # ----------------------------------------------------------------- the end

    def _finish(self, answer: str, reason: str) -> AgentResult:
        st = self._state
        assert st is not None
        cited, unverified = st.sources.cite(answer)
        inferred = False
        if not cited and answer.strip():
            # The model cited nothing (small models rarely do): attribute the answer to the seen
            # passages that contain its figures, and say that the sources were matched, not cited.
            seen = ((p.source, p.text) for d in self.documents for p in d.parts if p.text and p.source in st.sources)
            cited = supporting_sources(answer, seen)
            inferred = bool(cited)
        return self._write_stop(reason, "", answer, cited, unverified, inferred)

    def _stop(self, stop: Stop) -> AgentResult:
        return self._write_stop(stop.reason, stop.detail, "", [], [])

    def _write_stop(self, reason: str, detail: str, answer: str, cited: list[Source], unverified: list[str], inferred: bool = False) -> AgentResult:
        st = self._state
        assert st is not None
        steps, seconds = st.critical_path
        ev = {
            "type": "stop",
            "step": st.step,
            "reason": reason,
            "detail": detail,
            "answer": answer,
            "citations": [source_to_dict(s) for s in cited],
            "unverified": unverified,
            "citations_inferred": inferred,
            "steps": st.step,
            "tool_calls": st.tool_calls,
            "usage": usage_to_dict(st.usage),
            "critical_steps": steps,
            "critical_seconds": seconds,
            "elapsed": self._elapsed(),
        }
        self._record(ev)
        if self._trace is not None:
            self._trace.sync()
        self._emit("stop", st.step, reason=reason, detail=detail, answer=answer)
        return self._result(ev)

    def _result(self, ev: dict[str, Any]) -> AgentResult:
        return AgentResult(
            answer=ev["answer"],
            citations=[source_from_dict(d) for d in ev.get("citations", [])],
            stop_reason=ev["reason"],
            steps=ev["steps"],
            tool_calls=ev["tool_calls"],
            usage=usage_from_dict(ev.get("usage")),
            trace_path=self.trace_path,
            detail=ev.get("detail", ""),
            unverified_citations=list(ev.get("unverified", [])),
            citations_inferred=ev.get("citations_inferred", False),
            elapsed=ev.get("elapsed", 0.0),
            critical_steps=ev.get("critical_steps", 0),
            critical_seconds=ev.get("critical_seconds", 0.0),
        )


def _byte_bound(m: Message) -> int:
    """An upper bound on a text message's tokens for any byte-level tokenizer, with framing."""
    n = 8 + len(m["content"].encode("utf-8")) + len((m.get("reasoning_content") or "").encode("utf-8"))
    for c in m.get("tool_calls") or []:
        n += 8 + len(c["function"]["name"]) + len((c["function"].get("arguments") or "").encode("utf-8"))
    return n


async def _within(awaitable: Any, seconds: float | None) -> Any:
    """Await with a deadline (None: no deadline); raises asyncio.TimeoutError when it passes."""
    if seconds is None:
        return await awaitable
    if hasattr(asyncio, "timeout"):  # 3.11+: no extra task per call
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)
