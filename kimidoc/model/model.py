"""The K2.x text backbone and its causal LM head.

Module and parameter names mirror the official checkpoint, so a state dict name is a checkpoint
name (``model.embed_tokens.weight``, ``model.layers.N.self_attn.q_a_proj.weight``,
``model.layers.N.mlp.experts.M.gate_proj.weight_packed`` via the expert bank's slots, ...,
``model.norm.weight``, ``lm_head.weight``); in a ``kimi_k25`` checkpoint they sit under
``language_model.``. Vision code merges image features with :meth:`KimiForCausalLM.embed` and
``inputs_embeds``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from . import int4, rows
from .cache import LatentCache
from .config import TextConfig
from .linear import Embedding, Linear, can_pack_rows, linear, pack_rows, uses_onednn
from .mla import MLAttention
from .moe import DenseExperts, ExpertBank, Int4Experts, MoE, SwiGLU
from .norm import RMSNorm
from .rope import Rotary
from .slots import Slot, module_slots


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


class DecoderLayer(nn.Module):
    def __init__(self, config: TextConfig, index: int, experts: ExpertBank | None):
        super().__init__()
        self.self_attn = MLAttention(config, index)
        self.mlp = MoE(config, experts) if experts is not None else SwiGLU(config.hidden_size, config.intermediate_size)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: LatentCache | None, form: str
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, form)
        return x + self.mlp(self.post_attention_layernorm(x))


class KimiModel(nn.Module):
    def __init__(self, config: TextConfig, make_experts):
        super().__init__()
        self.config = config
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            DecoderLayer(config, i, make_experts() if config.is_moe_layer(i) else None)
            for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary = Rotary(config.rope, config.qk_rope_head_dim)

    def forward(
        self, inputs_embeds: torch.Tensor, cache: LatentCache | None = None, form: str = "auto"
    ) -> torch.Tensor:
        t = inputs_embeds.shape[1]
        start = cache.length if cache is not None else 0
        positions = torch.arange(start, start + t, device=inputs_embeds.device)
        cos, sin = self.rotary(positions, inputs_embeds.dtype)
        h = inputs_embeds
        for layer in self.layers:
            h = layer(h, cos, sin, cache, form)
        if cache is not None:
            cache.advance(t)
        return self.norm(h)


class KimiForCausalLM(nn.Module):
    """Text model: ``.model`` (embeddings, layers, final norm) and ``.lm_head``.

    Build it on the meta device and fill it with :func:`kimidoc.model.load`, or construct it
    directly for tests. ``int4_experts`` stores routed experts as INT4 (kernel layout).
    """

    def __init__(
        self,
        config: TextConfig,
        *,
        dtype: torch.dtype = torch.float32,
        int4_experts: bool = False,
        group_size: int = int4.GROUP_SIZE,
        int4_compute_dtype: torch.dtype = torch.bfloat16,
        activation_dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
    ):
        super().__init__()
        self.config = config
        # Activations (and the latent cache) may be wider than the stored weights, see .linear.
        self.activation_dtype = activation_dtype or dtype
        self.int4_experts = int4_experts
        args = (config.n_routed_experts, config.hidden_size, config.moe_intermediate_size)
        if int4_experts:
            make = lambda: Int4Experts(*args, group_size=group_size, compute_dtype=int4_compute_dtype, device=device)  # noqa: E731
        else:
            make = lambda: DenseExperts(*args)  # noqa: E731
        with default_dtype(dtype):
            self.model = KimiModel(config, make)
            self.lm_head = (
                None if config.tie_word_embeddings else Linear(config.hidden_size, config.vocab_size, bias=False)
            )

    @property
    def dtype(self) -> torch.dtype:
        """The activation dtype (inputs_embeds are cast to it; the cache defaults to it)."""
        return self.activation_dtype

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``[..., hidden]``; edit them (e.g. insert image features) and pass back
        as ``inputs_embeds``."""
        return self.model.embed_tokens(input_ids).to(self.activation_dtype)

    def new_cache(self, batch_size: int = 1, capacity: int = 0, dtype: torch.dtype | None = None) -> LatentCache:
        c = self.config
        return LatentCache(
            c.num_hidden_layers,
            c.latent_dim,
            batch_size=batch_size,
            capacity=capacity,
            dtype=dtype or self.dtype,
            device=self.device,
        )

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return linear(hidden, weight)

    @torch.inference_mode()
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        cache: LatentCache | None = None,
        logits_to_keep: int = 0,
        attention_form: str = "auto",
    ) -> torch.Tensor:
        """Logits ``[B, T, vocab]`` (the last ``logits_to_keep`` positions when > 0).

        Give ``input_ids`` ``[B, T]`` or ``inputs_embeds`` ``[B, T, hidden]``. With a ``cache`` the
        new tokens follow the cached ones and are appended to it.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed(input_ids)
        h = self.model(inputs_embeds.to(self.dtype), cache, attention_form)
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        return self.logits(h)

    def pack_linears(self) -> int:
        """Lay out this model's CPU linear weights for one-row products (decode, see
        :mod:`.linear`) where the row kernels (:mod:`.rows`, fastest on plain weights) cannot
        run: BF16 weights in oneDNN's blocked layout (read ~1.6x faster), float32 weights at least
        8x wider than deep (the head) column-major (read ~10% faster by oneDNN).
        Returns how many weights changed (0 where oneDNN cannot run). Call it once the weights
        are loaded and placed: a packed weight can no longer be moved, saved or viewed.
        ``kv_b_proj`` stays as it is (absorbed attention reads it as a matrix), as do the
        embeddings."""
        plain = {id(layer.self_attn.kv_b_proj) for layer in self.model.layers}
        count = 0
        for module in self.modules():
            if type(module) is not Linear or id(module) in plain:
                continue
            w = module.weight
            if w.device.type != "cpu" or w.is_mkldnn:
                continue
            if rows.usable(w):  # the row kernels read plain weights fastest
                continue
            if w.dtype == torch.bfloat16 and can_pack_rows():
                w = pack_rows(w.detach())
            elif w.dtype == torch.float32 and w.shape[0] >= 8 * w.shape[1] and w.is_contiguous() and uses_onednn():
                w = w.detach().t().contiguous().t()
            else:
                continue
            module.weight = nn.Parameter(w, requires_grad=False)
            count += 1
        return count

    def checkpoint_slots(self, prefix: str = "") -> dict[str, Slot]:
        """Official tensor name -> slot, for loading (see :mod:`.slots`)."""
        slots = module_slots(self.model, prefix + "model.")
        if self.lm_head is not None:
            slots.update(module_slots(self.lm_head, prefix + "lm_head."))
        return slots

    def expert_banks(self) -> list[ExpertBank]:
        return [layer.mlp.experts for layer in self.model.layers if isinstance(layer.mlp, MoE)]

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> KimiForCausalLM:
        # .to() / .cuda() / .half() would fail deep inside torch on an opaque packed weight.
        packed = next((n for n, p in self.named_parameters() if p.is_mkldnn), None)
        if packed is not None:
            raise RuntimeError(
                f"{packed} is packed in oneDNN's layout for CPU decode and cannot be moved or converted; "
                "load with kimidoc.model.load(..., pack=False) to keep plain weights"
            )
        return super()._apply(fn, recurse)
