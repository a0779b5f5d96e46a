"""Evidence first: retrieval, candidate answers, the model's constrained choice, and what is printed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kimidoc.agents.evidence import TIE, ask_with_evidence, candidates, ground, wanted
from kimidoc.backends import Scripted
from kimidoc.cli import agent as cli_agent
from kimidoc.cli import main
from kimidoc.documents import load
from kimidoc.documents.base import Document, Part, Source
from kimidoc.documents.retrieve import Index, tokens

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


class Chooser(Scripted):
    """A backend that scores options as told (log-probabilities), recording what it was asked."""

    def __init__(self, prefer: str | None) -> None:
        super().__init__([])
        self.prefer = prefer
        self.asked: list[list[str]] = []

    def choose(self, messages, options):  # noqa: ANN001, ANN201
        self.asked.append(list(options))
        return [0.0 if o == self.prefer else -8.0 for o in options] if self.prefer else [-1.0] * len(options)



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
async def test_the_ranked_candidate_answers_and_cites_its_page(index: Index, question: str, answer: str, page: int) -> None:
    found = await ground(Chooser(None), index, question)  # a model with no preference: the ranking decides
    assert found.chosen is not None and found.chosen.text == answer, [(o.text, round(o.score, 2)) for o in found.options]
    assert found.evidence[0] is found.chosen.passage and found.chosen.passage.source.page == page
    assert found.answer.endswith(f"report.pdf p.{page}]") and len(found.evidence) <= 3


async def test_the_model_settles_close_calls_but_not_clear_ones(index: Index) -> None:
    tied = Index.of([Document("team.txt", "pdf", [Part("text", Source("team.txt", page=1), text="Alice Smith leads the project. Bob Jones leads the project.")])])
    model = Chooser("Bob Jones")
    found = await ground(model, tied, "Who leads the project?")
    assert model.asked == [["Alice Smith", "Bob Jones"]] and found.chosen.text == "Bob Jones"
    # FreshWay leads by more than TIE: no vote, whatever the model prefers.
    q = "Which customer's contract renewal is the main risk?"
    ranked = candidates(q, index.search(q, 8), index.weights(tokens(q)))
    assert ranked[0].text == "FreshWay" and ranked[1].score < ranked[0].score - TIE
    model = Chooser("Nordic")
    assert (await ground(model, index, q)).chosen.text == "FreshWay" and model.asked == []


async def test_a_question_wanting_no_figure_gets_the_passages_only(index: Index) -> None:
    found = await ground(Chooser(None), index, "Describe the outlook")
    assert found.chosen is None and found.answer == "" and found.evidence
    assert (await ground(Chooser(None), index, "zebra giraffe")).evidence == []


def test_ask_with_evidence_verifies_and_cites() -> None:
    result = ask_with_evidence(Chooser(None), [load(REPORT)], "How much did revenue grow in 2025?")
    assert result.ok and result.answer_status == "supported"
    assert [c.text for c in result.claims] == ["18%"] and [s.cite() for s in result.citations] == [f"{REPORT} p.1"]


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch):
    def use(b):  # noqa: ANN001, ANN202
        monkeypatch.setattr(cli_agent, "backend_from", lambda args: b)
        return b

    return use


def test_cli_evidence_mode_leads_with_the_answer_then_quotes(backend, capsys) -> None:  # noqa: ANN001
    backend(Chooser(None))
    assert main(["ask", REPORT, "How much did revenue grow in 2025?", "--mode", "evidence", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("18% [")
    assert "\u201cRevenue grew 18% in 2025, to $42.7 million from $36.2 million in 2024." in out
    assert f"Sources (matched to the answer's checked figures; the model cited none): {REPORT} p.1" in out
    assert main(["ask", REPORT, "How much did revenue grow in 2025?", "--mode", "evidence", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["answer_status"] == "supported" and data["claims"][0] == {"text": "18%", "kind": "percent", "supported": True,
                                                                       "source": f"{REPORT} p.1", "how": "stated"}
    assert data["evidence"][0]["source"] == f"{REPORT} p.1" and "Revenue grew 18%" in data["evidence"][0]["text"]


def test_cli_flags_an_invented_figure_and_lists_no_sources_for_it(backend, capsys) -> None:  # noqa: ANN001
    invented = "Revenue grew from $48 million to $67.9 million, which is a total of 2.3% increase [report.pdf p.1]."
    backend(Scripted([invented, invented]))
    assert main(["ask", REPORT, "How much did revenue grow in 2025?", "--mode", "agent", "--no-python", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("The model's answer could not be checked: $67.9 million, 2.3% appear(s) in none of the passages it read.")
    assert "NOT verified" in out and "Sources" not in out and "What the documents say:" in out
    assert main(["ask", REPORT, "How much did revenue grow in 2025?", "--mode", "agent", "--no-python", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["answer_status"] == "unsupported"
    assert [(c["text"], c["supported"], c["source"]) for c in data["claims"] if not c["supported"]] == [("$67.9 million", False, None), ("2.3%", False, None)]
