"""Token counting throughput: kimidoc's Tokenizer vs tiktoken's own encoder on the same text.

Peers, in one process, on the same ranks and pre-tokenizer pattern:
  * tiktoken   -- ``tiktoken.Encoding.encode_ordinary`` on the whole text (no long-run cuts);
  * official   -- the official ``tokenization_kimi.py`` path: its per-character Python loop that
                  cuts 25,000-character runs, then ``encode(allowed_special="all")`` per piece;
  * kimidoc    -- ``Tokenizer.count`` (same ids as the official path, cuts found by a regex).

The text is this repository's Python and Markdown, repeated to ``--mb`` megabytes. Without
``--tokenizer`` (a checkpoint folder with the real ``tiktoken.model``) the vocabulary is a
synthetic large one: every byte plus every prefix of the text's most frequent words (~100K
tokens, whole-word tokens like a real vocabulary), so BPE does realistic work per piece.

    python3 benchmarks/bench_tokenizer.py [--mb 2] [--tokenizer /models/Kimi-K2.6] [--repeat 3]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections import Counter
from pathlib import Path

from kimidoc.chat.tokenizer import MAX_NO_WHITESPACES_CHARS, SPECIAL_TOKENS, TIKTOKEN_MAX_ENCODE_CHARS, Tokenizer

ROOT = Path(__file__).resolve().parents[1]


def corpus(megabytes: float) -> str:
    files = sorted(p for ext in ("*.py", "*.md") for p in ROOT.rglob(ext) if ".git" not in p.parts)
    base = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)
    target = int(megabytes * 1_000_000)
    return (base * (target // max(1, len(base.encode())) + 1))[:target]


def synthetic_tokenizer(text: str, size: int = 100_000) -> Tokenizer:
    words = Counter(re.findall(r" ?[A-Za-z]+| ?[0-9]{1,3}| ?[^\sA-Za-z0-9]+|\s+", text))
    ranks = {bytes([b]): b for b in range(256)}
    for word, _ in words.most_common():
        raw = word.encode()
        for k in range(2, len(raw) + 1):  # every prefix: each token is a lower-ranked one plus a byte
            ranks.setdefault(raw[:k], len(ranks))
        if len(ranks) >= size:
            break
    return Tokenizer(ranks, {i: t for t, i in SPECIAL_TOKENS.items()})


def official_count(tok: Tokenizer, s: str) -> int:
    """The official tokenization_kimi.py encode loop (per-character Python run splitting)."""

    def split(s: str, max_len: int):
        current_len = 0
        current_is_space = s[0].isspace() if s else False
        start = 0
        for i in range(len(s)):
            is_space = s[i].isspace()
            if current_is_space ^ is_space:
                current_len = 1
                current_is_space = is_space
            else:
                current_len += 1
                if current_len > max_len:
                    yield s[start:i]
                    start = i
                    current_len = 1
        yield s[start:]

    n = 0
    for i in range(0, len(s), TIKTOKEN_MAX_ENCODE_CHARS):
        for piece in split(s[i : i + TIKTOKEN_MAX_ENCODE_CHARS], MAX_NO_WHITESPACES_CHARS):
            n += len(tok._enc.encode(piece, allowed_special="all"))
    return n


def best_of(fn, repeat: int) -> tuple[float, int]:
    times, result = [], 0
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return min(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=2.0)
    ap.add_argument(
        "--tokenizer", type=Path, help="checkpoint folder with tiktoken.model (default: synthetic vocabulary)"
    )
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    text = corpus(args.mb)
    mb = len(text.encode()) / 1e6
    tok = Tokenizer.load(args.tokenizer) if args.tokenizer else synthetic_tokenizer(text)
    print(
        f"text: {mb:.2f} MB ({len(text):,} chars); vocabulary: {tok.n_ranks:,} ranks ({'file' if args.tokenizer else 'synthetic'})"
    )

    rows = [
        ("tiktoken encode_ordinary", lambda: len(tok._enc.encode_ordinary(text))),
        ("official tokenization_kimi", lambda: official_count(tok, text)),
        ("kimidoc Tokenizer.count", lambda: tok.count(text)),
        ("kimidoc Tokenizer.encode", lambda: len(tok.encode(text))),
    ]
    results = {name: best_of(fn, args.repeat) for name, fn in rows}
    base = results["tiktoken encode_ordinary"][0]
    print(f"{'peer':28s} {'tokens':>10s} {'s':>7s} {'MB/s':>7s} {'s/MB':>6s} {'Mtok/s':>7s} {'vs tiktoken':>11s}")
    for name, (secs, n) in results.items():
        print(
            f"{name:28s} {n:10,d} {secs:7.3f} {mb / secs:7.2f} {secs / mb:6.3f} {n / secs / 1e6:7.2f} {base / secs:10.2f}x"
        )
    assert results["kimidoc Tokenizer.encode"][1] == results["official tokenization_kimi"][1], (
        "ids differ from the official path"
    )
    print("encode == official (special spellings in the text -> single ids); count and encode_ordinary treat them as")
    print("text; count differs from raw tiktoken only by the official 400K-character window cuts.")
    per_256k = results["kimidoc Tokenizer.count"][0] / results["kimidoc Tokenizer.count"][1] * 256_000
    print(
        f"kimidoc: a 256K-token repository counts in {per_256k:.3f} s; {statistics.fmean([results['kimidoc Tokenizer.count'][0] / mb]):.3f} s per MB"
    )


if __name__ == "__main__":
    main()
