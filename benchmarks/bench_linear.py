"""One-row products (decode's linears and float experts): the row kernels vs PyTorch's paths.

    python benchmarks/bench_linear.py [--threads N] [--repeat R]

For each shape (out x in) a float32 activation row times a BF16 weight three ways: ``F.linear``
on the plain weight (the row rounded to bf16: what PyTorch runs), oneDNN on the weight packed in
its blocked layout (:func:`kimidoc.model.linear.pack_rows`: what kimidoc ran before the kernel),
and ``kimidoc.model.rows`` on the plain weight (what :func:`kimidoc.model.linear.linear` runs now
where the kernels are available); then a float32 weight two ways: oneDNN
(:func:`kimidoc.model.linear.matmul_nt`, kimidoc's path before) and the row kernel. Each path cycles through copies of its weight totalling more
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

from kimidoc.model import rows  # noqa: E402
from kimidoc.model.linear import can_pack_rows, linear, matmul_nt, pack_rows  # noqa: E402

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
    if rows.load() is None:
        sys.exit("the row kernels cannot run here (no AVX512 CPU or no C compiler)")
    probe = BandwidthProbe()
    print(f"threads {args.threads}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"{'shape':<20} {'[out x in]':>13} {'weight':<9} {'path':<14} {'us':>7} {'GB/s':>6} {'%bw':>4} {'kernel speedup':>15}"
    )
    g = torch.Generator().manual_seed(0)
    for label, (out_f, in_f) in SHAPES.items():
        w = (torch.randn(out_f, in_f, generator=g) * in_f**-0.5).to(torch.bfloat16)
        x = torch.randn(1, in_f, generator=g)
        xb = x.to(torch.bfloat16)
        peers = {"F.linear": lambda wt: F.linear(xb, wt).float()}
        if can_pack_rows():
            peers["oneDNN packed"] = lambda wt: linear(x, wt)  # on copies packed before the timing
        compare(label, w, x, peers, probe, args)
        compare(label, w.float(), x, {"fp32 oneDNN": lambda wt: matmul_nt(x, wt)}, probe, args)
    print(f"load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def compare(
    label: str,
    w: torch.Tensor,
    x: torch.Tensor,
    peers: dict[str, Callable[[torch.Tensor], object]],
    probe: BandwidthProbe,
    args: argparse.Namespace,
) -> None:
    """Time the peers and the row kernel on copies of ``w`` (past the LLC), round-robin with the probe."""
    out_f, in_f = w.shape
    copies = [w.clone() for _ in range(max(2, math.ceil(args.cold_mib * 2**20 / (w.numel() * w.element_size()))))]
    paths = {}
    for name, f in {**peers, "row kernel": lambda wt: rows.row(x, wt)}.items():
        # oneDNN's packed layout is made once, before timing, as loading does
        ws = [pack_rows(t) for t in copies] if name == "oneDNN packed" else copies
        call = (lambda wt: linear(x, wt)) if name == "oneDNN packed" else f
        state = {"i": 0}

        def run(ws: list = ws, call: Callable = call, state: dict = state) -> None:
            state["i"] = (state["i"] + 1) % len(ws)
            call(ws[state["i"]])

        paths[name] = run
    ms = interleaved_median_ms({"probe": probe} | paths, args.repeat)
    ceiling = probe.gbs(ms["probe"])
    dtype = str(w.dtype).removeprefix("torch.")
    for name in paths:
        gbs = w.numel() * w.element_size() / ms[name] / 1e6
        speedup = "" if name == "row kernel" else f"{ms[name] / ms['row kernel']:.2f}x"
        print(
            f"{label:<20} {f'[{out_f}x{in_f}]':>13} {dtype:<9} {name:<14} {ms[name] * 1e3:7.0f} {gbs:6.1f} "
            f"{100 * gbs / ceiling:3.0f}% {speedup:>15}"
        )


if __name__ == "__main__":
    main()
