"""Backends side by side with their peers, in one process; prints ratios.

1. OpenAICompatible vs bare httpx: 300 concurrent chat requests to one local server (the
   client's own overhead: parsing, retries bookkeeping, semaphores), sync threads and asyncio.
2. Scripted swarm: 300 concurrent sub-agent calls with 0.2 s simulated latency, native async
   vs the thread-pool path every other backend inherits.
3. Embedded engines on the same GGUF: llama.cpp vs transformers (decode tokens/s, load time).

    python3 benchmarks/bench_backends.py [--skip-embedded] [--tokens 48]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "backends"))

from backends_fault_server import FaultServer  # noqa: E402

from kimidoc.backends.base import BaseBackend  # noqa: E402
from kimidoc.backends.openai.client import OpenAICompatible  # noqa: E402
from kimidoc.backends.scripted import Scripted  # noqa: E402

N = 300


def user(i: int) -> list[dict]:
    return [{"role": "user", "content": f"question {i}"}]


def bench_http() -> None:
    with FaultServer() as server:
        body = lambda i: {"model": "m", "messages": user(i)}  # noqa: E731
        raw = httpx.Client(base_url=server.url, limits=httpx.Limits(max_connections=32))
        ours = OpenAICompatible(server.url, model="m", max_concurrency=32)
        for fn in (lambda i: raw.post("/chat/completions", json=body(i)).json(), lambda i: ours.complete(user(i))):
            fn(0)  # warm the pool
        timings = {}
        for label, fn in (
            (
                "httpx threads",
                lambda i: raw.post("/chat/completions", json=body(i)).json()["choices"][0]["message"]["content"],
            ),
            ("kimidoc threads", lambda i: ours.complete(user(i)).content),
        ):
            start = time.perf_counter()
            with ThreadPoolExecutor(64) as pool:
                out = list(pool.map(fn, range(N)))
            timings[label] = time.perf_counter() - start
            assert out == [f"echo: question {i}" for i in range(N)]

        async def run_async() -> None:
            araw = httpx.AsyncClient(base_url=server.url, limits=httpx.Limits(max_connections=32))
            for label, call in (
                ("httpx asyncio", lambda i: araw.post("/chat/completions", json=body(i))),
                ("kimidoc asyncio", lambda i: ours.acomplete(user(i))),
            ):
                start = time.perf_counter()
                await asyncio.gather(*(call(i) for i in range(N)))
                timings[label] = time.perf_counter() - start
            await araw.aclose()
            await ours.aclose()

        asyncio.run(run_async())
        raw.close()
        ours.close()
    print(f"[http] {N} concurrent requests, one local server")
    for kind in ("threads", "asyncio"):
        a, b = timings[f"httpx {kind}"], timings[f"kimidoc {kind}"]
        print(f"  {kind:8s} bare httpx {a:6.2f} s   OpenAICompatible {b:6.2f} s   ratio {b / a:5.2f}x")


def bench_swarm() -> None:
    fn = lambda messages, tools: "done"  # noqa: E731
    native = Scripted(fn, latency=0.2)

    class Threaded(Scripted):
        acomplete = BaseBackend.acomplete  # the inherited path: one worker thread per call

    threaded = Threaded(fn, latency=0.2)

    async def run(b: Scripted) -> float:
        start = time.perf_counter()
        await asyncio.gather(*(b.acomplete(user(i)) for i in range(N)))
        return time.perf_counter() - start

    a, b = asyncio.run(run(threaded)), asyncio.run(run(native))
    print(
        f"[swarm] {N} sub-agents x 0.2 s latency: thread-pool path {a:6.2f} s   native async {b:6.2f} s   speed-up {a / b:5.1f}x"
    )


def bench_embedded(tokens: int) -> None:
    from kimidoc.backends.embedded import Embedded
    from kimidoc.backends.embedded.engines import llama_cpp_available

    msgs = [{"role": "user", "content": "Write a short paragraph about rivers."}]
    rows = {}
    for engine in ("llama.cpp", "transformers"):
        if engine == "llama.cpp" and not llama_cpp_available():
            print("[embedded] llama-cpp-python not installed: llama.cpp column skipped")
            continue
        start = time.perf_counter()
        b = Embedded(engine=engine)
        b.count_tokens("warm")  # loads the engine
        load = time.perf_counter() - start
        start = time.perf_counter()
        msg = b.complete(msgs, temperature=0, max_tokens=tokens)
        took = time.perf_counter() - start
        rows[engine] = (load, msg.usage.completion_tokens / took, msg.usage.completion_tokens)
        print(
            f"[embedded] {engine:12s} load {load:6.1f} s   decode {rows[engine][1]:6.1f} tokens/s ({msg.usage.completion_tokens} tokens, prompt included in time)"
        )
    if len(rows) == 2:
        print(
            f"[embedded] llama.cpp vs transformers: load {rows['transformers'][0] / rows['llama.cpp'][0]:.1f}x faster, generation {rows['llama.cpp'][1] / rows['transformers'][1]:.1f}x faster"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-embedded", action="store_true")
    ap.add_argument("--tokens", type=int, default=48)
    args = ap.parse_args()
    bench_http()
    bench_swarm()
    if not args.skip_embedded:
        bench_embedded(args.tokens)


if __name__ == "__main__":
    main()
