"""LangChain's own agent (``langchain.agents.create_agent``) over kimidoc's chat model and tools.

    python examples/langchain_agent.py                        # embedded default model, offline
    python examples/langchain_agent.py --scripted             # Scripted backend (see below)
    python examples/langchain_agent.py --endpoint http://gpu:8000/v1 --model moonshotai/Kimi-K2.6
    python examples/langchain_agent.py path/to/file.pdf "your question"

The agent gets kimidoc's document tools (list / read / search / render pages) and the sandboxed
``python`` tool, wrapped as LangChain tools; the model is ``ChatKimi``.

The embedded default (a small model that runs anywhere, offline) is far too weak to drive a
tool-using agent reliably: it usually answers without calling a tool, or calls one badly. To
see the whole loop work offline, ``--scripted`` uses kimidoc's Scripted backend, which plays
the model's part with a fixed plan that still reads the real tool results: it searches the
report, has the python tool compute the growth from the numbers it found, and answers citing
the page. Everything else (LangChain's agent, the conversions, the tools) runs for real.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from kimidoc.backends.scripted import Scripted
from kimidoc.documents import load
from kimidoc.integrations.langchain import ChatKimi, to_langchain_tool
from kimidoc.messages import AssistantMessage, Message, ToolCall, ToolSchema, text_of
from kimidoc.tools import default_tools

HERE = Path(__file__).resolve().parent
SYSTEM = (
    "You answer questions about the user's documents. Use the tools to find the evidence, "
    "use the python tool for any arithmetic, and cite the page (file p.N) for every fact."
)


def scripted_plan(messages: Sequence[Message], tools: Sequence[ToolSchema] | None) -> AssistantMessage:
    """The model's part for ``--scripted``: search, compute with python, answer with a citation."""
    results = [m for m in messages if m["role"] == "tool"]
    names = {t["function"]["name"] for t in tools or []}
    if not results:
        return AssistantMessage(
            reasoning="Find where the report states revenue.",
            tool_calls=[ToolCall("call_search", "search_documents", json.dumps({"query": "revenue grew"}))],
        )
    hits = text_of(results[0]["content"])
    if len(results) == 1:
        amounts = [float(x) for x in re.findall(r"\$(\d+(?:\.\d+)?) million", hits)[:2]]
        if len(amounts) < 2 or "python" not in names:
            return AssistantMessage(content=f"The report says:\n{hits}")
        code = f"now, before = {amounts[0]}, {amounts[1]}\nprint(f'growth: {{(now / before - 1) * 100:.1f}}%')"
        return AssistantMessage(
            reasoning="Check the stated growth from the two amounts.",
            tool_calls=[ToolCall("call_python", "python", json.dumps({"code": code}))],
        )
    cite, _, line = hits.splitlines()[0].partition(": ")
    sentence = re.split(r"(?<=\.)\s", line)[0].rstrip(".")
    computed = text_of(results[-1]["content"]).strip()
    return AssistantMessage(content=f"{sentence} ({cite}). Recomputed with python: {computed}.")


def build_model(args: argparse.Namespace) -> ChatKimi:
    if args.scripted:
        return ChatKimi(backend=Scripted(scripted_plan), model="scripted-plan")
    options = {k: v for k, v in {"model": args.model, "endpoint": args.endpoint}.items() if v}
    return ChatKimi(max_tokens=args.max_tokens, **options)


def show(message: Any) -> None:
    if isinstance(message, AIMessage):
        if message.additional_kwargs.get("reasoning_content"):
            print(f"  [thinking] {message.additional_kwargs['reasoning_content']}")
        for call in message.tool_calls:
            print(f"  -> {call['name']}({json.dumps(call['args'], ensure_ascii=False)})")
        for bad in message.invalid_tool_calls:
            print(f"  -> unreadable tool call {bad.get('name')!r}: {bad.get('error')}")
        if message.text:
            print(f"assistant: {message.text}")
    elif isinstance(message, ToolMessage):
        text = message.text if isinstance(message.content, list) else str(message.content)
        images = (
            sum(1 for b in message.content if isinstance(b, dict) and b.get("type") == "image")
            if isinstance(message.content, list)
            else 0
        )
        status = " (error)" if message.status == "error" else ""
        print(f"  <- {message.name}{status}: {text[:300]}{f' [+{images} image(s)]' if images else ''}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "path", nargs="?", default=str(HERE / "data" / "report.pdf"), help="PDF, image, text file or repository"
    )
    parser.add_argument("question", nargs="?", default="How much did revenue grow in 2025? Check the arithmetic.")
    parser.add_argument(
        "--scripted", action="store_true", help="play the model's part with a Scripted plan (see the module docstring)"
    )
    parser.add_argument("--model", help="local checkpoint directory, or the model name an endpoint serves")
    parser.add_argument("--endpoint", help="OpenAI-compatible base URL (vLLM, SGLang, Moonshot, OpenRouter)")
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--max-steps", type=int, default=12, help="LangChain recursion limit")
    args = parser.parse_args(argv)

    document = load(args.path)
    tools = [to_langchain_tool(t) for t in default_tools([document])]
    model = build_model(args)
    agent = create_agent(model, tools, system_prompt=SYSTEM)
    print(f"model: {model.model_name} | tools: {', '.join(t.name for t in tools)}")
    print(f"user: {args.question}")
    usage = {"input_tokens": 0, "output_tokens": 0}
    for step in agent.stream(
        {"messages": [HumanMessage(args.question)]}, {"recursion_limit": args.max_steps}, stream_mode="updates"
    ):
        for update in step.values():
            for message in (update or {}).get("messages", []):
                show(message)
                for key in usage:
                    usage[key] += (getattr(message, "usage_metadata", None) or {}).get(key, 0)
    print(f"tokens: {usage['input_tokens']} in, {usage['output_tokens']} out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
