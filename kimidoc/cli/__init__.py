"""The ``kimidoc`` command: ask, agent, swarm, pack, plan.

Exit codes (:mod:`kimidoc.cli.exits`): 0 success; 1 the run ended without an answer (budget hit,
model, checkpoint or sandbox error); 2 bad arguments or unreadable input; 130 interrupted (a trace,
when given, can be resumed).
"""

from __future__ import annotations

import argparse
import sys

from kimidoc.cli import agent, pack, plan
from kimidoc.cli.exits import EXIT_INTERRUPTED, EXIT_NO_ANSWER, EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kimidoc", description="Put Kimi K2.6 to work on real documents.")
    sub = parser.add_subparsers(dest="command", required=True)
    agent.add_parsers(sub)
    pack.add_parser(sub)
    plan.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (FileNotFoundError, ValueError) as exc:
        print(f"kimidoc {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as exc:  # a backend, checkpoint or sandbox that failed: named, not a traceback
        print(f"kimidoc {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_NO_ANSWER
