"""The generation loop: sampling controls, stops, streaming, prefix reuse, embeddings hooks."""

from __future__ import annotations

import pytest
import torch

from kimidoc.model import generate, load, sample
from kimidoc.testing import tiny_text_config, write_checkpoint

IM_END = 163586


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = write_checkpoint(tmp_path_factory.mktemp("gen") / "ckpt", int4=True, text_only=False, seed=4)
    return load(path, dtype=torch.float32)


PROMPT = [163587, 1000, 2000, 3000, 163601, 4000, 5000]


def _greedy_by_hand(model, ids, n):
    """Reference: full forward over the growing sequence, no cache."""
    seq = list(ids)
    for _ in range(n):
        seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(ids) :]


def test_greedy_equals_uncached_argmax(model):
    assert generate(model, PROMPT, max_new_tokens=6) == _greedy_by_hand(model, PROMPT, 6)


def test_chunked_prefill_gives_the_same_tokens(model):
    long_prompt = PROMPT * 5
    assert generate(model, long_prompt, max_new_tokens=4, prefill_chunk=8) == generate(
        model, long_prompt, max_new_tokens=4
    )


def test_seeded_sampling_is_reproducible_and_seed_sensitive(model):
    kw = dict(max_new_tokens=12, temperature=1.5)
    a = generate(model, PROMPT, seed=1, **kw)
    assert a == generate(model, PROMPT, seed=1, **kw)
    assert any(generate(model, PROMPT, seed=s, **kw) != a for s in (2, 3, 4))


def test_top_k_one_and_tiny_top_p_are_greedy(model):
    greedy = generate(model, PROMPT, max_new_tokens=5)
    assert generate(model, PROMPT, max_new_tokens=5, temperature=1.0, top_k=1, seed=0) == greedy
    assert generate(model, PROMPT, max_new_tokens=5, temperature=1.0, top_p=1e-6, seed=0) == greedy


def test_sample_filters():
    logits = torch.tensor([0.0, 3.0, 2.9, -1.0, 2.8])
    g = torch.Generator().manual_seed(0)
    picks = {sample(logits, temperature=1.0, top_k=2, generator=g) for _ in range(200)}
    assert picks == {1, 2}
    # top_p keeps the smallest set whose mass reaches p: here tokens 1 and 2.
    probs = logits.softmax(-1)
    p = float(probs[1] + probs[2]) - 1e-4
    picks = {sample(logits, temperature=1.0, top_p=p, generator=g) for _ in range(300)}
    assert picks == {1, 2}
    assert sample(logits) == 1


def test_stop_ids_end_generation_and_are_returned(model):
    free = generate(model, PROMPT, max_new_tokens=8)
    stop = free[3]
    out = generate(model, PROMPT, max_new_tokens=8, stop_ids=(stop, IM_END))
    assert out == free[: free.index(stop) + 1]


def test_streaming_callback_sees_every_token_and_can_stop(model):
    seen = []
    out = generate(model, PROMPT, max_new_tokens=8, on_token=lambda t: seen.append(t) or len(seen) < 3)
    assert out == seen and len(out) == 3
    assert len(generate(model, PROMPT, max_new_tokens=5)) == 5


def test_cache_reuse_across_calls_gives_the_same_answer(model):
    cache = model.new_cache()
    first = generate(model, PROMPT, max_new_tokens=4, cache=cache)
    follow_up = PROMPT + first + [163586, 163587, 777, 163601]
    reused = generate(model, follow_up, max_new_tokens=5, cache=cache)
    assert cache.tokens[: len(follow_up)] == follow_up
    assert reused == generate(model, follow_up, max_new_tokens=5)


def test_inputs_embeds_tensor_and_hook(model):
    ids = torch.tensor([PROMPT])
    embeds = model.embed(ids)[0]
    expected = generate(model, PROMPT, max_new_tokens=4)
    assert generate(model, PROMPT, max_new_tokens=4, inputs_embeds=embeds) == expected
    # A hook that changes one position changes the continuation's inputs.
    seen = {}

    def hook(input_ids, e):
        seen["shape"] = tuple(e.shape)
        e = e.clone()
        e[0, 2] = 0
        return e

    generate(model, PROMPT, max_new_tokens=2, inputs_embeds=hook)
    assert seen["shape"] == (1, len(PROMPT), model.config.hidden_size)
    zeroed = embeds.clone()
    zeroed[2] = 0
    assert generate(model, PROMPT, max_new_tokens=3, inputs_embeds=hook) == generate(
        model, PROMPT, max_new_tokens=3, inputs_embeds=zeroed
    )


def test_empty_prompt_is_rejected(model):
    with pytest.raises(ValueError):
        generate(model, [], max_new_tokens=1)


def test_tensor_prompts_as_transformers_users_pass_them(model):
    expected = generate(model, PROMPT, max_new_tokens=4)
    assert generate(model, torch.tensor(PROMPT), max_new_tokens=4) == expected
    assert generate(model, torch.tensor([PROMPT]), max_new_tokens=4) == expected
    assert generate(model, tuple(torch.tensor(PROMPT)), max_new_tokens=4) == expected  # 0-d tensors are ids too
    with pytest.raises(ValueError, match=r"shape \(2, 7\).*one prompt at a time"):
        generate(model, torch.tensor([PROMPT, PROMPT]), max_new_tokens=4)
    with pytest.raises(TypeError, match="torch.float32 tensor"):
        generate(model, torch.tensor(PROMPT, dtype=torch.float32), max_new_tokens=4)
    with pytest.raises(TypeError, match="found 'a'"):
        generate(model, [1, "a"], max_new_tokens=4)
    with pytest.raises(ValueError, match="at least one input id"):
        generate(model, torch.tensor([[]], dtype=torch.long), max_new_tokens=4)


def test_tied_embeddings_have_no_lm_head(tmp_path):
    path = write_checkpoint(
        tmp_path / "tied",
        config=tiny_text_config(tie_word_embeddings=True, num_hidden_layers=2),
        int4=False,
        text_only=True,
    )
    m = load(path, dtype=torch.float32)
    assert m.lm_head is None
    h = torch.randn(1, 1, m.config.hidden_size)
    # The tied table is the head (a different GEMV kernel may sum the 64 products in another order).
    torch.testing.assert_close(m.logits(h), h @ m.model.embed_tokens.weight.t(), rtol=1e-5, atol=1e-4)


def test_bf16_weights_with_float32_activations(tmp_path):
    # Checkpoint in bf16, so the float32 model holds exactly the same weight values.
    path = write_checkpoint(tmp_path / "bf16", config=tiny_text_config(num_hidden_layers=2), int4=True, text_only=True)
    full = load(path, dtype=torch.float32)
    mixed = load(path, dtype=torch.bfloat16, activation_dtype=torch.float32)
    assert mixed.model.layers[0].self_attn.q_a_proj.weight.dtype == torch.bfloat16
    assert mixed.new_cache().dtype == torch.float32
    ids = torch.tensor([PROMPT])
    # Several rows: computed in float32 on the widened weights -> same as the float32 model.
    assert (mixed(ids) - full(ids)).abs().max().item() < 1e-5
    # One row: computed in bf16 (bandwidth-bound path) -> bf16-level agreement.
    c1, c2 = mixed.new_cache(), full.new_cache()
    mixed(ids, cache=c1), full(ids, cache=c2)
    step = torch.tensor([[42]])
    a, b = mixed(step, cache=c1), full(step, cache=c2)
    assert (a - b).abs().max().item() < 0.05 * b.abs().max().item()


@pytest.mark.parametrize("experts", ["int4", "tiered"])
def test_decode_step_is_the_forward_of_one_token(model, tmp_path, experts):
    """decode_step takes the short road (absorbed attention, each bank's one-row path, a rotary
    table view) through the same modules as forward: the same logits, the same cache."""
    from kimidoc.model import decode_step
    from kimidoc.model.moe import Int4Experts
    from kimidoc.placement import Machine
    from kimidoc.placement.runtime import load_placed

    lm = model
    if experts == "tiered":  # experts behind the placement seam (TieredExperts), whose forward has no one-row path
        path = write_checkpoint(tmp_path / "ckpt", int4=True, text_only=True, seed=4)
        lm = load_placed(
            path,
            Machine(cpu=10**8, disk=10**9),
            dtype=torch.float32,
            int4_compute_dtype=torch.float32,
            context=64,
            disk_cache_bytes=10**6,
        )
    else:
        assert isinstance(lm.expert_banks()[0], Int4Experts)
    a, b = lm.new_cache(), lm.new_cache()
    lm(torch.tensor([PROMPT]), cache=a)
    lm(torch.tensor([PROMPT]), cache=b)
    for token in (4242, 17, 163586):
        expected = lm(torch.tensor([[token]]), cache=a)[0, -1]
        got = decode_step(lm, token, b)
        assert got.shape == expected.shape and torch.allclose(got, expected, rtol=1e-5, atol=1e-5)
        assert b.length == a.length and torch.equal(b.layer(0), a.layer(0))
