"""Hand-written pieces vs the libraries that do the same job: behaviour, speed, size, side by side.

  * tool-argument validation: ``kimidoc.tools.schema.validate`` vs ``jsonschema`` (Draft 2020-12,
    validator built once, as a caller would);
  * docstring parameters: ``kimidoc.tools.schema.parse_docstring`` vs ``docstring_parser.parse``;
  * the OpenAI wire client: import cost and installed size of ``kimidoc.backends.openai`` vs the
    ``openai`` SDK (behaviour is covered by tests/backends against a fault-injecting server).

Each peer that is not installed is reported as missing, not skipped silently.

    python3 benchmarks/bench_libraries.py [--repeat 20000]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import inspect
import os
import subprocess
import sys
import time
from pathlib import Path

from kimidoc.tools import schema
from kimidoc.tools.schema import parse_docstring, schema_from_function, validate

ROOT = Path(__file__).resolve().parents[1]


def search(query: str, pages: list[int] | None = None, limit: int = 10, mode: str = "bm25") -> str:
    """Search the documents.

    Args:
        query: words to look for
        pages: 1-based pages to search (all when omitted)
        limit: how many passages to return
        mode: ranking method
    """
    return query


SCHEMA = schema_from_function(search)[1]
SCHEMA["properties"]["limit"].update(minimum=1, maximum=50)
SCHEMA["properties"]["mode"]["enum"] = ["bm25", "exact"]
CASES = [  # (arguments, valid?)
    ({"query": "revenue 2024", "pages": [1, 2, 3], "limit": 5}, True),
    ({"query": "revenue", "limit": 5.0}, True),  # an integral float is an integer in both
    ({"query": 7}, False),
    ({"pages": [1]}, False),
    ({"query": "x", "limit": 0}, False),
    ({"query": "x", "mode": "fuzzy"}, False),
    ({"query": "x", "pages": ["one"]}, False),
    ({"query": "x", "colour": "red"}, False),
    ({"query": "x", "limit": True}, False),
]

DOCSTRINGS = {
    "google": (search.__doc__, {"query", "pages", "limit", "mode"}),
    "numpy": (
        "Add.\n\nParameters\n----------\na : int\n    first\n    number\nb : int\n    second\n\nReturns\n-------\nint\n",
        {"a", "b"},
    ),
    "rest": ("Scale.\n\n:param float factor: how much\n:type factor: float\n:returns: the result", {"factor"}),
}


def timed(fn, repeat: int) -> float:
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat * 1e6  # microseconds per call


def dist_size(name: str, seen: set[str] | None = None) -> tuple[int, list[str]]:
    """Installed bytes of a distribution and its whole dependency closure (each counted once)."""
    seen = set() if seen is None else seen
    key = name.lower().replace("_", "-")
    if key in seen:
        return 0, []
    seen.add(key)
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return 0, []
    total = sum(
        (dist.locate_file(f).stat().st_size for f in dist.files or [] if Path(dist.locate_file(f)).is_file()), 0
    )
    names = [key]
    for req in dist.requires or []:
        if "extra ==" in req:
            continue
        dep = (
            req.split(";")[0]
            .split("[")[0]
            .split("(")[0]
            .split("<")[0]
            .split(">")[0]
            .split("=")[0]
            .split("!")[0]
            .split("~")[0]
            .strip()
        )
        size, more = dist_size(dep, seen)
        total += size
        names += more
    return total, names


def import_seconds(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            ).stdout
        )
        for _ in range(3)
    ]
    return min(runs)


def source_lines(*functions: object) -> int:
    return sum(len(inspect.getsourcelines(f)[0]) for f in functions)


def lines_of(*paths: str) -> int:
    return sum(len((ROOT / p).read_text().splitlines()) for p in paths)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=20000)
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}")

    print("\n== tool-argument validation ==")
    ours = [validate(a, SCHEMA) is None for a, _ in CASES]
    print(
        f"kimidoc   agrees with the expected verdict on {sum(o == e for o, (_, e) in zip(ours, CASES))}/{len(CASES)} cases"
    )
    for a, _ in CASES[2:5]:
        print(f"  kimidoc    {validate(a, SCHEMA)}")
    try:
        import jsonschema

        v = jsonschema.Draft202012Validator(SCHEMA)
        theirs = [v.is_valid(a) for a, _ in CASES]
        print(
            f"jsonschema agrees with the expected verdict on {sum(t == e for t, (_, e) in zip(theirs, CASES))}/{len(CASES)} cases"
        )
        for a, _ in CASES[2:5]:
            err = jsonschema.exceptions.best_match(v.iter_errors(a))
            print(f"  jsonschema {'/'.join(map(str, err.absolute_path)) or '<root>'}: {err.message}")
        for label, args_ in (("valid", CASES[0][0]), ("invalid", CASES[2][0])):
            k = timed(lambda a=args_: validate(a, SCHEMA), args.repeat)
            j = timed(lambda a=args_: jsonschema.exceptions.best_match(v.iter_errors(a)), args.repeat)
            print(f"  {label:7} kimidoc {k:6.1f} us   jsonschema {j:6.1f} us   ratio {j / k:4.1f}x")
        size, deps = dist_size("jsonschema")
        print(
            f"  size: kimidoc validator {source_lines(schema.validate, schema._validate_object, schema._validate_array, schema._type_ok, schema._json_type)} lines; jsonschema {size / 1e6:.1f} MB installed with {', '.join(deps[1:])}"
        )
        print(f"  import: jsonschema {import_seconds('jsonschema') * 1000:.0f} ms")
    except ImportError:
        print("jsonschema: not installed")

    print("\n== docstring parameters ==")
    try:
        import docstring_parser

        for style, (doc, names) in DOCSTRINGS.items():
            mine = parse_docstring(doc)
            theirs = docstring_parser.parse(doc)
            print(f"  {style:6} kimidoc {sorted(mine[1]) == sorted(names)} {mine[1]}")
            print(
                f"  {style:6} docstring_parser {sorted(p.arg_name for p in theirs.params) == sorted(names)} "
                f"{ {p.arg_name: p.description for p in theirs.params} }"
            )
            k = timed(lambda d=doc: parse_docstring(d), args.repeat // 4)
            d = timed(lambda d=doc: docstring_parser.parse(d), args.repeat // 4)
            print(f"  {style:6} kimidoc {k:6.1f} us   docstring_parser {d:6.1f} us   ratio {d / k:4.1f}x")
        size, deps = dist_size("docstring_parser")
        print(
            f"  size: kimidoc parser {source_lines(schema.parse_docstring, schema._read_params) + 3} lines; docstring_parser {size / 1e6:.2f} MB"
        )
    except ImportError:
        print("docstring_parser: not installed")

    print("\n== OpenAI wire client ==")
    files = [f"kimidoc/backends/openai/{n}.py" for n in ("client", "wire", "sse", "retry", "providers")]
    print(
        f"  kimidoc.backends.openai: {lines_of(*files)} lines; import {import_seconds('kimidoc.backends.openai') * 1000:.0f} ms (httpx included)"
    )
    try:
        size, deps = dist_size("openai")
        print(
            f"  openai SDK: {size / 1e6:.1f} MB installed with {', '.join(deps[1:])}; import {import_seconds('openai') * 1000:.0f} ms"
        )
    except Exception as exc:  # noqa: BLE001 - report, do not hide
        print(f"  openai SDK: {exc}")


if __name__ == "__main__":
    main()
