"""Decode speed of kimidoc vs transformers' DeepseekV3ForCausalLM on the same weights.

    python benchmarks/bench_decode.py [--contexts 1024 4096 16384] [--skip-peer-16k] [--threads N]
    python benchmarks/bench_decode.py --config large --contexts 1024   # bytes dominate (~1.6 GB INT4 experts)
    python benchmarks/bench_decode.py --overhead                       # per-step cost beyond the arithmetic

One INT4 checkpoint (K2.6-shaped small config, see _peer.SMALL, or _peer.LARGE) is written once; transformers
(fp32) and kimidoc "dense" (fp32) load its dequantized copy, kimidoc "int4" loads the packed
experts (rest fp32, INT4 kernel in bf16), and "int4 + bf16" also stores the rest in BF16, as
``load_placed`` loads K2.6 (bf16 activations in prefill, a bf16 latent cache, decode steps in
float32; its logits differ from the peer's by BF16 rounding of the weights and cache). With ``--config
large`` the peer and the "dense" variant read a BF16 dequantized copy (``--peer-dtype``; fp32 would
need ~13 GB of RAM for the experts alone); ``--no-peer`` times kimidoc only.

At each context (128: after a real 128-token prefill; longer: caches filled with the same
synthetic latents on both sides) every model's decode step, the peer's and a memory-bandwidth
probe (a 256 MiB sum) are timed round-robin, so that a change in the machine's load or in its
memory bandwidth (it moves with the neighbours on a shared host) hits them alike. Printed: ms per
token, the bytes a step must read (MB/tok), the speedup over the peer, the GB/s the step reached,
the probe's GB/s in the same rounds (the ceiling) and their ratio (%bw), and the first step's max
logit difference from the peer. kimidoc is timed through :func:`kimidoc.model.decode_step`, the
step ``generate`` runs.

``--overhead`` times ``decode_step`` on a model with the config's structure (layers, experts, top-k,
heads) but widths of 128 (the smallest every kernel takes) and a 512-token vocabulary, where the
arithmetic is negligible: what is left is the per-step cost of Python and op dispatch.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _peer import (  # noqa: E402
    CONFIGS,
    BandwidthProbe,
    bytes_per_decode_token,
    checkpoints,
    interleaved_median_ms,
    kimidoc_cache,
    load_peer,
    median_ms,
    peer_cache,
    synthetic_latents,
)

from kimidoc.model import decode_step, load  # noqa: E402
from kimidoc.testing import tiny_text_config, write_checkpoint  # noqa: E402

TOKEN = 17
PROMPT = 128


def prepare_ours(model, context: int, rounds: int) -> tuple[Callable[[], object], torch.Tensor]:
    """A decode step at ``context`` cached tokens, and the logits of the first one."""
    if context == PROMPT:  # a real prefill
        ids = torch.randint(0, model.config.vocab_size, (1, PROMPT), generator=torch.Generator().manual_seed(0))
        cache = model.new_cache(capacity=PROMPT + 2 * rounds + 8)
        model(ids, cache=cache)
    else:
        cache = kimidoc_cache(model, synthetic_latents(model, context), extra=2 * rounds + 8)
    first = decode_step(model, TOKEN, cache)
    return lambda: decode_step(model, TOKEN, cache), first


def prepare_peer(peer, model, context: int) -> tuple[Callable[[], object], torch.Tensor]:
    token = torch.tensor([[TOKEN]])
    with torch.no_grad():
        if context == PROMPT:
            ids = torch.randint(0, model.config.vocab_size, (1, PROMPT), generator=torch.Generator().manual_seed(0))
            cache = peer(input_ids=ids, use_cache=True).past_key_values
        else:
            cache = peer_cache(peer, synthetic_latents(model, context))
        first = peer(input_ids=token, past_key_values=cache, use_cache=True).logits[0, -1]

    def step() -> None:
        with torch.no_grad():
            peer(input_ids=token, past_key_values=cache, use_cache=True)

    return step, first


def overhead(config: str, threads: int, workdir: Path) -> None:
    # The smallest widths every decode kernel takes (the INT4 kernel's 128-column chunks), so that
    # the step runs the same kernels as at full size.
    widths = dict(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=128,
        moe_intermediate_size=128,
        q_lora_rank=64,
        kv_lora_rank=32,
        qk_nope_head_dim=16,
        qk_rope_head_dim=8,
        v_head_dim=16,
    )
    path = workdir / f"overhead-{config}-{widths['hidden_size']}"
    if not (path / "config.json").exists():
        cfg = tiny_text_config(**{**CONFIGS[config], **widths})
        write_checkpoint(path, config=cfg, int4=True, text_only=True, dtype=torch.float32, seed=0)
    c = CONFIGS[config]
    print(
        f"per-step overhead, {c['num_hidden_layers']} layers, top-{c['num_experts_per_tok']} of "
        f"{c['n_routed_experts']} experts, {c['num_attention_heads']} heads, widths 128; threads {threads}"
    )
    for name, kw in (
        ("int4 experts", dict(dtype=torch.float32)),
        ("int4 + bf16", dict(dtype=torch.bfloat16)),
    ):
        model = load(path, **kw)
        step, _ = prepare_ours(model, PROMPT, 200)
        ms = median_ms(step, 200, warmup=5)
        print(f"  {name:<14} {ms:6.2f} ms/step  ({1e3 * ms / c['num_hidden_layers']:.0f} us per layer)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="small")
    ap.add_argument("--contexts", type=int, nargs="*", default=[1024, 4096, 16384])
    ap.add_argument("--skip-peer-16k", action="store_true", help="do not run transformers at >= 16K context")
    ap.add_argument("--no-peer", action="store_true", help="time kimidoc only (no dequantized copy, no transformers)")
    ap.add_argument(
        "--peer-dtype",
        choices=["float32", "bfloat16"],
        help="dtype of the dequantized copy (default: float32 small, bfloat16 large)",
    )
    ap.add_argument("--rounds", type=int, default=16, help="timed steps per model and context")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--overhead", action="store_true", help="time the per-step overhead only (see above)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "kimidoc-bench")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.overhead:
        overhead(args.config, args.threads, args.workdir)
        return

    peer_dtype = getattr(torch, args.peer_dtype or ("float32" if args.config == "small" else "bfloat16"))
    int4_path, dense_path = checkpoints(args.workdir, args.config, dense=not args.no_peer, dense_dtype=peer_dtype)
    peer = None if dense_path is None else load_peer(dense_path, dtype=peer_dtype)
    models = {}
    if dense_path is not None:
        models[f"kimidoc dense {'fp32' if peer_dtype == torch.float32 else 'bf16'}"] = load(
            dense_path, dtype=peer_dtype, activation_dtype=torch.float32
        )
    models["kimidoc int4 experts"] = load(int4_path, dtype=torch.float32)
    # BF16 storage for the rest, as load_placed loads a K2.6 checkpoint: bf16 activations (prefill)
    # and latent cache; decode steps in float32 where its kernels run.
    models["kimidoc int4 + bf16"] = load(int4_path, dtype=torch.bfloat16)
    probe = BandwidthProbe()
    print(
        f"config {args.config}; threads {args.threads}; {args.rounds} rounds; "
        f"peer {'none' if peer is None else str(peer_dtype).removeprefix('torch.')}"
    )
    print(
        f"{'context':>8} {'model':<22} {'ms/token':>9} {'tok/s':>7} {'MB/tok':>7} {'peer ms':>8} {'speedup':>8}"
        f" {'GB/s':>6} {'ceiling':>7} {'%bw':>4} {'max|dlogit|':>11}"
    )
    for context in [PROMPT, *args.contexts]:
        run_peer = peer is not None and not (args.skip_peer_16k and context >= 16384)
        steps, firsts = {}, {}
        for name, model in models.items():
            steps[name], firsts[name] = prepare_ours(model, context, args.rounds)
        if run_peer:
            steps["peer"], firsts["peer"] = prepare_peer(peer, next(iter(models.values())), context)
        steps["probe"] = probe
        ms = interleaved_median_ms(steps, args.rounds)
        ceiling = probe.gbs(ms["probe"])
        for name, model in models.items():
            nbytes = bytes_per_decode_token(model, context)
            gbs = nbytes / (ms[name] / 1e3) / 1e9
            peer_s = f"{ms['peer']:>8.2f} {ms['peer'] / ms[name]:>7.1f}x" if run_peer else f"{'-':>8} {'':>8}"
            diff = f"{(firsts[name] - firsts['peer']).abs().max().item():>11.2e}" if run_peer else ""
            print(
                f"{context:>8} {name:<22} {ms[name]:>9.2f} {1e3 / ms[name]:>7.1f} {nbytes / 1e6:>7.1f} {peer_s}"
                f" {gbs:>6.1f} {ceiling:>7.1f} {100 * gbs / ceiling:>4.0f} {diff}"
            )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
