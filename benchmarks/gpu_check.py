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
5. prints decode tokens/s for CPU, GPU and split, and the ratios.

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

from kimidoc.model import generate
from kimidoc.placement import Machine, inventory_from_checkpoint, read_config, plan
from kimidoc.placement.runtime import load_placed, placement_report
from kimidoc.testing import tiny_text_config, write_checkpoint


def config() -> dict:
    return tiny_text_config(
        vocab_size=32000, hidden_size=1024, intermediate_size=2048, moe_intermediate_size=512, num_hidden_layers=4,
        first_k_dense_replace=1, n_routed_experts=64, num_experts_per_tok=8, num_attention_heads=8, num_key_value_heads=8,
        q_lora_rank=256, kv_lora_rank=128, qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64,
    )


def decode_rate(model: torch.nn.Module, prompt: list[int], tokens: int) -> tuple[list[int], float]:
    stamps: list[float] = []

    def stamp(_token: int) -> None:
        torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    out = generate(model, prompt, max_new_tokens=tokens, on_token=stamp)
    return out, (len(stamps) - 1) / (stamps[-1] - stamps[0])


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float().cpu(), b.float().cpu()
    return float((a - b).norm() / b.norm())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--gpu-share", type=float, default=0.5, help="share of the routed experts given to the GPU in the split run")
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
        split_plan = plan(cfg, specs, Machine(gpus=[dense + int(args.gpu_share * experts) + 2**22], cpu=big, gpu_reserve=0), context=context)
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
        print(f"greedy tokens: split == all-GPU at {agree}/{len(gpu_tokens)}; split == CPU at "
              f"{sum(a == b for a, b in zip(split_tokens, cpu_tokens))}/{len(cpu_tokens)}")
        if agree < 0.75 * len(gpu_tokens):
            failures.append(f"split and all-GPU greedy tokens agree at only {agree}/{len(gpu_tokens)}")
        print(f"decode tokens/s: CPU {cpu_rate:.1f}, all-GPU {gpu_rate:.1f}, split GPU/CPU {split_rate:.1f}")
        print(f"ratios: split / CPU {split_rate / cpu_rate:.2f}x, split / all-GPU {split_rate / gpu_rate:.2f}x")

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
            print(f"NF4 shrink on GPU: relative logits error {err:.2e}, decode {nf4_rate:.1f} tokens/s, "
                  f"GPU weights {nf4_bytes / 2**20:.0f} MiB vs {gpu_bytes / 2**20:.0f} MiB unshrunk")
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
