"""Review a whole repository: pack it into the model's window, then ask for a review with line citations.

    python examples/code_review.py [REPO] [--endpoint URL | --model DIR]

The agent's packer fits whole files first, turns files that do not fit into signatures-only views,
and lists what it left out, so the agent can read the rest with its file tools. On the embedded default (8K
window) only a small slice fits and the review is weak; with K2.6 (256K) a mid-size codebase fits
whole. The one-line change: `backend = kimidoc.connect(endpoint="http://node:8000/v1")`.
"""

import argparse
from pathlib import Path

import kimidoc
from kimidoc.agents import Agent, Budget
from kimidoc.documents import load
from kimidoc.tools import document_tools

ap = argparse.ArgumentParser()
ap.add_argument("repo", nargs="?", default=str(Path(__file__).resolve().parents[1] / "kimidoc" / "agents"))
ap.add_argument("--endpoint")
ap.add_argument("--model")
args = ap.parse_args()

backend = kimidoc.connect(model=args.model, endpoint=args.endpoint)
repo = load(args.repo)
agent = Agent(backend, tools=document_tools([repo]), documents=[repo], budget=Budget(max_steps=6))
result = agent.run("Review this code: name the two most important problems, each with its file and line range.")
print(result.answer.strip())
print("\nSources:", "; ".join(s.cite() for s in result.citations) or "none")
