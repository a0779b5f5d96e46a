"""The QA benchmark cannot be wrong: its corpus is deterministic, every accepted answer is on the
page (or lines) the question names, and the judge scores hand-made results as the contract says."""

from __future__ import annotations

import sys
from pathlib import Path

import pymupdf
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_qa
import qa_corpus

QUESTIONS = bench_qa.load_questions()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("qa")
    qa_corpus.write_corpus(out)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_corpus_is_byte_for_byte_deterministic(corpus: Path, tmp_path: Path) -> None:
    qa_corpus.write_corpus(tmp_path)
    first, second = _files(corpus), _files(tmp_path)
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []


def test_corpus_has_every_kind_of_document(corpus: Path) -> None:
    pdfs = {p.name: pymupdf.open(p) for p in corpus.glob("*.pdf")}
    assert pdfs["annual_report_2025.pdf"].page_count >= 3
    ruled = pdfs["annual_report_2025.pdf"][1].get_drawings()
    assert len(ruled) >= 20, "the annual report's tables are ruled"
    assert pdfs["eastbrook_budget_2026.pdf"][0].get_drawings() == [], "the budget's tables have no ruling lines"
    scan = pdfs["dunmore_memo_scan.pdf"][0]
    assert scan.get_text().strip() == "" and len(scan.get_images()) == 1, (
        "the scanned memo is an image without a text layer"
    )
    chart = pdfs["wind_generation_2025.pdf"][0]
    assert len(chart.get_images()) == 1 and "River Valley 275 GWh" in " ".join(chart.get_text().split())
    # two columns: page 2 of the paper has text blocks starting at two distinct x positions
    starts = {round(b[0]) for b in pdfs["speech_routing_paper.pdf"][1].get_text("blocks") if len(b[4]) > 80}
    assert len(starts) == 2
    assert {"config.py", "cli.py", "README.md"} <= {p.name for p in (corpus / "tidewatch").rglob("*")}
    assert len(qa_corpus.DOCUMENTS) >= 6 and all((corpus / name).exists() for name in qa_corpus.DOCUMENTS)


def _source_text(corpus: Path, source: dict) -> str:
    path = corpus / source["file"]
    if "lines" in source:
        a, b = source["lines"]
        return "\n".join(path.read_text().splitlines()[a - 1 : b])
    if path.name == "dunmore_memo_scan.pdf":  # no text layer: check against the text the scan was rendered from
        assert source["page"] == 1
        return qa_corpus.SCANNED_TEXT
    with pymupdf.open(path) as doc:
        return doc[source["page"] - 1].get_text()


@pytest.mark.parametrize("q", QUESTIONS, ids=[q["id"] for q in QUESTIONS])
def test_every_expected_source_holds_an_accepted_answer(corpus: Path, q: dict) -> None:
    assert q["answers"] and q["sources"]
    for source in q["sources"]:
        assert source["file"].split("/")[0] == q["document"], f"{q['id']}: {source['file']} is not in {q['document']}"
        text = _source_text(corpus, source)
        assert bench_qa.any_form_in(q["answers"], text), f"{q['id']}: no accepted answer in {source}: {text[:300]!r}"
    assert bench_qa.form_in(q["answers"][0], _source_text(corpus, q["sources"][0])), (
        f"{q['id']}: first form not in first source"
    )
    assert q["document"] not in bench_qa.documents_for(q)[1:], "the distractor is another document"


def test_question_set_covers_the_brief() -> None:
    assert len(QUESTIONS) >= 30 and len({q["id"] for q in QUESTIONS}) == len(QUESTIONS)
    kinds = " ".join(q["kind"] for q in QUESTIONS)
    for kind in ("ruled table", "unruled table", "two-column", "chart", "scanned", "code default", "date", "name"):
        assert kind in kinds, kind
    assert len({q["document"] for q in QUESTIONS}) >= 6


# -- the judge -------------------------------------------------------------------------------------------

FLEET = {"answers": ["71.3", "$71.3 million", "$71.3M"], "sources": [{"file": "annual_report_2025.pdf", "page": 2}]}
ROW = "Fleet Software 71.3 58.4 12.4 9.0"


def _judge(result: dict, known: str = "") -> bench_qa.Verdict:
    return bench_qa.judge(result, FLEET["answers"], FLEET["sources"], known)


def _claim(text: str, supported: bool, source: str | None) -> dict:
    return {"text": text, "kind": "money", "supported": supported, "source": source}


def test_judge_supported_answer_right_and_cited() -> None:
    v = _judge(
        {
            "answer": "Fleet Software revenue was $71.3 million in 2025.",
            "answer_status": "supported",
            "claims": [_claim("$71.3 million", True, "annual_report_2025.pdf p.2")],
            "evidence": [{"source": "annual_report_2025.pdf p.2", "text": ROW}],
            "citations": ["annual_report_2025.pdf p.2"],
            "citations_inferred": False,
            "stop_reason": "answered",
        }
    )
    assert (v.right, v.cited, v.flagged, v.unsupported_as_sourced, v.missing_keys) == (True, True, 0, [], [])


def test_judge_wrong_figure_is_not_right() -> None:
    v = _judge(
        {
            "answer": "Fleet Software revenue was $58.4 million.",
            "answer_status": "supported",
            "claims": [_claim("$58.4 million", True, "annual_report_2025.pdf p.2")],
            "evidence": [],
        }
    )
    assert (v.right, v.cited) == (False, False)


def test_judge_right_figure_on_the_wrong_page_is_not_cited() -> None:
    v = _judge(
        {
            "answer": "It was $71.3M.",
            "answer_status": "supported",
            "claims": [_claim("$71.3M", True, "annual_report_2025.pdf p.1")],
        }
    )
    assert (v.right, v.cited) == (True, False)
    other_file = _judge(
        {
            "answer": "It was $71.3M.",
            "answer_status": "supported",
            "claims": [_claim("$71.3M", True, "eastbrook_budget_2026.pdf p.2")],
        }
    )
    assert (other_file.right, other_file.cited) == (True, False)


def test_judge_counts_an_unsupported_figure_printed_as_sourced() -> None:
    v = _judge(
        {
            "answer": "Fleet Software revenue was $37 million.",
            "answer_status": "supported",
            "claims": [_claim("$37 million", False, None)],
            "evidence": [{"source": "annual_report_2025.pdf p.2", "text": ROW}],
        }
    )
    assert v.unsupported_as_sourced == ["$37 million"] and v.flagged == 1 and not v.right
    listed_with_a_source = _judge(
        {
            "answer": "It was $37 million.",
            "answer_status": "unsupported",
            "claims": [_claim("$37 million", False, "annual_report_2025.pdf p.2")],
        }
    )
    assert listed_with_a_source.unsupported_as_sourced == ["$37 million"]


def test_judge_unsupported_answer_leads_with_the_evidence() -> None:
    v = _judge(
        {
            "answer": "Fleet Software revenue was $37 million.",
            "answer_status": "unsupported",
            "claims": [_claim("$37 million", False, None)],
            "evidence": [
                {"source": "annual_report_2025.pdf p.2", "text": ROW},
                {"source": "annual_report_2025.pdf p.1", "text": "x"},
            ],
        }
    )
    assert (v.right, v.cited, v.flagged, v.unsupported_as_sourced) == (True, True, 1, [])
    assert v.lead == ROW and v.lead_source == "annual_report_2025.pdf p.2"


def test_judge_scores_todays_output_without_the_contract_keys_as_wrong() -> None:
    known = "What revenue did Fleet Software report for 2025?\n" + ROW
    v = _judge(
        {
            "answer": "Revenue grew to $67.9 million; Fleet Software had 71.3.",
            "citations": ["annual_report_2025.pdf p.2"],
            "citations_inferred": True,
            "stop_reason": "answered",
        },
        known,
    )
    assert (v.right, v.cited, v.answer_holds_it) == (False, False, True)
    assert {"answer_status", "claims", "evidence"} <= set(v.missing_keys)
    assert v.invented_as_sourced == ["67.9"], "the harness's own check catches a figure in no document"
    uncited = _judge({"answer": "Revenue was $67.9 million."}, known)
    assert uncited.invented_as_sourced == [], "an answer shown without sources is not passed off as sourced"


def test_judge_ignores_citation_labels_when_looking_for_invented_figures() -> None:
    v = _judge(
        {
            "answer": "71.3 (annual_report_2025.pdf p.2; tidewatch/config.py:13-18) [1]",
            "answer_status": "supported",
            "claims": [_claim("71.3", True, "annual_report_2025.pdf p.2")],
        },
        ROW,
    )
    assert v.invented_as_sourced == []


@pytest.mark.parametrize(
    ("form", "text", "found"),
    [
        ("12,105", "a budget of 12105 thousand", True),
        ("$12,105,000", "$12.105 million", True),
        ("94 million", "94,000,000 parameters", True),
        ("94 million", "94M parameters", True),
        ("18%", "grew 18 percent", True),
        ("18%", "added 18 stores", False),
        ("71.3", "171.3 and 71.30", True),
        ("71.3", "171.3 only", False),
        ("4.2%", "Parks & Recreation 6,275 6,540 +4.2", False),
        ("+4.2", "Parks & Recreation 6,275 6,540 +4.2", True),
        ("GBP 186,000", "costs \u00a3186,000 per year", True),
        ("May 2027", "the work moves to 2027", False),
        ("May 2027", "completion: may 2027.", True),
        ("Ingrid Solberg", "appointed INGRID SOLBERG as CFO", True),
        ("Coastal Plain", "Coastal Plains", False),
        ("180k", "180,000 steps", True),
        ("30 minutes", "COOLDOWN_MINUTES = 30", True),
    ],
)
def test_form_in(form: str, text: str, found: bool) -> None:
    assert bench_qa.form_in(form, text) is found


@pytest.mark.parametrize(
    ("cite", "expected", "ok"),
    [
        ("tidewatch/config.py:12-20", [{"file": "tidewatch/tidewatch/config.py", "lines": [13, 13]}], True),
        ("tidewatch/config.py:14-20", [{"file": "tidewatch/tidewatch/config.py", "lines": [13, 13]}], False),
        ("tidewatch/cli.py:1-40", [{"file": "tidewatch/tidewatch/config.py", "lines": [13, 13]}], False),
        ("/tmp/x/annual_report_2025.pdf p.2", [{"file": "annual_report_2025.pdf", "page": 2}], True),
        ("annual_report_2025.pdf", [{"file": "annual_report_2025.pdf", "page": 2}], False),
        (None, [{"file": "annual_report_2025.pdf", "page": 2}], False),
    ],
)
def test_source_matches(cite: str | None, expected: list, ok: bool) -> None:
    assert bench_qa.source_matches(cite, expected) is ok


def test_load_questions_names_a_malformed_question(tmp_path: Path) -> None:
    bad = tmp_path / "q.json"
    bad.write_text('[{"id": "x1", "question": "?", "document": "annual_report_2025.pdf", "sources": []}]')
    with pytest.raises(ValueError, match=r"x1.*answers"):
        bench_qa.load_questions(bad)
    bad.write_text('[{"id": "x2", "question": "?", "document": "nope.pdf", "sources": [], "answers": ["1"]}]')
    with pytest.raises(ValueError, match=r"x2.*nope\.pdf"):
        bench_qa.load_questions(bad)


def test_ask_runs_the_cli_in_process_and_captures_its_error(tmp_path: Path) -> None:
    code, out, err = bench_qa.ask([str(tmp_path / "missing.pdf")], "What is it?", ["--model", "embedded"])
    assert (code, out) == (2, "") and "missing.pdf" in err


def test_summary_counts_each_column() -> None:
    def row(right: bool, cited: bool, flagged: int, as_sourced: list, seconds: float, lead: str) -> dict:
        return {
            "right": right,
            "cited": cited,
            "flagged": flagged,
            "unsupported_as_sourced": as_sourced,
            "invented_as_sourced": [],
            "answer_holds_it": right,
            "exit": 0,
            "missing_keys": ["evidence"] if not lead else [],
            "seconds": seconds,
            "lead": lead,
        }

    s = bench_qa.summarise(
        [
            row(True, True, 0, [], 2.0, "a" * 10),
            row(True, False, 1, [], 4.0, "a" * 30),
            row(False, False, 2, ["$37M"], 9.0, ""),
        ]
    )
    assert (
        s["questions"],
        s["right"],
        s["right_and_cited"],
        s["claims_flagged"],
        s["unsupported_printed_as_sourced"],
    ) == (3, 2, 1, 3, 1)
    assert (s["seconds_median"], s["seconds_max"], s["lead_chars_median"], s["missing_contract_keys"]) == (
        4.0,
        9.0,
        10,
        ["evidence"],
    )


def test_csv_cells_count_as_separate_numbers_for_the_invented_check(tmp_path) -> None:
    csv_file = tmp_path / "parts.csv"
    csv_file.write_text('part,cost,reorder\nBR-1045,3.72,500\n"HX-1","1,188",4\n')
    known = {n.raw for n in bench_qa.numbers(bench_qa.document_text(csv_file))}
    assert {3.72, 500.0, 1188.0} <= known and 3.725 not in known
