"""A backend that replays fixed assistant turns: for tests, examples and agent benchmarks.

Turns are :class:`AssistantMessage` objects, OpenAI-style assistant dicts, plain strings, or a
function of the conversation that returns one of those. Streaming splits content into small
chunks and tool-call arguments into pieces, as a real server does, so stream consumers are
exercised for real.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator, Sequence, Union

from kimidoc.backends.base import BaseBackend
from kimidoc.messages import AssistantMessage, Delta, Message, ToolCallDelta, ToolSchema, Usage, text_of

Turn = Union[AssistantMessage, Message, str]
TurnFn = Callable[[Sequence[Message], Sequence[ToolSchema] | None], Turn]


def as_assistant(turn: Turn) -> AssistantMessage:
    if isinstance(turn, AssistantMessage):
        return turn
    if isinstance(turn, str):
        return AssistantMessage(content=turn)
    return AssistantMessage.from_message(turn)


class ScriptExhausted(RuntimeError):
    """The script has no turn left for a call."""


class Scripted(BaseBackend):
    """Replays ``turns`` in order (thread-safe), or calls ``turns`` for each request.

    ``latency`` simulates model time per call (seconds, slept in the calling thread) and
    ``chunk`` sets the streamed piece size. Usage counts are simulated from byte lengths.
    """

    name = "scripted"

    def __init__(self, turns: Sequence[Turn] | TurnFn, *, latency: float = 0.0, chunk: int = 7, context_window: int = 262144) -> None:
        self._fn: TurnFn | None = turns if callable(turns) else None
        self._turns: list[Turn] = [] if callable(turns) else list(turns)
        self._next = 0
        self._lock = threading.Lock()
        self.latency = latency
        self.chunk = max(1, chunk)
        self.context_window = context_window
        self.calls: list[list[Message]] = []  # every conversation seen, for assertions

    def _turn_for(self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None) -> AssistantMessage:
        with self._lock:
            self.calls.append(list(messages))
            if self._fn is None:
                if self._next >= len(self._turns):
                    raise ScriptExhausted(f"scripted backend has only {len(self._turns)} turns; call {self._next + 1} asked for another")
                turn = self._turns[self._next]
                self._next += 1
        if self._fn is not None:
            turn = self._fn(messages, tools)
        return as_assistant(turn)

    def stream(self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None, **sampling: Any) -> Iterator[Delta]:
        msg = self._turn_for(messages, tools)
        if self.latency:
            time.sleep(self.latency)
        n = self.chunk
        for i in range(0, len(msg.reasoning), n):
            yield Delta(reasoning=msg.reasoning[i : i + n])
        for i in range(0, len(msg.content), n):
            yield Delta(content=msg.content[i : i + n])
        for idx, call in enumerate(msg.tool_calls):
            yield Delta(tool_calls=[ToolCallDelta(index=idx, id=call.id, name=call.name)])
            for i in range(0, len(call.arguments), n):
                yield Delta(tool_calls=[ToolCallDelta(index=idx, arguments=call.arguments[i : i + n])])
        prompt = sum(self.count_tokens(text_of(m.get("content"))) for m in messages)
        usage = msg.usage if msg.usage.total_tokens else Usage(
            prompt_tokens=prompt,
            completion_tokens=self.count_tokens(msg.content + msg.reasoning + "".join(c.arguments for c in msg.tool_calls)),
            reasoning_tokens=self.count_tokens(msg.reasoning),
        )
        finish = msg.finish_reason if msg.finish_reason != "stop" or not msg.tool_calls else "tool_calls"
        yield Delta(invalid_tool_calls=list(msg.invalid_tool_calls), finish_reason=finish, usage=usage)
