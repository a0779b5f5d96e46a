"""Long-horizon agents and swarms: the tool loop, budgets, compaction, the JSONL trace with resume.

>>> from kimidoc.agents import Agent, Budget
>>> result = Agent(backend, tools=[...], trace_path="run.jsonl").run("task")   # doctest: +SKIP
>>> result = Agent.resume("run.jsonl", backend, tools=[...])                     # doctest: +SKIP
"""

from kimidoc.agents.agent import DEFAULT_SYSTEM_PROMPT, Agent
from kimidoc.agents.ask import ask, format_answer
from kimidoc.agents.budget import Budget
from kimidoc.agents.compaction import Compaction
from kimidoc.agents.events import Event, EventCallback
from kimidoc.agents.loop import AgentResult
from kimidoc.agents.swarm import SubResult, SubTask, Swarm, SwarmResult, run_swarm, swarm_tool
from kimidoc.agents.tool_context import ToolContext, current_tool_context, report_sources
from kimidoc.agents.trace import TraceError, logical_events, read_trace

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "Agent",
    "AgentResult",
    "Budget",
    "Compaction",
    "Event",
    "EventCallback",
    "SubResult",
    "SubTask",
    "Swarm",
    "SwarmResult",
    "ToolContext",
    "TraceError",
    "ask",
    "current_tool_context",
    "format_answer",
    "logical_events",
    "read_trace",
    "report_sources",
    "run_swarm",
    "swarm_tool",
]
