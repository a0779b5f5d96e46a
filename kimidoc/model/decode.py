"""``decode_step``: one token through the model with its latent cache, the whole fast path in view.

Prefill goes through :meth:`KimiForCausalLM.forward` (chunks of many tokens, expanded or absorbed
attention, experts grouped by token). A decode step is one row, where Python and per-op overhead,
not arithmetic, is what there is to cut, so it takes the shortest road (as gpt-fast's and
DeepSeek-V3's inference code do):

    x = embed(token)                                    one row of the table
    cos, sin = rotary table row at cache.length         a view, nothing computed
    for each layer:
        x += o_proj(absorbed_attention(project(norm(x)), cached latents))   append to the cache
        x += shared_expert(norm(x)) + sum_k w_k * expert_k(norm(x))         dense MLP in layer 0
    logits = lm_head(norm(x))

Same modules, same weights and the same kernels as ``forward`` (the attention is always the
absorbed form, which ``forward`` also picks for one token), so the logits agree with
``model(token, cache=cache)`` to float rounding. Hooks on routers (routing statistics) still run.
"""

from __future__ import annotations

import torch

from .cache import LatentCache
from .model import DecoderLayer, KimiForCausalLM
from .moe import MoE


def _layer(
    layer: DecoderLayer, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: LatentCache
) -> torch.Tensor:
    attn = layer.self_attn
    q_nope, q_pe, latent = attn.project(layer.input_layernorm(x), cos, sin, cache)
    x = x + attn.o_proj(attn._absorbed(q_nope, q_pe, latent, cache))
    h = layer.post_attention_layernorm(x)
    mlp = layer.mlp
    if not isinstance(mlp, MoE):
        return x + mlp(h)
    flat = h.view(1, -1)
    idx, weight = mlp.gate(flat)
    out = mlp.experts(flat, idx, weight).view_as(h)  # one row: each bank's decode path
    if mlp.shared_experts is not None:
        out = out + mlp.shared_experts(h)
    return x + out


@torch.inference_mode()
def decode_step(lm: KimiForCausalLM, token: int, cache: LatentCache) -> torch.Tensor:
    """Logits ``[vocab]`` for ``token`` following what ``cache`` holds; appends it to the cache."""
    model = lm.model
    x = lm.embed(torch.tensor([[token]], device=lm.device)).to(lm.dtype)
    cos, sin = model.rotary.at(cache.length, x.device, x.dtype)
    for layer in model.layers:
        x = _layer(layer, x, cos, sin, cache)
    cache.advance(1)
    return lm.logits(model.norm(x))[0, -1]
