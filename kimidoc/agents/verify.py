"""Answer verification: every figure and proper name in an answer, checked against the passages read.

A claim is a figure (an amount, a percentage, a date or year, any other number) or a proper name
found in the answer's text. Each gets a verdict against the passages the agent saw:
- ``supported``: the passage states it, formatting aside (``$48.6 million`` = ``48.6`` in a
  ``Revenue ($M)`` column = ``48,600,000``; ``1,240`` = ``1240``; a figure rounded to the precision
  the answer gives it, ``43`` for ``42.7``);
- ``derived``: a percentage or amount that one passage's two figures give by a difference, a sum,
  a ratio or a change (``18%`` from 36.2 and 42.7), to the precision the answer states;
- ``unsupported``: found nowhere the agent looked. Such a claim is never attributed a source.

The source of a supported claim is the best-ranked passage holding it (the caller orders the
passages by relevance), so inferred citations always point at text that holds the figure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from kimidoc.agents.citations import source_from_dict, source_to_dict
from kimidoc.documents.base import Source
from kimidoc.documents.passages import Passage, header_and_row

_SCALE = {
    "thousand": 1e3,
    "k": 1e3,
    "million": 1e6,
    "m": 1e6,
    "mn": 1e6,
    "mio": 1e6,
    "billion": 1e9,
    "bn": 1e9,
    "b": 1e9,
    "trillion": 1e12,
}
_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"
_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_SCALE_WORD = r"(?:\s?(?:thousand|million|billion|trillion|mn|bn|[kKmMbB])\b)?"
_CLAIM = re.compile(
    rf"(?P<date>\b(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}\b|\b\d{{1,2}}\.?\s+(?:{_MONTHS})\.?,?\s+\d{{4}}\b"
    rf"|\b\d{{4}}-\d{{2}}-\d{{2}}\b|\b(?:{_MONTHS})\.?\s+\d{{4}}\b)"
    rf"|(?P<money>(?:US\s?)?[$€£]\s?(?:{_NUM}){_SCALE_WORD})"
    rf"|(?P<percent>(?<![\w.])[-+]?(?:{_NUM})\s?(?:%|percent\b|per\s?cent\b))"
    rf"|(?P<number>(?<![\w.$€£])[-+]?(?:{_NUM}){_SCALE_WORD}(?![\w%]|\.\d))"
)
_VALUE = re.compile(rf"(?<![\w])(?:{_NUM})")
_NAME = re.compile(
    r"\b(?:[A-Z][a-z]+(?:[A-Z][a-z]+)+|[A-Z]{2,}[a-z]*|[A-Z][a-z'’]+)(?:[ -](?:[A-Z][a-z]+(?:[A-Z][a-z]+)*|[A-Z]{2,}|of|de|van|von)(?=[ -]?[A-Z]|\b))*"
)
_COMMON_CAPS = frozenset(
    "The A An In On At For From By With As It Its This That These Those There Their They We Our You Your He She His Her "
    "I If So But And Or Not No Yes Answer Question Source Sources Evidence Page Revenue Total Table Figure Note See "
    "According Based Also However Therefore Thus Then When Where What Which Who Why How Is Are Was Were Be "
    "CEO CFO CTO COO USD EUR GBP AI OK".split()
)


@dataclass(frozen=True)
class Claim:
    text: str  # as written in the answer
    kind: str  # money | percent | date | number | name
    supported: bool
    source: Source | None = None  # the passage holding it (None when unsupported)
    how: str = ""  # "stated" | "rounded" | "derived: (42.7 - 36.2) / 36.2" | ""

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "kind": self.kind,
            "supported": self.supported,
            "source": self.source.cite() if self.source else None,
            "how": self.how,
        }


@dataclass
class Verification:
    claims: list[Claim] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``supported`` (every claim found), ``unsupported`` (any claim found nowhere) or
        ``unchecked`` (the answer holds no figure or name to check)."""
        if not self.claims:
            return "unchecked"
        return "supported" if all(c.supported for c in self.claims) else "unsupported"

    @property
    def unsupported(self) -> list[Claim]:
        return [c for c in self.claims if not c.supported]

    def sources(self) -> list[Source]:
        """The sources of the supported claims, each once, in answer order."""
        return list(dict.fromkeys(c.source for c in self.claims if c.supported and c.source is not None))


@dataclass(frozen=True)
class _Figure:
    value: float
    decimals: int
    scaled: float | None  # the value times its scale word, when one was written
    percent: bool


def _figure(text: str) -> _Figure | None:
    m = re.search(_NUM, text)
    if not m:
        return None
    digits = m.group().replace(",", "")
    value = float(digits)
    if text.lstrip().startswith("-") or text.lstrip("$€£US ").startswith("-"):
        value = -value
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    tail = text[m.end() :].strip().lower().rstrip(".")
    scale = _SCALE.get(tail) if tail and tail not in ("%", "percent") else None
    return _Figure(
        value, decimals, value * scale if scale else None, "%" in text or "percent" in tail or "cent" in tail
    )


def claims_in(answer: str, question: str = "") -> list[tuple[str, str]]:
    """The (text, kind) of every checkable claim in ``answer``, each once, in order.

    Citation labels (``[report.pdf p.3]``) are not claims; neither are names the question itself
    used, nor a lone capitalised word opening a sentence (``Revenue grew``).
    """
    return list(dict.fromkeys((t, k) for t, k, _ in claim_spans(answer, question)))


def claim_spans(answer: str, question: str = "") -> list[tuple[str, str, int]]:
    """(text, kind, offset in ``answer``) of every claim, in order (see :func:`claims_in`)."""
    text = re.sub(r"\[[^\[\]\n]{1,400}\]", lambda m: " " * len(m.group()), answer)  # citation labels, offsets kept
    out: list[tuple[str, str, int]] = []
    masked = list(text)
    for m in _CLAIM.finditer(text):
        kind = m.lastgroup or "number"
        stripped = m.group().strip()
        out.append((stripped, kind, m.start() + m.group().find(stripped)))
        masked[m.start() : m.end()] = " " * (m.end() - m.start())
    rest = "".join(masked)
    asked = question.lower()
    for m in _NAME.finditer(rest):
        if re.search(r"\d\s*$", rest[: m.start()]):
            continue  # "468 GWh", "29 USD": a unit after a figure, not a name
        # "The CEO Jane Doe" holds the name "Jane Doe": common capitalised words split a run.
        runs: list[list[tuple[str, int]]] = [[]]
        for w in re.finditer(r"\S+", m.group()):
            if w.group() in _COMMON_CAPS:
                runs.append([])
            else:
                runs[-1].append((w.group(), m.start() + w.start()))
        for words in runs:
            while words and words[-1][0] in ("of", "de", "van", "von"):
                words.pop()
            if not words:
                continue
            name = " ".join(w for w, _ in words).strip(" -")
            alone = len(m.group().split()) == 1
            if alone and _sentence_start(rest, m.start()) and not _marked(name):
                continue
            if name.lower() in asked:
                continue
            out.append((name, "name", words[0][1]))
    return sorted(out, key=lambda c: c[2])


def _sentence_start(text: str, at: int) -> bool:
    before = text[:at].rstrip()
    return not before or before[-1] in ".!?:\n*-•>\"'(" or before.endswith("**")


def _marked(word: str) -> bool:
    """A word whose shape marks it as a name even at a sentence start: ``FreshWay``, ``NASA``."""
    return any(c.isupper() for c in word[1:])


def verify(answer: str, passages: Sequence[Passage], question: str = "") -> Verification:
    """Check every claim of ``answer`` against ``passages`` (most relevant first)."""
    figures = [_passage_figures(p) for p in passages]
    lowered = [p.text.lower() for p in passages]
    claims = []
    for text, kind in claims_in(answer, question):
        if kind == "name":
            src = next((p.source for p, low in zip(passages, lowered) if _name_in(text, low)), None)
            claims.append(Claim(text, kind, src is not None, src, "stated" if src else ""))
            continue
        if kind == "date":
            src = next((p.source for p in passages if _date_in(text, p.text)), None)
            claims.append(Claim(text, kind, src is not None, src, "stated" if src else ""))
            continue
        claim = _figure(text)
        if claim is None:
            continue
        found = _find_figure(claim, passages, figures)
        claims.append(Claim(text, kind, found is not None, found[0] if found else None, found[1] if found else ""))
    return Verification(claims)


def _name_in(name: str, passage_lower: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(name.lower()).replace(r"\ ", r"\s+") + r"(?!\w)", passage_lower) is not None


_MONTH_NUMBER = {m[:3].lower(): i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}


def _date_key(text: str) -> tuple[int, int, int] | None:
    """(year, month, day) of a date written as ``March 3, 2025``, ``3 March 2025``, ``2025-03-03``,
    or (year, month, 0) for ``May 2027``."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        y, m, d = text.split("-")
        return int(y), int(m), int(d)
    month = re.search(_MONTHS, text)
    year = re.search(r"\d{4}", text)
    if not (month and year):
        return None
    day = re.search(r"(?<!\d)\d{1,2}(?!\d)", text[: year.start()] + " " + text[year.end() :])
    return int(year.group()), _MONTH_NUMBER[month.group()[:3].lower()], int(day.group()) if day else 0


def _date_in(date: str, passage: str) -> bool:
    key = _date_key(date)
    return key is not None and any(
        _date_key(m.group()) == key for m in _CLAIM.finditer(passage) if m.lastgroup == "date"
    )


_HEADER_SCALE = re.compile(
    r"\(\s*(?:US)?[$€£]?\s*(?P<s>k|m|mn|bn|b|thousands?|millions?|billions?)\s*\)|\bin (?P<w>thousands|millions|billions)\b",
    re.I,
)


def _column_scale(head: str) -> float | None:
    """The scale a column header declares: ``Revenue ($M)`` -> 1e6."""
    m = _HEADER_SCALE.search(head)
    word = (m.group("s") or m.group("w")).lower().rstrip("s") if m else ""
    return _SCALE.get(word) if word else None


def _passage_figures(p: Passage) -> list[_Figure]:
    """Every figure a passage states, with the scale its words or its table column give it."""
    out: list[_Figure] = []
    spans: list[tuple[int, int]] = []
    for m in _CLAIM.finditer(p.text):
        spans.append(m.span())
        if m.lastgroup in ("money", "percent", "number"):
            f = _figure(m.group())
            if f is not None:
                out.append(f)
    table = header_and_row(p)
    if table is not None:  # the row's cells under their headers' scales: 48.6 under "Revenue ($M)" is 48,600,000
        for head, cell in zip(*table):
            f, scale = _figure(cell), _column_scale(head)
            if f is not None and scale and f.scaled is None:
                out.append(_Figure(f.value, f.decimals, f.value * scale, f.percent))
    # Numbers glued to words (table cells that lost their spaces: "Revenue2025($M)") still count;
    # digits inside a date do not.
    seen = {(f.value, f.decimals) for f in out}
    for m in _VALUE.finditer(p.text):
        if any(a <= m.start() < b for a, b in spans):
            continue
        digits = m.group().replace(",", "")
        f = _Figure(float(digits), len(digits.split(".")[1]) if "." in digits else 0, None, False)
        if (f.value, f.decimals) not in seen:
            out.append(f)
    return out


def _close(claimed: float, actual: float, decimals: int) -> str:
    """``stated`` when equal, ``rounded`` when ``actual`` rounds to ``claimed`` at the claim's precision."""
    if abs(claimed - actual) <= 1e-9 * max(1.0, abs(actual)):
        return "stated"
    if abs(claimed - actual) < 0.5 * 10.0**-decimals and abs(actual) >= 10.0**-decimals:
        return "rounded"
    return ""


def _find_figure(
    claim: _Figure, passages: Sequence[Passage], figures: list[list[_Figure]]
) -> tuple[Source, str] | None:
    for p, figs in zip(passages, figures):
        for f in figs:
            if claim.percent and not f.percent and "%" not in p.text:
                continue  # a percentage is found as a percentage (or in a table of them)
            how = _close(claim.value, f.value, claim.decimals)
            if not how and claim.scaled is not None:
                if f.scaled is not None:
                    how = _close(claim.scaled, f.scaled, 0)
                # "$42.7 million" against a bare 42.7 under a "($M)" header is caught above by value.
            if not how and claim.scaled is None and f.scaled is not None:
                how = _close(claim.value, f.scaled, claim.decimals)  # "42,700,000" against "$42.7 million"
            if how:
                return p.source, how
    for p, figs in zip(passages, figures):
        how = _derived(claim, figs)
        if how:
            return p.source, how
    return None


def _year(f: _Figure) -> bool:
    return f.decimals == 0 and f.scaled is None and 1900 <= f.value <= 2100


def _derived(claim: _Figure, figs: list[_Figure]) -> str:
    """A change, share, difference or sum of two figures of one passage that gives the claim."""
    # Operands are amounts and counts: never a year (2025 - 18 is no figure of the report) nor a
    # percentage (a change of percentages is "points", not a percent).
    values = list(dict.fromkeys(f.value for f in figs if f.value > 0 and not f.percent and not _year(f)))[:40]
    tol = 0.5 * 10.0**-claim.decimals
    target = abs(claim.value)
    for a in values:
        for b in values:
            if a == b:
                continue
            if claim.percent:
                candidates = {f"({a:g} - {b:g}) / {b:g}": (a - b) / b * 100, f"{a:g} / {b:g}": a / b * 100}
            else:
                candidates = {f"{a:g} - {b:g}": a - b, f"{a:g} + {b:g}": a + b}
            for formula, v in candidates.items():
                if abs(abs(v) - target) < tol and target >= 10.0**-claim.decimals:
                    return f"derived: {formula}"
    return ""


def claim_to_dict(c: Claim) -> dict:
    """A claim as a trace records it (the source whole, so a resumed run gets it back)."""
    return {
        "text": c.text,
        "kind": c.kind,
        "supported": c.supported,
        "how": c.how,
        "source": source_to_dict(c.source) if c.source else None,
    }


def claim_from_dict(d: dict) -> Claim:
    return Claim(
        d["text"],
        d["kind"],
        d["supported"],
        source_from_dict(d["source"]) if d.get("source") else None,
        d.get("how", ""),
    )
