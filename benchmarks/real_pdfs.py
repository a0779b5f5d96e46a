"""kimidoc on real PDFs nobody in the project wrote, side by side with pymupdf4llm and get_text.

Give it folders of PDFs (for instance the test folders of pdf.js, pdfplumber, camelot and
PyMuPDF; the files stay outside the repository and out of CI). Each tool runs in its own worker
process that converts one file at a time; a file that takes longer than ``--timeout`` seconds is
a timeout (the worker is killed and restarted), a worker that dies is a crash, and an exception
is a clean error for kimidoc only when it is a ``DocumentError`` naming the file (anything else
escaping ``load`` is a crash). Prints the outcome counts per tool, pages/s over the pages of the
files every tool read (total pages / total seconds), and the files behind every crash, timeout and
kimidoc error.

    python3 benchmarks/real_pdfs.py /work/corpus [--timeout 60] [--limit 300] [--json out.json]

``--camelot-tests DIR`` (a camelot checkout's ``tests`` folder: ``data.py``, ``test_stream.py``,
``files/``) instead measures unruled-table cell recovery on camelot's own "stream" cases: the
share of the expected non-empty cells that come out as cells of a Markdown table, kimidoc against
pymupdf4llm, each file in one go.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import select
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("kimidoc", "pymupdf4llm", "get_text")


def convert(tool: str, path: str) -> dict:
    """One file with one tool, in the worker: outcome, pages, seconds, characters."""
    import pymupdf

    t0 = time.perf_counter()
    try:
        if tool == "kimidoc":
            from kimidoc.documents import DocumentError, load

            try:
                doc = load(path)
            except DocumentError as exc:
                ok = path in str(exc)
                return {
                    "outcome": "error" if ok else "crash",
                    "error": str(exc)[:300],
                    "seconds": time.perf_counter() - t0,
                }
            text = doc.text()
            pages = doc.meta.get("pages", 0)
            extra = {
                "degraded": sum(o.action == "degraded" for o in doc.skipped),
                "skipped": sum(o.action == "skipped" for o in doc.skipped),
            }
        elif tool == "pymupdf4llm":
            import pymupdf4llm

            with pymupdf.open(path) as d:
                pages = d.page_count
            text = pymupdf4llm.to_markdown(path, show_progress=False)
            extra = {}
        else:
            with pymupdf.open(path) as d:
                pages = d.page_count
                text = "\n".join(p.get_text() for p in d)
            extra = {}
    except Exception as exc:  # noqa: BLE001 - the outcome is the measurement
        outcome = "crash" if tool == "kimidoc" else "error"
        return {
            "outcome": outcome,
            "error": f"{type(exc).__name__}: {str(exc)[:300]}",
            "seconds": time.perf_counter() - t0,
        }
    return {"outcome": "ok", "pages": pages, "chars": len(text), "seconds": time.perf_counter() - t0, **extra}


def table_cells(text: str) -> list[list[str]]:
    """Rows of every Markdown table in ``text``, cells normalised (emphasis, <br>, spaces)."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("|") and line.endswith("|") and not set(line) <= set("|-: "):
            cells = [re.sub(r"\s+", " ", re.sub(r"<br>|\*\*|_", " ", c)).strip() for c in line[1:-1].split("|")]
            rows.append(cells)
    return rows


def camelot_cases(tests: Path) -> list[tuple[Path, list[list[str]]]]:
    """(file, expected table rows) of camelot's stream tests that read a whole page with defaults."""
    data: dict = {}
    exec((tests / "data.py").read_text(), data)  # noqa: S102 - camelot's test data: plain lists
    out = []
    for block in (tests / "test_stream.py").read_text().split("\ndef ")[1:]:
        tuned = (
            "table_areas",
            "table_regions",
            "columns=",
            "pages=",
            "edge_tol",
            "row_tol",
            "split_text",
            "flag_size",
            "strip_text",
            "layout_kwargs",
        )
        if 'flavor="stream"' not in block or any(k in block for k in tuned):
            continue
        names = re.findall(r"pd\.DataFrame\((data_\w+)\)", block)
        files = re.findall(r'os\.path\.join\(testdir, "([^"]+)"\)', block)
        for f in files:
            case = (tests / "files" / f, [row for n in names for row in data[n]])
            if case[0].exists() and case[1] and case[0] not in {p for p, _ in out}:
                out.append(case)
    return out


def cell_recovery(tests: Path) -> None:
    sys.path.insert(0, str(ROOT))
    import pymupdf4llm

    from kimidoc.documents import load

    tools = {
        "kimidoc": lambda p: load(p).text(),
        "pymupdf4llm": lambda p: pymupdf4llm.to_markdown(str(p), show_progress=False),
    }
    totals = {t: [0, 0, 0.0] for t in tools}
    print(f"camelot stream cases; load average {os.getloadavg()[0]:.1f}")
    for path, rows in camelot_cases(tests):
        want = [" ".join(str(c).split()) for row in rows for c in row if str(c).strip()]
        line = f"  {path.name:32} {len(want):4} cells"
        for t, fn in tools.items():
            t0 = time.perf_counter()
            got = [c for r in table_cells(fn(path)) for c in r if c]
            totals[t][2] += time.perf_counter() - t0
            pool: dict[str, int] = {}
            for c in got:
                pool[c] = pool.get(c, 0) + 1
            hit = 0
            for c in want:
                if pool.get(c, 0):
                    pool[c] -= 1
                    hit += 1
            totals[t][0] += hit
            totals[t][1] += len(want)
            line += f"   {t} {hit / len(want):5.0%}"
        print(line)
    for t, (hit, n, secs) in totals.items():
        print(f"{t:12} cells recovered {hit}/{n} = {hit / n:.0%} in {secs:.1f} s")


def worker(tool: str) -> None:
    os.environ["KIMIDOC_PROGRESS"] = "0"
    sys.path.insert(0, str(ROOT))
    results = os.fdopen(os.dup(1), "w")  # the libraries print to stdout (warnings, OCR progress): keep ours apart
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        result = convert(tool, line.rstrip("\n"))
        results.write(json.dumps(result) + "\n")
        results.flush()


class Runner:
    """A worker process for one tool, restarted after a crash or a timeout."""

    def __init__(self, tool: str, timeout: float) -> None:
        self.tool, self.timeout, self.proc = tool, timeout, None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", self.tool],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )

    def run(self, path: str) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        assert self.proc and self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(path + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        if not ready:
            self.stop()
            return {"outcome": "timeout", "seconds": self.timeout}
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            self.proc = None
            return {"outcome": "crash", "error": f"worker died (exit {code})"}
        return json.loads(line)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folders", nargs="*", type=Path)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--limit", type=int, default=0, help="a random sample of this many files (0: all)")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--json", type=Path, help="write every result here")
    ap.add_argument("--camelot-tests", type=Path, help="measure unruled-table cells on camelot's stream tests instead")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker)
        return
    if args.camelot_tests:
        cell_recovery(args.camelot_tests)
        return
    files = sorted(
        str(p) for folder in args.folders for p in folder.rglob("*") if p.suffix.lower() == ".pdf" and p.is_file()
    )
    if args.limit and len(files) > args.limit:
        files = sorted(random.Random(0).sample(files, args.limit))
    tools = args.tools.split(",")
    runners = {t: Runner(t, args.timeout) for t in tools}
    results: dict[str, dict[str, dict]] = {t: {} for t in tools}
    print(
        f"{len(files)} files, tools {', '.join(tools)}, timeout {args.timeout:.0f} s; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    started = time.time()
    try:
        for k, path in enumerate(files, 1):
            for t in tools:
                results[t][path] = runners[t].run(path)
            if k % 25 == 0:
                print(
                    f"  {k}/{len(files)} files, {time.time() - started:.0f} s, load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    finally:
        for r in runners.values():
            r.stop()
    print(f"\n{'tool':12} {'ok':>5} {'error':>6} {'crash':>6} {'timeout':>8}")
    for t in tools:
        counts = {o: sum(r["outcome"] == o for r in results[t].values()) for o in ("ok", "error", "crash", "timeout")}
        print(f"{t:12} {counts['ok']:5} {counts['error']:6} {counts['crash']:6} {counts['timeout']:8}")
    common = [p for p in files if all(results[t][p]["outcome"] == "ok" for t in tools)]
    pages = sum(results[tools[0]][p]["pages"] for p in common)
    print(f"\npages/s on the {len(common)} files ({pages} pages) every tool read:")
    base = None
    for t in tools:
        secs = sum(results[t][p]["seconds"] for p in common)
        speed = pages / secs if secs else float("nan")
        base = base or speed
        print(f"  {t:12} {speed:8.1f} pages/s  ({speed / base:.2f}x kimidoc)")
    if "kimidoc" in tools:
        degraded = sum(r.get("degraded", 0) for r in results["kimidoc"].values())
        print(f"\nkimidoc pages read as text only (over the work budget): {degraded}")
    for t in tools:
        for p, r in results[t].items():
            if r["outcome"] in ("crash", "timeout") or (t == "kimidoc" and r["outcome"] == "error"):
                print(f"  {t} {r['outcome']}: {p}: {r.get('error', '')[:160]}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}; {time.time() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
