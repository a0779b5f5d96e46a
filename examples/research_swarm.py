"""A research swarm: one sub-agent per document, in parallel, then the findings side by side.

    python examples/research_swarm.py [PATH...] [--endpoint URL | --model DIR] [--concurrency N]

Each sub-agent has its own context, tools and budget; failures stay isolated; the swarm's trace
folder makes the run resumable (run the same command again after a kill). On the embedded default
the sub-agents take turns on one small model; with K2.6 behind vLLM they run truly in parallel.
The one-line change: `backend = kimidoc.connect(endpoint="http://node:8000/v1")`.
"""

import argparse
from pathlib import Path

import kimidoc
from kimidoc.agents import Budget, Swarm
from kimidoc.documents import load
from kimidoc.tools import document_tools

ROOT = Path(__file__).resolve().parents[1]
ap = argparse.ArgumentParser()
ap.add_argument(
    "paths",
    nargs="*",
    default=[str(ROOT / "examples" / "data" / "report.pdf"), str(ROOT / "examples" / "data" / "make_report.py")],
)
ap.add_argument("--endpoint")
ap.add_argument("--model")
ap.add_argument("--concurrency", type=int, default=8)
ap.add_argument("--trace-dir", default="swarm-trace")
args = ap.parse_args()

backend = kimidoc.connect(model=args.model, endpoint=args.endpoint)
docs = [load(p) for p in args.paths]
tasks = [f"Summarise {Path(d.path).name} in two sentences, citing it." for d in docs]
# Sub-agent i gets tools over document i only.
swarm = Swarm(
    backend,
    tools=lambda i: document_tools([docs[i]]),
    concurrency=args.concurrency,
    budget=Budget(max_steps=4),
    trace_dir=args.trace_dir,
)
result = swarm.run(tasks)
print(result.report())
totals = result.totals()
print(
    f"\n{totals['answered']}/{totals['agents']} answered; {totals['tool_calls']} tool calls; longest chain {totals['critical_steps']} steps"
)
