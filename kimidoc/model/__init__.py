"""The Kimi K2.x text runtime: config, MLA with a latent cache, MoE with INT4 experts, loading,
generation.

    from kimidoc.model import load, generate
    model = load("/path/to/Kimi-K2.6", dtype=torch.bfloat16)
    new_ids = generate(model, prompt_ids, max_new_tokens=128, stop_ids=(163586,))

Modules: ``config`` (config.json, byte accounting), ``linear`` (uninitialised layers, mixed
precision), ``norm``, ``rope`` (YaRN, interleaved),
``mla`` (attention math), ``cache`` (latent cache), ``moe`` (router, expert banks -- the
placement seam), ``int4`` (packing and kernels), ``model`` (the causal LM), ``shards`` /
``slots`` / ``loading`` (checkpoint -> model), ``generate``.
"""

from .cache import LatentCache
from .config import (
    ConfigError,
    KimiConfig,
    TextConfig,
    config_from_dict,
    load_config,
)
from .generate import generate, sample
from .loading import load
from .model import KimiForCausalLM
from .moe import DenseExperts, ExpertBank, Int4Experts
from .shards import CheckpointError

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DenseExperts",
    "ExpertBank",
    "Int4Experts",
    "KimiConfig",
    "KimiForCausalLM",
    "LatentCache",
    "TextConfig",
    "config_from_dict",
    "generate",
    "load",
    "load_config",
    "sample",
]
