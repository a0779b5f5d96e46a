"""Decode's fused one-token ops (RMSNorm, rotation, routing, absorbed attention over the latent cache,
the attention's projections, the SwiGLU MLP) against float64 references, their place in the model, and PyTorch's
ops where they cannot run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import kimidoc
from kimidoc.model import decode_ops, decode_step, load, mla
from kimidoc.model.cache import LatentCache
from kimidoc.model.config import text_config_from_dict
from kimidoc.model.moe import Router, SwiGLU
from kimidoc.model.norm import RMSNorm
from kimidoc.model.rope import Rotary, apply_interleaved
from kimidoc.testing import tiny_text_config, write_checkpoint

needs_kernel = pytest.mark.skipif(decode_ops.load() is None, reason="no AVX512 CPU or no C compiler here")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _attention64(q_lat, q_pe, keys, scale):
    q = torch.cat([q_lat, q_pe], -1).double() * scale
    k = keys.double()
    return torch.softmax(q @ k.T, -1) @ k[:, : q_lat.shape[-1]]


def _bound(keys: torch.Tensor, d: int) -> float:
    """Float32 error of the kernel's result: each score is a sum of ``d`` products (rounding
    ``d * 2^-24`` of sum |q||k|, ~|score|), which moves the weights by as much relative to the
    output's magnitude (at most max |key|); the exponential and the sums add a few ulps more."""
    return 4 * d * 2.0**-24 * keys.abs().max().item()


needs_bf16 = pytest.mark.skipif(not decode_ops.bf16_products(), reason="no AVX512-BF16 CPU here")


@needs_kernel
@pytest.mark.parametrize(
    "heads, rank, rope, length, dtype, products",
    [
        (16, 256, 32, 1025, torch.float32, "float32"),  # a last block of 1 key; two threads' runs to merge
        (8, 512, 64, 300, torch.bfloat16, "float32"),  # K2.6's latent widths, bf16 cache
        (3, 32, 8, 37, torch.bfloat16, "float32"),  # rows of 40: a partial vector at each key's end
        (2, 16, 16, 1, torch.float32, "float32"),  # one cached token
        pytest.param(8, 512, 64, 300, torch.bfloat16, "bf16", marks=needs_bf16),
        pytest.param(3, 32, 8, 37, torch.bfloat16, "bf16", marks=needs_bf16),  # an odd last block: a key unpaired
        pytest.param(5, 48, 16, 16, torch.bfloat16, "bf16", marks=needs_bf16),  # R % 32 == 16; 5 heads
    ],
)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_attention_equals_the_float64_softmax_over_exactly_the_cached_keys(
    monkeypatch, heads, rank, rope, length, dtype, products, threads
):
    monkeypatch.setattr(decode_ops, "bf16_products", lambda: products == "bf16")
    g = _gen(0)
    q_lat, q_pe = torch.randn(heads, rank, generator=g), torch.randn(heads, rope, generator=g)
    # The cache's buffer goes on past `length` (spare capacity): NaN there must not be read.
    buffer = torch.full((length + 40, rank + rope), float("nan"), dtype=dtype)
    buffer[:length] = torch.randn(length, rank + rope, generator=g).to(dtype)
    keys = buffer[:length]
    scale = 2.5 * (rank + rope) ** -0.5  # peaked softmaxes as well as flat ones
    torch.set_num_threads(threads)
    assert decode_ops.attend_usable(q_lat, q_pe, keys)
    out = decode_ops.attend_one(q_lat, q_pe, keys, scale)
    assert out.shape == (heads, rank) and out.dtype == torch.float32
    bound = _bound(keys, rank + rope)
    if products == "bf16":
        # The queries rounded to bf16 as the kernel rounds them (the reference then has their exact
        # products); each softmax weight rounded to bf16 (relative 2^-8, and the sum is of the rounded
        # weights) moves the output by at most 2 * 2^-8 * max |key|.
        q = (torch.cat([q_lat, q_pe], -1) * scale).to(torch.bfloat16)
        q_lat, q_pe, scale = q[:, :rank], q[:, rank:], 1.0
        bound += 1.01 * 2**-7 * keys.abs().max().item()
    err = (out.double() - _attention64(q_lat, q_pe, keys, scale)).abs().max().item()
    assert err <= bound
    # The bound tells a correct result from one with a key left out of the softmax (where one key
    # weighs enough against bf16's rounding of the weights).
    if 1 < length <= (1000 if products == "float32" else 40):
        wrong = _attention64(q_lat, q_pe, keys[:-1], scale)
        assert (out.double() - wrong).abs().max().item() > bound


@needs_kernel
def test_attention_refuses_mismatched_widths_before_the_kernel_reads():
    q_lat, q_pe = torch.zeros(4, 32), torch.zeros(4, 16)
    with pytest.raises(ValueError, match="R \\+ P"):
        decode_ops.attend_one(q_lat, q_pe, torch.zeros(5, 64), 1.0)
    with pytest.raises(ValueError, match="multiple of 16"):
        decode_ops.attend_one(torch.zeros(4, 24), torch.zeros(4, 8), torch.zeros(5, 32), 1.0)
    assert not decode_ops.attend_usable(torch.zeros(4, 24), torch.zeros(4, 8), torch.zeros(5, 32))
    assert not decode_ops.attend_usable(q_lat, q_pe, torch.zeros(0, 48))
    assert not decode_ops.attend_usable(q_lat.requires_grad_(), q_pe, torch.zeros(5, 48))


@needs_kernel
@pytest.mark.parametrize("weight_dtype", [torch.float32, torch.bfloat16])
def test_norm_of_one_row_is_the_kernel_and_equals_the_float64_norm(monkeypatch, weight_dtype):
    g = _gen(1)
    norm = RMSNorm(2048, eps=1e-6)
    norm.weight.data = torch.randn(2048, generator=g).to(weight_dtype)
    x = torch.randn(1, 1, 2048, generator=g) * 3
    calls = []
    real = decode_ops.rms_norm
    monkeypatch.setattr(decode_ops, "rms_norm", lambda *a: calls.append(1) or real(*a))
    y = norm(x)
    assert calls and y.shape == x.shape and y.dtype == torch.float32
    x64 = x.double()
    exact = x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight.double()
    # 2048 squares summed in float32, then two roundings per value: a few ulps of |y|.
    assert ((y.double() - exact).abs() <= 8 * 2.0**-24 * exact.abs() + 1e-12).all()
    # Many rows (prefill) and bf16 rows keep PyTorch's ops.
    calls.clear()
    norm(torch.randn(64, 2048, generator=g))
    norm(x.to(torch.bfloat16))
    assert not calls


def _attention_module(heads: int = 4, rank: int = 64, **config):
    cfg = text_config_from_dict(tiny_text_config(num_attention_heads=heads, kv_lora_rank=rank, **config))
    attn = mla.MLAttention(cfg, 0)
    g = _gen(4)
    for p in attn.parameters():
        p.data = torch.randn(p.shape, generator=g) * 0.2
    return cfg, attn


@needs_kernel
@pytest.mark.parametrize("kv_b_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rank", [64, 512])  # the kv_b products' partial and full 256-column blocks
def test_attention_with_kv_b_products_equals_the_float64_absorbed_form(kv_b_dtype, rank):
    g = _gen(8)
    heads, nope, rope, length = 3, 32, 16, 70
    kv_b = (torch.randn(2 * heads * nope, rank, generator=g) * 0.1).to(kv_b_dtype)
    q_nope, q_pe = torch.randn(heads, nope, generator=g), torch.randn(heads, rope, generator=g)
    keys = torch.randn(length, rank + rope, generator=g)
    assert decode_ops.absorbed_usable(q_nope, q_pe, kv_b, keys)
    out = decode_ops.attend_absorbed(q_nope, q_pe, kv_b, keys, 0.2)
    w = kv_b.double().view(heads, 2 * nope, rank)
    q_lat = torch.einsum("hn,hnr->hr", q_nope.double(), w[:, :nope])
    o_lat = _attention64(q_lat, q_pe.double(), keys, 0.2)
    exact = torch.einsum("hr,hvr->hv", o_lat, w[:, nope:])
    # Float32 sums of at most nope + rank + rope products per stage: ~1e-6 of the output's scale here,
    # while a wrong kv_b row or a key left out moves it by 1e-2 or more.
    assert out.shape == (heads, nope)
    torch.testing.assert_close(out.double(), exact, rtol=1e-4, atol=1e-4 * exact.abs().max().item())
    with pytest.raises(ValueError, match="2 H N, R"):
        decode_ops.attend_absorbed(q_nope, q_pe, kv_b[:-1], keys, 0.2)
    assert not decode_ops.absorbed_usable(q_nope, q_pe, kv_b.half(), keys)


@needs_kernel
@pytest.mark.parametrize("kv_b_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("v_head_dim", [16, 24])  # 24 != qk_nope_head_dim: kv_b's products in PyTorch
def test_absorbed_attention_of_one_token_runs_a_kernel_and_equals_pytorch_ops(monkeypatch, kv_b_dtype, v_head_dim):
    cfg, attn = _attention_module(v_head_dim=v_head_dim)
    attn.kv_b_proj.weight.data = attn.kv_b_proj.weight.data.to(kv_b_dtype)
    g = _gen(5)
    q_nope = torch.randn(1, 1, 4, cfg.qk_nope_head_dim, generator=g)
    q_pe = torch.randn(1, 1, 4, cfg.qk_rope_head_dim, generator=g)
    latent = torch.randn(1, 150, cfg.kv_lora_rank + cfg.qk_rope_head_dim, generator=g)
    calls = []
    for name in ("attend_absorbed", "attend_one"):
        real = getattr(decode_ops, name)
        monkeypatch.setattr(decode_ops, name, lambda *a, name=name, real=real: calls.append(name) or real(*a))
    fast = attn._absorbed(q_nope, q_pe, latent)
    assert calls == ["attend_absorbed" if v_head_dim == cfg.qk_nope_head_dim else "attend_one"]
    monkeypatch.setattr(decode_ops, "load", lambda: None)
    reference = attn._absorbed(q_nope, q_pe, latent)  # scores, softmax, products in PyTorch
    assert len(calls) == 1 and fast.dtype == reference.dtype == torch.float32
    assert fast.shape == (1, 1, 4 * v_head_dim)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5 * reference.abs().max().item())


@needs_kernel
def test_decode_with_and_without_the_fused_ops_gives_the_same_tokens(tmp_path, monkeypatch):
    # q_lora_rank 64: widths the fused projections take (the default 48 is not a multiple of 32)
    config = tiny_text_config(num_hidden_layers=2, q_lora_rank=64)
    path = write_checkpoint(tmp_path / "ckpt", config=config, int4=True, text_only=True)
    model = load(path, dtype=torch.bfloat16, activation_dtype=torch.float32)
    calls = []
    for name in ("decode_attention", "decode_ffn"):
        real = getattr(decode_ops, name)
        monkeypatch.setattr(decode_ops, name, lambda *a, real=real, name=name: calls.append(name) or real(*a))
    prompt = [163587, 1000, 2000, 3000]

    def greedy() -> tuple[list[int], list[torch.Tensor]]:
        cache = model.new_cache()
        logits = model(torch.tensor([prompt]), cache=cache)[0, -1]
        tokens, steps = [], []
        for _ in range(6):
            tokens.append(int(logits.argmax()))
            logits = decode_step(model, tokens[-1], cache)
            steps.append(logits)
        return tokens, steps

    fused_tokens, fused = greedy()
    # an attention call per layer and step; the dense layer's MLP too (the MoE layer's experts, 32
    # wide, are not in the INT4 kernel's layout: that half runs through the modules)
    assert calls.count("decode_attention") == 6 * 2 and calls.count("decode_ffn") == 6
    monkeypatch.setattr(decode_ops, "load", lambda: None)
    plain_tokens, plain = greedy()
    assert fused_tokens == plain_tokens
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


def test_switched_off_the_row_kernels_leaves_pytorch_norms_and_attention(monkeypatch):
    decode_ops.load.cache_clear()
    try:
        monkeypatch.setenv("KIMIDOC_ROW_KERNEL", "aten")  # one switch for every decode kernel
        assert decode_ops.load() is None
        x = torch.randn(1, 1, 64)
        assert not decode_ops.norm_usable(x, torch.ones(64))
        assert not decode_ops.attend_usable(torch.zeros(4, 32), torch.zeros(4, 16), torch.zeros(5, 48))
        norm = RMSNorm(64)
        torch.testing.assert_close(norm(x), x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
    finally:
        monkeypatch.delenv("KIMIDOC_ROW_KERNEL")
        decode_ops.load.cache_clear()


@needs_kernel
def test_rotation_of_one_position_is_the_kernel_and_gives_pytorchs_bits(monkeypatch):
    g = _gen(6)
    q = torch.randn(1, 1, 5, 16 + 8, generator=g)  # per head [nope | rope]: rows 24 values apart
    q_pe = q.split([16, 8], dim=-1)[1]
    k_pe = torch.randn(1, 1, 8, generator=g)
    cos, sin = torch.randn(1, 4, generator=g), torch.randn(1, 4, generator=g)
    calls = []
    real = decode_ops.rope
    monkeypatch.setattr(decode_ops, "rope", lambda *a: calls.append(1) or real(*a))
    fast_q, fast_k = apply_interleaved(q_pe, cos[:, None, :], sin[:, None, :]), apply_interleaved(k_pe, cos, sin)
    assert len(calls) == 2
    monkeypatch.setattr(decode_ops, "load", lambda: None)
    assert torch.equal(fast_q, apply_interleaved(q_pe, cos[:, None, :], sin[:, None, :]))
    assert torch.equal(fast_k, apply_interleaved(k_pe, cos, sin))
    # Several positions (prefill) keep PyTorch's ops.
    monkeypatch.undo()
    calls.clear()
    monkeypatch.setattr(decode_ops, "rope", lambda *a: calls.append(1) or real(*a))
    apply_interleaved(torch.randn(1, 3, 8, generator=g), torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g))
    assert not calls


@needs_kernel
@pytest.mark.parametrize("norm", [True, False])
def test_routing_of_one_token_is_the_kernel_and_chooses_as_pytorch(monkeypatch, norm):
    cfg = text_config_from_dict(
        tiny_text_config(n_routed_experts=384, num_experts_per_tok=8, norm_topk_prob=norm, routed_scaling_factor=2.5)
    )
    router = Router(cfg)
    g = _gen(7)
    router.weight.data = torch.randn(384, cfg.hidden_size, generator=g)
    router.e_score_correction_bias.copy_(torch.randn(384, generator=g) * 0.5)
    calls = []
    real = decode_ops.route
    monkeypatch.setattr(decode_ops, "route", lambda *a: calls.append(1) or real(*a))
    xs = [torch.randn(1, cfg.hidden_size, generator=g) for _ in range(20)]
    fast = [router(x) for x in xs]
    assert len(calls) == len(xs)
    monkeypatch.setattr(decode_ops, "load", lambda: None)
    for x, (idx, weight) in zip(xs, fast):
        ref_idx, ref_weight = router(x)
        assert idx.shape == (1, 8) and idx.dtype == torch.int64 and weight.dtype == torch.float32
        # The same experts (in the kernel's order: best first), each with its weight to a few ulps.
        order = [ref_idx[0].tolist().index(e) for e in idx[0].tolist()]
        torch.testing.assert_close(weight[0], ref_weight[0, order], rtol=4 * 2.0**-24, atol=0)
        choice = (router.weight @ x[0]).sigmoid() + router.e_score_correction_bias
        assert (choice[idx[0]].diff() <= 0).all()


@needs_kernel
def test_routing_breaks_ties_to_the_lower_index_and_ranks_nan_first():
    x, w = torch.ones(1, 32), torch.zeros(6, 32)  # every logit 0
    idx, weight = decode_ops.route(x, w, torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 0.0]), 3, True, 1.0)
    assert idx.tolist() == [[1, 3, 0]]
    torch.testing.assert_close(weight, torch.full((1, 3), 1 / 3))
    w[4, 0] = float("nan")  # a NaN logit, as torch.topk ranks it: above every number
    idx, weight = decode_ops.route(x, w, torch.zeros(6), 2, False, 1.0)
    assert idx.tolist() == [[4, 0]] and weight[0, 0].isnan()


@needs_kernel
def test_attention_is_whole_when_openmp_gives_fewer_threads_than_asked():
    # OMP_THREAD_LIMIT (or a nested call) can shrink the team below the parts the keys were split
    # into; every part must still be computed and merged.
    script = textwrap.dedent(
        """
        import torch
        from kimidoc.model import decode_ops
        torch.set_num_threads(2)
        g = torch.Generator().manual_seed(0)
        q_lat, q_pe, keys = (torch.randn(*s, generator=g) for s in ((4, 32), (4, 16), (500, 48)))
        out = decode_ops.attend_one(q_lat, q_pe, keys, 0.3)
        q = torch.cat([q_lat, q_pe], -1).double() * 0.3
        exact = torch.softmax(q @ keys.double().T, -1) @ keys.double()[:, :32]
        print((out.double() - exact).abs().max().item())
        """
    )
    root = str(Path(kimidoc.__file__).resolve().parent.parent)
    env = dict(
        os.environ, OMP_THREAD_LIMIT="1", PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False)
    assert run.returncode == 0, run.stderr
    assert float(run.stdout.split()[-1]) <= _bound(torch.ones(1), 48)


def _projection64(attn: mla.MLAttention, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """q_nope, rotated q_pe and the latent [c_kv, k_pe] of one token, in float64 from the formulas."""

    def rms(v, w, eps):
        return v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps) * w.double()

    def rotate(v):  # DeepSeek's interleaved layout: pairs (even, odd) -> [even', odd'] halves
        c, s = cos.double().flatten(), sin.double().flatten()
        even, odd = v[..., 0::2], v[..., 1::2]
        return torch.cat([even * c - odd * s, odd * c + even * s], -1)

    x = x.double().flatten()
    qa = attn.q_a_proj.weight.double() @ x
    q = attn.q_b_proj.weight.double() @ rms(qa, attn.q_a_layernorm.weight, attn.q_a_layernorm.eps)
    q = q.view(attn.num_heads, -1)
    kva = attn.kv_a_proj_with_mqa.weight.double() @ x
    rank = attn.kv_lora_rank
    latent = torch.cat([rms(kva[:rank], attn.kv_a_layernorm.weight, attn.kv_a_layernorm.eps), rotate(kva[rank:])])
    return q[:, : attn.nope_dim], rotate(q[:, attn.nope_dim :]), latent


@needs_kernel
@pytest.mark.parametrize("weight_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
def test_projection_of_one_token_is_one_call_with_the_separate_ops_bits(monkeypatch, weight_dtype, cache_dtype):
    cfg, attn = _attention_module(hidden_size=96, q_lora_rank=64, qk_rope_head_dim=16)
    for p in attn.parameters():
        p.data = p.data.to(weight_dtype)
    for norm in (attn.q_a_layernorm, attn.kv_a_layernorm):
        norm.weight.data = (1 + 0.3 * torch.randn(norm.weight.shape, generator=_gen(6))).to(weight_dtype)
    x = torch.randn(1, 1, 96, generator=_gen(7))
    cos, sin = Rotary(cfg.rope, cfg.qk_rope_head_dim).at(5, torch.device("cpu"), torch.float32)

    def run(fused: bool):
        cache = LatentCache(1, cfg.latent_dim, capacity=5, dtype=cache_dtype)  # full: the new row grows it
        earlier = torch.randn(1, 5, cfg.latent_dim, generator=_gen(9)).to(cache_dtype)
        cache.append(0, earlier)
        cache.advance(5)
        monkeypatch.setattr(decode_ops, "project_usable", lambda *a: fused and real_usable(*a))
        q_nope, q_pe, latent = attn.project(x, cos, sin, cache)
        assert torch.equal(cache.layer(0), earlier)  # what was cached stays as it was
        return q_nope, q_pe, latent, cache._buffers[0][0, 5]

    real_usable, calls = decode_ops.project_usable, []
    real_project = decode_ops.project
    monkeypatch.setattr(decode_ops, "project", lambda *a: calls.append(1) or real_project(*a))
    fused = run(True)
    assert calls == [1]
    plain = run(False)  # the separate kernels and PyTorch ops
    assert calls == [1]
    q_nope, q_pe, latent, row = fused
    assert q_nope.shape == (1, 1, 4, cfg.qk_nope_head_dim) and q_pe.shape == (1, 1, 4, 16)
    assert latent.shape == (1, 6, cfg.latent_dim) and latent.dtype == cache_dtype  # the cache's rows
    # The same products, norms and rotations as the separate kernels: the same bits.
    for a, b in zip(fused, plain):
        assert torch.equal(a.reshape(b.shape), b)
    assert torch.equal(row, latent[0, 5].to(cache_dtype))
    exact = _projection64(attn, x, cos, sin)
    for got, want in zip((q_nope[0, 0], q_pe[0, 0], latent[0, 5]), exact):
        bound = (1e-2 if cache_dtype == torch.bfloat16 and want is exact[2] else 1e-5) * want.abs().max().item()
        torch.testing.assert_close(got.double(), want, rtol=0, atol=bound)


@needs_kernel
@pytest.mark.parametrize("weight_dtype", [torch.float32, torch.bfloat16])
def test_mlp_of_one_row_is_one_call_and_equals_the_float64_mlp(monkeypatch, weight_dtype):
    mlp = SwiGLU(96, 64)
    g = _gen(10)
    for p in mlp.parameters():
        p.data = (torch.randn(p.shape, generator=g) * 0.3).to(weight_dtype)
    x = torch.randn(1, 1, 96, generator=g) * 4  # gates far into both of silu's tails
    calls = []
    real = decode_ops.swiglu_mlp
    monkeypatch.setattr(decode_ops, "swiglu_mlp", lambda *a: calls.append(1) or real(*a))
    fast = mlp(x)
    assert calls == [1] and fast.shape == x.shape and fast.dtype == torch.float32
    w = {n: getattr(mlp, n).weight.double() for n in ("gate_proj", "up_proj", "down_proj")}
    x64 = x.double().flatten()
    gate, up = w["gate_proj"] @ x64, w["up_proj"] @ x64
    exact = w["down_proj"] @ (torch.nn.functional.silu(gate) * up)
    # float32 sums of 96 and 64 products, and silu within a few ulps: ~1e-6 of the terms' scale
    scale = w["down_proj"].abs() @ (gate.abs() * up.abs())
    assert ((fast.flatten().double() - exact).abs() <= 1e-5 * scale + 1e-6).all()
    monkeypatch.setattr(decode_ops, "mlp_usable", lambda *a: False)
    plain = mlp(x)  # the separate linears and PyTorch's silu
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5 * plain.abs().max().item())
    assert len(calls) == 1
    # several rows (prefill) keep the separate products
    monkeypatch.undo()
    monkeypatch.setattr(decode_ops, "swiglu_mlp", lambda *a: calls.append(1) or real(*a))
    mlp(torch.randn(3, 96))
    assert len(calls) == 1


def test_attention_products_switch_to_float32_by_environment(monkeypatch):
    decode_ops.bf16_products.cache_clear()
    try:
        monkeypatch.setenv("KIMIDOC_ATTENTION_PRODUCTS", "float32")
        assert not decode_ops.bf16_products()
        assert decode_ops._keys(torch.zeros(2, 2, dtype=torch.bfloat16)) == 1  # bf16 keys, float32 products
        assert decode_ops._keys(torch.zeros(2, 2)) == 0
        with pytest.raises(ValueError, match="float16"):
            decode_ops._keys(torch.zeros(2, 2, dtype=torch.float16))
    finally:
        decode_ops.bf16_products.cache_clear()
