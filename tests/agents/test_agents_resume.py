"""Kill a 20-step run at every point and resume it: the same work, finished calls never repeated."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import agents_scripts as s
import pytest

from kimidoc.agents import Agent, logical_events, read_trace
from kimidoc.agents import trace as trace_mod


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = tmp_path_factory.mktemp("ref") / "run.jsonl"
    rec = s.Recorder()
    agent = s.long_run_agent(str(path), rec)
    result = agent.run("record every step")
    assert result.stop_reason == "answer" and result.answer == f"total {s.expected_total()}"
    assert result.steps == s.STEPS
    return {
        "events": logical_events(read_trace(path)),
        "messages": agent.messages,
        "executed": sorted(rec.executed),
        "result": result,
    }


def resume(path: Path, rec: s.Recorder) -> tuple[Agent, object]:
    agent = Agent.from_trace(path, s.long_run_backend(), tools=[rec.tool()], retry_backoff=0)
    return agent, agent.run()


def check_same(reference: dict, path: Path, agent: Agent, result) -> None:
    assert logical_events(read_trace(path)) == reference["events"]
    assert agent.messages == reference["messages"]
    assert result.answer == reference["result"].answer
    assert (result.steps, result.tool_calls, result.usage) == (
        reference["result"].steps,
        reference["result"].tool_calls,
        reference["result"].usage,
    )


@pytest.mark.parametrize("call", range(1, s.STEPS + 1))
def test_agents_killed_during_model_call_resumes_to_same_trace(tmp_path: Path, reference: dict, call: int) -> None:
    path = tmp_path / "run.jsonl"
    rec = s.Recorder()
    with pytest.raises(s.Crash):
        s.long_run_agent(str(path), rec, backend=s.long_run_backend(crash_at_call=call)).run("record every step")
    agent, result = resume(path, rec)
    check_same(reference, path, agent, result)
    assert sorted(rec.executed) == reference["executed"]  # no finished call ran twice
    assert not any(e.get("rerun") for e in read_trace(path))


@pytest.mark.parametrize("step", range(1, s.STEPS))
def test_agents_killed_inside_a_tool_reruns_only_that_call(tmp_path: Path, reference: dict, step: int) -> None:
    path = tmp_path / "run.jsonl"
    k = step - 1  # the k recorded at this step
    rec = s.Recorder(crash_on=k)
    with pytest.raises(s.Crash):
        s.long_run_agent(str(path), rec).run("record every step")
    agent, result = resume(path, rec)
    check_same(reference, path, agent, result)
    # Calls in flight at the kill (the crashing one, and its parallel sibling if it had not finished)
    # ran twice and are marked; every other call ran exactly once.
    reruns = [e["id"] for e in read_trace(path) if e["type"] == "tool_result" and e.get("rerun")]
    assert f"functions.record:{k}a" in reruns and set(reruns) <= {f"functions.record:{k}a", f"functions.record:{k}b"}
    rerun_ks = [k if i.endswith("a") else 100 + k for i in reruns]
    assert sorted(rec.executed) == sorted(reference["executed"] + rerun_ks)


def test_agents_killed_before_every_trace_write_resumes_to_same_trace(
    tmp_path: Path, reference: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    total = len(read_trace_of_reference(tmp_path))
    real_write = trace_mod.TraceWriter.write
    for n in range(2, total + 1):  # the header is event 1: a run killed before it has nothing to resume
        path = tmp_path / f"run{n}.jsonl"
        count = [0]

        def write(self, event, flush=True, _n=n, _count=count):
            _count[0] += 1
            if _count[0] == _n:
                # Killed in the middle of the write: half a line reaches the file.
                line = trace_mod.json.dumps(event)
                self._file.write(line[: len(line) // 2])
                self._file.flush()
            if _count[0] >= _n:  # a dead process writes nothing more (concurrent calls included)
                raise s.Crash(f"killed writing event {_n}")
            real_write(self, event, flush=flush)

        monkeypatch.setattr(trace_mod.TraceWriter, "write", write)
        rec = s.Recorder()
        with pytest.raises(s.Crash):
            s.long_run_agent(str(path), rec).run("record every step")
        monkeypatch.setattr(trace_mod.TraceWriter, "write", real_write)
        agent, result = resume(path, rec)
        check_same(reference, path, agent, result)
        reruns = sum(1 for e in read_trace(path) if e["type"] == "tool_result" and e.get("rerun"))
        assert len(rec.executed) - len(reference["executed"]) <= reruns, (
            f"kill before event {n} repeated a finished call"
        )


def read_trace_of_reference(tmp_path: Path) -> list:
    path = tmp_path / "count.jsonl"
    s.long_run_agent(str(path), s.Recorder()).run("record every step")
    return read_trace(path)


def test_agents_crash_twice_then_resume(tmp_path: Path, reference: dict) -> None:
    path = tmp_path / "run.jsonl"
    rec = s.Recorder(crash_on=4)
    with pytest.raises(s.Crash):
        s.long_run_agent(str(path), rec).run("record every step")
    # record(11) runs alone in its turn: with a parallel sibling (every third step) whether the
    # sibling finished before the kill is up to the scheduler, and so is the count of its runs.
    rec.crash_on = 11
    with pytest.raises(s.Crash):
        Agent.from_trace(path, s.long_run_backend(), tools=[rec.tool()], retry_backoff=0).run()
    agent, result = resume(path, rec)
    check_same(reference, path, agent, result)
    assert sorted(rec.executed) == sorted(reference["executed"] + [4, 11])
    assert sum(e["type"] == "resume" for e in read_trace(path)) == 2


def test_agents_sigkilled_process_resumes(tmp_path: Path, reference: dict) -> None:
    path = tmp_path / "run.jsonl"
    here = Path(__file__).parent
    proc = subprocess.run(
        [sys.executable, str(here / "agents_scripts.py"), str(path), "7"],
        env={"PYTHONPATH": f"{here.parent.parent}:{here}", "KIMIDOC_PROGRESS": "0", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    rec = s.Recorder()
    agent, result = resume(path, rec)
    check_same(reference, path, agent, result)
    assert sorted(rec.executed) == sorted(k for k in reference["executed"] if k >= 7 and not (100 <= k < 107))
    reruns = [e["id"] for e in read_trace(path) if e["type"] == "tool_result" and e.get("rerun")]
    assert reruns == ["functions.record:7a"]


def test_agents_resume_of_finished_run_returns_recorded_result(tmp_path: Path, reference: dict) -> None:
    path = tmp_path / "run.jsonl"
    s.long_run_agent(str(path), s.Recorder()).run("record every step")
    before = path.read_bytes()
    backend = s.long_run_backend()
    result = Agent.resume(path, backend, tools=[s.Recorder().tool()])
    assert result.answer == reference["result"].answer and result.stop_reason == "answer"
    assert backend.calls == [] and path.read_bytes() == before


def test_agents_resume_refuses_missing_tools_and_existing_trace(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    s.long_run_agent(str(path), s.Recorder()).run("record every step")
    with pytest.raises(ValueError, match="record"):
        Agent.from_trace(path, s.long_run_backend(), tools=[])
    with pytest.raises(FileExistsError, match="run.jsonl"):
        s.long_run_agent(str(path), s.Recorder()).run("again")


def test_agents_corrupt_trace_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    s.long_run_agent(str(path), s.Recorder()).run("record every step")
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = "{not json\n"
    path.write_text("".join(lines))
    with pytest.raises(trace_mod.TraceError, match=r"run.jsonl:4"):
        Agent.from_trace(path, s.long_run_backend(), tools=[s.Recorder().tool()])


def test_agents_run_killed_while_writing_its_header_starts_again(tmp_path: Path, reference: dict) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text('{"type":"header","version":1,"ag')  # the kill came mid-header: nothing to resume
    with pytest.raises(trace_mod.TraceError, match="empty trace"):
        Agent.from_trace(path, s.long_run_backend(), tools=[s.Recorder().tool()])
    agent = s.long_run_agent(str(path), s.Recorder())
    agent.run("record every step")
    assert logical_events(read_trace(path)) == reference["events"]
