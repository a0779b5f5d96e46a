"""GPU check for placed execution: parity and decode tokens/s with experts split between GPU and CPU.

Prepared for a machine with CUDA (it has not been run on one yet); without CUDA it prints why and
exits 0. One run, about a minute on one GPU:

1. writes a small K2.6-shaped INT4 checkpoint (hidden 1024, 4 layers, 64 experts top-8);
2. loads it three ways: all in RAM (CPU reference), all on the GPU, and split -- attention,
   routers, shared experts, embeddings, head and half of the routed experts on the GPU, the other
   half in RAM (the plan decides which);
3. checks parity: the GPU and split runs' logits against the CPU reference (bf16 kernels differ
   only by rounding) and the greedy tokens of split against all-on-GPU;
4. checks NF4 shrink on the GPU (bitsandbytes, if installed) stays close to the unshrunk logits;
5. prints decode tokens/s for CPU, GPU and split, the ratios, and the all-GPU run's fraction of
   the GPU's measured read bandwidth (bytes per token from the plan);
6. the CUDA INT4 kernel at M=1 on K2.6's expert shapes against the dequantize reference, with its
   GB/s and fraction of the measured bandwidth;
7. the checkpoint loaded for the detected machine (no budgets given, as ``kimidoc ask --model DIR``
   does): where the plan put it, and its greedy tokens against all-on-GPU.

    python3 benchmarks/gpu_check.py [--tokens 64] [--gpu-share 0.5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("KIMIDOC_PROGRESS", "0")

from kimidoc.model import generate, int4
from kimidoc.placement import Machine, inventory_from_checkpoint, plan, read_config
from kimidoc.placement.runtime import load_placed, placement_report
from kimidoc.testing import tiny_text_config, write_checkpoint


def config() -> dict:
    return tiny_text_config(
        vocab_size=32000,
        hidden_size=1024,
        intermediate_size=2048,
        moe_intermediate_size=512,
        num_hidden_layers=4,
        first_k_dense_replace=1,
        n_routed_experts=64,
        num_experts_per_tok=8,
        num_attention_heads=8,
        num_key_value_heads=8,
        q_lora_rank=256,
        kv_lora_rank=128,
        qk_nope_head_dim=64,
        qk_rope_head_dim=32,
        v_head_dim=64,
    )


def decode_rate(model: torch.nn.Module, prompt: list[int], tokens: int) -> tuple[list[int], float]:
    stamps: list[float] = []

    def stamp(_token: int) -> None:
        torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    out = generate(model, prompt, max_new_tokens=tokens, on_token=stamp)
    return out, (len(stamps) - 1) / (stamps[-1] - stamps[0])


def gpu_bandwidth_gbs(gib: float = 1.0, repeat: int = 10) -> float:
    """Read bandwidth of GPU 0: ``t.sum()`` over a ``gib`` GiB float32 tensor."""
    t = torch.ones(int(gib * 2**30) // 4, device="cuda")
    return gib * 2**30 / cuda_ms(t.sum, repeat) / 1e6


def cuda_ms(fn, repeat: int) -> float:
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - start) / repeat


def int4_kernel_check(bw: float, failures: list[str]) -> None:
    """The CUDA INT4 kernel at M=1 vs the dequantize reference, cycling weights past the L2."""
    g = torch.Generator().manual_seed(0)
    for label, (out_f, in_f) in {"gate/up [2048x7168]": (2048, 7168), "down [7168x2048]": (7168, 2048)}.items():
        q, scale = int4.quantize(torch.randn(out_f, in_f, generator=g) * in_f**-0.5)
        packed = int4.PackedInt4(int4.pack(q), scale, (out_f, in_f))
        layers = [int4.Int4Linear(packed, compute_dtype=torch.bfloat16, device="cuda") for _ in range(32)]
        x = torch.randn(1, in_f, generator=g)
        ref = x @ packed.dequantize().t()
        err = rel_err(layers[0](x.cuda().to(torch.bfloat16)), ref)
        xb = x.cuda().to(torch.bfloat16)
        nbytes = layers[0].weight.numel() * layers[0].weight.element_size() + layers[0].scale_zeros.numel() * 2
        ms = cuda_ms(lambda: [layer(xb) for layer in layers], 20) / len(layers)
        gbs = nbytes / ms / 1e6
        print(
            f"CUDA INT4 kernel {label}: relative error vs dequantize {err:.2e}; {ms * 1e3:.1f} us, {gbs:.0f} GB/s, {100 * gbs / bw:.0f}% of bandwidth"
        )
        if not err < 0.02:
            failures.append(f"CUDA INT4 kernel {label} differs from the dequantize reference by {err:.2e}")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float().cpu(), b.float().cpu()
    return float((a - b).norm() / b.norm())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument(
        "--gpu-share", type=float, default=0.5, help="share of the routed experts given to the GPU in the split run"
    )
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: CUDA is not available on this machine; nothing to check (run it where a GPU is visible).")
        return 0

    root = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    failures: list[str] = []
    try:
        path = write_checkpoint(root / "ckpt", config=config(), text_only=True, num_shards=4)
        cfg, specs = read_config(path), inventory_from_checkpoint(path)
        experts = sum(s.nbytes for s in specs if s.kind == "routed_expert")
        dense = sum(s.nbytes for s in specs) - experts
        context = 32 + args.tokens
        prompt = torch.randint(0, 32000, (32,), generator=torch.Generator().manual_seed(0)).tolist()
        x = torch.tensor([prompt])
        big = 64 * 2**30

        cpu_model = load_placed(path, Machine(cpu=big), context=context)
        ref = cpu_model(x)
        before = torch.cuda.memory_allocated()
        gpu_model = load_placed(path, Machine(gpus=[big], cpu=big, gpu_reserve=0), context=context)
        gpu_bytes = torch.cuda.memory_allocated() - before
        split_plan = plan(
            cfg,
            specs,
            Machine(gpus=[dense + int(args.gpu_share * experts) + 2**22], cpu=big, gpu_reserve=0),
            context=context,
        )
        split_model = load_placed(path, split_plan)
        print("split placement:", placement_report(split_model))

        for name, model, tol in (("gpu", gpu_model, 0.05), ("split", split_model, 0.05)):
            err = rel_err(model(x.cuda()), ref)
            print(f"logits vs CPU reference: {name} relative error {err:.2e} (tolerance {tol})")
            if not err < tol:
                failures.append(f"{name} logits differ from the CPU reference by {err:.2e}")

        cpu_tokens, cpu_rate = decode_rate(cpu_model, prompt, args.tokens)
        gpu_tokens, gpu_rate = decode_rate(gpu_model, prompt, args.tokens)
        split_tokens, split_rate = decode_rate(split_model, prompt, args.tokens)
        agree = sum(a == b for a, b in zip(split_tokens, gpu_tokens))
        print(
            f"greedy tokens: split == all-GPU at {agree}/{len(gpu_tokens)}; split == CPU at "
            f"{sum(a == b for a, b in zip(split_tokens, cpu_tokens))}/{len(cpu_tokens)}"
        )
        if agree < 0.75 * len(gpu_tokens):
            failures.append(f"split and all-GPU greedy tokens agree at only {agree}/{len(gpu_tokens)}")
        print(f"decode tokens/s: CPU {cpu_rate:.1f}, all-GPU {gpu_rate:.1f}, split GPU/CPU {split_rate:.1f}")
        print(f"ratios: split / CPU {split_rate / cpu_rate:.2f}x, split / all-GPU {split_rate / gpu_rate:.2f}x")
        bw = gpu_bandwidth_gbs()
        per_token = sum(gpu_model.plan.bytes_read_per_token().values())
        print(
            f"GPU read bandwidth {bw:.0f} GB/s; all-GPU decode reads {per_token / 1e6:.1f} MB/token: "
            f"{100 * per_token * gpu_rate / (bw * 1e9):.0f}% of bandwidth"
        )
        int4_kernel_check(bw, failures)

        from kimidoc.backends.local import load_local

        auto = load_local(path, context=context)  # the machine detected here, as `kimidoc ask --model DIR` plans it
        print(
            "detected machine:",
            auto.plan.machine.gpus,
            "GPU bytes,",
            auto.plan.machine.cpu,
            "RAM bytes; placement:",
            placement_report(auto),
        )
        auto_tokens, auto_rate = decode_rate(auto, prompt, args.tokens)
        same = sum(a == b for a, b in zip(auto_tokens, gpu_tokens))
        print(f"detected-machine run: {auto_rate:.1f} tokens/s, greedy tokens == all-GPU at {same}/{len(gpu_tokens)}")
        if same < 0.75 * len(gpu_tokens):
            failures.append(f"detected-machine tokens agree with all-GPU at only {same}/{len(gpu_tokens)}")
        del auto

        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            print("bitsandbytes not installed: NF4 shrink not checked (pip install kimidoc[bnb])")
        else:
            del gpu_model, split_model
            torch.cuda.empty_cache()
            before = torch.cuda.memory_allocated()
            nf4 = load_placed(path, Machine(gpus=[big], cpu=big, gpu_reserve=0), context=context, shrink="nf4")
            nf4_bytes = torch.cuda.memory_allocated() - before
            err = rel_err(nf4(x.cuda()), ref)
            _, nf4_rate = decode_rate(nf4, prompt, args.tokens)
            print(
                f"NF4 shrink on GPU: relative logits error {err:.2e}, decode {nf4_rate:.1f} tokens/s, "
                f"GPU weights {nf4_bytes / 2**20:.0f} MiB vs {gpu_bytes / 2**20:.0f} MiB unshrunk"
            )
            if not nf4_bytes < gpu_bytes:
                failures.append("NF4 shrink did not reduce GPU memory")
            if not err < 0.5:
                failures.append(f"NF4 logits differ by {err:.2e}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for f in failures:
        print("FAIL:", f)
    print("gpu_check:", "FAILED" if failures else "passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
