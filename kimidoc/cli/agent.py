"""``kimidoc ask``, ``kimidoc agent`` and ``kimidoc swarm``: documents in, an agent with tools, an answer
with citations out, on whichever backend the flags (or the environment) choose."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kimidoc.cli.exits import EXIT_NO_ANSWER, EXIT_OK, EXIT_USAGE


def add_backend_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("backend (default: $KIMIDOC_MODEL, $KIMIDOC_ENDPOINT, else the embedded model)")
    g.add_argument(
        "--model",
        metavar="DIR|NAME",
        help="a local K2.6 checkpoint folder, 'embedded', or with --endpoint the served model's name",
    )
    g.add_argument("--endpoint", metavar="URL", help="an OpenAI-compatible server URL, or 'moonshot' / 'openrouter'")
    g.add_argument(
        "--api-key",
        help="API key for --endpoint (default: $KIMIDOC_API_KEY, $MOONSHOT_API_KEY, $OPENROUTER_API_KEY, $OPENAI_API_KEY)",
    )
    g.add_argument("--no-thinking", action="store_true", help="instant mode: no reasoning before the answer")
    g.add_argument(
        "--temperature", type=float, help="sampling temperature (K2.6 recommends 1.0 thinking / 0.6 instant)"
    )
    g.add_argument("--max-tokens", type=int, help="most tokens per model reply")
    add_placement_args(g)


def add_placement_args(g: Any) -> None:
    """Where a local checkpoint's parts go; budgets not given are detected (free GPU memory, RAM)."""
    g.add_argument(
        "--gpu-memory",
        action="append",
        metavar="SIZE",
        help="local model: per GPU, repeatable or NxSIZE (e.g. 24GiB, 8x141GB; default: free memory of each visible GPU)",
    )
    g.add_argument(
        "--cpu-memory",
        metavar="SIZE",
        help="local model: RAM for weights (e.g. 768GiB; default: available RAM less a reserve)",
    )
    g.add_argument(
        "--disk-cache", metavar="DIR", help="local model: allow a disk tier for routed experts, kept converted in DIR"
    )
    g.add_argument("--context", type=int, help="local model: tokens of latent cache the plan reserves (default 32768)")


def placement_from(args: argparse.Namespace) -> dict[str, Any]:
    """``machine`` / ``context`` / ``disk_cache`` for a local checkpoint, when any flag says so."""
    from kimidoc.placement import machine_for

    kw: dict[str, Any] = {}
    if args.gpu_memory is not None or args.cpu_memory is not None or args.disk_cache is not None:
        kw["machine"] = machine_for(args.gpu_memory, args.cpu_memory, args.disk_cache)
    if args.disk_cache is not None:
        kw["disk_cache"] = args.disk_cache
    if args.context is not None:
        kw["context"] = args.context
    return kw


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-steps", type=int, help="stop after this many model calls")
    p.add_argument("--max-tool-calls", type=int, help="stop after this many tool calls")
    p.add_argument("--max-run-tokens", type=int, help="stop after this many tokens in all")
    p.add_argument("--max-time", type=float, metavar="SECONDS", help="stop after this much running time")
    p.add_argument("--no-python", action="store_true", help="do not give the agent the sandboxed python tool")
    p.add_argument(
        "--weak-sandbox", action="store_true", help="run python even where some isolation layers are missing"
    )
    p.add_argument("--password", help="password for encrypted PDFs")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no live view on stderr")


def add_parsers(sub: Any) -> None:
    ask = sub.add_parser("ask", help="answer a question about documents, with citations")
    ask.add_argument(
        "inputs", nargs="+", metavar="PATH... QUESTION", help="documents (PDF, image, text, folder) then the question"
    )
    ask.add_argument(
        "--trace", metavar="FILE", help="write the run's JSONL trace here (resumable with `kimidoc agent --resume`)"
    )
    ask.add_argument(
        "--mode",
        choices=("auto", "agent", "evidence"),
        default="auto",
        help="agent: a tool-using agent answers, its figures checked after; evidence: retrieve the passages and let the "
        "model choose the answer among the figures they state (auto: evidence for the small embedded model)",
    )
    add_backend_args(ask)
    add_run_args(ask)
    ask.set_defaults(func=run_ask)

    agent = sub.add_parser("agent", help="a long-running agent: task text or file, budgets, trace and resume")
    agent.add_argument("paths", nargs="*", metavar="PATH", help="documents the agent can read")
    src = agent.add_mutually_exclusive_group(required=True)
    src.add_argument("--task", help="the task text")
    src.add_argument("--task-file", metavar="FILE", help="read the task from a file")
    src.add_argument("--resume", metavar="TRACE", help="continue the run recorded in this trace")
    agent.add_argument("--trace", metavar="FILE", help="JSONL trace to write (default: kimidoc-run.jsonl)")
    add_backend_args(agent)
    add_run_args(agent)
    agent.set_defaults(func=run_agent)

    swarm = sub.add_parser(
        "swarm", help="run sub-tasks in parallel sub-agents (one per line of a file, or per document)"
    )
    swarm.add_argument("paths", nargs="*", metavar="PATH", help="documents the sub-agents can read")
    swarm.add_argument(
        "--tasks", metavar="FILE", help="one sub-task per line (default: one sub-task per document, with --task)"
    )
    swarm.add_argument("--task", help="with no --tasks: the question asked of each document")
    swarm.add_argument("--concurrency", type=int, default=32, help="sub-agents running at once (at most 300)")
    swarm.add_argument("--trace-dir", metavar="DIR", help="folder for the swarm's traces; running again on it resumes")
    add_backend_args(swarm)
    add_run_args(swarm)
    swarm.set_defaults(func=run_swarm_cmd)


def backend_from(args: argparse.Namespace) -> Any:
    from kimidoc.backends.connect import connect

    return connect(model=args.model, endpoint=args.endpoint, api_key=args.api_key, **placement_from(args))


def sampling_from(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.no_thinking:
        out["thinking"] = False
    if args.temperature is not None:
        out["temperature"] = args.temperature
    if args.max_tokens is not None:
        out["max_tokens"] = args.max_tokens
    return out


def budget_from(args: argparse.Namespace) -> Any:
    from kimidoc.agents import Budget

    b = Budget()
    for flag, field in (
        ("max_steps", "max_steps"),
        ("max_tool_calls", "max_tool_calls"),
        ("max_run_tokens", "max_tokens"),
        ("max_time", "max_wall_time"),
    ):
        value = getattr(args, flag)
        if value is not None:
            setattr(b, field, value)
    return b


def documents_from(paths: list[str], password: str | None) -> list[Any]:
    from kimidoc.documents import load_many

    return load_many(paths, password=password) if paths else []


def tools_for(args: argparse.Namespace, documents: list[Any]) -> list[Any]:
    from kimidoc.tools import default_tools

    return default_tools(documents, python=not args.no_python, allow_weaker=args.weak_sandbox)


def _live(args: argparse.Namespace) -> Any:
    from kimidoc.cli.live import LiveView

    return LiveView(quiet=args.quiet)


def result_json(result: Any) -> dict[str, Any]:
    """The result as ``--json`` prints it (the keys scripts and benchmarks rely on)."""
    return {
        "answer": result.answer,
        "answer_status": result.answer_status,
        "claims": [c.to_dict() for c in result.claims],
        "evidence": [{"source": p.cite(), "text": p.text} for p in result.evidence],
        "citations": [s.cite() for s in result.citations],
        "citations_inferred": result.citations_inferred,
        "unverified_citations": result.unverified_citations,
        "stop_reason": result.stop_reason,
        "detail": result.detail,
        "steps": result.steps,
        "tool_calls": result.tool_calls,
        "usage": {
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens,
            "reasoning_tokens": result.usage.reasoning_tokens,
        },
        "seconds": round(result.elapsed, 3),
        "trace": str(result.trace_path) if result.trace_path else None,
    }


def print_result(result: Any, args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(result_json(result), ensure_ascii=False, indent=2))
    else:
        from kimidoc.agents.ask import format_answer

        print(format_answer(result))
        if not result.ok:
            print(f"\n(stopped: {result.stop_reason}: {result.detail})", file=sys.stderr)
            if result.trace_path:
                print(f"(resume with: kimidoc agent --resume {result.trace_path})", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_NO_ANSWER


def run_ask(args: argparse.Namespace) -> int:
    from kimidoc.agents.ask import ask

    if len(args.inputs) < 2:
        print("kimidoc ask: give at least one document and a question", file=sys.stderr)
        return EXIT_USAGE
    *paths, question = args.inputs
    documents = documents_from(paths, args.password)
    backend = backend_from(args)
    result = ask(
        backend,
        documents,
        question,
        mode=args.mode,
        tools=lambda: tools_for(args, documents),
        budget=budget_from(args),
        on_event=_live(args),
        trace_path=args.trace,
        sampling=sampling_from(args),
    )
    return print_result(result, args)


def run_agent(args: argparse.Namespace) -> int:
    from kimidoc.agents import Agent

    documents = documents_from(args.paths, args.password)
    backend = backend_from(args)
    tools = tools_for(args, documents)
    if args.resume:
        return print_result(
            Agent.resume(
                args.resume, backend, tools=tools, documents=documents, on_event=_live(args), show_progress=False
            ),
            args,
        )
    task = Path(args.task_file).read_text() if args.task_file else args.task
    agent = Agent(
        backend,
        tools=tools,
        documents=documents,
        budget=budget_from(args),
        trace_path=args.trace or "kimidoc-run.jsonl",
        on_event=_live(args),
        sampling=sampling_from(args),
        show_progress=False,
    )
    return print_result(agent.run(task), args)


def run_swarm_cmd(args: argparse.Namespace) -> int:
    from kimidoc.agents import Swarm

    if not 1 <= args.concurrency <= 300:
        print("kimidoc swarm: --concurrency must be between 1 and 300", file=sys.stderr)
        return EXIT_USAGE
    documents = documents_from(args.paths, args.password)
    if args.tasks:
        tasks = [line.strip() for line in Path(args.tasks).read_text().splitlines() if line.strip()]
    elif args.task and documents:
        tasks = [f"{args.task}\n\nWork on the document {d.path} only, and cite it." for d in documents]
    else:
        print("kimidoc swarm: give --tasks FILE, or documents and --task", file=sys.stderr)
        return EXIT_USAGE
    backend = backend_from(args)
    swarm = Swarm(
        backend,
        tools=lambda i: tools_for(args, documents),
        concurrency=args.concurrency,
        budget=budget_from(args),
        trace_dir=args.trace_dir,
        on_event=_live(args),
        agent_options={"sampling": sampling_from(args), "documents": documents},
    )
    result = swarm.run(tasks)
    totals = result.totals()
    if args.json:
        print(
            json.dumps(
                {
                    "totals": totals,
                    "results": [
                        {
                            "task": r.task,
                            "stop_reason": r.stop_reason,
                            "answer": r.answer,
                            "detail": r.detail,
                            "citations": [s.cite() for s in r.citations],
                        }
                        for r in result.results
                    ],
                },
                ensure_ascii=False,
                indent=2,
            )
        )
    else:
        print(result.report())
        print(
            f"\n{totals['answered']}/{totals['agents']} answered in {totals['wall_seconds']:.1f}s; "
            f"longest chain {totals['critical_steps']} steps",
            file=sys.stderr,
        )
    return EXIT_OK if totals["answered"] == totals["agents"] else EXIT_NO_ANSWER
