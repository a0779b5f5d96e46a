"""QA benchmark: questions over generated documents, asked exactly as ``kimidoc ask`` asks them.

The corpus (``qa_corpus.py``) is written to a temporary folder; each question in
``qa_questions.json`` is asked over its own document plus one look-alike distractor, in-process,
through ``kimidoc.cli.main(["ask", *paths, question, "--json", "--quiet", *backend_flags])`` with
stdout captured. The only thing the harness changes is that ``connect`` is memoised, so the
embedded model is loaded once per backend instead of once per question (the CLI's own path is
otherwise untouched; the load is timed on its own).

Judging, per question, on the JSON that ``kimidoc ask --json`` prints::

    {"answer": str, "answer_status": "supported" | "unsupported" | "unchecked",
     "claims": [{"text", "kind", "supported": bool, "source": str | None}],
     "evidence": [{"source": "report.pdf p.1", "text": "verbatim passage"}], "citations": [...], ...}

- The LEAD is ``answer`` when ``answer_status == "supported"``, else ``evidence[0].text`` (the
  first quoted passage). Its source: with a supported answer, the source of the first supported
  claim (else ``evidence[0].source``); with the evidence as lead, ``evidence[0].source``.
  Absent keys (today's output has no ``answer_status`` / ``evidence``) give an empty lead: wrong.
- RIGHT: an accepted answer form occurs in the lead after normalisation (case, thousands
  separators, currency signs and codes, "million"/"M", "percent"/"%", whitespace). A form holding
  one number is compared as a number: some number in the lead has the same value (sign ignored;
  "94 million" equals "94,000,000"), and a "%" form needs a "%" after it. Other forms (names,
  dates) must occur as whole words.
- CITED RIGHT: right, and the lead's source names an expected file (basename) and its page, or
  a line range overlapping the expected lines.
- FLAGGED: claims with ``supported == false``.
- UNSUPPORTED PRINTED AS SOURCED (must be 0): a claim with ``supported == false`` whose text occurs
  in ``answer`` while ``answer_status == "supported"`` or while the claim carries a source.
- INVENTED AS SOURCED (the harness's own check, independent of the verifier under test): numbers in
  ``answer`` that occur in neither the question nor the documents asked, while the answer is
  presented as sourced (``answer_status == "supported"``, or no status and ``citations`` listed).
- ANSWER HOLDS IT (diagnostic only, not a score): an accepted form occurs in ``answer`` itself.

    python3 benchmarks/bench_qa.py [--endpoint URL --model NAME] [--embedded] [--only ID ...]
                                   [--max-time S] [--out report.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import qa_corpus

# -- normalisation and matching -----------------------------------------------------------------------

_NUM = re.compile(r"(?<![\w.])[-+\u2212]?\d+(?:\.\d+)?")
_MULT = {"m": 1e6, "bn": 1e9, "k": 1e3}
# 1,234,567 but not a CSV row's "6,538.50" (a comma-separated 6 and 538.50): no comma or digit before
_THOUSANDS = re.compile(r"(?<![\d,])\d{1,3}(?:,\d{3})+(?!\d)")
_NUMERIC_FORM = re.compile(r"^[-+]?\d")  # "275 GWh", "$4.75M"; not "May 2027", which is a date
_CITATION_LABEL = re.compile(r"\bp\.\s*\d+|:\d+(?:-\d+)?\b|\[\d+\]")


def normalise(text: str) -> str:
    """Lower case; thousands separators, currency signs and codes dropped; million -> m, percent -> %; one space."""
    s = text.lower().replace("\u2212", "-").replace("\u00a0", " ").replace("\u2009", " ")
    s = _THOUSANDS.sub(lambda m: m.group().replace(",", ""), s)
    s = re.sub(r"[$£€]|\b(?:usd|gbp|eur|us dollars?)\b", " ", s)
    s = re.sub(r"(?<=\d)\s*(?:millions?|mn)\b", " m", s)
    s = re.sub(r"(?<=\d)\s*(?:billions?)\b", " bn", s)
    s = re.sub(r"(?<=\d)\s*(?:per ?cent|percent)\b", "%", s)
    s = re.sub(r"(?<=\d)\s+(?=%)", "", s)
    s = re.sub(r"(?<=\d)(m|bn|k)\b", r" \1", s)
    return re.sub(r"\s+", " ", s).strip()


@dataclass(frozen=True)
class Number:
    raw: float  # the digits as written
    scaled: float  # times million / billion / thousand when a multiplier follows
    percent: bool


def numbers(text: str) -> list[Number]:
    """Every number in ``normalise(text)`` with its multiplier and whether a % follows (sign dropped)."""
    s = normalise(text)
    out = []
    for m in _NUM.finditer(s):
        raw = abs(float(m.group().replace("\u2212", "-")))
        tail = s[m.end() : m.end() + 4]
        unit = re.match(r"\s?(m|bn|k)\b", tail)
        out.append(Number(raw, raw * _MULT[unit.group(1)] if unit else raw, tail.startswith("%")))
    return out


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def form_in(form: str, text: str) -> bool:
    """Whether the accepted answer ``form`` occurs in ``text`` (see the module docstring)."""
    if not text:
        return False
    wanted = numbers(form)
    if len(wanted) == 1 and _NUMERIC_FORM.match(normalise(form)):
        w = wanted[0]
        bare = _same(w.raw, w.scaled)
        for n in numbers(text):
            if w.percent and not n.percent:
                continue
            if _same(n.scaled, w.scaled) or (bare and _same(n.raw, w.raw)):
                return True
        return False
    f = normalise(form)
    return re.search(rf"(?<!\w){re.escape(f)}(?!\w)", normalise(text)) is not None


def any_form_in(forms: list[str], text: str) -> bool:
    return any(form_in(f, text) for f in forms)


# -- sources ---------------------------------------------------------------------------------------------

_CITE = re.compile(r"^(?P<path>.+?)(?: p\.(?P<page>\d+))?(?::(?P<a>\d+)(?:-(?P<b>\d+))?)?$")


def parse_source(cite: str | None) -> tuple[str, int | None, tuple[int, int] | None] | None:
    """``"report.pdf p.2"`` -> ("report.pdf", 2, None); ``"pkg/config.py:13-18"`` -> ("pkg/config.py", None, (13, 18))."""
    if not cite or not isinstance(cite, str):
        return None
    m = _CITE.match(cite.strip())
    if m is None:
        return None
    lines = None
    if m["a"]:
        a = int(m["a"])
        lines = (a, int(m["b"]) if m["b"] else a)
    return m["path"], int(m["page"]) if m["page"] else None, lines


def source_matches(cite: str | None, expected: list[dict[str, Any]]) -> bool:
    """The citation names an expected file (basename) and its page, or lines overlapping the expected range."""
    parsed = parse_source(cite)
    if parsed is None:
        return False
    path, page, lines = parsed
    for exp in expected:
        if Path(path.rstrip("/")).name != Path(exp["file"]).name:
            continue
        if "page" in exp and page == exp["page"]:
            return True
        if "lines" in exp and lines is not None and lines[0] <= exp["lines"][1] and exp["lines"][0] <= lines[1]:
            return True
    return False


# -- judging one result ----------------------------------------------------------------------------------


@dataclass
class Verdict:
    right: bool
    cited: bool
    lead: str
    lead_source: str | None
    flagged: int
    unsupported_as_sourced: list[str]
    invented_as_sourced: list[str]
    answer_holds_it: bool
    missing_keys: list[str] = field(default_factory=list)


CONTRACT_KEYS = ("answer", "answer_status", "claims", "evidence", "citations", "citations_inferred", "stop_reason")


def _evidence0(result: dict[str, Any]) -> dict[str, Any]:
    ev = result.get("evidence")
    return ev[0] if isinstance(ev, list) and ev and isinstance(ev[0], dict) else {}


def lead_of(result: dict[str, Any]) -> tuple[str, str | None]:
    """The text a reader sees first and the source it is given under (see the module docstring)."""
    if result.get("answer_status") == "supported":
        for claim in result.get("claims") or []:
            if isinstance(claim, dict) and claim.get("supported") is True and claim.get("source"):
                return result.get("answer") or "", claim["source"]
        return result.get("answer") or "", _evidence0(result).get("source")
    ev = _evidence0(result)
    return ev.get("text") or "", ev.get("source")


def judge(result: dict[str, Any], answers: list[str], sources: list[dict[str, Any]], known_text: str = "") -> Verdict:
    """Score one ``kimidoc ask --json`` result. ``known_text``: the question and the documents asked,
    for the harness's own invented-figure check (skipped when empty)."""
    lead, lead_source = lead_of(result)
    right = any_form_in(answers, lead)
    answer = result.get("answer") or ""
    claims = [c for c in result.get("claims") or [] if isinstance(c, dict)]
    unsupported = [c for c in claims if c.get("supported") is False]
    status = result.get("answer_status")
    as_sourced = [
        c.get("text", "")
        for c in unsupported
        if c.get("text") and normalise(c["text"]) in normalise(answer) and (status == "supported" or c.get("source"))
    ]
    invented: list[str] = []
    presented_as_sourced = status == "supported" or (status is None and bool(result.get("citations")))
    if known_text and presented_as_sourced:
        known = numbers(known_text)
        bare = strip_citation_labels(answer)
        for n, text in zip(numbers(bare), _number_texts(bare)):
            if not any(_same(n.raw, k.raw) or _same(n.scaled, k.scaled) for k in known):
                invented.append(text)
    return Verdict(
        right=right,
        cited=right and source_matches(lead_source, sources),
        lead=lead,
        lead_source=lead_source,
        flagged=len(unsupported),
        unsupported_as_sourced=as_sourced,
        invented_as_sourced=invented,
        answer_holds_it=any_form_in(answers, answer),
        missing_keys=[k for k in CONTRACT_KEYS if k not in result],
    )


def _number_texts(answer: str) -> list[str]:
    """The numbers of ``normalise(answer)`` as written, aligned with :func:`numbers`."""
    return [m.group() for m in _NUM.finditer(normalise(answer))]


def strip_citation_labels(text: str) -> str:
    """The answer without ``p.2`` / ``:13-18`` / ``[1]`` labels, whose digits are not claims."""
    return _CITATION_LABEL.sub(" ", text)


# -- the corpus as text, for the invented-figure check ---------------------------------------------------


def document_text(path: Path) -> str:
    """Every word a reader of ``path`` could see: PDF text layers, the scanned page's source text, file contents."""
    import pymupdf

    if path.is_dir():
        return "\n".join(p.read_text() for p in sorted(path.rglob("*")) if p.is_file())
    if path.suffix == ".pdf":
        if path.name == "dunmore_memo_scan.pdf":
            return qa_corpus.SCANNED_TEXT
        with pymupdf.open(path) as doc:
            return "\n".join(page.get_text() for page in doc)
    if path.suffix == ".csv":  # cells apart: "3.72,500" is two numbers, not 3.725
        import csv

        return "\n".join(" | ".join(row) for row in csv.reader(path.read_text().splitlines()))
    return path.read_text()


# -- running -----------------------------------------------------------------------------------------------


def load_questions(path: Path = qa_corpus.QUESTIONS_PATH) -> list[dict[str, Any]]:
    questions = json.loads(path.read_text())
    for i, q in enumerate(questions):
        missing = {"id", "question", "answers", "sources", "document"} - set(q)
        if missing:
            raise ValueError(f"{path}: question {i} ({q.get('id', '?')}) lacks {', '.join(sorted(missing))}")
        if q["document"] not in qa_corpus.DISTRACTOR:
            raise ValueError(f"{path}: question {q['id']}: unknown document {q['document']!r}")
    return questions


def documents_for(question: dict[str, Any]) -> list[str]:
    """The question's own document, then its distractor."""
    return [question["document"], qa_corpus.DISTRACTOR[question["document"]]]


def memoise_connect() -> dict[tuple, Any]:
    """Make every ``connect`` in this process return one backend per set of arguments (the model loads once)."""
    import kimidoc.backends as backends_pkg
    import kimidoc.cli.agent as cli_agent

    module = sys.modules["kimidoc.backends.connect"]
    original = module.connect
    cache: dict[tuple, Any] = {}

    def connect(model: str | None = None, endpoint: str | None = None, api_key: str | None = None, **kw: Any) -> Any:
        key = (model, endpoint, api_key, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = original(model=model, endpoint=endpoint, api_key=api_key, **kw)
        return cache[key]

    module.connect = connect
    backends_pkg.connect = connect
    if hasattr(cli_agent, "connect"):
        cli_agent.connect = connect
    return cache


def ask(paths: list[str], question: str, flags: list[str]) -> tuple[int, str, str]:
    """``kimidoc ask`` in-process: exit code, stdout, stderr."""
    from kimidoc.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["ask", *paths, question, "--json", "--quiet", *flags])
        except SystemExit as exc:  # argparse errors
            code = exc.code if isinstance(exc.code, int) else 2
        except Exception as exc:  # noqa: BLE001 - an escaped error is a result to record, not a reason to stop the benchmark
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
            code = -1
    return code, out.getvalue(), err.getvalue()


def load_backend(flags: list[str]) -> tuple[Any, float]:
    """Build the backend the CLI would build for ``flags`` (memoised) and load its weights; seconds taken."""
    from kimidoc.cli import build_parser
    from kimidoc.cli.agent import backend_from

    args = build_parser().parse_args(["ask", "x", "q", *flags])
    start = time.perf_counter()
    backend = backend_from(args)
    if hasattr(type(backend), "engine"):  # the embedded backend loads lazily on first use
        backend.engine  # noqa: B018
    return backend, time.perf_counter() - start


def run_backend(label: str, flags: list[str], questions: list[dict[str, Any]], corpus: Path) -> dict[str, Any]:
    backend, load_s = load_backend(flags)
    print(f"\n[{label}] {getattr(backend, 'model_name', type(backend).__name__)}: loaded in {load_s:.1f} s", flush=True)
    texts: dict[str, str] = {}
    rows = []
    for q in questions:
        paths = documents_for(q)
        for p in paths:
            texts.setdefault(p, document_text(corpus / p))
        start = time.perf_counter()
        code, stdout, stderr = ask(paths, q["question"], flags)
        seconds = time.perf_counter() - start
        try:
            result = json.loads(stdout)
        except json.JSONDecodeError:
            result = {}
        known = "\n".join([q["question"], *(texts[p] for p in paths)])
        v = judge(result if isinstance(result, dict) else {}, q["answers"], q["sources"], known)
        row = {
            "id": q["id"],
            "kind": q["kind"],
            "documents": paths,
            "exit": code,
            "seconds": round(seconds, 2),
            **asdict(v),
            "answer": result.get("answer") if isinstance(result, dict) else None,
            "answer_status": result.get("answer_status") if isinstance(result, dict) else None,
            "citations": result.get("citations") if isinstance(result, dict) else None,
            "stop_reason": result.get("stop_reason") if isinstance(result, dict) else None,
            "stderr_tail": stderr[-400:] if code != 0 else "",
        }
        rows.append(row)
        marks = f"{'ok' if v.right else '--'} {'cited' if v.cited else '-----'} flags={v.flagged}"
        print(
            f"  {q['id']:28s} {marks:22s} {seconds:7.1f} s  exit {code}  answer: {(row['answer'] or '')[:70]!r}",
            flush=True,
        )
    return {
        "label": label,
        "flags": flags,
        "load_seconds": round(load_s, 2),
        "summary": summarise(rows),
        "questions": rows,
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    secs = [r["seconds"] for r in rows]
    return {
        "questions": len(rows),
        "right": sum(r["right"] for r in rows),
        "right_and_cited": sum(r["cited"] for r in rows),
        "claims_flagged": sum(r["flagged"] for r in rows),
        "unsupported_printed_as_sourced": sum(len(r["unsupported_as_sourced"]) for r in rows),
        "invented_printed_as_sourced": sum(len(r["invented_as_sourced"]) for r in rows),
        "answer_holds_it": sum(r["answer_holds_it"] for r in rows),
        "no_answer": sum(r["exit"] != 0 for r in rows),
        "missing_contract_keys": sorted({k for r in rows for k in r["missing_keys"]}),
        # an evidence lead is "right" when it holds the figure, so its length says how focused it is
        "lead_chars_median": statistics.median(len(r["lead"]) for r in rows) if rows else None,
        "seconds_median": round(statistics.median(secs), 2) if secs else None,
        "seconds_max": round(max(secs), 2) if secs else None,
    }


def print_summary(report: dict[str, Any]) -> None:
    s, n = report["summary"], report["summary"]["questions"]
    print(f"\n[{report['label']}] load {report['load_seconds']:.1f} s")
    print(f"  answered right                  {s['right']:3d} / {n}")
    print(f"  right and cited right           {s['right_and_cited']:3d} / {n}")
    print(f"  unsupported claims flagged      {s['claims_flagged']:3d}")
    print(f"  unsupported printed as sourced  {s['unsupported_printed_as_sourced']:3d}   (must be 0)")
    print(f"  invented figures as sourced     {s['invented_printed_as_sourced']:3d}   (harness check; must be 0)")
    print(f"  answer text holds the figure    {s['answer_holds_it']:3d} / {n}   (diagnostic)")
    print(f"  no answer (exit != 0)           {s['no_answer']:3d}")
    print(f"  lead length, median characters  {s['lead_chars_median']}")
    print(f"  seconds per question            median {s['seconds_median']}  max {s['seconds_max']}")
    if s["missing_contract_keys"]:
        print(f"  keys missing from --json        {', '.join(s['missing_contract_keys'])}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", help="an OpenAI-compatible server URL (or 'moonshot' / 'openrouter')")
    p.add_argument("--model", help="with --endpoint: the served model's name")
    p.add_argument("--api-key", help="with --endpoint: its API key")
    p.add_argument(
        "--embedded", action="store_true", help="also run the embedded default (the default when no --endpoint)"
    )
    p.add_argument("--only", nargs="+", metavar="ID", help="ask only these question ids")
    p.add_argument("--max-time", type=float, metavar="S", help="pass --max-time S to every ask (a per-question budget)")
    p.add_argument("--corpus", metavar="DIR", help="write the corpus here and keep it (default: a temporary folder)")
    p.add_argument("--out", metavar="FILE", help="write the full JSON report here")
    args = p.parse_args(argv)
    if args.model and not args.endpoint:
        p.error("--model names a served model: give --endpoint too (the embedded default needs no flag)")

    questions = load_questions()
    if args.only:
        unknown = set(args.only) - {q["id"] for q in questions}
        if unknown:
            p.error(f"unknown question ids: {', '.join(sorted(unknown))}")
        questions = [q for q in questions if q["id"] in args.only]
    extra = ["--max-time", str(args.max_time)] if args.max_time else []
    backends: list[tuple[str, list[str]]] = []
    if args.embedded or not args.endpoint:
        backends.append(("embedded", ["--model", "embedded", *extra]))
    if args.endpoint:
        flags = [
            "--endpoint",
            args.endpoint,
            *(["--model", args.model] if args.model else []),
            *(["--api-key", args.api_key] if args.api_key else []),
            *extra,
        ]
        backends.append((f"endpoint {args.endpoint} {args.model or ''}".strip(), flags))

    memoise_connect()
    with contextlib.ExitStack() as stack:
        corpus = (
            Path(args.corpus)
            if args.corpus
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kimidoc-qa-")))
        )
        qa_corpus.write_corpus(corpus)
        cwd = Path.cwd()
        os.chdir(corpus)  # relative paths, as a user types them; citations then read "report.pdf p.2"
        try:
            reports = [run_backend(label, flags, questions, corpus) for label, flags in backends]
        finally:
            os.chdir(cwd)
    load = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    for r in reports:
        print_summary(r)
    print(f"\nload: {load}")
    if args.out:
        Path(args.out).write_text(json.dumps({"uptime": load, "backends": reports}, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
