"""Sandboxed interpreter speed: cold start and warm round trips, side by side with the peers.

Peers doing the same work in the same run:
- smolagents' ``LocalPythonExecutor``: an in-process AST interpreter (no process, no isolation);
- a Jupyter kernel through ``jupyter_client`` (a separate process, no isolation).
kimidoc's ``PythonSandbox`` runs every cell in a separate process under network, mount and PID
namespaces, its own uid, rlimits and seccomp (see kimidoc/tools/sandbox/jail.py).

    pip install smolagents jupyter_client ipykernel
    python benchmarks/bench_sandbox.py [--warm 50] [--cold 3]
    python benchmarks/bench_sandbox.py --baseline /path/to/older/checkout [--rounds 5]

Prints milliseconds per operation and kimidoc's time as a ratio of each peer's (below 1 = faster).
``--baseline`` instead compares this checkout's sandbox with another checkout's: cold start and a
warm trivial call, each version in its own interpreter, alternating round by round so that both
see the same machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

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


# Runs in a child interpreter: kimidoc imported from the checkout in argv[1], measured with this file's runner.
_ONE_VERSION = """
import importlib.util, json, sys
root, bench, warm, cold_starts = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sys.path.insert(0, root)
import kimidoc.tools.sandbox
assert kimidoc.tools.sandbox.__file__.startswith(root), kimidoc.tools.sandbox.__file__
spec = importlib.util.spec_from_file_location("bench_sandbox", bench)
b = importlib.util.module_from_spec(spec)
spec.loader.exec_module(b)
runner = b.Kimidoc()
row = {"cold start (start + first cell)": b.cold(runner, cold_starts)}
runner.start()
setup, code = b.WORK["trivial"]
runner.run(setup)
row["warm: trivial"] = b.timed(lambda: runner.run(code), warm)
runner.stop()
print(json.dumps(row))
"""


def compare_versions(baseline: str, rounds: int, warm: int, cold_starts: int) -> None:
    """This checkout's sandbox against ``baseline``'s, alternating versions round by round."""
    here = str(Path(__file__).resolve().parents[1])
    versions = {"baseline " + baseline: os.path.realpath(baseline), "this checkout " + here: here}
    samples: dict[str, dict[str, list[float]]] = {v: {} for v in versions}
    print(f"load average (1, 5, 15 min) at the start: {os.getloadavg()}")
    for i in range(rounds):
        for label, root in versions.items() if i % 2 == 0 else reversed(versions.items()):
            out = subprocess.run(
                [sys.executable, "-c", _ONE_VERSION, root, str(Path(__file__).resolve()), str(warm), str(cold_starts)],
                capture_output=True,
                text=True,
                check=False,
                env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            )
            if out.returncode != 0:
                raise SystemExit(f"{label} failed:\n{out.stderr[-3000:]}")
            for op, ms in json.loads(out.stdout.strip().splitlines()[-1]).items():
                samples[label].setdefault(op, []).append(ms)
    print(
        f"load average (1, 5, 15 min) at the end: {os.getloadavg()}; {rounds} rounds, {warm} warm calls and {cold_starts} cold starts per round"
    )
    base, ours = list(samples)
    print(f"{'median milliseconds':34}{'baseline':>12}{'this':>12}{'ratio':>8}")
    for op in samples[base]:
        b, o = statistics.median(samples[base][op]), statistics.median(samples[ours][op])
        print(f"{op:34}{b:>12.3f}{o:>12.3f}{o / b:>8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--warm", type=int, default=50, help="calls per warm measurement")
    ap.add_argument("--cold", type=int, default=3, help="cold starts per runner")
    ap.add_argument(
        "--baseline", help="another kimidoc checkout: compare its sandbox with this one's instead of the peers"
    )
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per version (with --baseline)")
    args = ap.parse_args()
    if args.baseline:
        compare_versions(args.baseline, args.rounds, args.warm, args.cold)
        return

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
                row[f"warm: {label}"] = timed(
                    lambda code=code, runner=runner: runner.run(code),
                    args.warm if label != "compute" else max(3, args.warm // 10),
                )
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
    header = (
        f"{'operation':38}"
        + "".join(f"{n[:30]:>32}" for n in results)
        + "".join(f"{'ratio vs ' + n.split()[0]:>22}" for n in peers)
    )
    print("\nmedian milliseconds per operation (lower is better); ratio = kimidoc / peer")
    print(header)
    for op in ours:
        cells = "".join(f"{results[n][op]:>32.2f}" for n in results)
        ratios = "".join(f"{ours[op] / results[n][op]:>22.2f}" for n in peers)
        print(f"{op:38}{cells}{ratios}")


if __name__ == "__main__":
    main()
