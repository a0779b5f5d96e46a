"""Compaction: a run far longer than the window finishes, its findings carried by the model's ledger."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kimidoc.agents import Agent, Compaction, logical_events, read_trace
from kimidoc.agents.compaction import LEDGER_HEADER, SUMMARY_PROMPT, choose_cut, ledger_of
from kimidoc.backends.scripted import Scripted
from kimidoc.messages import AssistantMessage, ToolCall
from kimidoc.tools.base import tool

VALUES = {i: (i * 37) % 101 for i in range(12)}
WINDOW = 3000


def make_fetch(fetched: list[int]):
    @tool
    def fetch(i: int) -> str:
        """Fetch record i."""
        fetched.append(i)
        return f"Record {i}: the value is {VALUES[i]}.\n" + "padding " * 150  # ~1,200 characters

    return fetch


def known_values(text: str) -> dict[int, int]:
    found = {int(i): int(v) for i, v in re.findall(r"Record (\d+): the value is (\d+)", text)}
    found.update({int(i): int(v) for i, v in re.findall(r"value of record (\d+) = (\d+)", text)})
    return found


def model(messages, tools):
    text = "\n".join(m["content"] if isinstance(m["content"], str) else "" for m in messages)
    if messages[0]["content"] == SUMMARY_PROMPT:
        # The summariser: keep every finding from the old ledger and the transcript.
        assert tools is None
        found = known_values(text)
        return (
            "## Findings\n"
            + "\n".join(f"- value of record {i} = {v}" for i, v in sorted(found.items()))
            + "\n## Open questions\n- none\n## Progress\n- fetching"
        )
    found = known_values(text)
    missing = [i for i in VALUES if i not in found]
    if missing:
        return AssistantMessage(
            content=f"fetching {missing[0]}",
            tool_calls=[ToolCall(f"f{missing[0]}", "fetch", json.dumps({"i": missing[0]}))],
        )
    return f"sum {sum(found.values())}"


def test_agents_compaction_keeps_findings_and_the_task_completes(tmp_path: Path) -> None:
    fetched: list[int] = []
    backend = Scripted(model, context_window=WINDOW)
    path = tmp_path / "run.jsonl"
    agent = Agent(
        backend,
        tools=[make_fetch(fetched)],
        trace_path=path,
        compaction=Compaction(keep_turns=2),
        system_prompt="Sum the records.",
    )
    result = agent.run("Fetch records 0-11 and report the sum of their values.")

    assert result.stop_reason == "answer" and result.answer == f"sum {sum(VALUES.values())}"
    assert sorted(fetched) == list(VALUES)  # nothing was lost and fetched again
    events = read_trace(path)
    compactions = [e for e in events if e["type"] == "compaction"]
    assert len(compactions) >= 2  # later compactions fold the earlier ledger in
    assert all(e["tokens_after"] < e["tokens_before"] for e in compactions)
    # The model never saw more than the window: task, ledger and recent turns only.
    summaries = [c for c in backend.calls if c[0]["content"] == SUMMARY_PROMPT]
    turns = [c for c in backend.calls if c[0]["content"] != SUMMARY_PROMPT]
    assert len(summaries) >= len(compactions)
    assert max(backend.count_message_tokens(c) for c in turns) < WINDOW
    assert all(c[1]["content"].startswith("Fetch records 0-11") for c in turns)  # the task stays
    final = agent.messages
    assert [m["role"] for m in final[:3]] == ["system", "user", "user"] and ledger_of(final[2]) is not None
    assert sum(m["role"] == "assistant" for m in final) < result.steps / 2
    # Resume rebuilds the compacted conversation exactly from the trace.
    assert Agent.from_trace(path, Scripted(model, context_window=WINDOW), tools=[make_fetch([])]).messages == final
    assert result.usage.total_tokens == sum(
        e["usage"]["prompt_tokens"] + e["usage"]["completion_tokens"]
        for e in events
        if e["type"] in ("assistant", "compaction")
    )


class Crash(BaseException):
    pass


@pytest.fixture(scope="module")
def compacted_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[list, int]:
    path = tmp_path_factory.mktemp("ref") / "run.jsonl"
    backend = Scripted(model, context_window=WINDOW)
    Agent(backend, tools=[make_fetch([])], trace_path=path, compaction=Compaction(keep_turns=2)).run(
        "Fetch records 0-11."
    )
    return logical_events(read_trace(path)), len(backend.calls)


def test_agents_compaction_killed_at_every_model_call_resumes_to_the_same_trace(
    tmp_path: Path, compacted_reference: tuple[list, int]
) -> None:
    reference, n_calls = compacted_reference
    for k in range(1, n_calls + 1):  # summarisation calls included
        fetched: list[int] = []
        calls = [0]

        def crashing(messages, tools, _k=k):
            calls[0] += 1
            if calls[0] == _k:
                raise Crash
            return model(messages, tools)

        path = tmp_path / f"run{k}.jsonl"
        with pytest.raises(Crash):
            Agent(
                Scripted(crashing, context_window=WINDOW),
                tools=[make_fetch(fetched)],
                trace_path=path,
                compaction=Compaction(keep_turns=2),
            ).run("Fetch records 0-11.")
        result = Agent.resume(path, Scripted(model, context_window=WINDOW), tools=[make_fetch(fetched)])
        assert result.answer == f"sum {sum(VALUES.values())}" and sorted(fetched) == list(VALUES)
        assert logical_events(read_trace(path)) == reference, f"killed at model call {k}"


def test_agents_choose_cut_keeps_tool_results_with_their_calls() -> None:
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "task"}]
    for i in range(5):
        msgs.append(
            {
                "role": "assistant",
                "content": f"a{i}",
                "tool_calls": [{"id": str(i), "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            }
        )
        msgs.append({"role": "tool", "tool_call_id": str(i), "content": "x" * (10 if i < 4 else 1000)})
    count = lambda ms: sum(len(m["content"]) for m in ms)
    assert choose_cut(msgs, 2, 2, count, room=10_000) == (2, 8)  # keep the last two turns
    assert choose_cut(msgs, 2, 3, count, room=1_020) == (2, 8)  # three would not fit the room: keep two
    assert choose_cut(msgs, 2, 3, count, room=100) == (2, 10)  # always keep at least the last turn
    ledgered = msgs[:2] + [{"role": "user", "content": LEDGER_HEADER + "old"}] + msgs[2:]
    assert choose_cut(ledgered, 2, 2, count, room=10_000) == (
        3,
        9,
    )  # the old ledger is folded, not summarised as a turn
    assert choose_cut(msgs[:4], 2, 1, count, room=10) is None  # one turn: nothing older to fold


def test_agents_without_compaction_nothing_is_summarised() -> None:
    backend = Scripted(model, context_window=WINDOW)
    fetched: list[int] = []
    Agent(backend, tools=[make_fetch(fetched)], compaction=False, retries=0).run("Fetch records 0-11.")
    assert not any(c[0]["content"] == SUMMARY_PROMPT for c in backend.calls)
