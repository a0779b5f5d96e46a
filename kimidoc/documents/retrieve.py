"""Ranked retrieval over document passages: BM25 (``bm25s``) with a tokenizer made for reports and code.

>>> from kimidoc.documents import load
>>> from kimidoc.documents.retrieve import retrieve
>>> for hit in retrieve([load("report.pdf")], "How much did revenue grow in 2025?", k=3):
...     print(hit.passage.cite(), round(hit.score, 2), hit.passage.text[:60])

The tokenizer splits letters from digits (``Revenue2025($M)`` -> ``revenue 2025 m``: table headers
whose spaces were lost still match), keeps decimal numbers whole (``42.7``), folds plurals and the
irregular verbs of business prose (``grew`` -> ``grow``) and the words for a change (``increase``,
``rose`` -> ``grow``; ``decline`` -> ``fall``), splits ``snake_case`` and ``camelCase``
identifiers, and drops English stop words. Scores are BM25 (Lucene variant) from ``bm25s``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from kimidoc.documents.base import Document
from kimidoc.documents.passages import Passage, passages

_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
_CODE = re.compile(r"\b([A-Za-z]{1,6})[-_]?(\d{1,6})\b")  # part numbers, grant codes: HX-220, LF-2291
_STOP = frozenset(
    "a an the and or of in on at to for from by with as is are was were be been being it its this that these those "
    "what which who whom whose when where why how much many does did do done has have had will would can could should "
    "there their they them than then into over under about per not no yes if so such i you we our your he she his her".split()
)
# Irregular forms of verbs common in reports, folded to one token so "grew" finds "grow".
_IRREGULAR = {
    "grew": "grow",
    "grown": "grow",
    "growth": "grow",
    "rose": "rise",
    "risen": "rise",
    "fell": "fall",
    "fallen": "fall",
    "spent": "spend",
    "sold": "sell",
    "paid": "pay",
    "led": "lead",
    "began": "begin",
    "begun": "begin",
    "built": "build",
    "bought": "buy",
    "won": "win",
    "lost": "lose",
    "made": "make",
    "held": "hold",
    "took": "take",
    "taken": "take",
    "gave": "give",
    "given": "give",
    "hired": "hire",
}


def tokens(text: str) -> list[str]:
    """The index terms of ``text`` (see the module docstring)."""
    out = [m.group(1).lower() + m.group(2) for m in _CODE.finditer(text)]  # "PM-9" is also one term, "pm9"
    for raw in _TOKEN.findall(text):
        t = raw.lower()
        if t[0].isdigit():
            out.append(t.replace(",", ""))
            continue
        if t in _STOP or len(t) < 2:
            continue
        out.append(_stem(t))
    return out


# Reports say the same change many ways; one term each lets "grow" find "an increase of 10.6%".
_SAME = {
    "increas": "grow",
    "increase": "grow",
    "rise": "grow",
    "ris": "grow",
    "climb": "grow",
    "gain": "grow",
    "declin": "fall",
    "decline": "fall",
    "decreas": "fall",
    "decrease": "fall",
    "drop": "fall",
    "dropp": "fall",
}


def _stem(word: str) -> str:
    if word in _IRREGULAR:
        word = _IRREGULAR[word]
    else:
        for suffix, keep in (
            ("ies", "y"),
            ("sses", "ss"),
            ("ions", ""),
            ("ion", ""),
            ("ing", ""),
            ("ed", ""),
            ("es", ""),
            ("s", ""),
            ("e", ""),
        ):
            if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
                word = word[: len(word) - len(suffix)] + keep
                break
    return _SAME.get(word, word)


@dataclass(frozen=True)
class Hit:
    passage: Passage
    score: float


class Index:
    """A BM25 index over passages; build once, search many times."""

    def __init__(self, items: Sequence[Passage]) -> None:
        import bm25s

        self.passages = list(items)
        self._df: Counter[str] | None = None  # document frequencies, counted when first asked
        self._bm25 = bm25s.BM25()
        # An empty document list cannot be indexed; a placeholder term keeps search() uniform.
        self._bm25.index(
            [tokens(f"{p.context} {p.text}") or ["\0"] for p in self.passages] or [["\0"]], show_progress=False
        )

    @classmethod
    def of(cls, documents: Iterable[Document]) -> Index:
        return cls(passages(documents))

    def weights(self, terms: Iterable[str]) -> dict[str, float]:
        """How rare each term is among the passages, from 1 (in one passage) down towards 0 (in all)."""
        if self._df is None:
            self._df = Counter(t for p in self.passages for t in set(tokens(f"{p.context} {p.text}")))
        n = len(self.passages) + 1
        return {t: math.log(1 + n / (self._df.get(t, 0) + 1)) / math.log(1 + n) for t in terms}

    def scores(self, query: str) -> list[float]:
        """The BM25 score of every passage for ``query`` (0 where no term is shared)."""
        terms = tokens(query)
        if not terms or not self.passages:
            return [0.0] * len(self.passages)
        return [float(s) for s in self._bm25.get_scores(terms)[: len(self.passages)]]

    def search(self, query: str, k: int = 5, where: Callable[[Passage], bool] | None = None) -> list[Hit]:
        """The ``k`` best passages for ``query`` (best first, ties in reading order), only those
        sharing a term with it, optionally only those ``where`` accepts."""
        scored = [
            (s, i) for i, s in enumerate(self.scores(query)) if s > 0 and (where is None or where(self.passages[i]))
        ]
        scored.sort(key=lambda x: (-x[0], x[1]))
        return [Hit(self.passages[i], s) for s, i in scored[:k]]


def retrieve(documents: Iterable[Document], query: str, k: int = 5) -> list[Hit]:
    """The ``k`` passages of ``documents`` that best match ``query``, each with its :class:`Source`."""
    return Index.of(documents).search(query, k)
