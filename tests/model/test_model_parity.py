"""Same weights in, same logits out: kimidoc vs transformers' DeepseekV3 / Kimi-K2.5 models.

Two random configurations go through the official file format: a DeepSeek-V3-style text-only one
(grouped routing, no q LoRA, a different YaRN mscale, BF16 experts) against
``DeepseekV3ForCausalLM``, and a K2.6-shaped ``kimi_k25`` one with INT4 experts against
``Kimi_K25ForConditionalGeneration``. transformers cannot read compressed-tensors packing
offline, so it gets the experts dequantized by the reference path (the packing itself is checked
in test_model_int4.py).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from kimidoc.model import generate, load
from kimidoc.testing import tiny_text_config, write_checkpoint, write_dequantized_copy

transformers = pytest.importorskip("transformers")

TOL = 1e-4
DECODE_STEPS = 32


def _deepseek_config() -> dict:
    cfg = tiny_text_config(
        model_type="deepseek_v3",
        q_lora_rank=None,
        n_group=2,
        topk_group=1,
        num_experts_per_tok=3,
        routed_scaling_factor=2.5,
        num_hidden_layers=3,
        first_k_dense_replace=1,
    )
    cfg["rope_scaling"] = dict(cfg["rope_scaling"], beta_fast=1.0, mscale=1.0, mscale_all_dim=0.707, factor=40.0)
    return cfg


def _quiet_from_pretrained(cls, path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.logging.set_verbosity_error()
        return cls.from_pretrained(path, dtype=torch.float32, **kw).eval()


@pytest.fixture(scope="module")
def deepseek_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    path = write_checkpoint(root / "ckpt", config=_deepseek_config(), int4=False, text_only=True, seed=1)
    ours = load(path, dtype=torch.float32)
    hf_config = transformers.DeepseekV3Config.from_pretrained(path)
    theirs = _quiet_from_pretrained(transformers.DeepseekV3ForCausalLM, path, config=hf_config)
    return ours, theirs


@pytest.fixture(scope="module")
def kimi_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("k25")
    path = write_checkpoint(root / "ckpt", int4=True, text_only=False, seed=2)
    ours = load(path, dtype=torch.float32, int4_compute_dtype=torch.float32)
    reference = write_dequantized_copy(path, root / "dequantized")
    hf_config = transformers.Kimi_K25Config.from_pretrained(reference)
    # The tiny checkpoint has no vision tensors; keep transformers' (randomly initialised) tower tiny.
    hf_config.vision_config = transformers.Kimi_K25VisionConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    hf_config.projection_hidden_size = 32
    theirs = _quiet_from_pretrained(transformers.Kimi_K25ForConditionalGeneration, reference, config=hf_config)
    return ours, theirs


PAIRS = ["deepseek_pair", "kimi_pair"]


def _prompt(seed: int, length: int = 24) -> torch.Tensor:
    return torch.randint(0, 163584, (1, length), generator=torch.Generator().manual_seed(seed))


def test_expert_weights_really_loaded(deepseek_pair, kimi_pair):
    # Guards against transformers silently leaving experts randomly initialised.
    ours, theirs = deepseek_pair
    ref = theirs.model.layers[1].mlp.experts.gate_up_proj[0]
    assert torch.equal(ours.model.layers[1].mlp.experts.gate_up[0], ref)
    ours, theirs = kimi_pair
    mine = ours.model.layers[2].mlp.experts.expert_weights(3)["down_proj"].float()
    ref = theirs.model.language_model.layers[2].mlp.experts.down_proj[3]
    assert torch.allclose(mine, ref, atol=1e-6)


@pytest.mark.parametrize("pair", PAIRS)
def test_prompt_forward_matches(pair, request):
    ours, theirs = request.getfixturevalue(pair)
    ids = _prompt(0)
    with torch.no_grad():
        expected = theirs(input_ids=ids).logits
    got = ours(ids)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < TOL


@pytest.mark.parametrize("pair", PAIRS)
def test_cached_decode_matches(pair, request):
    ours, theirs = request.getfixturevalue(pair)
    ids = _prompt(1, 16)
    steps = torch.randint(0, 163584, (DECODE_STEPS,), generator=torch.Generator().manual_seed(5))
    cache = ours.new_cache()
    worst = (ours(ids, cache=cache)[:, -1] - _hf_prefill(theirs, ids)[0][:, -1]).abs().max().item()
    hf_cache = _hf_prefill(theirs, ids)[1]
    for token in steps.tolist():
        step = torch.tensor([[token]])
        got = ours(step, cache=cache)
        with torch.no_grad():
            out = theirs(input_ids=step, cache=hf_cache, use_cache=True)
        hf_cache = out.cache
        worst = max(worst, (got - out.logits).abs().max().item())
    assert cache.length == ids.shape[1] + DECODE_STEPS
    assert worst < TOL


def _hf_prefill(model, ids):
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
    return out.logits, out.cache


@pytest.mark.parametrize("pair", PAIRS)
def test_greedy_generation_identical(pair, request):
    ours, theirs = request.getfixturevalue(pair)
    ids = _prompt(2, 12)
    n = 20
    with torch.no_grad():
        expected = theirs.generate(input_ids=ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)[
            0, ids.shape[1] :
        ]
    got = generate(ours, ids[0].tolist(), max_new_tokens=n)
    assert got == expected.tolist()
