"""One run of an agent: ask the backend, run the turn's tool calls, feed the results back, until an answer.

Everything the loop does is recorded as a trace event before it moves on (the events are written
and folded in :mod:`kimidoc.agents.state`), which is what makes :meth:`Agent.resume` exact: a run
killed at any point continues from its trace, finished tool calls are never repeated, and a call
that was in flight at the kill is run again and marked ``rerun``. The loop is asyncio-native so a
swarm of hundreds of agents is hundreds of tasks on one event loop.

An :class:`AgentRun` exists only with its state: it is made from a task (a new trace header) or from
a trace's events, so nothing in the loop can meet a run that has not started.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kimidoc.agents.blobs import externalize, shorten
from kimidoc.agents.budget import Stop, check_step, check_tool_calls, check_wall_time, wall_time_left
from kimidoc.agents.citations import source_from_dict, source_to_dict
from kimidoc.agents.compaction import Compaction, choose_cut, fold, ledger_message, ledger_of, transcript
from kimidoc.agents.state import (
    RunState,
    assistant_event,
    compaction_event,
    feedback_event,
    resume_event,
    retry_event,
    stop_event,
    tool_result_event,
    tool_start_event,
)
from kimidoc.agents.tool_context import TOOL_CONTEXT, ToolContext
from kimidoc.agents.trace import TraceWriter, usage_from_dict
from kimidoc.agents.verify import Claim, Verification, claim_from_dict, claim_to_dict, verify
from kimidoc.documents.base import Source
from kimidoc.documents.passages import Passage, passages_of
from kimidoc.documents.retrieve import Index
from kimidoc.messages import AssistantMessage, Message, ToolCall, Usage, accumulate
from kimidoc.progress import progress
from kimidoc.tools.base import ToolResult, run_tool_call

if TYPE_CHECKING:
    from kimidoc.agents.agent import Agent


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
    citations_inferred: bool = False  # the answer cited nothing; citations are the passages holding its checked claims
    claims: list[Claim] = field(default_factory=list)  # every figure and name of the answer, with its verdict
    evidence: list[Passage] = field(default_factory=list)  # the passages that back the answer, best first (at most 3)
    elapsed: float = 0.0  # running seconds over all sessions
    critical_steps: int = 0  # model calls on the longest chain of dependent steps (sub-agents included)
    critical_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.stop_reason == "answer"

    @property
    def verification(self) -> Verification:
        return Verification(self.claims)

    @property
    def answer_status(self) -> str:
        """``supported``, ``unsupported`` (a figure or name found in no passage read) or ``unchecked``."""
        return self.verification.status


class _Stopped(Exception):
    def __init__(self, stop: Stop) -> None:
        self.stop = stop


class AgentRun:
    """The loop over one run's state, with the settings of the :class:`~kimidoc.agents.Agent` that runs it.

    ``resuming`` marks a run rebuilt from a trace that has not yet continued."""

    def __init__(self, agent: Agent, state: RunState, *, resuming: bool) -> None:
        self.state = state
        self.resuming = resuming
        # The agent's settings, read-only here.
        self.backend = agent.backend
        self.documents = agent.documents
        self.budget = agent.budget
        self.compaction = agent.compaction
        self.sampling = agent.sampling
        self.stream = agent.stream
        self.name = agent.name
        self.trace_path = agent.trace_path
        self.inline_limit = agent.inline_limit
        self.preview_chars = agent.preview_chars
        self.retries = agent.retries
        self.retry_backoff = agent.retry_backoff
        self.show_progress = agent.show_progress
        self.store = agent.store
        self.tools = agent.tools
        self._schemas = agent.schemas
        self._emit = agent.emitter
        self._trace_fsync = agent.trace_fsync
        self._trace: TraceWriter | None = None
        self._t0 = 0.0
        self._elapsed0 = 0.0
        self._phase: tuple[str, int] = ("starting", 0)  # what the run is doing, for a wall-time stop's message

    @classmethod
    def start(cls, agent: Agent, header: dict[str, Any], messages: list[Message]) -> AgentRun:
        """A new run: its header goes to the trace first, then becomes the state."""
        run = cls(agent, RunState.from_header(header, agent.store), resuming=False)
        run._open_trace()
        if run._trace is not None:
            run._trace.write(header)
        run.state.messages = messages  # the live ones, images inline, identical to the rebuilt ones
        return run

    async def run(self) -> AgentResult:
        try:
            return await self._loop()
        finally:
            self.resuming = False
            if self._trace is not None:
                self._trace.close()
                self._trace = None

    def _open_trace(self) -> None:
        if self.trace_path is not None:
            self._trace = TraceWriter(self.trace_path, fsync=self._trace_fsync)

    def _record(self, ev: dict[str, Any], message: Message | None = None, *, flush: bool = True) -> None:
        ev.setdefault("t", time.time())
        if self._trace is not None:
            self._trace.write(ev, flush=flush)
        self.state.apply(ev, message)

    def _elapsed(self) -> float:
        return self._elapsed0 + time.monotonic() - self._t0

    async def _loop(self) -> AgentResult:
        st = self.state
        if st.stop is not None and st.stop["reason"] in ("answer", "length"):
            return self._result(st.stop)
        self._t0 = time.monotonic()
        self._elapsed0 = st.elapsed
        if self.resuming:
            self._open_trace()
            self._record(resume_event(st.step))
        self._emit("start", st.step, task=st.task, resumed=self.resuming)
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
        st = self.state
        bar = progress(desc=f"agent {self.name}", unit="step", initial=st.step) if self.show_progress else None
        try:
            stop = await self._finish_interrupted_turn()
            if stop is not None:
                return self._stop(stop)
            while st.final is None:
                stop = check_step(self.budget, st.step, st.usage, self._elapsed())
                if stop is None and self.compaction is not None:
                    self._phase = ("compaction", 0)
                    stop = await self._maybe_compact(self.compaction)
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
        st = self.state
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
        st = self.state
        usage = reply.usage
        if not usage.total_tokens:  # a backend that reports no usage: count it ourselves, budgets still hold
            usage = Usage(
                prompt_tokens=self.backend.count_message_tokens(st.messages, self._schemas),
                completion_tokens=self.backend.count_message_tokens([reply.to_message()]),
            )
        ev = assistant_event(
            step,
            reply.to_message(),
            usage,
            reply.finish_reason,
            duration,
            [asdict(c) for c in reply.invalid_tool_calls],
        )
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
                return Stop(
                    "backend_error",
                    f"{getattr(self.backend, 'name', 'backend')}: {type(error).__name__}: {error} (after {attempt + 1} attempts)",
                )
            wait = self.retry_backoff * 2**attempt
            self._record(retry_event(step, attempt + 1, f"{type(error).__name__}: {error}"))
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
        st = self.state
        self._phase = ("the tool calls", st.step)
        calls = [(i, st.pending[i]) for i in indexes]
        # Every start is on disk before any call runs (one flush for the turn, its assistant event included),
        # so a call in flight at a kill is known and marked when it runs again.
        for n, (i, call) in enumerate(calls):
            self._record(tool_start_event(st.step, i, call, i in rerun), flush=n == len(calls) - 1)
        if len(calls) == 1:
            await self._run_call(*calls[0], calls[0][0] in rerun)
        else:
            await asyncio.gather(*(self._run_call(i, c, i in rerun) for i, c in calls))
        st.flush_results()

    async def _run_call(self, index: int, call: ToolCall, rerun: bool) -> None:
        st = self.state
        step = st.step
        if self._emit.active:
            self._emit("tool_call", step, id=call.id, name=call.name, arguments=call.arguments, rerun=rerun)
        ctx = ToolContext(
            self.name, call.id, step, self.trace_path, self._emit.send if self._emit.active else None, self._record_info
        )
        token = TOOL_CONTEXT.set(ctx)
        t = time.monotonic()
        try:
            result = await run_tool_call(self.tools, call)  # unknown tools and bad arguments come back as errors
        finally:
            TOOL_CONTEXT.reset(token)
        duration = time.monotonic() - t
        text, ref = shorten(result.text, self.store, self.inline_limit, self.preview_chars)
        content = (result if ref is None else ToolResult(text, result.images, result.is_error)).to_content()
        sources = ctx.sources + result.sources
        ev = tool_result_event(
            step,
            index,
            call,
            externalize(content, self.store),
            result.is_error,
            duration,
            ref=ref,
            sources=[source_to_dict(s) for s in dict.fromkeys(sources)],
            chain=ctx.chain,
            rerun=rerun,
        )
        self._record(ev, {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": content})
        if self._emit.active:
            self._emit(
                "tool_result",
                step,
                id=call.id,
                name=call.name,
                preview=result.text[:300],
                is_error=result.is_error,
                ref=ref,
                rerun=rerun,
            )

    def _record_info(self, ev: dict[str, Any]) -> None:
        self._record({**ev, "step": self.state.step})

    def _feedback(self) -> None:
        st = self.state
        lines = [
            f"- {c.get('name') or 'unnamed call'}: {c['error']}; as written: {(c.get('raw') or c.get('arguments') or '')[:300]!r}"
            for c in st.invalid_due
        ]
        text = (
            "These tool calls could not be read, so they were not run:\n"
            + "\n".join(lines)
            + "\nIssue them again with a tool name and a JSON object of arguments."
        )
        self._emit("invalid_call", st.step, errors=[c["error"] for c in st.invalid_due])
        self._record(feedback_event(st.step, text))

    # ----------------------------------------------------------------- context

    def _context_tokens(self, limit: int) -> int:
        """Tokens in the conversation: the backend's own count at the last call plus what came after.

        Returns early with a bound when that is clearly under ``limit``: a byte-level tokenizer
        never makes more tokens than bytes, so text bytes (plus per-message overhead) bound the
        count, and a swarm of short conversations skips the tokenizer on every step.
        """
        st = self.state
        if st.anchor is None or st.anchor[0] > len(st.messages):
            return self.backend.count_message_tokens(st.messages, self._schemas)
        tail = st.messages[st.anchor[0] :]
        if all(isinstance(m.get("content"), str) for m in tail):  # images have no byte bound
            bound = st.anchor[1] + sum(_byte_bound(m) for m in tail)
            if bound <= limit:
                return bound
        return st.anchor[1] + self.backend.count_message_tokens(tail)

    async def _maybe_compact(self, cfg: Compaction) -> Stop | None:
        st = self.state
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
        blocks = transcript(
            st.messages[start:keep_from], max_chars=budget // 4
        )  # <= 4 bytes a character, <= 1 token a byte

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
        after = self.backend.count_message_tokens(
            st.messages[: st.prefix] + [ledger_message(ledger)] + kept, self._schemas
        )
        self._record(compaction_event(st.step, st.prefix, len(kept), ledger, usage, before, after))
        self._emit("compaction", st.step, tokens_before=before, tokens_after=after, dropped=keep_from - start)
        return None

    # ----------------------------------------------------------------- the end

    def _finish(self, answer: str, reason: str) -> AgentResult:
        st = self.state
        cited, unverified = st.sources.cite(answer)
        # Every figure and name of the answer is checked against the passages the run saw, the
        # passages most relevant to the task first, so a claim's source is the likeliest page.
        seen = passages_of(self.documents, st.sources)
        seen = list(dict.fromkeys([h.passage for h in Index(seen).search(st.task, len(seen))] + seen)) if seen else []
        checked = verify(answer, seen, st.task)
        inferred = False
        if not cited and answer.strip():
            # The model cited nothing (small models rarely do): cite the passages that hold its
            # checked claims, and say that the sources were matched, not cited.
            cited = checked.sources()
            inferred = bool(cited)
        holding = {c.source for c in checked.claims if c.supported}
        evidence = [p for p in seen if p.source in holding][:3] or seen[:3]
        return self._write_stop(reason, "", answer, cited, unverified, inferred, checked.claims, evidence)

    def _stop(self, stop: Stop) -> AgentResult:
        return self._write_stop(stop.reason, stop.detail, "", [], [])

    def _write_stop(
        self,
        reason: str,
        detail: str,
        answer: str,
        cited: list[Source],
        unverified: list[str],
        inferred: bool = False,
        claims: Sequence[Claim] = (),
        evidence: Sequence[Passage] = (),
    ) -> AgentResult:
        st = self.state
        ev = stop_event(
            st,
            reason,
            detail,
            answer,
            [source_to_dict(s) for s in cited],
            unverified,
            inferred,
            self._elapsed(),
            claims=[claim_to_dict(c) for c in claims],
            evidence=[
                {"source": source_to_dict(p.source), "text": p.text, "kind": p.kind, "context": p.context}
                for p in evidence
            ],
        )
        self._record(ev)
        if self._trace is not None:
            self._trace.sync()
        self._emit(
            "stop",
            st.step,
            reason=reason,
            detail=detail,
            answer=answer,
            unsupported=[c.text for c in claims if not c.supported],
        )
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
            claims=[claim_from_dict(d) for d in ev.get("claims", [])],
            evidence=[
                Passage(source_from_dict(d["source"]), d["text"], d["kind"], d.get("context", ""))
                for d in ev.get("evidence", [])
            ],
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
