"""Citations: the answer's source labels matched to parts the agent actually saw."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kimidoc.agents import Agent, report_sources
from kimidoc.agents.citations import Label, SourceRegistry, labels_in, parse_label
from kimidoc.backends.scripted import Scripted
from kimidoc.documents.base import Document, Part, Source
from kimidoc.messages import AssistantMessage, ToolCall, image_part
from kimidoc.tools.base import ToolResult, tool

PAGES = ["Revenue grew 12% in 2025.", "Costs fell by 3%.", "Headcount was flat at 120."]


def report(path: str = "data/report.pdf") -> Document:
    return Document(path, "pdf", [Part("text", Source(path, page=i + 1), text=t) for i, t in enumerate(PAGES)])


def test_agents_label_parsing() -> None:
    assert parse_label("report.pdf p.3") == Label("report.pdf", 3)
    assert parse_label("src/app.py:10-20") == Label("src/app.py", None, (10, 20))
    assert parse_label("src/app.py:7") == Label("src/app.py", None, (7, 7))
    assert parse_label("notes.md") == Label("notes.md")
    assert parse_label("1") is None and parse_label("citation needed") is None
    found = labels_in("See [a.pdf p.1; b.py:3-4], [1], [the docs](https://x.y/z.html) and [c.txt].")
    assert [lbl for _, lbl in found] == [Label("a.pdf", 1), Label("b.py", None, (3, 4)), Label("c.txt")]


def test_agents_registry_matches_suffix_page_and_line_overlap() -> None:
    reg = SourceRegistry()
    reg.add([Source("/abs/data/report.pdf", page=2), Source("/repo/src/app.py", lines=(40, 88))])
    cited, unverified = reg.cite(
        "Up [report.pdf p.2], code [src/app.py:50-60], off [app.py:90], [port.pdf p.2], [report.pdf p.5]."
    )
    assert cited == [Source("/abs/data/report.pdf", page=2), Source("/repo/src/app.py", lines=(40, 88))]
    assert unverified == [
        "app.py:90",
        "port.pdf p.2",
        "report.pdf p.5",
    ]  # "port.pdf" is not a path suffix of "report.pdf"
    cited, _ = reg.cite("Whole document: [data/report.pdf].")
    assert cited == [Source("/abs/data/report.pdf")]


def test_agents_answer_cites_packed_document_parts() -> None:
    def turn(messages, tools):
        task = messages[1]["content"]
        assert "## data/report.pdf p.1\n\nRevenue grew 12%" in task and task.endswith("How did revenue do?")
        return "Revenue grew 12% [report.pdf p.1]; margins improved [report.pdf p.9] [memo.docx]."

    result = Agent(Scripted(turn), documents=[report()]).run("How did revenue do?")
    assert result.citations == [Source("data/report.pdf", page=1)]
    assert result.unverified_citations == ["report.pdf p.9", "memo.docx"]


def test_agents_parts_left_out_are_listed_and_citable_only_once_read(tmp_path: Path) -> None:
    sizes = [1, 30, 30]  # the first page fits the window, the other two do not
    doc = Document(
        "data/report.pdf",
        "pdf",
        [Part("text", Source("data/report.pdf", page=i + 1), text=t * n) for i, (t, n) in enumerate(zip(PAGES, sizes))],
    )

    @tool
    def read_page(page: int) -> str:
        """Read one page of the report."""
        part = doc.parts[page - 1]
        report_sources(part.source)
        return part.text

    def turn(messages, tools):
        n = sum(m["role"] == "assistant" for m in messages)
        if n == 0:
            assert "Revenue grew" in messages[1]["content"] and "Costs fell" not in messages[1]["content"]
            assert "data/report.pdf p.2" in messages[1]["content"] and "dropped" in messages[1]["content"]
            return AssistantMessage(tool_calls=[ToolCall("r", "read_page", '{"page": 3}')])
        return "Headcount was flat [report.pdf p.3]; costs fell [report.pdf p.2]."

    backend = Scripted(turn, context_window=300)  # room for the first page only
    path = tmp_path / "run.jsonl"
    result = Agent(backend, tools=[read_page], documents=[doc], trace_path=path, compaction=False, retries=0).run(
        "Summarise the report."
    )
    assert result.stop_reason == "answer", result.detail
    assert result.citations == [Source("data/report.pdf", page=3)]  # p.3 was read through the tool
    assert result.unverified_citations == ["report.pdf p.2"]  # p.2 was never seen
    assert Agent.resume(path, Scripted([]), tools=[read_page]).citations == result.citations


def test_agents_sources_travel_on_tool_results_not_in_their_text() -> None:
    """A tool's ``sources`` make pages citable; a label merely printed in a tool's text does not."""

    @tool
    def grep(pattern: str) -> ToolResult:
        """Search the documents."""
        return ToolResult(
            "data/report.pdf p.2: Costs fell by 3%.\ndata/report.pdf p.3: headcount",
            sources=[Source("data/report.pdf", page=2)],
        )

    backend = Scripted(
        [
            AssistantMessage(tool_calls=[ToolCall("g", "grep", json.dumps({"pattern": "cost"}))]),
            "Costs fell [report.pdf p.2]; headcount [report.pdf p.3].",
        ],
        context_window=75,  # no page fits: p.2 is only seen through the tool
    )
    result = Agent(backend, tools=[grep], documents=[report()], compaction=False).run("What happened to costs?")
    assert result.citations == [Source("data/report.pdf", page=2)]
    assert result.unverified_citations == ["report.pdf p.3"]  # printed by the tool, but not among its sources


def test_agents_image_parts_are_packed_as_images() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 20
    doc = Document(
        "fig.png", "image", [Part("image", Source("fig.png"), text="a chart", image=png, width=56, height=56)]
    )

    def turn(messages, tools):
        content = messages[1]["content"]
        assert isinstance(content, list) and content[1] == image_part(png) and content[-1]["text"].endswith("Describe.")
        return "A chart [fig.png]."

    assert Agent(Scripted(turn), documents=[doc]).run("Describe.").citations == [Source("fig.png")]


@pytest.mark.parametrize("answer", ["No sources used.", "See [1] and [note]."])
def test_agents_answers_without_labels_have_no_citations(answer: str) -> None:
    result = Agent(Scripted([answer]), documents=[report()]).run("q")
    assert result.citations == [] and result.unverified_citations == []


def test_uncited_answer_is_attributed_to_the_passages_holding_its_checked_figures() -> None:
    doc = Document(
        "report.pdf",
        "pdf",
        [
            Part(
                "text",
                Source("report.pdf", page=1),
                text="Summary. Revenue grew 18% in 2025, to $42.7 million from $36.2 million in 2024.",
            ),
            Part(
                "text", Source("report.pdf", page=2), text="Quarterly revenue 2025: Q1 9.1, Q2 10.2, Q3 11.0, Q4 12.4."
            ),
            Part("text", Source("report.pdf", page=3), text="The chart compares each quarter of 2025 with 2024."),
        ],
    )
    grew = Agent(Scripted(["Revenue grew by 18%."]), documents=[doc]).run("How much did revenue grow?")
    assert grew.citations == [Source("report.pdf", page=1)] and grew.citations_inferred
    assert grew.answer_status == "supported"
    q3 = Agent(Scripted(["Q3 revenue was 11.0 million."]), documents=[doc]).run("What was Q3 revenue?")
    assert q3.citations == [Source("report.pdf", page=2)]
    # Words alone attribute nothing; a figure found nowhere is flagged, never cited.
    vague = Agent(Scripted(["The company did well overall."]), documents=[doc]).run("How did it go?")
    assert vague.citations == [] and vague.answer_status == "unchecked"
    invented = Agent(Scripted(["Revenue grew 99% to $67.9 million."]), documents=[doc]).run(
        "How much did revenue grow?"
    )
    assert invented.citations == [] and invented.answer_status == "unsupported"
    assert [c.text for c in invented.claims if not c.supported] == ["99%", "$67.9 million"]
