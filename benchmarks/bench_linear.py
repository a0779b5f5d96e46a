"""One-row BF16 products (decode's linears and BF16 experts): the row kernel vs PyTorch's paths.

    python benchmarks/bench_linear.py [--threads N] [--repeat R]

For each shape (out x in) a float32 activation row times a BF16 weight three ways: ``F.linear``
on the plain weight (the row rounded to bf16: what PyTorch runs), oneDNN on the weight packed in
its blocked layout (:func:`kimidoc.model.linear.pack_rows`: what kimidoc ran before the kernel),
and ``kimidoc.model.bf16_rows`` on the plain weight (what :func:`kimidoc.model.linear.linear` runs
now where the kernel is available). Each path cycles through copies of its weight totalling more
than the LLC, so each call reads from memory as a decode step does, and the three paths and a
bandwidth probe are timed round-robin (``_peer.interleaved_median_ms``). Printed: microseconds per
call, GB/s of weight read, the fraction of the probe's GB/s in the same rounds, and the speedup
of the kernel over each peer.

Shapes: K2.6's attention projections (q_a [1536x7168], q_b [12288x1536], kv_a [576x7168],
o_proj [7168x8192]), its shared expert's gate+up [4096x7168] and down [7168x2048], and the
benchmarks' large config's (hidden 2048: q_a [512x2048], q_b [1536x512], kv_a [288x2048], o_proj
[2048x1024], dense [5632x2048], head [32000x2048]).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _peer import BandwidthProbe, interleaved_median_ms  # noqa: E402

from kimidoc.model import bf16_rows  # noqa: E402
from kimidoc.model.linear import can_pack_rows, linear, pack_rows  # noqa: E402

SHAPES = {
    "K2.6 q_a": (1536, 7168),
    "K2.6 q_b": (12288, 1536),
    "K2.6 kv_a": (576, 7168),
    "K2.6 o_proj": (7168, 8192),
    "K2.6 shared gate+up": (4096, 7168),
    "K2.6 shared down": (7168, 2048),
    "large q_a": (512, 2048),
    "large q_b": (1536, 512),
    "large kv_a": (288, 2048),
    "large o_proj": (2048, 1024),
    "large dense gate": (5632, 2048),
    "large head": (32000, 2048),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--cold-mib", type=int, default=256, help="MiB of weight copies each path cycles through")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if bf16_rows.load() is None:
        sys.exit("the BF16 row kernel cannot run here (no AVX512 CPU or no C compiler)")
    probe = BandwidthProbe()
    print(f"threads {args.threads}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'shape':<20} {'[out x in]':>13} {'path':<16} {'us':>7} {'GB/s':>6} {'%bw':>4} {'kernel speedup':>15}")
    g = torch.Generator().manual_seed(0)
    for label, (out_f, in_f) in SHAPES.items():
        w = (torch.randn(out_f, in_f, generator=g) * in_f**-0.5).to(torch.bfloat16)
        x = torch.randn(1, in_f, generator=g)
        n = max(2, math.ceil(args.cold_mib * 2**20 / (w.numel() * 2)))
        plain = [w.clone() for _ in range(n)]
        state = {"plain": 0, "packed": 0, "kernel": 0}

        def step(name: str, ws: list, f: Callable[[torch.Tensor], object]) -> Callable[[], None]:
            def run() -> None:
                state[name] = (state[name] + 1) % len(ws)
                f(ws[state[name]])

            return run

        xb = x.to(torch.bfloat16)
        paths = {"F.linear": step("plain", plain, lambda wt: F.linear(xb, wt).float())}
        if can_pack_rows():
            packed = [pack_rows(t) for t in plain]
            paths["oneDNN packed"] = step("packed", packed, lambda wt: linear(x, wt))
        paths["row kernel"] = step("kernel", plain, lambda wt: bf16_rows.matmul(x, wt[None], [0], shared_x=True))
        ms = interleaved_median_ms({"probe": probe} | paths, args.repeat)
        ceiling = probe.gbs(ms["probe"])
        for name in paths:
            gbs = w.numel() * 2 / ms[name] / 1e6
            speedup = "" if name == "row kernel" else f"{ms[name] / ms['row kernel']:.2f}x"
            print(
                f"{label:<20} {f'[{out_f}x{in_f}]':>13} {name:<16} {ms[name] * 1e3:7.0f} {gbs:6.1f} "
                f"{100 * gbs / ceiling:3.0f}% {speedup:>15}"
            )
        del plain
    print(f"load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
