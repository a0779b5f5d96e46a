"""What a tool running inside an agent can learn and report: the call it serves, and the sources it read.

The agent sets a :class:`ToolContext` around each tool call (a context variable, so concurrent calls
and swarms each see their own); tools read it with :func:`current_tool_context` and make document
parts citable with :func:`report_sources`. Outside an agent both are no-ops.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kimidoc.agents.events import Event
from kimidoc.documents.base import Source


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


# Set by the agent loop around each tool call (set/reset with a token).
TOOL_CONTEXT: ContextVar[ToolContext | None] = ContextVar("kimidoc_tool_context", default=None)


def current_tool_context() -> ToolContext | None:
    """The context of the tool call running in this task or thread, or None outside an agent."""
    return TOOL_CONTEXT.get()


def report_sources(*sources: Source) -> None:
    """Called by a tool that read document parts: they become citable in the agent's answer."""
    ctx = TOOL_CONTEXT.get()
    if ctx is not None:
        ctx.sources.extend(sources)
