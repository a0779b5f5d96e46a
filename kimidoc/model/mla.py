"""Multi-head Latent Attention (DeepSeek-V2/V3, Kimi K2.x): all of the MLA math lives here.

Per token, ``kv_a_proj_with_mqa`` yields a latent ``c_kv`` (``kv_lora_rank``, RMS-normalised) and
one rotary key ``k_pe`` (``qk_rope_head_dim``) shared by all heads; only those are cached
(:class:`~.cache.LatentCache`). ``kv_b_proj`` maps ``c_kv`` to per-head ``k_nope`` and ``v``.

Two exact ways to attend over the cached latents:

* **expanded** (prefill, many new tokens): re-project every cached latent through ``kv_b_proj``
  into per-head keys/values and call SDPA. ``v`` is zero-padded to the q/k head size because CPU
  SDPA has no fused kernel for unequal head sizes and would otherwise build ``[heads, T, L]``.
* **absorbed** (decode, few new tokens): fold the ``k_nope`` rows of ``kv_b_proj`` into the query
  (``q_abs = q_nope @ W_uk``) and the ``v`` rows into the output (``o = (p @ c_kv) @ W_uv^T``), so
  a step reads the latents once and never expands them:
  ``score = [q_abs, q_pe] . [c_kv, k_pe] * scale``.

Both forms give the same result up to float rounding. ``form="auto"`` picks absorbed for up to
``ABSORB_MAX_TOKENS`` new tokens, expanded for prefill chunks -- unless the per-head keys and
values of the whole prefix would pass ``EXPANDED_KV_BUDGET`` bytes (K2.6: beyond ~20K cached
tokens in BF16), where the chunk runs absorbed too. Absorbed attention walks the keys in blocks
with an online softmax once the score matrix would pass ``SCORE_BUDGET`` bytes, so long-context
prefill stays in bounded memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import decode_ops
from .cache import LatentCache
from .config import TextConfig
from .linear import Linear, matmul_nt
from .norm import RMSNorm
from .rope import apply_interleaved

ABSORB_MAX_TOKENS = 1
EXPANDED_KV_BUDGET = 1 << 30  # bytes of per-head K/V one expanded call may build
SCORE_BUDGET = 1 << 28  # bytes of attention scores one absorbed block may hold


def causal_mask(new: int, total: int, device: torch.device) -> torch.Tensor:
    """Boolean ``[new, total]``: query ``i`` (at position ``total - new + i``) sees keys ``<=`` it."""
    past = total - new
    return torch.arange(total, device=device)[None, :] <= (past + torch.arange(new, device=device))[:, None]


class MLAttention(nn.Module):
    """Parameter names follow the checkpoint (``self_attn.q_a_proj`` ... ``self_attn.o_proj``)."""

    def __init__(self, config: TextConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.q_lora_rank = config.q_lora_rank
        self.kv_lora_rank = config.kv_lora_rank
        self.nope_dim = config.qk_nope_head_dim
        self.rope_dim = config.qk_rope_head_dim
        self.v_dim = config.v_head_dim
        self.qk_dim = config.qk_head_dim
        self.scale = config.softmax_scale
        h, bias = config.hidden_size, config.attention_bias
        if self.q_lora_rank is None:
            self.q_proj = Linear(h, self.num_heads * self.qk_dim, bias=False)
        else:
            self.q_a_proj = Linear(h, self.q_lora_rank, bias=bias)
            # eps left at the 1e-6 default, as in the reference implementations.
            self.q_a_layernorm = RMSNorm(self.q_lora_rank)
            self.q_b_proj = Linear(self.q_lora_rank, self.num_heads * self.qk_dim, bias=False)
        self.kv_a_proj_with_mqa = Linear(h, self.kv_lora_rank + self.rope_dim, bias=bias)
        self.kv_a_layernorm = RMSNorm(self.kv_lora_rank)
        self.kv_b_proj = Linear(self.kv_lora_rank, self.num_heads * (self.nope_dim + self.v_dim), bias=False)
        self.o_proj = Linear(self.num_heads * self.v_dim, h, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: LatentCache | None = None,
        form: str = "auto",
    ) -> torch.Tensor:
        """``x`` ``[B, T, hidden]``; ``cos``/``sin`` ``[T, rope_dim/2]`` for the new positions."""
        b, t, _ = x.shape
        q_nope, q_pe, latent = self.project(x, cos, sin, cache)
        if form == "auto":
            length = latent.shape[1]
            expanded_bytes = b * length * self.num_heads * 2 * self.qk_dim * q_nope.element_size()
            form = "absorbed" if t <= ABSORB_MAX_TOKENS or expanded_bytes > EXPANDED_KV_BUDGET else "expanded"
        if form == "absorbed":
            out = self._absorbed(q_nope, q_pe, latent, cache)
        elif form == "expanded":
            out = self._expanded(q_nope, q_pe, latent)
        else:
            raise ValueError(f"unknown attention form {form!r} (auto, expanded or absorbed)")
        return self.o_proj(out)

    def project(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: LatentCache | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (``q_nope``, rotated ``q_pe``, ``[B, T, H, *]``) and the latents to attend over:
        the new tokens' ``[c_kv, k_pe]``, after the cached ones when there is a ``cache`` (which
        they are appended to): then the cache's rows as stored, in its dtype (decode's attention
        kernel reads a bf16 cache as it is; the other paths convert)."""
        b, t, _ = x.shape
        if b * t == 1 and cache is not None and (one := self._project_one(x, cos, sin, cache)) is not None:
            return one
        if self.q_lora_rank is None:
            q = self.q_proj(x)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(b, t, self.num_heads, self.qk_dim)
        q_nope, q_pe = q.split([self.nope_dim, self.rope_dim], dim=-1)
        q_pe = apply_interleaved(q_pe, cos[:, None, :], sin[:, None, :])

        c_kv, k_pe = self.kv_a_proj_with_mqa(x).split([self.kv_lora_rank, self.rope_dim], dim=-1)
        latent = torch.cat([self.kv_a_layernorm(c_kv), apply_interleaved(k_pe, cos, sin)], dim=-1)
        if cache is not None:
            latent = cache.append(self.layer_idx, latent.to(cache.dtype))
        return q_nope, q_pe, latent

    def _project_one(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: LatentCache
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """:meth:`project` for one token in one C call (``decode_ops.project``: three products, two
        norms, two rotations and the cache write, ~12 PyTorch ops otherwise), or None where it
        does not run."""
        if self.q_lora_rank is None or self.q_a_proj.bias is not None or self.kv_a_proj_with_mqa.bias is not None:
            return None
        weights = (self.q_a_proj.weight, self.kv_a_proj_with_mqa.weight, self.q_b_proj.weight)
        norms = (self.q_a_layernorm.weight, self.kv_a_layernorm.weight)
        if not decode_ops.project_usable(x, weights, norms, cos, sin, cache.dtype):
            return None
        latent = cache.claim(self.layer_idx, 1)
        eps = (self.q_a_layernorm.eps, self.kv_a_layernorm.eps)
        q_nope, q_pe = decode_ops.project(x, weights, norms, eps, cos, sin, self.num_heads, latent[0, -1])
        shape = (1, 1, self.num_heads, -1)
        return q_nope.view(shape), q_pe.view(shape), latent

    def padded_keys(self, cache: LatentCache | None, latent: torch.Tensor) -> torch.Tensor | None:
        """The cache's padded view of ``latent`` (see :meth:`LatentCache.padded`) when it holds the
        same values (same dtype), else None."""
        if cache is None or cache.dtype != latent.dtype:
            return None
        return cache.padded(self.layer_idx, latent.shape[1])

    def _expanded(self, q_nope: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        b, t = q_nope.shape[:2]
        latent = latent.to(q_nope.dtype)
        length = latent.shape[1]
        c_kv, k_pe = latent.split([self.kv_lora_rank, self.rope_dim], dim=-1)
        kv = self.kv_b_proj(c_kv).view(b, length, self.num_heads, self.nope_dim + self.v_dim)
        k_nope, v = kv.split([self.nope_dim, self.v_dim], dim=-1)
        k = torch.cat([k_nope, k_pe[:, :, None, :].expand(b, length, self.num_heads, self.rope_dim)], dim=-1)
        q = torch.cat([q_nope, q_pe], dim=-1)
        if self.v_dim != self.qk_dim:
            v = F.pad(v, (0, self.qk_dim - self.v_dim))
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        if t == length:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1, scale=self.scale)
        else:
            mask = causal_mask(t, length, q.device)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return o[..., : self.v_dim].transpose(1, 2).reshape(b, t, self.num_heads * self.v_dim)

    def _absorbed(
        self, q_nope: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor, cache: LatentCache | None = None
    ) -> torch.Tensor:
        """``latent``: every token's ``[c_kv, k_pe]``, the cached ones (from ``cache``) first."""
        b, t = q_nope.shape[:2]
        kv_b = self.kv_b_proj.weight
        if b * t == 1 and self.nope_dim == self.v_dim and decode_ops.absorbed_usable(q_nope, q_pe, kv_b, latent[0]):
            # One token: kv_b_proj's two products, the scores, softmax and weighted latents in one
            # call, over the cache as it is and kv_b_proj as stored (no padding, no float copies).
            o = decode_ops.attend_absorbed(
                q_nope.reshape(self.num_heads, -1), q_pe.reshape(self.num_heads, -1), kv_b, latent[0], self.scale
            )
            return o.view(b, t, self.num_heads * self.v_dim).to(q_pe.dtype)
        latent = latent.to(q_pe.dtype)
        w = kv_b.view(self.num_heads, self.nope_dim + self.v_dim, self.kv_lora_rank)
        w_uk, w_uv = w[:, : self.nope_dim], w[:, self.nope_dim :]
        q_abs = torch.matmul(q_nope.transpose(1, 2), w_uk.to(q_nope.dtype))  # [B, H, T, kv_lora_rank]
        if b * t == 1 and decode_ops.attend_usable(q_abs, q_pe, latent[0]):
            o_lat = decode_ops.attend_one(
                q_abs.reshape(self.num_heads, -1), q_pe.reshape(self.num_heads, -1), latent[0], self.scale
            ).to(q_pe.dtype)
        else:
            o_lat = self._attend(q_abs, q_pe, latent, cache)
        o_lat = o_lat.view(b, self.num_heads, t, self.kv_lora_rank)
        o = torch.matmul(o_lat, w_uv.to(o_lat.dtype).transpose(1, 2))  # [B, H, T, v_dim]
        return o.transpose(1, 2).reshape(b, t, self.num_heads * self.v_dim)

    def _attend(
        self, q_abs: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor, cache: LatentCache | None
    ) -> torch.Tensor:
        """``softmax(scores) @ c_kv`` ``[B, H*T, kv_lora_rank]`` with PyTorch's ops."""
        b, t = q_pe.shape[:2]
        length = latent.shape[1]
        # Scaled here, on H*T rows, rather than the [H*T, length] scores.
        q_cat = torch.cat([q_abs, q_pe.transpose(1, 2)], dim=-1).reshape(b, self.num_heads * t, -1) * self.scale
        past = length - t
        block = max(1, SCORE_BUDGET // (b * self.num_heads * t * 4))
        padded = self.padded_keys(cache, latent) if t == 1 else None
        if b == t == 1 and padded is not None and padded.shape[1] <= block:
            return self._one_query(q_cat[0], padded[0], length)[None]
        if length <= block:
            probs = torch.softmax(self._scores(q_cat, latent, 0, past), dim=-1, dtype=torch.float32)
            return self._weighted_latents(probs.to(latent.dtype), latent)
        return self._online_softmax(q_cat, latent, past, block)

    def _one_query(self, q_cat: torch.Tensor, keys: torch.Tensor, length: int) -> torch.Tensor:
        """One token's heads ``[H, D]`` over the first ``length`` of ``keys`` ``[n, D]``: both
        products on the padded keys, whose shape changes every ``PAD`` tokens (oneDNN reads the
        cache ~30% faster than MKL's batched GEMM, once its kernel for the shape exists); the
        padding is masked out of the scores."""
        scores = matmul_nt(q_cat, keys)
        scores[:, length:] = float("-inf")
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(keys.dtype)
        return matmul_nt(probs, keys.t())[:, : self.kv_lora_rank]

    def _scores(self, q_cat: torch.Tensor, keys: torch.Tensor, start: int, past: int) -> torch.Tensor:
        """Scores ``[B, H*T, len(keys)]`` of the scaled queries for the keys at positions
        ``start...``, causally masked for queries at positions ``past...``."""
        scores = torch.bmm(q_cat, keys.transpose(1, 2))
        b, rows, n = scores.shape
        t = rows // self.num_heads
        if t == 1 and start + n <= past + 1:
            return scores
        keys_pos = torch.arange(start, start + n, device=scores.device)
        allowed = keys_pos[None, :] <= (past + torch.arange(t, device=scores.device))[:, None]
        return scores.view(b, self.num_heads, t, n).masked_fill(~allowed, float("-inf")).view(b, rows, n)

    def _weighted_latents(self, probs: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """``probs @ c_kv`` ``[B, H*T, kv_lora_rank]``, computed as ``(c_kv^T @ probs^T)^T``: with
        the long latent axis in the left operand MKL streams the cache ~20% faster at 16K tokens."""
        return torch.bmm(keys[..., : self.kv_lora_rank].transpose(1, 2), probs.transpose(1, 2)).transpose(1, 2)

    def _online_softmax(self, q_cat: torch.Tensor, latent: torch.Tensor, past: int, block: int) -> torch.Tensor:
        """``softmax(scores) @ c_kv`` over key blocks, rescaling partial sums by the running max."""
        rows = q_cat.shape[1]
        running_max = torch.full((q_cat.shape[0], rows, 1), float("-inf"), device=q_cat.device)
        denom = torch.zeros_like(running_max)
        acc = torch.zeros(q_cat.shape[0], rows, self.kv_lora_rank, device=q_cat.device)
        for start in range(0, latent.shape[1], block):
            keys = latent[:, start : start + block]
            scores = self._scores(q_cat, keys, start, past).float()
            new_max = torch.maximum(running_max, scores.amax(-1, keepdim=True))
            probs = torch.exp(scores - new_max)
            rescale = torch.exp(running_max - new_max)
            denom = denom * rescale + probs.sum(-1, keepdim=True)
            acc = acc * rescale + self._weighted_latents(probs.to(latent.dtype), keys).float()
            running_max = new_max
        return (acc / denom).to(latent.dtype)
