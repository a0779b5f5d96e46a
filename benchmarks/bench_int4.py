"""INT4 linear vs BF16 (and fp32) linear at M=1 for K2.6's expert shapes, against the bandwidth ceiling.

    python benchmarks/bench_int4.py [--threads N] [--repeat R] [--experts E]

Shapes are K2.6's routed-expert projections (out x in): gate or up [2048 x 7168] as stored,
gate+up [4096 x 7168] as ``Int4Experts`` runs them (fused at load, one call), and down
[7168 x 2048]. The INT4 weight is the checkpoint's packing converted once to the kernel layout
(``Int4Linear``); the peer is ``F.linear`` on the same dequantized weight in BF16 -- what
transformers runs for a BF16 checkpoint. GB/s counts the bytes each call must read (weights and,
for INT4, the scale/zero table). Also times the dequantize-then-matmul reference path, to show why
the conversion happens once at load time. ``%bw`` is GB/s over the machine's read bandwidth
(the ceiling a bandwidth-bound kernel can reach), measured by a probe timed round-robin with the
kernels (see ``_peer.BandwidthProbe``: on a shared host the ceiling moves from minute to minute).

Then one routed-expert layer at M=1 as decode runs it (``Int4Experts``, K2.6's expert shape,
``--experts`` in the bank, top-8; float32 activations as the model has them) against its kernel
calls alone, timed on the same 8 experts: the ratio is what the dispatch around the kernels costs.
PyTorch's kernel takes 8 experts x 2 calls (gate and up are fused into one [4096 x 7168] weight);
the VNNI kernel takes one call for the token (``int4_vnni.swiglu``: both products and the SwiGLU).

The VNNI kernel's rows: ``C call`` is the kernel called with its arguments made once: its row
products with no Python around them, as a decode step has them (``decode_ops.decode_ffn`` runs the
experts' SwiGLU kernel, made of the same row products, from C). ``Python entry`` adds
``int4_vnni.matmul``, prefill's entry, whose checks and allocation cost 25-75 us a call once a cold
read has flushed the caches.
"""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _peer import BandwidthProbe, interleaved_median_ms, median_ms  # noqa: E402

from kimidoc.model import hugepages, int4, int4_vnni  # noqa: E402
from kimidoc.model.loading import materialize  # noqa: E402
from kimidoc.model.moe import Int4Experts  # noqa: E402

# gate and up as the checkpoint stores them, fused as the model runs them (one call), and down.
SHAPES = {
    "gate/up [2048x7168]": (2048, 7168),
    "gate+up [4096x7168]": (4096, 7168),
    "down [7168x2048]": (7168, 2048),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument(
        "--cold-mib", type=int, default=256, help="MiB of weight copies each path cycles through (more than the LLC)"
    )
    ap.add_argument(
        "--experts", type=int, default=128, help="experts in the routed-expert layer's bank (K2.6: 384 per layer)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    probe = BandwidthProbe()
    print(f"threads {args.threads}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'shape':<22} {'path':<26} {'ms':>8} {'GB/s':>7} {'%bw':>5} {'vs bf16':>8} {'max|err|':>9}")
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
        # Each path cycles through copies of its weight totalling >= --cold-mib, so every call reads
        # from memory as a decode step does (one weight, read again and again, sits in the LLC). The
        # copies sit on huge pages, as a loaded model's weights do (kimidoc.model.hugepages).
        copies = lambda t: [
            hugepages.empty(t.shape, t.dtype).copy_(t)
            for _ in range(max(1, math.ceil(args.cold_mib * 2**20 / (t.numel() * t.element_size()))))
        ]  # noqa: E731
        bf16_ws, fp32_ws = copies(w_bf16), copies(w)
        int4_ws = list(zip(copies(layer.weight), copies(layer.scale_zeros)))

        def cycle(ws: list, f: Callable) -> Callable[[], None]:
            state = {"i": 0}

            def step() -> None:
                state["i"] = (state["i"] + 1) % len(ws)
                f(ws[state["i"]])

            return step

        kernel = lambda xs, ws: int4.int4_matmul(xs, ws[0], ws[1], layer.group_size)  # noqa: E731
        rows = [
            (
                "bf16 F.linear (peer)",
                cycle(bf16_ws, lambda wt: F.linear(x_bf16, wt)),
                w_bf16.numel() * 2,
                F.linear(x_bf16, w_bf16),
            ),
            ("fp32 F.linear", cycle(fp32_ws, lambda wt: F.linear(x, wt)), w.numel() * 4, F.linear(x, w)),
            ("int4 kernel (bf16 act.)", cycle(int4_ws, lambda ws: kernel(x_bf16, ws)), int4_bytes, layer(x_bf16)),
            (
                "int4, fp32 act. cast",
                cycle(int4_ws, lambda ws: kernel(x.to(torch.bfloat16), ws).float()),
                int4_bytes,
                layer(x),
            ),
        ]
        if int4_vnni.load() is not None:  # the checkpoint's bytes as they are, one expert of a bank
            u8, sc = packed.weight_packed.view(torch.uint8)[None], packed.weight_scale[None]
            vnni_ws = list(zip(copies(u8), copies(sc)))
            rows.append(
                (
                    "int4 VNNI, Python entry",
                    cycle(vnni_ws, lambda ws: int4_vnni.matmul(x, *ws, [0], shared_x=True)),
                    u8.numel() + sc.numel() * 2,
                    int4_vnni.matmul(x, u8, sc, [0], shared_x=True)[0],
                )
            )
            # The same C call with its arguments made once (see the module's docstring).
            fn, y, index = int4_vnni.load()["kimidoc_int4_matmul"], torch.empty(1, 1, out_f), (ctypes.c_int64 * 1)(0)
            ptrs = [(w.data_ptr(), s.data_ptr()) for w, s in vnni_ws]
            head, tail = (x.data_ptr(), 0, 1, in_f), (ctypes.addressof(index), 1, out_f, y.data_ptr(), args.threads)
            rows.append(
                (
                    "int4 VNNI, C call",
                    cycle(ptrs, lambda p: fn(*head, *p, *tail)),
                    u8.numel() + sc.numel() * 2,
                    int4_vnni.matmul(x, u8, sc, [0], shared_x=True)[0],
                )
            )
        rows += [
            (
                "dequantize + F.linear",
                lambda: F.linear(x, packed.dequantize()),
                packed.weight_packed.numel() * 4,
                reference,
            ),
        ]
        fast = interleaved_median_ms({"probe": probe} | {name: fn for name, fn, _, _ in rows[:-1]}, args.repeat)
        fast[rows[-1][0]] = median_ms(rows[-1][1], max(3, args.repeat // 10))
        bw = probe.gbs(fast["probe"])
        print(f"{label}: ceiling {bw:.1f} GB/s (256 MiB sum, same rounds)")
        peer_ms = fast[rows[0][0]]
        for name, _fn, nbytes, y in rows:
            ms = fast[name]
            err = (y.float() - reference).abs().max().item()
            gbs = nbytes / ms / 1e6
            print(
                f"{label:<22} {name:<26} {ms:>8.3f} {gbs:>7.1f} {100 * gbs / bw:>5.0f} {peer_ms / ms:>7.2f}x {err:>9.2e}"
            )
    expert_layer(args.experts, args.repeat, probe)


def expert_layer(
    n_experts: int, repeat: int, probe: BandwidthProbe, hidden: int = 7168, width: int = 2048, top_k: int = 8
) -> None:
    """Int4Experts.forward for one token vs the bare kernel calls for the same experts, for each
    layout: PyTorch's kernel (2 calls per expert) and, where it runs, the VNNI one (1 call in all)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, hidden, generator=g)
    chosen = torch.randperm(n_experts, generator=g)[:top_k]
    idx, weight = chosen[None], torch.softmax(torch.randn(1, top_k, generator=g), -1)
    xb, hb = x.to(torch.bfloat16), torch.randn(1, width, generator=g).to(torch.bfloat16)
    experts = chosen.tolist()
    fns: dict[str, Callable[[], object]] = {"probe": probe}
    sizes = {}
    for vnni in (False, True) if int4_vnni.load() is not None else (False,):
        with torch.device("meta"):  # then allocated as loading does (huge pages)
            bank = Int4Experts(n_experts, hidden, width, compute_dtype=torch.bfloat16, vnni=vnni)
        materialize(bank, torch.device("cpu"))
        names = bank._bank_names
        for name in names[0::2]:  # the weights: random bytes
            getattr(bank, name).copy_(torch.randint(0, 256, getattr(bank, name).shape, generator=g, dtype=torch.uint8))
        for name in names[1::2]:  # the scales (and zeros: 0)
            table = getattr(bank, name)
            table.copy_((torch.rand(table.shape, generator=g) * 0.02 + 0.001).to(table.dtype))
            if not vnni:
                table[..., 1] = 0
        if vnni:  # one call for a token's experts: both products and the SwiGLU between them
            kernels = lambda bank=bank: int4_vnni.swiglu(  # noqa: E731
                x, (bank.gate_up, bank.gate_up_scale), (bank.down, bank.down_scale), experts
            )
            label, calls = "VNNI", 1
        else:

            def kernels(bank=bank) -> None:
                for e in experts:
                    int4.int4_matmul(xb, bank.gate_up[e], bank.gate_up_scale_zeros[e], bank.group_size)
                    int4.int4_matmul(hb, bank.down[e], bank.down_scale_zeros[e], bank.group_size)

            label, calls = "PyTorch kernel", 2 * top_k
        fns[f"{label} layer"] = lambda bank=bank: bank(x, idx, weight)
        fns[f"{label}: {calls} kernel call{'s' if calls > 1 else ''} alone"] = kernels
        sizes[label] = top_k * sum(getattr(bank, n)[0].numel() * getattr(bank, n).element_size() for n in names)
    t = interleaved_median_ms(fns, max(5, repeat // 5))
    bw = probe.gbs(t["probe"])
    print(f"\nrouted-expert layer, {top_k} of {n_experts} experts [{hidden} x {width}], M=1 (ceiling {bw:.1f} GB/s):")
    for label, nbytes in sizes.items():
        print(f"  {label}: {nbytes / 1e6:.0f} MB read")
        names = [n for n in fns if n.startswith(label)]
        for name in names:
            gbs = nbytes / t[name] / 1e6
            print(f"    {name:<34} {t[name]:>8.3f} ms {gbs:>7.1f} GB/s {100 * gbs / bw:>4.0f}% bw")
        print(f"    layer / kernels: {t[names[0]] / t[names[1]]:.2f}x")
    if len(sizes) == 2:
        print(f"  VNNI layer vs PyTorch-kernel layer: {t['PyTorch kernel layer'] / t['VNNI layer']:.2f}x faster")


if __name__ == "__main__":
    main()
