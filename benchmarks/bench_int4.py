"""INT4 linear vs BF16 (and fp32) linear at M=1 for K2.6's expert shapes, against the bandwidth ceiling.

    python benchmarks/bench_int4.py [--threads N] [--repeat R]

Shapes are K2.6's routed-expert projections: gate/up [2048 x 7168] and down [7168 x 2048]
(out x in). The INT4 weight is the checkpoint's packing converted once to the kernel layout
(``Int4Linear``); the peer is ``F.linear`` on the same dequantized weight in BF16 -- what
transformers runs for a BF16 checkpoint. GB/s counts the bytes each call must read (weights and,
for INT4, the scale/zero table). Also times the dequantize-then-matmul reference path, to show why
the conversion happens once at load time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _peer import bandwidth_gbs, interleaved_median_ms, median_ms  # noqa: E402

from kimidoc.model import int4  # noqa: E402

SHAPES = {"gate/up [2048x7168]": (2048, 7168), "down [7168x2048]": (7168, 2048)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bw = bandwidth_gbs()
    print(f"threads {args.threads}; memory-bandwidth ceiling (1 GiB sum): {bw:.1f} GB/s")
    print(f"{'shape':<22} {'path':<26} {'ms':>8} {'GB/s':>7} {'vs bf16':>8} {'max|err|':>9}")
    g = torch.Generator().manual_seed(0)
    for label, (out_f, in_f) in SHAPES.items():
        q, scale = int4.quantize(torch.randn(out_f, in_f, generator=g) * in_f**-0.5)
        packed = int4.PackedInt4(int4.pack(q), scale, (out_f, in_f))
        w = packed.dequantize()
        layer = int4.Int4Linear(packed, compute_dtype=torch.bfloat16)
        x = torch.randn(1, in_f, generator=g)
        w_bf16, x_bf16 = w.to(torch.bfloat16), x.to(torch.bfloat16)
        reference = x @ w.t()
        int4_bytes = layer.weight.numel() + layer.scale_zeros.numel() * layer.scale_zeros.element_size()
        rows = [
            ("bf16 F.linear (peer)", lambda: F.linear(x_bf16, w_bf16), w_bf16.numel() * 2, F.linear(x_bf16, w_bf16)),
            ("fp32 F.linear", lambda: F.linear(x, w), w.numel() * 4, F.linear(x, w)),
            ("int4 kernel (bf16 act.)", lambda: layer(x_bf16), int4_bytes, layer(x_bf16)),
            ("dequantize + F.linear", lambda: F.linear(x, packed.dequantize()), packed.weight_packed.numel() * 4, reference),
        ]
        fast = interleaved_median_ms({name: fn for name, fn, _, _ in rows[:-1]}, args.repeat)
        fast[rows[-1][0]] = median_ms(rows[-1][1], max(3, args.repeat // 10))
        peer_ms = fast[rows[0][0]]
        for name, fn, nbytes, y in rows:
            ms = fast[name]
            err = (y.float() - reference).abs().max().item()
            print(f"{label:<22} {name:<26} {ms:>8.3f} {nbytes / ms / 1e6:>7.1f} {peer_ms / ms:>7.2f}x {err:>9.2e}")


if __name__ == "__main__":
    main()
