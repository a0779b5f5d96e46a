"""Read a table from a PDF, compute with the sandboxed python tool, and get the chart back.

    python examples/chart_python.py [--weak-sandbox] [--endpoint URL | --model DIR]

The embedded 135M model cannot drive a tool loop, so by default the model's side is played by a
scripted backend that does what K2.6 does on this task, driven by the real tool outputs: read the
table page, write code with the numbers it read, look at the plot, answer with a citation. The
tools, the sandbox, the trace and the citations are all real. Pass --endpoint or --model to let
K2.6 itself play the model (the one-line change: `backend = kimidoc.connect(endpoint=...)`).
"""

import argparse
import json
import re
from pathlib import Path

import kimidoc
from kimidoc.agents import Agent
from kimidoc.backends import Scripted
from kimidoc.documents import load_many
from kimidoc.messages import AssistantMessage, ToolCall, image_bytes, text_of
from kimidoc.tools import default_tools

HERE = Path(__file__).resolve().parent
PDF = str(HERE / "data" / "report.pdf")
QUESTION = "Which quarter of 2025 grew most over the same quarter of 2024? Plot the growth."


def scripted_model(messages, tools):
    """K2.6's moves on this task, each computed from what the tools actually returned."""
    tool_outputs = [text_of(m["content"]) for m in messages if m["role"] == "tool"]
    if not tool_outputs:
        return AssistantMessage(
            tool_calls=[
                ToolCall(
                    "functions.read_document:0", "read_document", json.dumps({"document": "report.pdf", "page": 2})
                )
            ]
        )
    if len(tool_outputs) == 1:
        rows = re.findall(r"\|\s*(Q\d)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|", tool_outputs[0])
        code = (
            "import matplotlib.pyplot as plt\n"
            f"rows = {[(q, float(a), float(b)) for q, a, b in rows]}\n"
            "growth = {q: round(100 * (a / b - 1), 1) for q, a, b in rows}\n"
            "plt.bar(list(growth), list(growth.values())); plt.ylabel('growth vs 2024 (%)'); plt.title('Quarterly growth')\n"
            "max(growth, key=growth.get), growth"
        )
        return AssistantMessage(tool_calls=[ToolCall("functions.python:1", "python", json.dumps({"code": code}))])
    best = re.search(r"\('(Q\d)', \{(.*?)\}\)", tool_outputs[-1])
    if best is None:
        return f"The computation did not run: {tool_outputs[-1][:300]}"
    return f"{best.group(1)} grew most over the same quarter of 2024 (growth by quarter: {best.group(2)}) [report.pdf p.2]."


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint")
    ap.add_argument("--model")
    ap.add_argument("--weak-sandbox", action="store_true", help="run python without full isolation (non-root machines)")
    args = ap.parse_args()
    backend = (
        kimidoc.connect(model=args.model, endpoint=args.endpoint)
        if (args.endpoint or args.model)
        else Scripted(scripted_model)
    )
    docs = load_many([PDF])
    tools = default_tools(docs, allow_weaker=args.weak_sandbox)
    agent = Agent(backend, tools=tools, documents=docs)
    result = agent.run(QUESTION)
    print(result.answer)
    print("Sources:", "; ".join(s.cite() for s in result.citations) or "none")
    charts = [
        p
        for m in agent.messages
        if m["role"] == "tool" and isinstance(m["content"], list)
        for p in m["content"]
        if p.get("type") == "image_url"
    ]
    if charts:
        Path("chart.png").write_bytes(image_bytes(charts[-1]))
        print("The sandbox's chart is in chart.png")


if __name__ == "__main__":
    main()
