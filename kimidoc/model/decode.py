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

On CPUs with the C kernels each of a layer's two lines is one C call (``decode_ops.decode_attention``
and ``decode_ffn``, which run the same kernels in the same order): once a step's weight stream has
flushed the caches, the ~30 calls and ops a layer makes in Python cost more than its attention's
arithmetic. The calls' arguments (weight addresses, widths) are gathered once per cache, at its
first step (:func:`_fused`); a half whose modules the kernels cannot take, or a router with hooks
(routing statistics), runs through the modules. There the step runs in float32 whatever the model's
activation dtype (the kernels' arithmetic; a step's bytes are its weights, read as stored), and
bf16 activations cost nothing but prefill's speed.

Same modules, same weights and the same kernels as ``forward`` (the attention is always the
absorbed form, which ``forward`` also picks for one token), so the logits agree with
``model(token, cache=cache)`` to float rounding (to bf16's for a bf16-activation model stepped in
float32).
"""

from __future__ import annotations

import weakref
from typing import NamedTuple

import torch

from . import decode_ops, int4_vnni
from .cache import LatentCache
from .model import DecoderLayer, KimiForCausalLM
from .moe import Int4Experts, MoE, SwiGLU

Half = decode_ops.Fused | None


def _attention(
    layer: DecoderLayer, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: LatentCache
) -> torch.Tensor:
    attn = layer.self_attn
    q_nope, q_pe, latent = attn.project(layer.input_layernorm(x), cos, sin, cache)
    return x + attn.o_proj(attn._absorbed(q_nope, q_pe, latent, cache))


def _ffn(layer: DecoderLayer, x: torch.Tensor) -> torch.Tensor:
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


def _fused_attention(layer: DecoderLayer) -> Half:
    attn, norm = layer.self_attn, layer.input_layernorm
    if attn.q_lora_rank is None or attn.nope_dim != attn.v_dim:
        return None
    if any(m.bias is not None for m in (attn.q_a_proj, attn.kv_a_proj_with_mqa, attn.o_proj)):
        return None
    return decode_ops.fused_attention(
        (norm.weight, norm.eps),
        (attn.q_a_proj.weight, attn.kv_a_proj_with_mqa.weight, attn.q_b_proj.weight),
        ((attn.q_a_layernorm.weight, attn.q_a_layernorm.eps), (attn.kv_a_layernorm.weight, attn.kv_a_layernorm.eps)),
        attn.kv_b_proj.weight,
        attn.o_proj.weight,
        attn.num_heads,
        attn.rope_dim,
        attn.scale,
    )


def _mlp_weights(mlp: SwiGLU) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    linears = (mlp.gate_proj, mlp.up_proj, mlp.down_proj)
    if type(mlp) is not SwiGLU or any(m.bias is not None for m in linears):
        return None
    return tuple(m.weight for m in linears)


def _fused_ffn(layer: DecoderLayer) -> Half:
    norm, mlp = (layer.post_attention_layernorm.weight, layer.post_attention_layernorm.eps), layer.mlp
    if not isinstance(mlp, MoE):
        weights = _mlp_weights(mlp)
        return None if weights is None else decode_ops.fused_ffn(norm, weights)
    bank, gate, shared = mlp.experts.by_expert(), mlp.gate, mlp.shared_experts
    if not (isinstance(bank, Int4Experts) and bank.vnni) or gate.n_group > 1:
        return None
    mlp_weights = None
    if shared is not None and (mlp_weights := _mlp_weights(shared)) is None:
        return None
    router = (gate.weight, gate.e_score_correction_bias, gate.top_k, gate.norm_topk_prob, gate.routed_scaling_factor)
    experts = int4_vnni.swiglu_kernel((bank.gate_up, bank.gate_up_scale), (bank.down, bank.down_scale))
    return decode_ops.fused_ffn(norm, mlp_weights, router, experts)


class Plan(NamedTuple):
    """How ``decode_step`` runs a model, gathered once per cache (:func:`_fused`)."""

    lm: KimiForCausalLM
    # per layer: the attention half, the feed-forward half (None: through the modules), and the
    # router whose hooks send its layer's feed-forward through the modules
    layers: list[tuple[Half, Half, torch.nn.Module | None]]
    # the step's: float32 where a half runs as one call (the kernels' dtype), else the activations'
    dtype: torch.dtype


# Per cache (a sequence being decoded), its plan.
_plans: weakref.WeakKeyDictionary[LatentCache, Plan] = weakref.WeakKeyDictionary()


def _fused(lm: KimiForCausalLM, cache: LatentCache) -> Plan:
    """Each layer's halves as one-call kernels, gathered at ``cache``'s first step with ``lm``.
    Weights changed in place are seen; modules or parameters replaced after that step are not,
    until a new cache."""
    plan = _plans.get(cache)
    if plan is None or plan.lm is not lm:
        layers = [
            (_fused_attention(layer), _fused_ffn(layer), layer.mlp.gate if isinstance(layer.mlp, MoE) else None)
            for layer in lm.model.layers
        ]
        fused = any(a is not None or f is not None for a, f, _ in layers)
        plan = _plans[cache] = Plan(lm, layers, torch.float32 if fused else lm.dtype)
    return plan


def _hooked(module: torch.nn.Module | None) -> bool:
    return module is not None and bool(module._forward_hooks or module._forward_pre_hooks)


@torch.inference_mode()
def decode_step(lm: KimiForCausalLM, token: int, cache: LatentCache) -> torch.Tensor:
    """Logits ``[vocab]`` for ``token`` following what ``cache`` holds; appends it to the cache."""
    model, plan = lm.model, _fused(lm, cache)
    x = lm.embed(torch.tensor([[token]], device=lm.device)).to(plan.dtype)
    cos, sin = model.rotary.at(cache.length, x.device, x.dtype)
    for i, (layer, (attention, ffn, router)) in enumerate(zip(model.layers, plan.layers)):
        if attention is not None:
            decode_ops.decode_attention(attention, x, cos, sin, cache.claim(i, 1)[0])
        else:
            x = _attention(layer, x, cos, sin, cache)
        if ffn is not None and not _hooked(router):
            decode_ops.decode_ffn(ffn, x)
        else:
            x = _ffn(layer, x)
    cache.advance(1)
    return lm.logits(model.norm(x))[0, -1]
