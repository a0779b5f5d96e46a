"""The Kimi K2.x text runtime: config, MLA with a latent cache, MoE with INT4 experts, loading,
generation.

    from kimidoc.model import load, generate
    model = load("/path/to/Kimi-K2.6", dtype=torch.bfloat16)
    new_ids = generate(model, prompt_ids, max_new_tokens=128, stop_ids=(163586,))

Modules: ``config`` (config.json, the quantization config), ``linear`` (uninitialised layers, mixed
precision), ``norm``, ``rope`` (YaRN, interleaved), ``mla`` (attention math), ``cache`` (latent
cache), ``moe`` (router, expert banks -- the placement seam), ``int4`` (packing and kernels),
``model`` (the causal LM), ``shards`` / ``slots`` / ``loading`` (checkpoint -> text model, weights on
``hugepages``), ``decode`` (``decode_step``: one token, the fast path), ``generation``
(``generate``, ``sample``). C kernels (``ckernels`` builds them): ``int4_vnni`` and ``rows`` (one-row
products), ``decode_ops`` (decode's fused norm, rotation, routing and attention).
The multimodal model (text + vision tower) is one floor up, in :mod:`kimidoc.vision.multimodal`.

Names load on first use, so reading a config (``kimidoc plan``) does not import torch.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "LatentCache": "cache",
    "ConfigError": "config",
    "KimiConfig": "config",
    "TextConfig": "config",
    "config_from_dict": "config",
    "load_config": "config",
    "decode_step": "decode",
    "generate": "generation",
    "sample": "generation",
    "load": "loading",
    "KimiForCausalLM": "model",
    "DenseExperts": "moe",
    "ExpertBank": "moe",
    "Int4Experts": "moe",
    "CheckpointError": "shards",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
