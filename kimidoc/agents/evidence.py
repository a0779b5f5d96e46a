"""Evidence first: how a small model's backend answers a question about documents without inventing a figure.

A 135M model cannot drive a tool loop, and asked to write an answer it invents figures even with
the right passage in front of it. So the answer is not written, it is found:
1. **retrieve**: the BM25 passages that best match the question (:mod:`kimidoc.documents.retrieve`);
2. **candidates**: the figures and names those passages state (a table row: each cell under its
   column header; code: the value assigned), ranked by what the question asks for (an amount for
   "how much", a date for "when", a person for "who"), by the question's words around them (rare
   words weigh more), by the column header and row, and by the passage's rank;
3. **verify and show**: the best candidate is checked like any other answer
   (:mod:`kimidoc.agents.verify`) and printed with the passages that hold it, quoted verbatim with
   their citations.

The model itself is not asked. Letting SmolLM2-135M choose among the candidates by its own
log-probabilities (``Embedded.choose``) was measured on ``benchmarks/bench_qa.py``: over all
candidates it lowered the right answers from 20 to 19 of 41, on close calls only from 34 to 27.

When nothing matches the question's kind (a question that wants a summary, not a figure), there is
no short answer: the evidence is the answer, and the result says its answer was not checked.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from kimidoc.agents.events import Emitter, EventCallback
from kimidoc.agents.loop import AgentResult
from kimidoc.agents.verify import claim_spans, claims_in, verify
from kimidoc.documents.base import Document
from kimidoc.documents.passages import Passage, header_and_row
from kimidoc.documents.retrieve import Hit, Index, tokens
from kimidoc.messages import Usage

PASSAGES = 8  # passages retrieved
EVIDENCE = 3  # passages quoted
RUNNERS_UP = 4  # ranked candidates kept with the result, the answer first

# What a question asks for, by its wording: the kinds of claim that can answer it.
_WANTS: list[tuple[re.Pattern[str], tuple[str, ...]]] = [
    (re.compile(r"\b(percent|percentage|%|share|margin|rate|proportion|fraction)\b", re.I), ("percent",)),
    (
        re.compile(r"\bhow much\b.*\b(grow|grew|rise|rose|increase|fall|fell|decrease|decline|change)", re.I),
        ("percent", "money"),
    ),
    (re.compile(r"\b(when|what date|which date|what year|which year|deadline|since when)\b", re.I), ("date", "year")),
    (
        re.compile(
            r"\b(who|whom|which (?!year|date|month|day|time|port|version|number|value|size|level|amount|percentage|rate)[a-z]+|name)\b",
            re.I,
        ),
        ("name",),
    ),
    (
        re.compile(
            r"\b(how much|cost|price|revenue|sales|income|profit|spend|spent|budget|amount|paid|funding|salary|\$|€|£)\b",
            re.I,
        ),
        ("money",),
    ),
    (
        re.compile(
            r"\b(how many|number of|count|default|limit|maximum|minimum|max|min|size|timeout|port|version|value|threshold|how long|how old|how big|how large|headcount)\b",
            re.I,
        ),
        ("number", "money", "percent", "code"),
    ),
]


_ANY_FIGURE = ("number", "money", "percent", "date", "name")
_FACTOID = re.compile(r"^\s*(what|which|who|when|where|how)\b", re.I)
_OPEN = re.compile(
    r"^\s*(why|how (do|does|did|is|are|can|should)|describe|summari[sz]e|explain|compare|discuss|list)\b", re.I
)


def wanted(question: str) -> tuple[str, ...]:
    """The kinds of claim that answer ``question``; any figure or name for a "what is the X of Y"
    question with no other cue; empty for an open question (why, describe, summarise). A question
    that names its kind ("by what percentage", "when") wants that kind alone."""
    out: list[str] = []
    for pattern, kinds in _WANTS:
        if pattern.search(question):
            if not out and kinds[0] in ("percent", "date"):
                return kinds
            out += [k for k in kinds if k not in out]
    if not out and _FACTOID.search(question) and not _OPEN.search(question):
        return _ANY_FIGURE
    return tuple(out)


@dataclass(frozen=True)
class Candidate:
    text: str  # the answer as the passage writes it
    kind: str
    passage: Passage
    score: float
    label: str = ""  # what it is: the column header, or the words just before it

    def answer(self) -> str:
        return f"{self.label}: {self.text}" if self.label else self.text


def candidates(question: str, hits: Sequence[Hit], weights: dict[str, float] | None = None) -> list[Candidate]:
    """Every figure and name the passages state, best first for ``question``.

    A candidate's score adds: how well its passage matches (0-1); whether it is the kind the
    question wants; the question's words in its clause (1 each) and right by it (1.5 each); in
    code, the question's words in the name it is assigned to (2 each); in a table, the words of
    its row and column; the later side of "from A to B" unless the earlier is asked. A candidate
    the question already states ("2025" in "grow in 2025?") is not an answer.
    """
    want = wanted(question)
    # Each question word counts by how rare it is in the documents (``Index.weights``): in a paper
    # about sparse routing, "parameters" says more than "sparse".
    asked = {t: (weights or {}).get(t, 1.0) for t in tokens(question)}
    out: list[Candidate] = []
    for hit in hits:
        passage = hit.passage
        relevance = hit.score / (hits[0].score or 1.0)
        table = header_and_row(passage)
        if table is not None:
            out += _cells(passage, table, want, asked, relevance)
            continue
        for text, kind, at, label in _spans(passage):
            if kind == "name" and text.lower() in question.lower():
                continue
            echo = set(tokens(text)) <= asked.keys()
            context = _context_fit(passage.text, at, len(text), asked, question)
            if context <= 0 and not _overlap(tokens(label), asked):
                continue  # nothing the question asks about stands near it: no answer, however well it fits the kind
            score = relevance + _kind_fit(kind, text, want) + context - (3.0 if echo else 0.0)
            named = _overlap(tokens(label), asked)
            score += (2.0 * named if named else -1.5 if label else 0.0) + _counted(
                passage.text, at + len(text), kind, asked
            )
            score += 0.5 if _RANGE.fullmatch(text) else 0.0  # a range is the whole answer, either end only half
            if named and _DEFAULT.search(question):
                score += 1.5  # "by default" is what the code assigns, not what a changelog once said
            if kind == "name":
                score += _name_fit(text, want, asked, bool(_WHO.search(question)))
            out.append(Candidate(text, kind, passage, score, label))
    out.sort(key=lambda c: -c.score)
    return list({(c.text, c.passage.source): c for c in out}.values())


_ASSIGNED = re.compile(
    r"(?m)^\s*(?P<name>[A-Za-z_][\w.]*)\s*(?::\s*[^=\n]{1,40})?=\s*(?P<v>\"[^\"\n]{1,80}\"|'[^'\n]{1,80}'|[-+]?[\w.]+)\s*(?:#.*)?$"
    r"|(?P<flag>[\"'][-\w]+[\"'])[^\n]{0,80}?\bdefault\s*=\s*(?P<d>\"[^\"\n]{1,80}\"|'[^'\n]{1,80}'|[-+]?[\w.]+)"
)
_LITERAL = re.compile(r"\"[^\"]*\"|'[^']*'|[-+]?\d[\d_.]*(?:[eE][-+]?\d+)?|True|False|true|false")
_DEFAULT = re.compile(r"\bdefaults?\b", re.I)
_WHO = re.compile(r"\bwho(m|se)?\b", re.I)
_TITLES = frozenset(
    "chief executive officer financial director report annual board president manager head committee council "
    "department section chapter figure table summary letter".split()
)


def _spans(passage: Passage) -> list[tuple[str, str, int, str]]:
    """(text, kind, offset, label) of each claim in a passage. In code the claims are the values
    assigned (``port: int = 8427``, ``default=500``), labelled with what they are assigned to;
    other figures in code are left out (line numbers, versions and addresses are not answers)."""
    if passage.kind == "code":
        out = []
        for m in _ASSIGNED.finditer(passage.text):
            value, name = ("v", "name") if m.group("v") else ("d", "flag")
            if not _LITERAL.fullmatch(m.group(value)):
                continue  # "port=settings.port" names where the value lives; the value is elsewhere
            text = m.group(value).strip("\"'")
            kinds = [k for t, k in claims_in(text)]
            out.append((text, kinds[0] if kinds else "code", m.start(value), m.group(name).strip("\"'")))
        return out
    out = []
    for text, kind, at in claim_spans(passage.text):
        if re.match(r"\d+[.)]\s", passage.text[at:]) and (at == 0 or passage.text[at - 1] == "\n"):
            continue  # "2. Pricing ...": a list item's number, not a figure
        if kind == "number" and re.fullmatch(r"(19|20)\d\d", text):
            kind = "year"
        out.append((text, kind, at, ""))
    for m in _RANGE.finditer(passage.text):  # "between $48 million and $51 million": the range is the answer
        kinds = [k for t, k, a, _ in out if m.start() <= a < m.end()]
        if len(kinds) >= 2:
            out.append((m.group(), kinds[0], m.start(), ""))
    return out


_CURRENCY = re.compile(r"[$€£]|\b(usd|eur|gbp|dollars?|euros?|pounds)\b", re.I)
_UNIT_WORDS = frozenset(
    "million billion thousand percent per cent m bn k mw gw kw mwh gwh kwh twh km kg t s ms h min usd eur gbp "
    "dollars euros pounds hours minutes seconds days weeks months years points pp".split()
)


def _overlap(words: Sequence[str] | set[str], asked: dict[str, float]) -> float:
    """The weight of the question's words among ``words``, each counted once."""
    return sum(asked[t] for t in set(words) if t in asked)


def _counted(text: str, end: int, kind: str, asked: dict[str, float]) -> float:
    """A bare number followed by a noun counts that noun: "14 ferry operators" does not answer a
    question about revenue, "41 stores" answers one about stores."""
    if kind not in ("number", "year"):
        return 0.0
    m = re.match(r"\s+([A-Za-z][A-Za-z-]+)", text[end:])
    if not m or m.group(1).lower() in _UNIT_WORDS:
        return 0.0
    return 0.0 if set(tokens(m.group(1))) & asked.keys() else -1.5


def _name_fit(name: str, want: tuple[str, ...], asked: dict[str, float], who: bool) -> float:
    """A person is asked for with "who": two or three words, none a title ("Chief Executive");
    "which foundation" wants the name that holds the word."""
    words = tokens(name)
    if who:  # a person: two or three words, none a title, not a shouted heading ("INTERNAL MEMO")
        person = 2 <= len(name.split()) <= 3 and not set(words) & _TITLES and not name.isupper()
        return 1.0 if person else -1.0
    fit = _overlap(words, asked)
    if want[:1] == ("name",) and not asked.keys() & set(words):
        fit -= 1.0 if set(words) & _TITLES or name.isupper() else 0.0
    return fit


def _kind_fit(kind: str, text: str, want: tuple[str, ...]) -> float:
    """2 for the kind the question wants first (less for the later ones), a little for a bare
    number where an amount is wanted (a cell of a "$M" column), -3 for anything else: a name
    does not answer "how much"."""
    if not want:
        return 0.0
    if kind in want:
        return 2.0 - 0.3 * want.index(kind)
    if kind == "number" and ("money" in want or "percent" in want):
        return 0.8
    if kind == "code" and "code" in want:
        return 1.0
    return -3.0


_RANGE = re.compile(
    r"\bbetween\s+\S{1,20}(?:\s(?:million|billion|thousand|percent))?\s+and\s+\S{1,20}?(?:\s(?:million|billion|thousand|percent))?(?=[\s,;.]|$)"
)
_CLAUSE = re.compile(r"[.;!?](?:\s|$)|,\s+(?:and|but|while|whereas|which)\b|\n")
_FROM_TO = re.compile(r"\bfrom\s+(?P<a>[^,;]{1,40}?)\s+to\s+(?P<b>[^,;]{1,40}?)(?=[,;.]|\s+(?:in|and|by|for)\b|$)")
_EARLIER = re.compile(r"\b(from|before|previous|prior|earlier|start|began|begin|initial|last year|old)\b", re.I)


def _context_fit(text: str, at: int, length: int, asked: dict[str, float], question: str) -> float:
    """How well the words around a candidate match the question: its clause's question words (1
    each), those within four words of it (1.5 each), and in "from A to B" the side the question
    asks for (the later one unless it asks for the earlier)."""
    starts = [0] + [m.end() for m in _CLAUSE.finditer(text) if m.end() <= at]
    ends = [m.start() for m in _CLAUSE.finditer(text) if m.start() >= at + length] + [len(text)]
    clause = text[max(starts) : min(ends)]
    fit = _overlap(tokens(clause), asked)
    anchor = at
    for m in _FROM_TO.finditer(text):
        side = "a" if m.start("a") <= at < m.end("a") else "b" if m.start("b") <= at < m.end("b") else ""
        if side:
            anchor = m.start()  # both ends of "margin improved from 9.5% to 12.1%" stand by "margin"
            fit += 1.0 if (side == "a") == bool(_EARLIER.search(question)) else 0.0
    # The question's words right by it, each by its nearest distance: 1.5 next to it, falling with
    # every word between ("River Valley 275 GWh" names 275, not the 592 before it).
    # Distances count words that carry meaning: "Solberg as Chief Financial Officer" puts "chief" next to it.
    before = [w for w in text[max(starts) : anchor].split() if tokens(w)][-4:][::-1]
    after = [w for w in text[at + length : min(ends)].split() if tokens(w)][:4]
    near: dict[str, int] = {}
    for side in (before, after):
        for d, word in enumerate(side):
            for t in tokens(word):
                near[t] = min(near.get(t, d), d)
    fit += sum(1.5 * asked[t] / (1 + d) for t, d in near.items() if t in asked)
    return fit


def _cells(
    passage: Passage,
    table: tuple[list[str], list[str]],
    want: tuple[str, ...],
    asked: dict[str, float],
    relevance: float,
) -> list[Candidate]:
    """The cells of a table row: a cell answers when the question names its row (its other cells'
    words) and its column (the header); a column match alone says little in a table whose every
    row shares the header ("Revenue 2025" on each)."""
    header, row = table
    out = []
    for i, cell in enumerate(row):
        if not cell or i >= len(header):
            continue
        claims = claims_in(cell)
        kind = claims[0][1] if claims else "name"
        if kind == "number" and _CURRENCY.search(header[i]):
            kind = "money"  # 9.4 under "Revenue ($M)" is an amount
        elif kind == "number" and re.search(r"%|\bpercent", header[i], re.I):
            kind = "percent"  # +4.2 under "Change %"
        elif (
            kind == "number"
            and want[:1] in (("money",), ("number",))
            and _overlap(tokens(re.sub(r"\b(19|20)\d\d\b", "", header[i])), asked)
        ):
            kind = want[0]  # 14.2 under "Op. profit 2024" is the profit asked for, whatever its unit
        others = set(tokens(" ".join(c for j, c in enumerate(row) if j != i)))
        row_named = _overlap(others, asked)
        if row_named == 0 and len(row) > 2 and i == 0:
            continue
        fit = row_named + _overlap(tokens(header[i]), asked) * (1.0 if row_named else 0.3)
        if fit <= 0:
            continue
        if set(tokens(cell)) <= asked.keys():
            fit -= 3.0  # the cell the question names (its row label) is not the answer
        label = f"{row[0]} · {header[i]}" if i else header[i]
        out.append(Candidate(cell, kind, passage, relevance + fit + _kind_fit(kind, cell, want), label))
    return out


@dataclass
class Grounded:
    """What the evidence-first pipeline found: the answer (if a candidate was chosen) and the quotes."""

    answer: str
    evidence: list[Passage]
    chosen: Candidate | None
    ranked: list[Candidate]  # the best few candidates, the answer first


def ground(index: Index, question: str) -> Grounded:
    """Retrieve and rank the candidates; the best one is the answer (see the module doc)."""
    hits = index.search(question, PASSAGES)
    if not hits:
        return Grounded("", [], None, [])
    ranked = candidates(question, hits, index.weights(tokens(question))) if wanted(question) else []
    chosen = ranked[0] if ranked else None
    # Quoted besides the answer's own passage: those that match the question nearly as well.
    evidence = [h.passage for h in hits if h.score >= 0.6 * hits[0].score]
    if chosen is not None:
        evidence = [chosen.passage] + [p for p in evidence if p != chosen.passage]
    answer = f"{chosen.answer()} [{chosen.passage.cite()}]" if chosen else ""
    if chosen is not None and chosen.kind == "date":  # "14. August 2026" (a scan's stray stop) reads "14 August 2026"
        answer = re.sub(r"^(\d{1,2})\.\s+", r"\1 ", answer)
    return Grounded(answer, evidence[:EVIDENCE], chosen, ranked[:RUNNERS_UP])


def ask_with_evidence(
    documents: Sequence[Document], question: str, *, on_event: EventCallback | None = None, name: str = "main"
) -> AgentResult:
    """Answer ``question`` evidence first (see the module doc)."""
    emit = Emitter(on_event, name)
    t0 = time.monotonic()
    emit("start", 0, task=question, resumed=False)
    emit("tool_call", 1, id="retrieve", name="search_documents", arguments=question, rerun=False)
    found = ground(Index.of(documents), question)
    preview = "; ".join(f"{p.cite()}" for p in found.evidence) or "no passage matches"
    emit(
        "tool_result", 1, id="retrieve", name="search_documents", preview=preview, is_error=False, ref=None, rerun=False
    )
    checked = verify(found.answer, found.evidence, question)
    cited = checked.sources() or [p.source for p in found.evidence[:1]]
    emit("stop", 1, reason="answer", detail="", answer=found.answer, unsupported=[c.text for c in checked.unsupported])
    return AgentResult(
        found.answer,
        cited,
        "answer",
        1,
        0,
        Usage(),
        None,
        claims=checked.claims,
        evidence=found.evidence,
        elapsed=time.monotonic() - t0,
    )
