"""``kimidoc pack``: documents fitted to a token budget, written out as Markdown or XML."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kimidoc.cli.exits import EXIT_OK


def add_parser(sub: Any) -> None:
    p = sub.add_parser("pack", help="pack documents into a token budget and write the context (Markdown or XML)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--budget", type=int, default=200_000, help="tokens (default 200000)")
    p.add_argument("--format", choices=["markdown", "xml"], default="markdown")
    p.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    p.add_argument(
        "--model",
        metavar="DIR",
        help="count tokens with this checkpoint's tokenizer (default: a conservative estimate)",
    )
    p.add_argument("--password", help="password for encrypted PDFs")
    p.add_argument("--line-numbers", action="store_true", help="number the lines of source files (for line citations)")
    p.add_argument(
        "--images",
        action="store_true",
        help="budget images as the model would see them (the text output only marks them)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kimidoc.context.pack import pack_paths

    counter = None
    if args.model:
        from kimidoc.chat.tokenizer import Tokenizer

        counter = Tokenizer.load(args.model).count
    result = pack_paths(
        args.paths,
        args.budget,
        fmt=args.format,
        counter=counter,
        password=args.password,
        images=args.images,
        line_numbers=args.line_numbers,
    )
    text = result.text
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    dropped = len(result.dropped)
    print(
        f"packed {result.tokens:,} of {args.budget:,} tokens; {dropped} item(s) dropped or compressed (listed in the output)",
        file=sys.stderr,
    )
    return EXIT_OK
