"""MLA: the latent cache's size, absorbed == expanded, chunked prefill, YaRN rope vs transformers."""

from __future__ import annotations

import pytest
import torch

from kimidoc.model import load
from kimidoc.model.config import config_from_dict
from kimidoc.model.rope import apply_interleaved, inverse_frequencies
from kimidoc.testing import tiny_text_config, write_checkpoint


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = write_checkpoint(tmp_path_factory.mktemp("mla") / "ckpt", int4=False, text_only=True, seed=3)
    return load(path, dtype=torch.float32)


def _ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 163584, (1, n), generator=torch.Generator().manual_seed(seed))


def test_latent_cache_holds_kv_lora_rank_plus_rope_dim_per_token_per_layer(model):
    c = model.config
    cache = model.new_cache()
    model(_ids(9), cache=cache)
    model(_ids(1, 1), cache=cache)
    assert cache.length == 10
    per_token = c.kv_lora_rank + c.qk_rope_head_dim
    for layer in range(c.num_hidden_layers):
        assert cache.layer(layer).shape == (1, 10, per_token)
    assert cache.nbytes() == c.num_hidden_layers * 10 * per_token * 4
    # And nothing else is cached: no per-head keys or values on any module.
    attn = model.model.layers[0].self_attn
    assert not any(b.numel() for b in attn.buffers())


def test_cached_latents_are_normalised_c_kv_and_rotated_k_pe(model):
    c = model.config
    cache = model.new_cache()
    ids = _ids(5)
    model(ids, cache=cache)
    attn = model.model.layers[0].self_attn
    x = model.model.layers[0].input_layernorm(model.embed(ids))
    c_kv, k_pe = attn.kv_a_proj_with_mqa(x).split([c.kv_lora_rank, c.qk_rope_head_dim], -1)
    cos, sin = model.model.rotary(torch.arange(5), torch.float32)
    expected = torch.cat([attn.kv_a_layernorm(c_kv), apply_interleaved(k_pe, cos, sin)], -1)
    assert torch.allclose(cache.layer(0), expected, atol=1e-6)


@pytest.mark.parametrize("new_tokens", [1, 6])
def test_absorbed_and_expanded_forms_agree(model, new_tokens):
    prompt, extra = _ids(11), _ids(new_tokens, 2)
    outs = {}
    for form in ("expanded", "absorbed"):
        cache = model.new_cache()
        model(prompt, cache=cache, attention_form="expanded")
        outs[form] = model(extra, cache=cache, attention_form=form)
    assert (outs["expanded"] - outs["absorbed"]).abs().max().item() < 1e-4


def test_whole_prompt_in_absorbed_form_matches_expanded(model):
    ids = _ids(13, 4)
    a = model(ids, attention_form="absorbed")
    b = model(ids, attention_form="expanded")
    assert (a - b).abs().max().item() < 1e-4


def test_chunked_prefill_equals_one_pass(model):
    ids = _ids(23, 5)
    whole = model(ids)
    cache = model.new_cache()
    parts = [model(ids[:, s : s + 7], cache=cache) for s in range(0, 23, 7)]
    assert (torch.cat(parts, 1) - whole).abs().max().item() < 1e-4


def test_cache_grows_beyond_its_initial_capacity(model):
    ids = _ids(12, 6)
    cache = model.new_cache(capacity=3)
    for s in range(0, 12, 4):
        model(ids[:, s : s + 4], cache=cache)
    assert cache.capacity >= 12
    fresh = model.new_cache()
    model(ids, cache=fresh)
    assert torch.allclose(cache.layer(1), fresh.layer(1), atol=1e-5)


def test_batch_of_two_matches_each_row_alone(model):
    ids = torch.cat([_ids(8, 8), _ids(8, 9)])
    both = model(ids)
    for row in range(2):
        assert (both[row] - model(ids[row : row + 1])[0]).abs().max().item() < 1e-4


def test_yarn_frequencies_and_scale_match_transformers():
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    for overrides in ({}, {"beta_fast": 1.0, "mscale_all_dim": 0.707, "factor": 40.0}):
        text = tiny_text_config(qk_rope_head_dim=64)
        text["rope_scaling"] = dict(text["rope_scaling"], **overrides)
        ours = config_from_dict(text).text
        hf = transformers.DeepseekV3Config(
            **{k: v for k, v in text.items() if k not in ("architectures", "model_type")}
        )
        inv_freq, attention_factor = ROPE_INIT_FUNCTIONS["yarn"](hf)
        assert torch.equal(inverse_frequencies(ours.rope, 64), inv_freq)
        assert ours.rope.cos_sin_scale() == pytest.approx(attention_factor)


def test_interleaved_rotation_matches_transformers():
    pytest.importorskip("transformers")
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import (
        apply_rotary_pos_emb_interleave,
    )

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 4, 5, 8, generator=g), torch.randn(1, 1, 5, 8, generator=g)
    freqs = torch.rand(5, 4, generator=g) * 3
    cos, sin = freqs.cos(), freqs.sin()
    hf_q, hf_k = apply_rotary_pos_emb_interleave(q, k, torch.cat([cos, cos], -1)[None], torch.cat([sin, sin], -1)[None])
    assert torch.allclose(apply_interleaved(q, cos, sin), hf_q)
    assert torch.allclose(apply_interleaved(k, cos, sin), hf_k)


@pytest.mark.parametrize("new_tokens", [1, 5])
def test_key_blocked_absorbed_attention_equals_expanded(model, monkeypatch, new_tokens):
    import kimidoc.model.mla as mla

    prompt, extra = _ids(19, 10), _ids(new_tokens, 11)
    cache = model.new_cache()
    model(prompt, cache=cache)
    expected = model(extra, cache=cache, attention_form="expanded")
    # A score budget of a few keys per block forces the online-softmax path over many blocks.
    monkeypatch.setattr(mla, "SCORE_BUDGET", model.config.num_attention_heads * new_tokens * 4 * 3)
    cache.truncate(19)
    got = model(extra, cache=cache, attention_form="absorbed")
    assert (got - expected).abs().max().item() < 1e-4


def test_long_prefix_prefill_falls_back_to_absorbed_form(model, monkeypatch):
    import kimidoc.model.mla as mla

    forms = []
    original = mla.MLAttention._absorbed
    monkeypatch.setattr(mla.MLAttention, "_absorbed", lambda self, *a: forms.append("absorbed") or original(self, *a))
    ids = _ids(16, 12)
    cache = model.new_cache()
    model(ids[:, :8], cache=cache)
    assert forms == []  # a short prefix prefills expanded
    expected = model(ids)[:, 8:]
    monkeypatch.setattr(mla, "EXPANDED_KV_BUDGET", 1)
    got = model(ids[:, 8:], cache=cache)
    assert forms and (got - expected).abs().max().item() < 1e-4


@pytest.mark.parametrize("onednn", [False, True])
def test_one_token_steps_across_padding_boundaries_match_expanded_attention(model, monkeypatch, onednn):
    """A decode step attends over the cache padded to a multiple of PAD tokens with the padding
    masked out: across a boundary, and over stale rows left by truncate, it equals expanded attention."""
    from kimidoc.model import cache as cache_mod
    from kimidoc.model import decode_step
    from kimidoc.model import linear as lin

    if onednn:
        if not lin._ONEDNN:
            pytest.skip("this torch has no oneDNN")
        monkeypatch.setattr(lin, "_ONEDNN_MIN_BYTES", 0)
    monkeypatch.setattr(cache_mod, "PAD", 16)
    ids = _ids(30, 11)
    fast, slow = model.new_cache(capacity=8), model.new_cache(capacity=8)
    assert fast.capacity % 16 == 0
    model(ids[:, :12], cache=fast)
    model(ids[:, :12], cache=slow)
    for position in range(12, 30):  # through 16 and 32
        token = int(ids[0, position])
        expected = model(torch.tensor([[token]]), cache=slow, attention_form="expanded")[0, -1]
        torch.testing.assert_close(decode_step(model, token, fast), expected, rtol=1e-4, atol=1e-4)
    # Rows 20..29 stay in the buffer after truncate: the next steps must not see them.
    fast.truncate(20)
    slow.truncate(20)
    token = int(ids[0, 3])
    expected = model(torch.tensor([[token]]), cache=slow, attention_form="expanded")[0, -1]
    torch.testing.assert_close(decode_step(model, token, fast), expected, rtol=1e-4, atol=1e-4)


def test_a_cache_grown_inside_a_decode_step_takes_appends_outside_inference_mode(model, monkeypatch):
    from kimidoc.model import cache as cache_mod
    from kimidoc.model import decode_step

    monkeypatch.setattr(cache_mod, "PAD", 4)
    cache = model.new_cache(capacity=4)
    model(_ids(3, 12), cache=cache)
    for token in (5, 6):
        decode_step(model, token, cache)  # grows the buffers inside inference mode
    assert cache.capacity > 4
    assert not torch.is_inference_mode_enabled()
    latent = torch.zeros(1, 1, cache.latent_dim)
    cache.append(0, latent)  # would raise on an inference tensor
    assert torch.equal(cache._buffers[0][:, cache.length], latent[:, 0])
