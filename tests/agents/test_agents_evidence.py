"""Evidence first: retrieval, ranked candidate answers, and what is printed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kimidoc.agents.evidence import ask_with_evidence, ground, wanted
from kimidoc.backends import Scripted
from kimidoc.cli import agent as cli_agent
from kimidoc.cli import main
from kimidoc.documents import load
from kimidoc.documents.base import Document, Part, Source
from kimidoc.documents.retrieve import Index

REPORT = str(Path(__file__).resolve().parents[2] / "examples" / "data" / "report.pdf")

# (question, the answer's figure or name, the page that states it), on the example report.
CASES = [
    ("How much did revenue grow in 2025?", "18%", 1),
    ("What was Q3 revenue in 2024?", "9.4", 2),
    ("What was total revenue in 2024?", "36.2", 2),
    ("Which customer's contract renewal is the main risk?", "FreshWay", 1),
    ("How many stores did the Nordic region add?", "41", 1),
    ("What operating margin did the company reach in 2025?", "12.1%", 1),
    ("What was headcount at the end of 2025?", "248", 1),
    ("What revenue does the company expect for 2026?", "between $48 million and $51 million", 1),
]


@pytest.fixture(scope="module")
def index() -> Index:
    return Index.of([load(REPORT)])


def test_what_a_question_asks_for() -> None:
    assert wanted("How much did revenue grow?")[:2] == ("percent", "money")
    assert "date" in wanted("When was the contract signed?")
    assert wanted("Who is the CEO?") == ("name",)
    assert "number" in wanted("What is the default timeout?")
    assert wanted("Summarise the risks.") == ()


@pytest.mark.parametrize(("question", "answer", "page"), CASES)
def test_the_ranked_candidate_answers_and_cites_its_page(index: Index, question: str, answer: str, page: int) -> None:
    found = ground(index, question)
    assert found.chosen is not None and found.chosen.text == answer, [(o.text, round(o.score, 2)) for o in found.ranked]
    assert found.ranked[0] is found.chosen
    assert found.evidence[0] is found.chosen.passage and found.chosen.passage.source.page == page
    assert found.answer.endswith(f"report.pdf p.{page}]") and len(found.evidence) <= 3


def test_a_question_wanting_no_figure_gets_the_passages_only(index: Index) -> None:
    found = ground(index, "Describe the outlook")
    assert found.chosen is None and found.answer == "" and found.evidence
    assert ground(index, "zebra giraffe").evidence == []
    # Names stand in the passage, but none near what is asked: no short answer rather than a wrong one.
    assert ground(index, "Who is the chief executive?").chosen is None


def test_candidates_follow_table_rows_and_columns_and_code_names() -> None:
    table = Document(
        "t.csv",
        "text",
        [
            Part(
                "table",
                Source("t.csv", lines=(1, 4)),
                text="|part|site|qty|cost ($)|\n|---|---|---|---|\n|PM-7|Dunmore|9|412.00|\n|PM-9|Kettering|6|538.50|",
            )
        ],
    )
    idx = Index.of([table])
    assert ground(idx, "What is the unit cost of the PM-9 pump?").chosen.text == "538.50"  # not the 9 in PM-7's row
    assert ground(idx, "How many PM-7 parts are at Dunmore?").chosen.text == "9"
    code = Document(
        "repo",
        "repository",
        [
            Part(
                "text",
                Source("cfg.py", lines=(1, 4)),
                meta={"language": "python"},
                text="HOST = '127.0.0.1'\nPORT = 8427\nTIMEOUT_S = 12.5\n",
            )
        ],
    )
    found = ground(Index.of([code]), "Which port does the server listen on?")
    assert found.chosen.text == "8427" and found.answer.endswith("[repo/cfg.py:1-3]")


def test_ask_with_evidence_verifies_and_cites() -> None:
    result = ask_with_evidence([load(REPORT)], "How much did revenue grow in 2025?")
    assert result.ok and result.answer_status == "supported"
    assert [c.text for c in result.claims] == ["18%"] and [s.cite() for s in result.citations] == [f"{REPORT} p.1"]


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch):
    def use(b):  # noqa: ANN001, ANN202
        monkeypatch.setattr(cli_agent, "backend_from", lambda args: b)
        return b

    return use


def test_cli_evidence_mode_leads_with_the_answer_then_quotes(backend, capsys) -> None:  # noqa: ANN001
    backend(Scripted([]))  # evidence first asks no model: an empty script would fail if it did
    assert main(["ask", REPORT, "How much did revenue grow in 2025?", "--mode", "evidence", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("18% [")
    assert "\u201cRevenue grew 18% in 2025, to $42.7 million from $36.2 million in 2024." in out
    assert out.rstrip().endswith(f"Sources: {REPORT} p.1")  # the answer cites its own passage: nothing inferred
    assert main(["ask", REPORT, "How much did revenue grow in 2025?", "--mode", "evidence", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["answer_status"] == "supported" and data["claims"][0] == {
        "text": "18%",
        "kind": "percent",
        "supported": True,
        "source": f"{REPORT} p.1",
        "how": "stated",
    }
    assert data["evidence"][0]["source"] == f"{REPORT} p.1" and "Revenue grew 18%" in data["evidence"][0]["text"]


def test_cli_flags_an_invented_figure_and_lists_no_sources_for_it(backend, capsys) -> None:  # noqa: ANN001
    invented = "Revenue grew from $48 million to $67.9 million, which is a total of 2.3% increase [report.pdf p.1]."
    backend(Scripted([invented, invented]))
    assert main(["ask", REPORT, "How much did revenue grow in 2025?", "--mode", "agent", "--no-python", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "The model's answer could not be checked: $67.9 million, 2.3% appear(s) in none of the passages it read."
    )
    assert "NOT verified" in out and "Sources" not in out and "What the documents say:" in out
    assert main(["ask", REPORT, "How much did revenue grow in 2025?", "--mode", "agent", "--no-python", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["answer_status"] == "unsupported"
    assert [(c["text"], c["supported"], c["source"]) for c in data["claims"] if not c["supported"]] == [
        ("$67.9 million", False, None),
        ("2.3%", False, None),
    ]


def test_a_date_with_a_stray_stop_reads_plainly_and_still_checks() -> None:
    memo = Document(
        "memo.pdf",
        "pdf",
        [Part("text", Source("memo.pdf", page=1), text="The Dunmore warehouse will close on 14. August 2026.")],
    )
    result = ask_with_evidence([memo], "When will the Dunmore warehouse close?")
    assert result.answer == "14 August 2026 [memo.pdf p.1]" and result.answer_status == "supported"
