"""decode_step's one-call layer halves (``decode_ops.decode_attention`` / ``decode_ffn``): the same
logits and cache as the model's forward of one token, and the modules' road wherever a half cannot
run (a hooked router, widths or layouts the kernels do not take)."""

from __future__ import annotations

import gc

import pytest
import torch

from kimidoc.model import decode, decode_ops, decode_step, int4_vnni, load
from kimidoc.testing import tiny_text_config, write_checkpoint

needs_kernels = pytest.mark.skipif(
    decode_ops.load() is None or int4_vnni.load() is None, reason="no AVX512-VNNI CPU or no C compiler here"
)

# The smallest widths every kernel of the halves takes: the INT4 kernel's 128 columns, q_lora_rank a
# multiple of 32, heads * v_head_dim a multiple of 32. Layer 0 dense, layers 1-2 MoE.
WIDTHS = dict(
    vocab_size=512,
    hidden_size=128,
    intermediate_size=256,
    moe_intermediate_size=128,
    num_hidden_layers=3,
    q_lora_rank=64,
    kv_lora_rank=32,
    qk_nope_head_dim=16,
    qk_rope_head_dim=8,
    v_head_dim=16,
    num_attention_heads=4,
    n_routed_experts=8,
    num_experts_per_tok=3,
)
PROMPT = [[5, 100, 7, 300, 42, 9, 250, 11]]


def _model(tmp_path, weights: torch.dtype, **overrides):
    config = tiny_text_config(**{**WIDTHS, **overrides})
    path = write_checkpoint(tmp_path / "ckpt", config=config, int4=True, text_only=True, seed=3)
    return load(path, dtype=weights, activation_dtype=torch.float32)


def _count(monkeypatch) -> list[str]:
    calls: list[str] = []
    for name in ("decode_attention", "decode_ffn"):
        real = getattr(decode_ops, name)
        monkeypatch.setattr(decode_ops, name, lambda *a, real=real, name=name: calls.append(name) or real(*a))
    return calls


def _against_forward(lm, cache_dtype: torch.dtype, tokens=(17, 400, 3, 88)) -> None:
    """decode_step on one cache against the model's forward of the same tokens on another."""
    a, b = lm.new_cache(dtype=cache_dtype), lm.new_cache(dtype=cache_dtype)
    lm(torch.tensor(PROMPT), cache=a)
    lm(torch.tensor(PROMPT), cache=b)
    for token in tokens:
        expected = lm(torch.tensor([[token]]), cache=a)[0, -1]
        got = decode_step(lm, token, b)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
        for layer in range(lm.config.num_hidden_layers):  # the same kernel wrote the same latent
            assert torch.equal(b.layer(layer), a.layer(layer))


@needs_kernels
@pytest.mark.parametrize("weights", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shared", [1, 0])
def test_one_call_halves_give_the_forward_logits_and_cache(tmp_path, monkeypatch, weights, cache_dtype, shared):
    lm = _model(tmp_path, weights, n_shared_experts=shared)
    calls = _count(monkeypatch)
    _against_forward(lm, cache_dtype)
    layers = lm.config.num_hidden_layers
    # every half of every layer and step ran as one call: the dense MLP, the MoE layers' experts
    assert calls.count("decode_attention") == calls.count("decode_ffn") == 4 * layers


@needs_kernels
def test_a_hooked_router_sends_its_layer_through_the_modules(tmp_path, monkeypatch):
    lm = _model(tmp_path, torch.bfloat16)
    seen: list[list[int]] = []
    handle = lm.model.layers[2].mlp.gate.register_forward_hook(lambda _m, _i, out: seen.append(out[0][0].tolist()))
    calls = _count(monkeypatch)
    _against_forward(lm, torch.float32)
    # the two prompts' forwards, the 4 tokens' forwards and decode's 4 steps each reached the hook
    assert len(seen) == 2 + 4 + 4 and all(len(s) == 3 for s in seen[-4:])
    assert calls.count("decode_ffn") == 4 * 2  # layers 0 and 1; layer 2 through the modules
    handle.remove()
    calls.clear()
    _against_forward(lm, torch.float32, tokens=(5,))
    assert calls.count("decode_ffn") == 3


@needs_kernels
@pytest.mark.parametrize(
    "overrides, fused",
    [  # (layers whose attention half is one call, layers whose feed-forward half is)
        (dict(q_lora_rank=None), (0, 3)),  # queries from one q_proj: no fused projection
        (dict(q_lora_rank=48), (0, 3)),  # not a multiple of 32
        (dict(n_group=2, topk_group=1), (3, 1)),  # group-limited routing: only the dense layer's MLP
        (dict(moe_intermediate_size=64), (3, 1)),  # experts not in the INT4 kernel's layout
    ],
)
def test_layers_the_kernels_cannot_take_run_through_the_modules(tmp_path, monkeypatch, overrides, fused):
    lm = _model(tmp_path, torch.float32, **overrides)
    calls = _count(monkeypatch)
    _against_forward(lm, torch.float32, tokens=(17, 400))
    assert (calls.count("decode_attention"), calls.count("decode_ffn")) == (2 * fused[0], 2 * fused[1])


@needs_kernels
def test_the_halves_are_gathered_once_per_cache_and_do_not_keep_it(tmp_path, monkeypatch):
    lm = _model(tmp_path, torch.float32)
    gathered = []
    real = decode._fused_attention
    monkeypatch.setattr(decode, "_fused_attention", lambda layer: gathered.append(layer) or real(layer))
    cache = lm.new_cache()
    lm(torch.tensor(PROMPT), cache=cache)
    for token in (1, 2, 3):
        decode_step(lm, token, cache)
    assert len(gathered) == 3  # once per layer, at the first step
    before = len(decode._plans)
    del cache
    gc.collect()
    assert len(decode._plans) == before - 1  # a finished sequence's plan goes with its cache


@needs_kernels
def test_the_halves_refuse_rows_they_cannot_read(tmp_path):
    lm = _model(tmp_path, torch.float32)
    cache = lm.new_cache()
    lm(torch.tensor(PROMPT), cache=cache)
    decode_step(lm, 1, cache)
    attention, ffn, _ = decode._fused(lm, cache).layers[1]
    cos, sin = lm.model.rotary.at(cache.length, torch.device("cpu"), torch.float32)
    keys = cache.claim(1, 1)[0]
    with pytest.raises(ValueError, match="row of 128"):
        decode_ops.decode_attention(attention, torch.zeros(64), cos, sin, keys)
    with pytest.raises(ValueError, match="row of 128"):
        decode_ops.decode_ffn(ffn, torch.zeros(128, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="latents"):
        decode_ops.decode_attention(attention, torch.zeros(128), cos, sin, keys[:, :32])
    with pytest.raises(ValueError, match="cos / sin"):
        decode_ops.decode_attention(attention, torch.zeros(128), cos[..., :2], sin, keys)


@needs_kernels
def test_a_bf16_activation_model_steps_in_float32_through_the_halves(tmp_path, monkeypatch):
    """A model with bf16 activations (as load_placed leaves a BF16 checkpoint, for prefill's speed)
    steps as the float32 forward of one token over the same bf16 cache."""
    lm = _model(tmp_path, torch.bfloat16)
    lm.activation_dtype = torch.bfloat16
    calls = _count(monkeypatch)
    a, b = lm.new_cache(), lm.new_cache()
    assert a.dtype == torch.bfloat16
    lm(torch.tensor(PROMPT), cache=a)
    lm(torch.tensor(PROMPT), cache=b)
    for token in (17, 400):
        lm.activation_dtype = torch.float32
        expected = lm(torch.tensor([[token]]), cache=a)[0, -1]
        lm.activation_dtype = torch.bfloat16
        got = decode_step(lm, token, b)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
        assert torch.equal(b.layer(2), a.layer(2))
    assert calls.count("decode_attention") == calls.count("decode_ffn") == 2 * lm.config.num_hidden_layers


@needs_kernels
@pytest.mark.parametrize("tier", ["ram", "disk"])
def test_a_placed_model_runs_the_halves_where_every_expert_is_in_one_bank(tmp_path, monkeypatch, tier):
    from kimidoc.placement import Machine
    from kimidoc.placement.runtime import load_placed

    config = tiny_text_config(**WIDTHS)
    path = write_checkpoint(tmp_path / "ckpt", config=config, int4=True, text_only=True, seed=3)
    whole = load(path, dtype=torch.bfloat16)
    # all in RAM, or RAM for everything but a few experts (the rest on the disk tier)
    size = sum(t.numel() * t.element_size() for t in whole.state_dict().values())
    machine = Machine(cpu=10**9) if tier == "ram" else Machine(cpu=size - 10**5, disk=10**9)
    placed = load_placed(path, machine, context=64)
    calls = _count(monkeypatch)
    tokens = {}
    for name, lm in (("whole", whole), ("placed", placed)):
        cache = lm.new_cache()
        logits = lm(torch.tensor(PROMPT), cache=cache)[0, -1]
        out = []
        for _ in range(4):
            out.append(int(logits.argmax()))
            logits = decode_step(lm, out[-1], cache)
        tokens[name] = out
    assert tokens["placed"] == tokens["whole"]
    layers = config["num_hidden_layers"]
    assert calls.count("decode_attention") == 2 * 4 * layers
    # the MoE layers' experts in one RAM bank run as one call; split with the disk tier, through the modules
    assert calls.count("decode_ffn") == 4 * layers + (4 * layers if tier == "ram" else 4)


@needs_kernels
def test_the_halves_follow_a_cache_that_grows_mid_decode(tmp_path):
    """The halves take the cache's rows anew at each step: a buffer reallocated as the cache passes
    its capacity is where the next latents go and what the attention reads."""
    lm = _model(tmp_path, torch.bfloat16)
    prompt = torch.arange(62)[None] * 7 % 500
    a, b = lm.new_cache(), lm.new_cache()
    lm(prompt, cache=a)
    lm(prompt, cache=b)
    capacity = b.capacity
    for token in (17, 400, 3, 88):  # positions 62..65: past the first 64
        expected = lm(torch.tensor([[token]]), cache=a)[0, -1]
        got = decode_step(lm, token, b)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    assert b.capacity > capacity and b.length == 66
    assert all(torch.equal(b.layer(i), a.layer(i)) for i in range(lm.config.num_hidden_layers))
