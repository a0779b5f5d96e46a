"""A backend that replays fixed assistant turns: for tests, examples and agent benchmarks.

Turns are :class:`AssistantMessage` objects, OpenAI-style assistant dicts, plain strings, or a
function of the conversation that returns one of those. Streaming splits content into small
chunks and tool-call arguments into pieces, as a real server does, so stream consumers are
exercised for real.

Time is simulated too, so swarm benchmarks measure scheduling rather than a model: ``latency``
is paid once per call (time to first token) and ``tokens_per_second`` per completion token,
spread over the streamed pieces. The async methods sleep on the event loop, so hundreds of
concurrent sub-agents cost no threads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from kimidoc.backends.base import BaseBackend
from kimidoc.messages import AssistantMessage, Delta, Message, ToolCallDelta, ToolSchema, Usage, accumulate

Turn = AssistantMessage | Message | str
TurnFn = Callable[[Sequence[Message], Sequence[ToolSchema] | None], Turn]


def as_assistant(turn: Turn) -> AssistantMessage:
    if isinstance(turn, AssistantMessage):
        return turn
    if isinstance(turn, str):
        return AssistantMessage(content=turn)
    return AssistantMessage.from_message(turn)


def split_into_deltas(msg: AssistantMessage, chunk: int) -> list[Delta]:
    """The deltas a server would stream for ``msg``: reasoning, content, then each tool call."""
    n = max(1, chunk)
    out = [Delta(reasoning=msg.reasoning[i : i + n]) for i in range(0, len(msg.reasoning), n)]
    out += [Delta(content=msg.content[i : i + n]) for i in range(0, len(msg.content), n)]
    for idx, call in enumerate(msg.tool_calls):
        out.append(Delta(tool_calls=[ToolCallDelta(index=idx, id=call.id, name=call.name)]))
        out += [
            Delta(tool_calls=[ToolCallDelta(index=idx, arguments=call.arguments[i : i + n])])
            for i in range(0, len(call.arguments), n)
        ]
    finish = msg.finish_reason if msg.finish_reason != "stop" or not msg.tool_calls else "tool_calls"
    out.append(Delta(invalid_tool_calls=list(msg.invalid_tool_calls), finish_reason=finish, usage=msg.usage))
    return out


class ScriptExhausted(RuntimeError):
    """The script has no turn left for a call."""


class Scripted(BaseBackend):
    """Replays ``turns`` in order (thread-safe), or calls ``turns`` for each request.

    ``latency`` simulates time to first token per call (seconds), ``tokens_per_second`` the
    decode speed (None: instant), ``chunk`` the streamed piece size. A turn that carries no
    usage gets one simulated from the conversation with :meth:`count_tokens`.
    """

    name = "scripted"

    def __init__(
        self,
        turns: Sequence[Turn] | TurnFn,
        *,
        latency: float = 0.0,
        tokens_per_second: float | None = None,
        chunk: int = 7,
        context_window: int = 262144,
    ) -> None:
        self._fn: TurnFn | None = turns if callable(turns) else None
        self._turns: list[Turn] = [] if callable(turns) else list(turns)
        self._next = 0
        self._lock = threading.Lock()
        self.latency = latency
        self.tokens_per_second = tokens_per_second
        self.chunk = max(1, chunk)
        self.context_window = context_window
        self.calls: list[list[Message]] = []  # every conversation seen, for assertions

    def _turn_for(self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None) -> AssistantMessage:
        with self._lock:
            self.calls.append(list(messages))
            if self._fn is None:
                if self._next >= len(self._turns):
                    raise ScriptExhausted(
                        f"scripted backend has only {len(self._turns)} turns; call {self._next + 1} asked for another"
                    )
                turn = self._turns[self._next]
                self._next += 1
        if self._fn is not None:
            turn = self._fn(messages, tools)
        return as_assistant(turn)

    def _plan(self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None) -> tuple[list[Delta], float]:
        """The deltas of the next turn and the simulated seconds between two of them."""
        msg = self._turn_for(messages, tools)
        if not msg.usage.total_tokens:
            usage = Usage(
                prompt_tokens=self.count_message_tokens(messages, tools),
                completion_tokens=self.count_tokens(
                    msg.content + msg.reasoning + "".join(c.arguments for c in msg.tool_calls)
                ),
                reasoning_tokens=self.count_tokens(msg.reasoning),
            )
            msg = dataclasses.replace(msg, usage=usage)  # never alter a turn the caller may reuse
        deltas = split_into_deltas(msg, self.chunk)
        decode = msg.usage.completion_tokens / self.tokens_per_second if self.tokens_per_second else 0.0
        return deltas, decode / max(1, len(deltas) - 1)

    def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None, **sampling: Any
    ) -> Iterator[Delta]:
        deltas, gap = self._plan(messages, tools)
        if self.latency:
            time.sleep(self.latency)
        for i, d in enumerate(deltas):
            if gap and i:
                time.sleep(gap)
            yield d

    async def astream(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None, **sampling: Any
    ) -> AsyncIterator[Delta]:
        deltas, gap = self._plan(messages, tools)
        if self.latency:
            await asyncio.sleep(self.latency)
        for i, d in enumerate(deltas):
            if gap and i:
                await asyncio.sleep(gap)
            yield d

    async def acomplete(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None, **sampling: Any
    ) -> AssistantMessage:
        deltas, gap = self._plan(messages, tools)
        wait = self.latency + gap * (len(deltas) - 1)
        if wait:
            await asyncio.sleep(wait)
        return accumulate(deltas)
