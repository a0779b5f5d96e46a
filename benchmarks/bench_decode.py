"""Decode speed of kimidoc vs transformers' DeepseekV3ForCausalLM on the same weights.

    python benchmarks/bench_decode.py [--contexts 1024 4096 16384] [--skip-peer-16k] [--threads N]
    python benchmarks/bench_decode.py --config large --contexts 1024   # bytes dominate (~1.6 GB INT4 experts)

One INT4 checkpoint (K2.6-shaped small config, see _peer.SMALL, or _peer.LARGE) is written once; transformers
(fp32) and kimidoc "dense" (fp32) load its dequantized copy, kimidoc "int4" loads the packed
experts (rest fp32, INT4 kernel in bf16), and "int4 + bf16" also stores the rest in BF16 (float32
activations; its logits differ from the peer's by BF16 rounding of the weights). Prints decode tokens/s after a 128-token prompt, decode
ms/token at longer contexts (caches filled with the same synthetic latents on both sides; the
first step's logits are compared to show they agree), and the fraction of the memory-bandwidth
ceiling each kimidoc decode step reaches for the bytes it must read (MB/token). kimidoc is timed
through :func:`kimidoc.model.decode_step`, the step ``generate`` runs. With ``--config large`` the
peer and the "dense" variant read a BF16 dequantized copy (``--peer-dtype``; fp32 would need ~13 GB
of RAM for the experts alone); ``--no-peer`` times kimidoc only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _peer import (  # noqa: E402
    CONFIGS,
    bandwidth_gbs,
    bytes_per_decode_token,
    checkpoints,
    kimidoc_cache,
    load_peer,
    median_ms,
    peer_cache,
    synthetic_latents,
)

from kimidoc.model import decode_step, load  # noqa: E402


def short_prompt_decode(ours, peer, steps: int, prompt: int = 128) -> tuple[float, float | None, float | None]:
    """ms/token for both after a real ``prompt``-token prefill, and the max logits difference."""
    ids = torch.randint(0, 32000, (1, prompt), generator=torch.Generator().manual_seed(0))
    cache = ours.new_cache(capacity=prompt + 4 * steps + 8)
    a = ours(ids, cache=cache)[:, -1]
    ours_ms = median_ms(lambda: decode_step(ours, 17, cache), steps)
    if peer is None:
        return ours_ms, None, None
    with torch.no_grad():
        out = peer(input_ids=ids, use_cache=True)
    diff = (a - out.logits[:, -1]).abs().max().item()
    hf_cache = out.cache
    token = torch.tensor([[17]])

    def peer_step():
        with torch.no_grad():
            peer(input_ids=token, cache=hf_cache, use_cache=True)

    return ours_ms, median_ms(peer_step, steps), diff


def context_decode(ours, peer, context: int, steps: int, run_peer: bool) -> tuple[float, float | None, float | None]:
    latents = synthetic_latents(ours, context)
    token = torch.tensor([[17]])
    cache = kimidoc_cache(ours, latents, extra=steps + 4)
    first = decode_step(ours, 17, cache)[None]
    ours_ms = median_ms(lambda: decode_step(ours, 17, cache), steps)
    if not run_peer:
        return ours_ms, None, None
    hf_cache = peer_cache(peer, latents)
    with torch.no_grad():
        diff = (first - peer(input_ids=token, cache=hf_cache, use_cache=True).logits[:, -1]).abs().max().item()

    def peer_step():
        with torch.no_grad():
            peer(input_ids=token, cache=hf_cache, use_cache=True)

    return ours_ms, median_ms(peer_step, max(3, steps // 3)), diff


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
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "kimidoc-bench")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    peer_dtype = getattr(torch, args.peer_dtype or ("float32" if args.config == "small" else "bfloat16"))
    int4_path, dense_path = checkpoints(args.workdir, args.config, dense=not args.no_peer, dense_dtype=peer_dtype)
    peer = None if dense_path is None else load_peer(dense_path, dtype=peer_dtype)
    models = {}
    if dense_path is not None:
        models[f"kimidoc dense {'fp32' if peer_dtype == torch.float32 else 'bf16'}"] = load(
            dense_path, dtype=peer_dtype, activation_dtype=torch.float32
        )
    models["kimidoc int4 experts"] = load(int4_path, dtype=torch.float32)
    # BF16 storage for the rest (fp32 activations): what a real K2.6 load uses.
    models["kimidoc int4 + bf16"] = load(int4_path, dtype=torch.bfloat16, activation_dtype=torch.float32)
    bw = bandwidth_gbs()
    print(
        f"config {args.config}; threads {args.threads}; memory-bandwidth ceiling (1 GiB sum): {bw:.1f} GB/s; "
        f"peer {'none' if peer is None else str(peer_dtype).removeprefix('torch.')}"
    )
    print(
        f"{'context':>8} {'model':<22} {'ms/token':>9} {'tok/s':>7} {'MB/tok':>7} {'peer ms':>8} {'speedup':>8} {'%bw':>5} {'max|dlogit|':>11}"
    )

    def row(context: int, name: str, ms: float, peer_ms: float | None, diff: float | None, ours) -> None:
        nbytes = bytes_per_decode_token(ours, context)
        pct = 100 * nbytes / (ms / 1e3) / (bw * 1e9)
        peer_s = f"{peer_ms:>8.2f} {peer_ms / ms:>7.1f}x" if peer_ms else f"{'-':>8} {'':>8}"
        diff_s = f"{diff:>11.2e}" if diff is not None else ""
        print(f"{context:>8} {name:<22} {ms:>9.2f} {1e3 / ms:>7.1f} {nbytes / 1e6:>7.1f} {peer_s} {pct:>5.0f} {diff_s}")

    for name, ours in models.items():
        row(128, name, *short_prompt_decode(ours, peer, args.steps), ours)
    for context in args.contexts:
        run_peer = peer is not None and not (args.skip_peer_16k and context >= 16384)
        for name, ours in models.items():
            row(context, name, *context_decode(ours, peer, context, args.steps, run_peer), ours)


if __name__ == "__main__":
    main()
