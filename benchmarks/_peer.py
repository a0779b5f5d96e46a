"""Shared helpers for the model benchmarks: the K2.6-shaped small config, checkpoints written in
the official format, the transformers peer on the same weights, caches filled with identical
latents, timing and the machine's memory-bandwidth ceiling."""

from __future__ import annotations

import random
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from kimidoc.model import KimiForCausalLM, hugepages
from kimidoc.model.moe import MoE
from kimidoc.testing import tiny_text_config, write_checkpoint, write_dequantized_copy

# From cpu-baselines.md: hidden 1024, 4 layers (first dense), 64 experts top-8 + 1 shared, moe
# width 256, 16 heads, q_lora 384, kv_lora 128, nope 64 / rope 32 / v 64, vocab 32000.
# The dense layer's width is not given there; 2816 keeps K2.6's 18432/7168 ratio.
SMALL = dict(
    vocab_size=32000,
    hidden_size=1024,
    intermediate_size=2816,
    moe_intermediate_size=256,
    num_hidden_layers=4,
    first_k_dense_replace=1,
    n_routed_experts=64,
    num_experts_per_tok=8,
    n_shared_experts=1,
    num_attention_heads=16,
    q_lora_rank=384,
    kv_lora_rank=128,
    qk_nope_head_dim=64,
    qk_rope_head_dim=32,
    v_head_dim=64,
)


# A config where the bytes a decode step reads dominate its fixed costs: K2.6's proportions at
# hidden 2048 (moe width 512 = 2048/7168 x 1792 rounded), 8 layers (first dense), 128 experts
# top-8 + 1 shared: ~1.6 GB of INT4 experts (56 MB read per token by the experts alone).
LARGE = dict(
    vocab_size=32000,
    hidden_size=2048,
    intermediate_size=5632,
    moe_intermediate_size=512,
    num_hidden_layers=8,
    first_k_dense_replace=1,
    n_routed_experts=128,
    num_experts_per_tok=8,
    n_shared_experts=1,
    num_attention_heads=16,
    q_lora_rank=512,
    kv_lora_rank=256,
    qk_nope_head_dim=64,
    qk_rope_head_dim=32,
    v_head_dim=64,
)
CONFIGS = {"small": SMALL, "large": LARGE}


def checkpoints(
    root: Path, config: str = "small", dense: bool = True, dense_dtype: torch.dtype = torch.float32
) -> tuple[Path, Path | None]:
    """An INT4 checkpoint of ``CONFIGS[config]`` and (with ``dense``) its dequantized float copy
    (the same weights) in ``dense_dtype``."""
    root = root if config == "small" else root / config
    int4 = root / "int4"
    if not (int4 / "config.json").exists():
        write_checkpoint(
            int4, config=tiny_text_config(**CONFIGS[config]), int4=True, text_only=True, dtype=torch.float32, seed=0
        )
    if not dense:
        return int4, None
    copy = root / ("dense" if dense_dtype == torch.float32 else f"dense-{str(dense_dtype).removeprefix('torch.')}")
    if not (copy / "config.json").exists():
        write_dequantized_copy(int4, copy, dtype=dense_dtype)
    return int4, copy


def load_peer(path: Path, dtype: torch.dtype = torch.float32):
    import transformers

    transformers.logging.set_verbosity_error()
    config = transformers.DeepseekV3Config.from_pretrained(path)
    config.model_type = "deepseek_v3"  # K2's "kimi_k2" would skip transformers' expert-fusing loader
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.DeepseekV3ForCausalLM.from_pretrained(path, config=config, dtype=dtype).eval()


def synthetic_latents(model: KimiForCausalLM, length: int, seed: int = 0) -> list[torch.Tensor]:
    """Per layer ``[1, length, kv_lora_rank + rope]``: decode speed at a context does not depend on
    how the cache was filled, and filling it directly skips a long prefill for both sides."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, length, model.config.latent_dim, generator=g) for _ in range(model.config.num_hidden_layers)]


def kimidoc_cache(model: KimiForCausalLM, latents: list[torch.Tensor], extra: int = 64):
    cache = model.new_cache(capacity=latents[0].shape[1] + extra)
    for i, lat in enumerate(latents):
        cache.append(i, lat.to(cache.dtype))
    cache.advance(latents[0].shape[1])
    return cache


def peer_cache(peer, latents: list[torch.Tensor]):
    from transformers import DynamicCache

    cache = DynamicCache(config=peer.config)
    rank = peer.config.kv_lora_rank
    for i, lat in enumerate(latents):
        c_kv, k_pe = lat.to(peer.dtype).split([rank, lat.shape[-1] - rank], dim=-1)
        cache.update(c_kv[:, None].contiguous(), k_pe[:, None].contiguous(), i)
    return cache


def median_ms(fn: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def interleaved_median_ms(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median ms per function, timed round-robin so load changes on a shared machine hit all alike,
    in a new (seeded) order each round: what ran just before a call (a large read, a cold cache)
    changes its time, and a fixed order would favour some functions every round."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns.items())
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        shuffle(order)
        for name, fn in order:
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: 1e3 * statistics.median(ts) for name, ts in times.items()}


def bandwidth_gbs(gib: float = 1.0, repeat: int = 5) -> float:
    """Read bandwidth: ``t.sum()`` over a ``gib`` GiB float32 tensor (as cpu-baselines.md does)."""
    t = torch.ones(int(gib * 2**30) // 4)
    ms = median_ms(t.sum, repeat)
    return gib * 2**30 / (ms / 1e3) / 1e9


class BandwidthProbe:
    """``t.sum()`` over ``mib`` MiB (8x this machine's 32 MiB LLC), to time between the steps it
    is compared with: the memory bandwidth of a shared machine moves with its neighbours' load
    (here 45-80 GB/s from one minute to the next), so a ceiling measured once, earlier, is not
    the ceiling the timed steps met."""

    def __init__(self, mib: int = 256):
        # On huge pages where kimidoc keeps its weights there (kimidoc.model.hugepages): the sum
        # reads faster too, and the ceiling should be the best a plain read reaches here.
        self.t = hugepages.empty((mib * 2**20 // 4,), torch.float32).fill_(1)
        self.nbytes = self.t.numel() * 4

    def __call__(self) -> None:
        self.t.sum()

    def gbs(self, ms: float) -> float:
        return self.nbytes / (ms / 1e3) / 1e9


def bytes_per_decode_token(model: KimiForCausalLM, context: int) -> int:
    """Bytes one decode step must read: every weight except the embedding table (one row) and the
    unchosen experts, plus the latent cache."""
    total = 0
    seen = set()
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        key = id(t) if t.is_mkldnn else t.data_ptr()  # packed BF16 weights have no data pointer
        if key in seen or ".experts." in name:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    total -= model.model.embed_tokens.weight.numel() * model.model.embed_tokens.weight.element_size()
    total += model.config.hidden_size * model.model.embed_tokens.weight.element_size()
    for layer in model.model.layers:
        if isinstance(layer.mlp, MoE):
            bank = layer.mlp.experts
            per_expert = sum(t[0].numel() * t.element_size() for t in list(bank.parameters()) + list(bank.buffers()))
            total += model.config.num_experts_per_tok * per_expert
    total += model.config.num_hidden_layers * context * model.config.latent_dim * model.dtype.itemsize
    return total
