"""Scripted programs shared by the agent tests (and by the subprocess the SIGKILL test starts).

Each program is a function of the conversation, so a fresh backend given to a resumed run picks
up exactly where the killed one stopped.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from kimidoc.agents import Agent, Budget
from kimidoc.backends.scripted import Scripted
from kimidoc.messages import AssistantMessage, Message, ToolCall
from kimidoc.tools.base import Tool, tool


class Crash(BaseException):
    """Stands in for a kill: not an Exception, so nothing in the loop catches it."""


STEPS = 20  # model calls in the long run: 19 tool turns and the answer


def assistant_turns(messages: Sequence[Message]) -> int:
    return sum(1 for m in messages if m["role"] == "assistant")


def long_run_turn(messages: Sequence[Message]) -> AssistantMessage:
    """Step n (1-based) records n; every third step also records 100+n in a parallel call."""
    n = assistant_turns(messages)
    if n < STEPS - 1:
        calls = [ToolCall(f"functions.record:{n}a", "record", json.dumps({"k": n}))]
        if n % 3 == 0:
            calls.append(ToolCall(f"functions.record:{n}b", "record", json.dumps({"k": 100 + n})))
        return AssistantMessage(
            content=f"working on step {n + 1}", reasoning=f"step {n + 1} needs record", tool_calls=calls
        )
    total = sum(int(m["content"]) for m in messages if m["role"] == "tool")
    return AssistantMessage(content=f"total {total}")


class Recorder:
    """The long run's tool, counting executions; ``crash_on`` raises Crash (or SIGKILLs) on that k."""

    def __init__(self, crash_on: int | None = None, sigkill: bool = False) -> None:
        self.executed: list[int] = []
        self.crash_on = crash_on
        self.sigkill = sigkill

    def tool(self) -> Tool:
        @tool
        def record(k: int) -> str:
            """Record a number and return its double.

            Args:
                k: the number
            """
            self.executed.append(k)
            if k == self.crash_on:
                self.crash_on = None
                if self.sigkill:
                    os.kill(os.getpid(), signal.SIGKILL)
                raise Crash(f"killed while running record({k})")
            return str(2 * k)

        return record


def long_run_backend(crash_at_call: int | None = None) -> Scripted:
    """The long run's model; raises Crash on its ``crash_at_call``-th call (1-based)."""
    seen = [0]

    def turn(messages: Sequence[Message], tools: Any) -> AssistantMessage:
        seen[0] += 1
        if seen[0] == crash_at_call:
            raise Crash(f"killed during model call {seen[0]}")
        return long_run_turn(messages)

    return Scripted(turn)


def long_run_agent(trace: str, recorder: Recorder, backend: Scripted | None = None, **kw: Any) -> Agent:
    return Agent(
        backend or long_run_backend(),
        tools=[recorder.tool()],
        trace_path=trace,
        budget=Budget(max_steps=100),
        retry_backoff=0,
        **kw,
    )


def expected_total() -> int:
    ks = [n for n in range(STEPS - 1)] + [100 + n for n in range(STEPS - 1) if n % 3 == 0]
    return sum(2 * k for k in ks)


if __name__ == "__main__":  # python agents_scripts.py TRACE K: the long run, SIGKILLed in record(K)
    trace_path, k = sys.argv[1], int(sys.argv[2])
    long_run_agent(trace_path, Recorder(crash_on=k, sigkill=True)).run("record every step")
