"""The kimidoc command, driven in-process: output and exit codes of every subcommand.

Where a model is needed the backend is a Scripted one (patched into the CLI's backend factory),
so these tests check the command's plumbing, not a model's answers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kimidoc.backends import Scripted
from kimidoc.cli import agent as cli_agent
from kimidoc.cli import main
from kimidoc.messages import AssistantMessage, ToolCall
from kimidoc.placement import Machine, read_config
from kimidoc.placement.plan import int4_native

REPORT = str(Path(__file__).resolve().parents[2] / "examples" / "data" / "report.pdf")


@pytest.fixture
def script(monkeypatch):
    """Install a scripted backend for the next command; returns a setter."""

    def use(turns):
        backend = Scripted(turns)
        monkeypatch.setattr(cli_agent, "backend_from", lambda args: backend)
        return backend

    return use


def test_plan_prints_the_format_reference_numbers(capsys):
    assert main(["plan", "--cpu-memory", "1TB", "--cpu-bandwidth", "2e11", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    parts = {k: sum(v.values()) for k, v in s["bytes_by_part"].items()}
    # 570.76 GB as stored: the VNNI kernel keeps those bytes; PyTorch's layout gives each bf16 group
    # scale a zero (0.5 + 4/32 bytes per weight, not 0.5 + 2/32)
    native = int4_native(Machine(), read_config("k2.6"))
    table = 1 if native else (0.5 + 4 / 32) / (0.5 + 2 / 32)
    assert parts["routed_expert"] == pytest.approx(570.76e9 * table, rel=1e-3)
    text_bf16 = sum(b for k, b in parts.items() if k not in ("routed_expert", "vision", "projector"))
    assert text_bf16 == pytest.approx(23.44e9, rel=2e-3)
    assert s["latent_cache_bytes_per_token"] == 70_272
    assert s["decode_tokens_per_s_ceiling"] == pytest.approx(2e11 / sum(s["bytes_read_per_token"].values()), rel=1e-6)

    flags = ["plan", "--gpu-memory", "24GiB", "--cpu-memory", "768GiB", "--cpu-bandwidth", "2e11"]
    assert main([*flags, "--json"]) == 0
    experts = sum(json.loads(capsys.readouterr().out)["bytes_by_part"]["routed_expert"].values())
    assert main(flags) == 0
    out = capsys.readouterr().out
    assert "70,272 bytes per token" in out and f"{experts / 1e9:,.2f}" in out and "cuda:0" in out
    # Planning for a CPU without the VNNI kernel (or with it) whatever this one has.
    for layout, stored in (("torch", 634.18e9), ("checkpoint", 570.76e9)):
        assert main(["plan", "--cpu-memory", "1TB", "--cpu-bandwidth", "2e11", "--int4-layout", layout, "--json"]) == 0
        s = json.loads(capsys.readouterr().out)
        assert sum(s["bytes_by_part"]["routed_expert"].values()) == pytest.approx(stored, rel=1e-3)
        assert s["int4_native_in_ram"] == (layout == "checkpoint")
    assert main(["plan", "--cpu-memory", "1TB", "--cpu-bandwidth", "2e11", "--int4-layout", "torch"]) == 0
    assert "PyTorch's layout (a zero beside each scale) in RAM" in capsys.readouterr().out


def test_plan_that_does_not_fit_exits_2_with_the_reason(capsys):
    assert main(["plan", "--cpu-memory", "100GB", "--cpu-bandwidth", "1e11"]) == 2
    assert "fits nowhere" in capsys.readouterr().err


def test_pack_writes_the_report_within_budget(tmp_path, capsys):
    out = tmp_path / "ctx.md"
    assert main(["pack", REPORT, "--budget", "2000", "-o", str(out)]) == 0
    text = out.read_text()
    assert "report.pdf p.2" in text and "|Q4|12.4|10.1|" in text.replace(" ", "")
    assert "packed" in capsys.readouterr().err
    assert main(["pack", REPORT, "--budget", "2000", "--format", "xml"]) == 0
    assert "<" in capsys.readouterr().out


def test_ask_prints_answer_and_citations(script, capsys):
    backend = script(["Revenue grew 18% in 2025 [report.pdf p.1]."])
    assert main(["ask", "--no-python", "--quiet", REPORT, "How much did revenue grow?"]) == 0
    out = capsys.readouterr().out
    assert "Revenue grew 18%" in out
    assert out.rstrip().endswith("report.pdf p.1") and "Sources: " in out
    assert "How much did revenue grow?" in json.dumps(backend.calls[0])

    script(["Revenue grew 18% in 2025 [report.pdf p.1]."])
    assert main(["ask", "--no-python", "--quiet", "--json", REPORT, "How much?"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["stop_reason"] == "answer" and result["citations"] == [f"{REPORT} p.1"]


def test_ask_stopped_by_a_budget_exits_1(script, capsys):
    call = AssistantMessage(tool_calls=[ToolCall("functions.list_documents:0", "list_documents", "{}")])
    script(lambda messages, tools: call)
    assert main(["ask", "--no-python", "--quiet", "--max-steps", "2", REPORT, "Loop forever"]) == 1
    assert "stopped: max_steps" in capsys.readouterr().err


def test_ask_usage_and_input_errors_exit_2(script, capsys):
    script(["unused"])
    assert main(["ask", "--no-python", "--quiet", "only-a-question"]) == 2
    assert main(["ask", "--no-python", "--quiet", "missing.pdf", "Question?"]) == 2
    assert "missing.pdf" in capsys.readouterr().err


def test_agent_trace_then_resume(script, tmp_path, capsys):
    trace = tmp_path / "run.jsonl"
    call = AssistantMessage(tool_calls=[ToolCall("functions.list_documents:0", "list_documents", "{}")])
    script([call])  # one turn, then the script runs out: the run stops with an error, trace kept
    assert main(["agent", REPORT, "--task", "Summarise", "--trace", str(trace), "--no-python", "--quiet"]) == 1
    assert trace.exists()
    capsys.readouterr()
    script(["Done: the report covers 2025 [report.pdf p.1]."])
    assert main(["agent", REPORT, "--resume", str(trace), "--no-python", "--quiet", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["answer"].startswith("Done") and result["tool_calls"] == 1


def test_swarm_runs_every_task(script, tmp_path, capsys):
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("first question\nsecond question\n\nthird question\n")
    script(lambda messages, tools: f"answer to: {messages[-1]['content'][:40]}")
    assert main(["swarm", "--tasks", str(tasks), "--concurrency", "2", "--no-python", "--quiet", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["totals"]["agents"] == 3 and out["totals"]["answered"] == 3
    assert [r["task"] for r in out["results"]] == ["first question", "second question", "third question"]
    assert main(["swarm", "--concurrency", "500", "--tasks", str(tasks), "--no-python"]) == 2


def test_a_broken_checkpoint_is_named_not_a_traceback(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    assert main(["ask", "--model", str(tmp_path), "--no-python", "--quiet", REPORT, "Question?"]) in (1, 2)
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "Traceback" not in err
