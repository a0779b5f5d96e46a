"""Limits on a run (steps, tool calls, tokens, wall time) and the check that stops it with a reason.

Defaults are sized for K2.6's long-horizon runs: thousands of tool calls over a day. Wall time
counts only the time the agent was actually running, summed over resumes, so a run killed at night
and resumed in the morning is charged for its working hours only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from kimidoc.messages import Usage


@dataclass
class Budget:
    max_steps: int | None = 10_000  # model calls in the loop
    max_tool_calls: int | None = 20_000
    max_tokens: int | None = None  # prompt + completion tokens over the run, compaction included
    max_wall_time: float | None = 48 * 3600.0  # seconds of running time

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value is not None and value <= 0:
                raise ValueError(f"Budget.{name} must be positive or None, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Budget:
        return cls(**{k: data[k] for k in ("max_steps", "max_tool_calls", "max_tokens", "max_wall_time") if k in data})


@dataclass(frozen=True)
class Stop:
    reason: str  # max_steps | max_tool_calls | max_tokens | max_wall_time | backend_error
    detail: str


def check_step(budget: Budget, steps: int, usage: Usage, elapsed: float) -> Stop | None:
    """Why the run may not make another model call, or None."""
    if budget.max_steps is not None and steps >= budget.max_steps:
        return Stop("max_steps", f"step budget of {budget.max_steps} reached")
    if budget.max_tokens is not None and usage.total_tokens >= budget.max_tokens:
        return Stop("max_tokens", f"token budget of {budget.max_tokens:,} reached ({usage.total_tokens:,} used)")
    return check_wall_time(budget, elapsed)


def check_wall_time(budget: Budget, elapsed: float) -> Stop | None:
    if budget.max_wall_time is not None and elapsed >= budget.max_wall_time:
        return Stop("max_wall_time", f"wall-time budget of {budget.max_wall_time:g} s reached ({elapsed:.1f} s used)")
    return None


def check_tool_calls(budget: Budget, done: int, asked: int) -> Stop | None:
    """Why a turn's ``asked`` tool calls may not run after ``done`` calls, or None."""
    if budget.max_tool_calls is not None and done + asked > budget.max_tool_calls:
        return Stop(
            "max_tool_calls",
            f"tool-call budget of {budget.max_tool_calls} reached ({done} made, the next turn asked for {asked} more)",
        )
    return None


def wall_time_left(budget: Budget, elapsed: float) -> float | None:
    return None if budget.max_wall_time is None else max(0.0, budget.max_wall_time - elapsed)
