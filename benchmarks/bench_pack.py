"""Packing a real source tree: kimidoc against gitingest and files-to-prompt, side by side.

Each tool turns the same folder (default: the installed transformers package, or one of its
subfolders) into one prompt text. All outputs are counted with the same tokenizer (the K2.6-format
test vocabulary from kimidoc.testing: real pre-tokenizer, small vocabulary, so counts run higher
than the real 163K vocabulary's). kimidoc counts while it packs (it must, to hold a budget); the
peers' time to a counted total adds that count. gitingest's own token estimate needs the o200k
file from the network, so offline it reports none; files-to-prompt reports none.

    python3 benchmarks/bench_pack.py [--tree PATH | --subdir generation] [--budget 262144]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import tempfile
import time
from contextlib import redirect_stderr
from pathlib import Path

os.environ.setdefault("KIMIDOC_PROGRESS", "0")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, installed or not

EXCLUDE = ("*.pyc", "__pycache__")


def kimidoc_pack(tree: Path, budget: int, count) -> tuple[str, int, int]:
    from kimidoc.context import pack_paths

    r = pack_paths([tree], budget, counter=count, ignore=list(EXCLUDE))
    files = sum(1 for c in r.included if ":" in c or c.endswith("(empty)"))
    return r.text, files, r.tokens


def gitingest_pack(tree: Path) -> tuple[str, int, None]:
    from gitingest import ingest

    summary, overview, content = ingest(str(tree), exclude_patterns=set(EXCLUDE))
    files = int(next(x for x in summary.splitlines() if x.startswith("Files analyzed:")).split(":")[1])
    return overview + content, files, None


def files_to_prompt_pack(tree: Path) -> tuple[str, int, None]:
    from files_to_prompt.cli import process_path

    chunks: list[str] = []
    with redirect_stderr(io.StringIO()):  # it warns on every undecodable file
        process_path(str(tree), (), False, False, False, [], EXCLUDE, chunks.append, False, True)
    return "\n".join(chunks), len(chunks) // 4, None  # markdown mode writes 4 chunks per file


def main() -> None:
    import transformers

    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", type=Path, default=Path(transformers.__file__).parent)
    ap.add_argument(
        "--subdir", default="", help="a folder inside --tree (the whole transformers tree is ~60 MB of source)"
    )
    ap.add_argument("--budget", type=int, default=262_144)
    args = ap.parse_args()
    tree = args.tree / args.subdir if args.subdir else args.tree
    logging.disable(logging.INFO)
    import gitingest  # noqa: F401  (it sets up its logger on import)
    from loguru import logger

    logger.remove()  # gitingest logs every step

    from kimidoc.chat.tokenizer import load_tokenizer
    from kimidoc.testing.tokenizer import write_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tok = load_tokenizer(write_tokenizer(tmp))
    count = tok.count
    print(f"tree: {tree}")
    rows = []
    for label, fn in [
        ("kimidoc pack (everything)", lambda: kimidoc_pack(tree, 10**10, count)),
        (f"kimidoc pack (budget {args.budget:,})", lambda: kimidoc_pack(tree, args.budget, count)),
        ("gitingest", lambda: gitingest_pack(tree)),
        ("files-to-prompt --markdown", lambda: files_to_prompt_pack(tree)),
    ]:
        t0 = time.perf_counter()
        text, files, tokens = fn()
        dt = time.perf_counter() - t0
        counted = dt
        if tokens is None:
            t1 = time.perf_counter()
            tokens = count(text)
            counted += time.perf_counter() - t1
        rows.append((label, files, dt, counted, tokens))
    base_files = rows[0][1] / rows[0][3]
    print(
        f"{'tool':34} {'files':>6} {'s':>7} {'files/s':>8} {'s counted':>10} {'tokens':>11} {'tokens/s':>10} {'files/s vs kimidoc':>19}"
    )
    for label, files, dt, counted, tokens in rows:
        print(
            f"{label:34} {files:6d} {dt:7.2f} {files / dt:8.1f} {counted:10.2f} {tokens:11,} {tokens / counted:10,.0f} {files / counted / base_files:18.2f}x"
        )


if __name__ == "__main__":
    main()
