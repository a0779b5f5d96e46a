"""Live events of an agent run, for a console view or a log: small records sent to a callback.

Events are what a person watching needs (reasoning and answer text as it streams, tool calls and
their results, compactions, retries, the stop); the trace (:mod:`kimidoc.agents.trace`) is what a
program needs to replay a run. They overlap but are not the same stream.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Event types:
#   start        {task}                                   a run began (or resumed: {resumed: True})
#   step         {}                                       a model call is about to be made
#   thinking     {text}                                   a streamed piece of reasoning
#   content      {text}                                   a streamed piece of the answer
#   tool_call    {id, name, arguments, rerun}             a tool call is starting
#   tool_result  {id, name, preview, is_error, ref, rerun} a tool call finished
#   invalid_call {errors}                                 unreadable tool calls were sent back
#   compaction   {tokens_before, tokens_after, dropped}   older turns were summarised
#   retry        {error, attempt, wait}                   a backend call failed and is retried
#   swarm        {agents, ok, failed, tool_calls, ...}     a swarm finished
#   stop         {reason, detail, answer, unsupported}    the run ended (unsupported: claims found in no passage)
EVENT_TYPES = frozenset(
    {
        "start",
        "step",
        "thinking",
        "content",
        "tool_call",
        "tool_result",
        "invalid_call",
        "compaction",
        "retry",
        "swarm",
        "stop",
    }
)


@dataclass(frozen=True)
class Event:
    type: str
    step: int
    data: dict[str, Any] = field(default_factory=dict)
    agent: str = "main"  # "main", or "main/sub-0007" for a swarm's sub-agent


EventCallback = Callable[[Event], None]


class Emitter:
    """Sends events to a callback without ever letting a broken callback end a run."""

    def __init__(self, callback: EventCallback | None, agent: str) -> None:
        self.callback = callback
        self.agent = agent
        self._warned = False

    @property
    def active(self) -> bool:
        return self.callback is not None

    def __call__(self, type: str, step: int, **data: Any) -> None:
        if self.callback is None:
            return
        self.send(Event(type, step, data, self.agent))

    def send(self, event: Event) -> None:
        if self.callback is None:
            return
        try:
            self.callback(event)
        except Exception as exc:  # a live view failing must not lose hours of work
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"agent {self.agent}: event callback raised {type(exc).__name__}: {exc}; further errors are ignored",
                    stacklevel=2,
                )
