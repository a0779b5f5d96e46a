"""Swarm orchestration cost: 300 sub-agents x 14 tool calls (4,200 calls) on a scripted backend.

Three measurements, side by side in one process:
1. Overhead per tool call with an instant model: the agent swarm (with and without traces) against
   a bare asyncio loop making the same model and tool calls with no agent machinery.
2. With a simulated model latency (default 50 ms per call): an orchestrator spawning the swarm,
   its wall time against the critical path (longest chain of dependent model calls x latency;
   target within 1.2x).
3. The same sub-tasks one by one (a sample, extrapolated to all of them).

    python benchmarks/bench_swarm.py [--agents 300] [--calls 14] [--latency 0.05] [--serial-sample 10] [--memory]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import tempfile
import time
import timeit
import tracemalloc
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("KIMIDOC_PROGRESS", "0")

from kimidoc.agents import Agent, Swarm, run_swarm, swarm_tool  # noqa: E402
from kimidoc.backends.scripted import Scripted  # noqa: E402
from kimidoc.messages import AssistantMessage, Message, ToolCall, Usage  # noqa: E402
from kimidoc.tools.base import tool  # noqa: E402


def make_backend(calls: int, agents: int, latency: float) -> Scripted:
    """Sub-agents make ``calls`` sequential tool calls, then answer; the orchestrator spawns them all.

    Turns carry their usage, as a server reports it, so the client does no token counting that a
    real remote model would not need either.
    """

    def turn(messages: Sequence[Message], tools: Any) -> AssistantMessage:
        msg = plan(messages)
        msg.usage = Usage(prompt_tokens=60 * len(messages), completion_tokens=20)
        return msg

    def plan(messages: Sequence[Message]) -> AssistantMessage:
        m = re.search(r"sub-task (\d+)", messages[1]["content"])
        if m is None:  # the orchestrator: spawn the swarm, then report
            if not any(x["role"] == "tool" for x in messages):
                tasks = [f"sub-task {i}" for i in range(agents)]
                return AssistantMessage(
                    tool_calls=[ToolCall("functions.run_subagents:0", "run_subagents", json.dumps({"tasks": tasks}))]
                )
            return AssistantMessage(content="done: " + messages[-1]["content"].splitlines()[0])
        i = int(m.group(1))
        results = [x for x in messages if x["role"] == "tool"]
        if len(results) < calls:
            return AssistantMessage(
                tool_calls=[ToolCall(f"functions.work:{len(results)}", "work", json.dumps({"i": i, "j": len(results)}))]
            )
        return AssistantMessage(content=f"sub-task {i} total {sum(int(x['content']) for x in results)}")

    return Scripted(turn, latency=latency)


@tool
async def work(i: int, j: int) -> str:
    """Do unit j of sub-task i."""
    return str(i * 1000 + j)


async def bare_swarm(backend: Scripted, agents: int, concurrency: int) -> int:
    """The peer: the same model and tool calls in a minimal loop (no trace, budgets, events, compaction)."""
    schemas = [work.schema()]
    pending = iter(range(agents))
    done = [0]

    async def one(i: int) -> None:
        messages: list[Message] = [
            {"role": "system", "content": "sub-agent"},
            {"role": "user", "content": f"sub-task {i}"},
        ]
        while True:
            reply = await backend.acomplete(messages, schemas)
            messages.append(reply.to_message())
            if not reply.tool_calls:
                return
            for call in reply.tool_calls:
                result = await work.acall(**call.parsed_arguments())
                messages.append(
                    {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": result.to_content()}
                )
                done[0] += 1

    async def worker() -> None:
        for i in pending:
            await one(i)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, agents))))
    return done[0]


def timed(fn: Any) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process, result)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t, time.process_time() - c, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=300)
    ap.add_argument("--calls", type=int, default=14)
    ap.add_argument("--concurrency", type=int, default=300)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--serial-sample", type=int, default=10, help="sub-agents run one by one, extrapolated to --agents")
    ap.add_argument("--memory", action="store_true", help="also measure peak traced memory of the instant swarm (slow)")
    args = ap.parse_args()
    n_calls = args.agents * args.calls
    noop_ns = timeit.timeit(lambda: None, number=200_000) / 200_000 * 1e9
    print(
        f"swarm: {args.agents} sub-agents x {args.calls} tool calls = {n_calls:,} calls, concurrency {args.concurrency}, cpus {os.cpu_count()}"
    )
    print(
        f"machine speed now: a Python no-op call takes {noop_ns:.0f} ns (about 50 ns on an idle modern core; more means a loaded machine)"
    )

    # 1. Overhead per tool call, instant model.
    t_bare, c_bare, calls = timed(
        lambda: asyncio.run(bare_swarm(make_backend(args.calls, args.agents, 0.0), args.agents, args.concurrency))
    )
    assert calls == n_calls
    t_agent, c_agent, res = timed(
        lambda: run_swarm(
            make_backend(args.calls, args.agents, 0.0),
            [f"sub-task {i}" for i in range(args.agents)],
            concurrency=args.concurrency,
            tools=[work],
        )
    )
    assert res.totals()["tool_calls"] == n_calls and all(r.ok for r in res.results)
    with tempfile.TemporaryDirectory() as d:
        t_traced, c_traced, res = timed(
            lambda: run_swarm(
                make_backend(args.calls, args.agents, 0.0),
                [f"sub-task {i}" for i in range(args.agents)],
                concurrency=args.concurrency,
                tools=[work],
                trace_dir=d,
            )
        )
        trace_bytes = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".jsonl"))
    assert res.totals()["tool_calls"] == n_calls
    print("\n1. instant model: wall and CPU time for all calls")
    for label, wall, cpu in (
        ("bare asyncio loop (peer) ", t_bare, c_bare),
        ("agent swarm, no trace   ", t_agent, c_agent),
        ("agent swarm, JSONL traces", t_traced, c_traced),
    ):
        print(
            f"   {label}  wall {wall:6.2f} s  cpu {cpu:6.2f} s = {cpu / n_calls * 1e6:5.0f} us per tool call (x{cpu / c_bare:.2f} of peer)"
        )
    print(
        f"   orchestration CPU per tool call over the peer: {(c_agent - c_bare) / n_calls * 1e6:.0f} us (no trace), {(c_traced - c_bare) / n_calls * 1e6:.0f} us (traced, {trace_bytes / 2**20:.1f} MiB)"
    )

    if args.memory:
        tracemalloc.start()
        run_swarm(
            make_backend(args.calls, args.agents, 0.0),
            [f"sub-task {i}" for i in range(args.agents)],
            concurrency=args.concurrency,
            tools=[work],
        )
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(
            f"   peak traced memory of the swarm: {peak / 2**20:.1f} MiB ({peak / args.agents / 1024:.0f} KiB per sub-agent)"
        )

    # 2. Simulated latency: orchestrator + swarm, wall against the critical path.
    print(f"\n2. model latency {args.latency * 1000:.0f} ms per call, orchestrator + swarm")
    for traced in (False, True):
        backend = make_backend(args.calls, args.agents, args.latency)
        spawn = swarm_tool(backend, tools=[work], concurrency=args.concurrency, max_tasks=max(300, args.agents))
        with tempfile.TemporaryDirectory() as d:
            orchestrator = Agent(
                backend, tools=[spawn], trace_path=os.path.join(d, "orchestrator.jsonl") if traced else None
            )
            t_swarm, c_swarm, result = timed(lambda: orchestrator.run("Split the work into sub-tasks."))
        assert result.ok, result.detail
        ideal = result.critical_steps * args.latency
        print(
            f"   {'JSONL traces' if traced else 'no trace    '}: critical path {result.critical_steps} dependent model calls = {ideal:.2f} s; "
            f"wall {t_swarm:.2f} s = x{t_swarm / ideal:.2f} of it (target <= 1.2); CPU {c_swarm:.2f} s, busy {c_swarm / t_swarm:.0%} of the wall"
        )
    print("   (wall time can only approach the critical path when the event loop's CPU time fits in it: on a shared")
    print("   or slow core the swarm waits for CPU, not for the model)")

    # 3. The same sub-tasks one by one.
    sample = min(args.serial_sample, args.agents)
    serial = Swarm(make_backend(args.calls, args.agents, args.latency), [work], concurrency=1)
    t_serial, _, _ = timed(lambda: serial.run([f"sub-task {i}" for i in range(sample)]))
    estimate = t_serial / sample * args.agents
    print(
        f"\n3. one by one: {sample} sub-agents took {t_serial:.2f} s -> {estimate:.0f} s for all {args.agents} (extrapolated)"
    )
    print(f"   swarm speed-up over one by one: x{estimate / t_swarm:.0f}")


if __name__ == "__main__":
    main()
