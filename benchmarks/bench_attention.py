"""One token's absorbed attention over a bf16 latent cache: the decode kernel (bf16 and float32
products) against PyTorch's ops on the same cache, at K2.6's widths and the benchmarks' configs.

    python benchmarks/bench_attention.py [--contexts 1024 4096 16384] [--threads N]

At long contexts a decode step's time goes to this attention (K2.6: 64 heads x (512 + 64) latent
values, ~140 KFLOP per cached token and layer, against 1,152 bytes read), bound by its products
rather than by memory. Timed round-robin (``_peer.interleaved_median_ms``):

* ``kernel, bf16 products``: ``decode_ops.attend_one`` on a CPU with AVX512-BF16 (the queries and the
  softmax weights rounded to bf16, sums in float32);
* ``kernel, fp32 products``: the same kernel with ``KIMIDOC_ATTENTION_PRODUCTS=float32``'s path;
* ``torch bf16 matmuls``: ``softmax(q @ K^T) @ K[:, :R]`` with bf16 matmuls (oneDNN, which uses the
  same BF16 instructions here), scores and softmax in float32.

Printed: us per call, GFLOP/s (2 x heads x length x (D + R) per call), the ratio to PyTorch's ops,
and each path's max difference from a float64 reference.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _peer import interleaved_median_ms  # noqa: E402

from kimidoc.model import decode_ops  # noqa: E402

SHAPES = {  # heads, kv_lora_rank, qk_rope_head_dim
    "K2.6": (64, 512, 64),
    "large config": (16, 256, 32),
    "small config": (16, 128, 32),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contexts", type=int, nargs="*", default=[1024, 4096, 16384])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if decode_ops.load() is None:
        sys.exit("the decode kernels do not run on this machine (no AVX512 or no C compiler)")
    bf16 = decode_ops.bf16_products()
    print(
        f"threads {args.threads}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"bf16 products {'available' if bf16 else 'not available on this CPU'}"
    )
    print(f"{'shape':<13} {'context':>7} {'path':<24} {'us':>8} {'GFLOP/s':>8} {'vs torch':>9} {'max|err|':>9}")
    g = torch.Generator().manual_seed(0)
    for label, (heads, rank, rope) in SHAPES.items():
        for length in args.contexts:
            d = rank + rope
            q_lat, q_pe = torch.randn(heads, rank, generator=g), torch.randn(heads, rope, generator=g)
            keys = torch.randn(length, d, generator=g).to(torch.bfloat16)
            scale = d**-0.5
            q = torch.cat([q_lat, q_pe], -1) * scale
            k64 = keys.double()
            reference = torch.softmax(q.double() @ k64.T, -1) @ k64[:, :rank]

            def kernel(products: bool) -> torch.Tensor:
                decode_ops.bf16_products = lambda: products
                return decode_ops.attend_one(q_lat, q_pe, keys, scale)

            def torch_ops() -> torch.Tensor:
                scores = (q.to(torch.bfloat16) @ keys.T).float()
                return (torch.softmax(scores, -1).to(torch.bfloat16) @ keys[:, :rank]).float()

            paths = {"torch bf16 matmuls": torch_ops, "kernel, fp32 products": lambda: kernel(False)}
            if bf16:
                paths["kernel, bf16 products"] = lambda: kernel(True)
            outputs = {name: fn() for name, fn in paths.items()}
            ms = interleaved_median_ms(paths, args.rounds)
            flops = 2 * heads * length * (d + rank)
            for name in paths:
                err = (outputs[name].double() - reference).abs().max().item()
                print(
                    f"{label:<13} {length:>7} {name:<24} {1e3 * ms[name]:>8.0f} {flops / ms[name] / 1e6:>8.1f}"
                    f" {ms['torch bf16 matmuls'] / ms[name]:>8.2f}x {err:>9.2e}"
                )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
