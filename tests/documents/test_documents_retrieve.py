"""Passages and ranked retrieval: what a question finds, and the citation each passage carries."""

from __future__ import annotations

from pathlib import Path

import pytest

from kimidoc.documents import load
from kimidoc.documents.base import Document, Part, Source
from kimidoc.documents.passages import header_and_row, passages, passages_of
from kimidoc.documents.retrieve import Index, retrieve, tokens

REPORT = str(Path(__file__).resolve().parents[2] / "examples" / "data" / "report.pdf")


def test_tokens_split_glued_table_headers_and_fold_word_forms() -> None:
    assert tokens("Revenue2025($M)") == tokens("revenue 2025")
    assert tokens("Revenue grew 18% to $42.7 million") == tokens("revenues grow 18 42.7 millions")
    assert tokens("an increase of 10.6%") == tokens("growth 10.6") and tokens("completed") == tokens("completion")
    assert tokens("max_steps defaultBudget HTTPServer") == tokens("max step default budget http server")
    assert "pm9" in tokens("PM-9 pump") and "pm9" not in tokens("PM-7 pump, 9 in stock")
    assert tokens("What is the") == []  # stop words only


def test_prose_paragraphs_table_rows_and_code_chunks_carry_their_sources(tmp_path: Path) -> None:
    doc = Document(
        "r.pdf",
        "pdf",
        [
            Part(
                "text",
                Source("r.pdf", page=1),
                text="## Summary\n\nRevenue grew 18%.\nMargins improved.\n\nSecond paragraph.",
            ),
            Part("table", Source("r.pdf", page=2), text="|Quarter|Sales|\n|---|---|\n|Q1|9.1|\n|Q2|10.2|"),
        ],
    )
    ps = passages([doc])
    assert [(p.cite(), p.text, p.context) for p in ps[:2]] == [
        ("r.pdf p.1", "Revenue grew 18%. Margins improved.", "Summary"),
        ("r.pdf p.1", "Second paragraph.", ""),
    ]
    rows = [p for p in ps if p.kind == "table"]
    assert [header_and_row(p) for p in rows] == [
        (["Quarter", "Sales"], ["Q1", "9.1"]),
        (["Quarter", "Sales"], ["Q2", "10.2"]),
    ]
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "config.py").write_text(
        "import os\n\n\nTIMEOUT = 30\nRETRIES = 5\n\n\ndef f():\n    return TIMEOUT\n"
    )
    repo = load(tmp_path / "pkg")
    code = passages([repo])
    assert {p.source.path for p in code} == {f"{tmp_path / 'pkg'}/config.py"}
    lines = (tmp_path / "pkg" / "config.py").read_text().splitlines()
    for p in code:  # every chunk's line range holds exactly its text
        a, b = p.source.lines
        assert "\n".join(lines[a - 1 : b]).strip("\n") == p.text


def test_long_paragraphs_are_cut_between_sentences() -> None:
    text = " ".join(f"Sentence number {i} says something about revenue." for i in range(60))
    ps = passages([Document("a.txt", "pdf", [Part("text", Source("a.txt", page=1), text=text)])], max_chars=300)
    assert len(ps) > 5 and all(len(p.text) <= 300 for p in ps)
    assert " ".join(p.text for p in ps) == text  # nothing lost, nothing repeated


def test_ranking_finds_the_passage_that_answers() -> None:
    docs = [load(REPORT)]
    top = retrieve(docs, "How much did revenue grow in 2025?", k=8)
    assert any("Revenue grew 18% in 2025" in h.passage.text for h in top[:3])
    q3 = retrieve(docs, "What was Q3 revenue in 2024?", k=3)
    assert "|Q3|" in q3[0].passage.text.replace(" ", "") and q3[0].passage.cite().endswith("report.pdf p.2")
    risk = retrieve(docs, "Which customer contract is the main risk?", k=1)
    assert "FreshWay" in risk[0].passage.text and risk[0].passage.cite().endswith("report.pdf p.1")
    scores = [h.score for h in retrieve(docs, "revenue", k=20)]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
    assert retrieve(docs, "zebra giraffe", k=3) == []


def test_index_search_filters_and_empty_index() -> None:
    docs = [load(REPORT)]
    idx = Index.of(docs)
    only_p2 = idx.search("revenue", 10, where=lambda p: p.source.page == 2)
    assert only_p2 and all(h.passage.source.page == 2 for h in only_p2)
    assert Index([]).search("revenue") == []


@pytest.mark.parametrize(
    ("seen", "expected"),
    [
        (Source("r.pdf", page=2), ["r.pdf p.2"]),
        (Source("/abs/r.pdf"), ["r.pdf p.1", "r.pdf p.2"]),
        (Source("r.pdf", page=3), []),
    ],
)
def test_passages_of_seen_sources(seen: Source, expected: list[str]) -> None:
    doc = Document("r.pdf", "pdf", [Part("text", Source("r.pdf", page=n), text=f"Page {n} text.") for n in (1, 2)])
    assert [p.cite() for p in passages_of([doc], [seen])] == expected
