"""A run's trace events, written and read in one place, and the run's state as a fold over them.

The event functions below are the only writers of the trace's event records; :meth:`RunState.apply`
is their only reader. The agent never changes its state except by recording an event, and a resume
replays the recorded events through the same :meth:`RunState.apply`, so the rebuilt conversation is
the one the killed process had, byte for byte, compactions included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from kimidoc.agents.blobs import BlobStore, internalize
from kimidoc.agents.citations import SourceRegistry, source_from_dict
from kimidoc.agents.compaction import ledger_message
from kimidoc.agents.trace import TRACE_VERSION, usage_from_dict, usage_to_dict
from kimidoc.messages import Message, ToolCall, Usage, text_of

Event = dict[str, Any]  # one trace line; ``type`` says which of the kinds below


def header_event(
    agent: str,
    task: str,
    system_prompt: str,
    tools: list[dict[str, Any]],
    config: dict[str, Any],
    documents: list[str],
    packed: list[dict[str, Any]],
    prefix: int,
    messages: list[Message],
) -> Event:
    """The first line: what :meth:`RunState.from_header` rebuilds the run from."""
    return {
        "type": "header",
        "version": TRACE_VERSION,
        "agent": agent,
        "task": task,
        "system_prompt": system_prompt,
        "tools": tools,
        "config": config,
        "documents": documents,
        "packed": packed,
        "prefix": prefix,
        "messages": messages,
        "t": time.time(),
    }


def assistant_event(
    step: int, message: Message, usage: Usage, finish_reason: str | None, duration: float, invalid: list[dict[str, Any]]
) -> Event:
    ev: Event = {
        "type": "assistant",
        "step": step,
        "message": message,
        "usage": usage_to_dict(usage),
        "finish_reason": finish_reason,
        "duration": duration,
    }
    if invalid:
        ev["invalid"] = invalid
    return ev


def tool_start_event(step: int, index: int, call: ToolCall, rerun: bool) -> Event:
    ev: Event = {"type": "tool_start", "step": step, "index": index, "id": call.id, "name": call.name}
    if rerun:
        ev["rerun"] = True
    return ev


def tool_result_event(
    step: int,
    index: int,
    call: ToolCall,
    content: Any,
    is_error: bool,
    duration: float,
    *,
    ref: str | None,
    sources: list[dict[str, Any]],
    chain: tuple[int, float] | None,
    rerun: bool,
) -> Event:
    ev: Event = {
        "type": "tool_result",
        "step": step,
        "index": index,
        "id": call.id,
        "name": call.name,
        "content": content,
        "is_error": is_error,
        "duration": duration,
    }
    if ref:
        ev["ref"] = ref
    if sources:
        ev["sources"] = sources
    if chain is not None:
        ev["chain"] = list(chain)
    if rerun:
        ev["rerun"] = True
    return ev


def feedback_event(step: int, content: str) -> Event:
    return {"type": "feedback", "step": step, "content": content}


def compaction_event(
    step: int, prefix: int, keep: int, ledger: str, usage: Usage, tokens_before: int, tokens_after: int
) -> Event:
    return {
        "type": "compaction",
        "step": step,
        "prefix": prefix,
        "keep": keep,
        "ledger": ledger,
        "usage": usage_to_dict(usage),
        "tokens_before": tokens_before,
        "tokens_after": tokens_after,
    }


def retry_event(step: int, attempt: int, error: str) -> Event:
    return {"type": "retry", "step": step, "attempt": attempt, "error": error}


def resume_event(step: int) -> Event:
    return {"type": "resume", "step": step}


def stop_event(
    state: RunState,
    reason: str,
    detail: str,
    answer: str,
    citations: list[dict[str, Any]],
    unverified: list[str],
    inferred: bool,
    elapsed: float,
    *,
    claims: list[dict[str, Any]] = (),
    evidence: list[dict[str, Any]] = (),
) -> Event:
    steps, seconds = state.critical_path
    return {
        "type": "stop",
        "step": state.step,
        "reason": reason,
        "detail": detail,
        "answer": answer,
        "citations": citations,
        "unverified": unverified,
        "citations_inferred": inferred,
        "claims": list(claims),
        "evidence": list(evidence),
        "steps": state.step,
        "tool_calls": state.tool_calls,
        "usage": usage_to_dict(state.usage),
        "critical_steps": steps,
        "critical_seconds": seconds,
        "elapsed": elapsed,
    }


@dataclass
class RunState:
    messages: list[Message]
    prefix: int  # leading messages (system prompt, task) that compaction never touches
    task: str
    store: BlobStore
    sources: SourceRegistry = field(default_factory=SourceRegistry)
    step: int = 0
    tool_calls: int = 0
    usage: Usage = field(default_factory=Usage)
    pending: list[ToolCall] = field(default_factory=list)  # the last turn's calls not yet all answered
    results: dict[int, Message] = field(default_factory=dict)  # call index -> tool message
    started: set[int] = field(default_factory=set)  # call indexes with a recorded start
    invalid_due: list[dict[str, Any]] = field(default_factory=list)  # unreadable calls still to answer
    final: str | None = None  # the last turn's answer when it called no tool
    final_reason: str = "stop"
    stop: dict[str, Any] | None = None
    anchor: tuple[int, int] | None = None  # (messages counted, tokens the backend counted for them)
    critical: list[float] = field(default_factory=lambda: [0, 0.0])  # steps, seconds of finished steps
    step_chain: list[float] = field(default_factory=lambda: [0, 0.0])  # the longest tool chain of this step
    _closed: float = 0.0  # running time of earlier sessions
    _session: list[float] = field(default_factory=lambda: [0.0, 0.0])  # first and last event time of this one

    @classmethod
    def from_header(cls, header: dict[str, Any], store: BlobStore) -> RunState:
        messages = [{**m, "content": internalize(m.get("content"), store)} for m in header["messages"]]
        state = cls(messages=messages, prefix=header["prefix"], task=header["task"], store=store)
        state.sources.add(source_from_dict(d) for d in header.get("packed", []))
        t = header.get("t", time.time())
        state._session = [t, t]
        return state

    @property
    def elapsed(self) -> float:
        """Running time recorded so far, over all sessions."""
        return self._closed + self._session[1] - self._session[0]

    @property
    def critical_path(self) -> tuple[int, float]:
        return int(self.critical[0] + self.step_chain[0]), self.critical[1] + self.step_chain[1]

    def apply(self, ev: dict[str, Any], message: Message | None = None) -> None:
        """Fold one event in; ``message`` is the live tool message (saves rebuilding it from blobs)."""
        kind = ev["type"]
        t = ev["t"] if "t" in ev else time.time()
        if kind == "resume":
            self._closed += self._session[1] - self._session[0]
            self._session = [t, t]
            self.stop = None
            return
        self._session[1] = max(self._session[1], t)
        if kind == "assistant":
            self.flush_results()
            msg = ev["message"]
            self.messages.append(msg)
            self.step = ev["step"]
            usage = usage_from_dict(ev.get("usage"))
            self.usage = self.usage + usage
            self.pending = [ToolCall.from_openai(c) for c in msg.get("tool_calls") or []]
            self.results, self.started = {}, set()
            self.invalid_due = list(ev.get("invalid") or [])
            self.final = text_of(msg.get("content")) if not self.pending and not self.invalid_due else None
            self.final_reason = ev.get("finish_reason", "stop")
            if usage.prompt_tokens:
                self.anchor = (len(self.messages), usage.prompt_tokens + usage.completion_tokens)
            self.critical = [
                self.critical[0] + self.step_chain[0] + 1,
                self.critical[1] + self.step_chain[1] + ev.get("duration", 0.0),
            ]
            self.step_chain = [0, 0.0]
        elif kind == "tool_start":
            self.started.add(ev["index"])
        elif kind == "tool_result":
            self.results[ev["index"]] = message or {
                "role": "tool",
                "tool_call_id": ev["id"],
                "name": ev["name"],
                "content": internalize(ev["content"], self.store),
            }
            self.tool_calls += 1
            if "sources" in ev:
                self.sources.add(source_from_dict(d) for d in ev["sources"])
            steps, seconds = ev.get("chain") or (0, ev.get("duration", 0.0))
            chain = self.step_chain
            if steps > chain[0] or seconds > chain[1]:
                self.step_chain = [max(chain[0], steps), max(chain[1], seconds)]
        elif kind == "feedback":
            self.flush_results()
            self.messages.append({"role": "user", "content": ev["content"]})
            self.invalid_due = []
        elif kind == "compaction":
            self.flush_results()
            keep = ev["keep"]
            tail = self.messages[len(self.messages) - keep :] if keep else []
            self.messages = self.messages[: ev["prefix"]] + [ledger_message(ev["ledger"])] + tail
            self.usage = self.usage + usage_from_dict(ev.get("usage"))
            self.anchor = None
        elif kind == "stop":
            self.flush_results()
            self.stop = ev
        # Other events (retry, swarm, ...) record what happened without changing the run's state.

    def flush_results(self) -> None:
        """Append the last turn's tool results, in call order, once every call has one."""
        if self.pending and len(self.results) == len(self.pending):
            self.messages.extend(self.results[i] for i in range(len(self.pending)))
            self.pending, self.results, self.started = [], {}, set()

    def unanswered(self) -> list[int]:
        return [i for i in range(len(self.pending)) if i not in self.results]
