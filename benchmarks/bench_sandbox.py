"""Sandboxed interpreter speed: cold start and warm round trips, side by side with the peers.

Peers doing the same work in the same run:
- smolagents' ``LocalPythonExecutor``: an in-process AST interpreter (no process, no isolation);
- a Jupyter kernel through ``jupyter_client`` (a separate process, no isolation).
kimidoc's ``PythonSandbox`` runs every cell in a separate process under network, mount and PID
namespaces, its own uid, rlimits and seccomp (see kimidoc/tools/sandbox/jail.py).

    pip install smolagents jupyter_client ipykernel
    python benchmarks/bench_sandbox.py [--warm 50] [--cold 3]

Prints milliseconds per operation and kimidoc's time as a ratio of each peer's (below 1 = faster).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

WORK = {
    "trivial": ("x = 0", "x = x + 1\nx"),
    "compute": ("", "sum(i * i for i in range(200_000))"),
    "print 1000 lines": ("", "for i in range(1000):\n    print('line', i)"),
}


class Kimidoc:
    name = "kimidoc sandbox"

    def start(self) -> None:
        from kimidoc.tools.sandbox import PythonSandbox

        self.sb = PythonSandbox()
        self.sb.start()

    def run(self, code: str) -> str:
        r = self.sb.run(code)
        if r.error:
            raise RuntimeError(r.error)
        return (r.stdout or "") + (r.value or "")

    def stop(self) -> None:
        self.sb.close()


class Smolagents:
    name = "smolagents LocalPythonExecutor"

    def start(self) -> None:
        from smolagents.local_python_executor import LocalPythonExecutor

        self.ex = LocalPythonExecutor(additional_authorized_imports=[])
        self.ex.send_tools({})

    def run(self, code: str) -> str:
        out = self.ex(code)
        return out.logs + ("" if out.output is None else repr(out.output))

    def stop(self) -> None:
        del self.ex


class Jupyter:
    name = "Jupyter kernel (jupyter_client)"

    def start(self) -> None:
        from jupyter_client.manager import KernelManager

        self.km = KernelManager(kernel_name="python3", transport="ipc")
        self.km.start_kernel()
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)

    def run(self, code: str) -> str:
        out: list[str] = []

        def hook(msg: dict) -> None:
            content = msg["content"]
            if msg["msg_type"] == "stream":
                out.append(content["text"])
            elif msg["msg_type"] == "execute_result":
                out.append(content["data"].get("text/plain", ""))
            elif msg["msg_type"] == "error":
                raise RuntimeError(content["evalue"])

        reply = self.kc.execute_interactive(code, output_hook=hook, timeout=120)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(reply["content"])
        return "".join(out)

    def stop(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median milliseconds of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def cold(runner: object, repeat: int) -> float:
    def once() -> None:
        runner.start()  # type: ignore[attr-defined]
        runner.run("1")  # type: ignore[attr-defined]
        runner.stop()  # type: ignore[attr-defined]

    return timed(once, repeat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--warm", type=int, default=50, help="calls per warm measurement")
    ap.add_argument("--cold", type=int, default=3, help="cold starts per runner")
    args = ap.parse_args()

    runners = [Kimidoc(), Smolagents(), Jupyter()]
    results: dict[str, dict[str, float]] = {}
    answers: dict[str, dict[str, str]] = {}  # the same work must give the same answer everywhere
    for runner in runners:
        try:
            row = {"cold start (start + first cell)": cold(runner, args.cold)}
            runner.start()
            for label, (setup, code) in WORK.items():
                if setup:
                    runner.run(setup)
                answers.setdefault(label, {})[runner.name] = runner.run(code).strip()
                row[f"warm: {label}"] = timed(lambda code=code, runner=runner: runner.run(code), args.warm if label != "compute" else max(3, args.warm // 10))
            runner.stop()
            results[runner.name] = row
            print(f"{runner.name}: done")
        except ImportError as exc:
            print(f"{runner.name}: skipped ({exc}); pip install smolagents jupyter_client ipykernel")

    for label in ("compute", "print 1000 lines"):
        if len(set(answers.get(label, {}).values())) > 1:
            raise SystemExit(f"runners disagree on {label!r}: { {k: v[-40:] for k, v in answers[label].items()} }")
    ours = results.get(Kimidoc.name, {})
    peers = [n for n in results if n != Kimidoc.name]
    header = f"{'operation':38}" + "".join(f"{n[:30]:>32}" for n in results) + "".join(f"{'ratio vs ' + n.split()[0]:>22}" for n in peers)
    print("\nmedian milliseconds per operation (lower is better); ratio = kimidoc / peer")
    print(header)
    for op in ours:
        cells = "".join(f"{results[n][op]:>32.2f}" for n in results)
        ratios = "".join(f"{ours[op] / results[n][op]:>22.2f}" for n in peers)
        print(f"{op:38}{cells}{ratios}")


if __name__ == "__main__":
    main()
