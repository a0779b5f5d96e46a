"""LangChain's create_agent over ChatKimi with kimidoc tools, and the example script."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

pytest.importorskip("langchain")

from langchain.agents import create_agent  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402

from kimidoc.backends.scripted import Scripted  # noqa: E402
from kimidoc.documents import load  # noqa: E402
from kimidoc.integrations.langchain import ChatKimi, to_langchain_tool  # noqa: E402
from kimidoc.messages import AssistantMessage, Message, ToolCall, ToolSchema  # noqa: E402
from kimidoc.tools import document_tools  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "examples" / "data" / "report.pdf"


def test_agent_loop_renders_a_page_and_the_model_sees_the_image():
    def plan(messages: Sequence[Message], tools: Sequence[ToolSchema] | None) -> AssistantMessage:
        if messages[-1]["role"] != "tool":
            return AssistantMessage(
                reasoning="Look at the chart.",
                tool_calls=[ToolCall("r1", "render_page", json.dumps({"document": "1", "page": 3, "zoom": 1}))],
            )
        return AssistantMessage(content="The chart shows quarterly revenue (report.pdf p.3).")

    backend = Scripted(plan)
    agent = create_agent(ChatKimi(backend=backend), [to_langchain_tool(t) for t in document_tools([load(str(REPORT))])])
    out = agent.invoke({"messages": [HumanMessage("What does the chart on page 3 show?")]})
    kinds = [type(m) for m in out["messages"]]
    assert kinds == [HumanMessage, AIMessage, ToolMessage, AIMessage]
    tool_msg = out["messages"][2]
    assert tool_msg.status == "success" and tool_msg.artifact.images  # the PNG stays available as the artifact
    # second model call: the tool result reached the backend as text + image parts, after the
    # assistant turn whose reasoning is replayed
    second = backend.calls[1]
    assert second[-2]["reasoning_content"] == "Look at the chart."
    assert [p["type"] for p in second[-1]["content"]] == ["text", "image_url"]
    assert second[-1]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert out["messages"][-1].text == "The chart shows quarterly revenue (report.pdf p.3)."


def test_example_runs_offline_with_the_scripted_plan(capsys):
    spec = importlib.util.spec_from_file_location("langchain_agent_example", ROOT / "examples" / "langchain_agent.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main(["--scripted"]) == 0
    out = capsys.readouterr().out
    assert '-> search_documents({"query": "revenue grew"})' in out
    assert "<- python: growth: 18.0%" in out  # computed in the sandbox from the numbers found
    assert "report.pdf p.1" in out.splitlines()[-2]


def test_kimidoc_agent_calls_a_langchain_tool():
    from langchain_core.tools import tool as lc_tool

    from kimidoc.agents import Agent

    @lc_tool
    def exchange_rate(currency: str) -> str:
        """Euros per unit of a currency."""
        return {"USD": "0.92", "NOK": "0.085"}[currency]

    offered: list[dict] = []

    def plan(messages: Sequence[Message], tools: Sequence[ToolSchema] | None) -> AssistantMessage:
        offered.extend(t["function"] for t in tools or [] if t["function"]["name"] == "exchange_rate")
        if messages[-1]["role"] != "tool":
            return AssistantMessage(tool_calls=[ToolCall("x1", "exchange_rate", '{"currency": "NOK"}')])
        return AssistantMessage(content=f"1 NOK is {messages[-1]['content']} EUR.")

    result = Agent(Scripted(plan), tools=[exchange_rate], show_progress=False).run("How many euros is one krone?")
    assert result.ok and result.answer == "1 NOK is 0.085 EUR."
    assert offered[0]["parameters"]["properties"]["currency"]["type"] == "string"
