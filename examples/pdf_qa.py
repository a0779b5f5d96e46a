"""Ask a question about a PDF and get an answer with citations.

    python examples/pdf_qa.py [PDF] [QUESTION]

Runs on whatever `kimidoc.connect()` finds: with nothing configured, the embedded 135M model
(offline, weak). The one-line change to K2.6:

    backend = kimidoc.connect(endpoint="http://node:8000/v1")   # vLLM / SGLang serving K2.6
    backend = kimidoc.connect(model="/models/Kimi-K2.6")         # local weights
"""

import sys
from pathlib import Path

import kimidoc
from kimidoc.agents import Agent, Budget
from kimidoc.documents import load_many
from kimidoc.tools import document_tools

HERE = Path(__file__).resolve().parent
pdf = sys.argv[1] if len(sys.argv) > 1 else str(HERE / "data" / "report.pdf")
question = sys.argv[2] if len(sys.argv) > 2 else "What revenue does the company expect for 2026, and what is the main risk?"

backend = kimidoc.connect()
docs = load_many([pdf])
agent = Agent(backend, tools=document_tools(docs), documents=docs, budget=Budget(max_steps=8))
result = agent.run(question)
print(result.answer.strip())
print("\nSources:", "; ".join(s.cite() for s in result.citations) or "none")
