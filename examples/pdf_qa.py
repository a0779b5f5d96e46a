"""Ask a question about a PDF and get an answer with citations.

    python examples/pdf_qa.py [PDF] [QUESTION]

Runs on whatever `kimidoc.connect()` finds: with nothing configured, the embedded 135M model
(offline, weak: it answers evidence first, choosing among the figures the best passages state). The one-line change to K2.6:

    backend = kimidoc.connect(endpoint="http://node:8000/v1")   # vLLM / SGLang serving K2.6
    backend = kimidoc.connect(model="/models/Kimi-K2.6")         # local weights
"""

import sys
from pathlib import Path

import kimidoc
from kimidoc.agents import Budget, ask, format_answer
from kimidoc.documents import load_many

HERE = Path(__file__).resolve().parent
pdf = sys.argv[1] if len(sys.argv) > 1 else str(HERE / "data" / "report.pdf")
question = sys.argv[2] if len(sys.argv) > 2 else "What revenue does the company expect for 2026?"

backend = kimidoc.connect()
docs = load_many([pdf])
# A capable model runs as a tool-using agent; the embedded one answers evidence first. Either way
# every figure of the answer is checked against the pages, and what is found nowhere is said so.
result = ask(backend, docs, question, budget=Budget(max_steps=8))
print(format_answer(result))
