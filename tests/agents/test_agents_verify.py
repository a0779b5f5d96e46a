"""Answer verification: every figure and name checked against the passages, formatting aside."""

from __future__ import annotations

import pytest

from kimidoc.agents.verify import claims_in, verify
from kimidoc.documents.base import Source
from kimidoc.documents.passages import Passage

P1 = Passage(
    Source("report.pdf", page=1),
    "Summary: Revenue grew 18% in 2025, to $42.7 million from $36.2 million in 2024. "
    "Headcount rose from 212 to 1,240 after the FreshWay deal, signed on March 3, 2025.",
    "text",
)
P2 = Passage(Source("report.pdf", page=2), "|Quarter|Revenue ($M)|Share (%)|\n|Q3|48.6|31|", "table")
PASSAGES = [P1, P2]


def verdicts(answer: str, question: str = "") -> dict[str, tuple[bool, str | None]]:
    return {
        c.text: (c.supported, c.source.cite() if c.source else None) for c in verify(answer, PASSAGES, question).claims
    }


def test_claims_are_figures_dates_and_names_not_citations_or_sentence_openers() -> None:
    found = claims_in(
        "Revenue grew 18% to $42.7 million [report.pdf p.1] on March 3, 2025, says FreshWay CEO Jane Doe."
    )
    assert found == [
        ("18%", "percent"),
        ("$42.7 million", "money"),
        ("March 3, 2025", "date"),
        ("FreshWay", "name"),
        ("Jane Doe", "name"),
    ]
    assert claims_in("It grew.") == []
    assert claims_in("Which region? The Nordic region.", question="which region") == [("Nordic", "name")]


@pytest.mark.parametrize(
    "answer",
    [
        "Q3 revenue was $48.6 million.",  # the $M column holds 48.6
        "Q3 revenue was 48,600,000 dollars.",
        "Headcount reached 1240.",  # 1,240 in the passage
        "Revenue was about $43 million.",  # rounded to the precision the answer gives
        "The deal was signed on 3 March 2025.",
        "Revenue grew 18 percent.",
    ],
)
def test_formatting_differences_are_supported(answer: str) -> None:
    checked = verify(answer, PASSAGES)
    assert checked.status == "supported", checked.claims


def test_invented_figures_and_names_are_flagged_with_no_source() -> None:
    v = verdicts("Revenue grew from $48 million to $67.9 million, a 2.3% increase, says John Smith. FreshWay agreed.")
    assert v["$67.9 million"] == (False, None) and v["2.3%"] == (False, None) and v["John Smith"] == (False, None)
    assert v["FreshWay"] == (True, "report.pdf p.1")
    assert verify("Revenue grew 2.3%.", PASSAGES).status == "unsupported"
    assert verify("Revenue was 49.", PASSAGES).status == "supported"  # 48.6 rounds to 49
    assert verify("Revenue was 48.", PASSAGES).status == "unsupported"  # and not to 48
    assert verify("It was signed on March 4, 2025.", PASSAGES).status == "unsupported"  # the day differs


def test_derived_figures_need_two_figures_of_one_passage_and_no_years() -> None:
    change = verify("Revenue rose by $6.5 million, 17.96% up.", PASSAGES).claims
    assert [(c.supported, c.how) for c in change] == [
        (True, "derived: 42.7 - 36.2"),
        (True, "derived: (42.7 - 36.2) / 36.2"),
    ]
    assert (
        verify("Revenue grew 99%.", PASSAGES).status == "unsupported"
    )  # (18 - 2025) / 2025 is no figure of the report
    assert verify("It grew 50%.", PASSAGES).status == "unsupported"


def test_a_claim_is_sourced_to_the_first_passage_holding_it() -> None:
    assert verdicts("Share was 31%.") == {"31%": (True, "report.pdf p.2")}
    assert verify("Nothing to check here.", PASSAGES).status == "unchecked"
    assert verify("Revenue grew 18%.", PASSAGES).sources() == [Source("report.pdf", page=1)]
