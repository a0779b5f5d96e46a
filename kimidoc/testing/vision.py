"""Tiny random K2.6 vision weights and multimodal checkpoints, in the official format, for tests.

* :func:`tiny_vision_config` gives a ``vision_config`` dict with the official keys and tiny sizes
  (real 14-pixel patches, so real preprocessing feeds it).
* :func:`random_vision_tensors` gives ``vision_tower.*`` and ``mm_projector.*`` tensors by their
  official names, random enough (including norms and the position table) that a wrong mapping or
  a wrong layout shows up in parity tests.
* :func:`write_multimodal_checkpoint` writes a full ``kimi_k25`` checkpoint: the text part through
  :func:`kimidoc.testing.write_checkpoint`, plus the vision tensors and ``vision_config``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kimidoc.vision.config import VisionConfig
from kimidoc.vision.projector import PatchMergerMLP
from kimidoc.vision.tower import VisionTower


def tiny_vision_config(**overrides: Any) -> dict[str, Any]:
    """An official-format ``vision_config`` small enough to run in milliseconds."""
    cfg: dict[str, Any] = {
        "patch_size": 14,
        "init_pos_emb_height": 8,
        "init_pos_emb_width": 8,
        "init_pos_emb_time": 4,
        "pos_emb_type": "divided_fixed",
        "vt_num_attention_heads": 2,
        "vt_num_hidden_layers": 2,
        "vt_hidden_size": 32,
        "vt_intermediate_size": 64,
        "merge_kernel_size": [2, 2],
        "video_attn_type": "spatial_temporal",
        "merge_type": "sd2_tpool",
        "mm_projector_type": "patchmerger",
        "mm_hidden_size": 32,
        "projector_hidden_act": "gelu",
        "projector_ln_eps": 1e-5,
        "text_hidden_size": 64,
    }
    cfg.update(overrides)
    if "vt_hidden_size" in overrides and "mm_hidden_size" not in overrides:
        cfg["mm_hidden_size"] = cfg["vt_hidden_size"]
    return cfg


def random_vision_tensors(
    vision_config: dict[str, Any],
    *,
    text_hidden_size: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.bfloat16,
) -> dict[str, torch.Tensor]:
    """``vision_tower.*`` and ``mm_projector.*`` tensors by official name, seeded."""
    cfg = VisionConfig.from_dict(vision_config, text_hidden_size)
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for prefix, module in (("vision_tower.", VisionTower(cfg)), ("mm_projector.", PatchMergerMLP(cfg))):
        for name, tensor in module.state_dict().items():
            if "norm" in name and name.endswith("weight"):
                value = 1.0 + 0.1 * torch.randn(tensor.shape, generator=gen)
            elif name.endswith("pos_emb.weight"):
                value = 0.5 * torch.randn(tensor.shape, generator=gen)
            else:
                fan_in = tensor[0].numel() if tensor.dim() > 1 else tensor.shape[0]
                value = torch.randn(tensor.shape, generator=gen) / fan_in**0.5
            out[prefix + name] = value.to(dtype)
    return out


def write_multimodal_checkpoint(
    directory: str | Path,
    *,
    config: dict[str, Any] | None = None,
    vision_overrides: dict[str, Any] | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.bfloat16,
    **text_kw: Any,
) -> Path:
    """A tiny ``kimi_k25`` checkpoint: the text part by :func:`kimidoc.testing.write_checkpoint`
    (``config`` is its text config, ``text_kw`` its other options), plus ``vision_tower.*`` /
    ``mm_projector.*`` tensors in ``dtype`` (BF16 like the official files) and ``vision_config``."""
    from kimidoc.testing.checkpoint import tiny_text_config, write_checkpoint

    text = dict(config) if config is not None else tiny_text_config()
    vision = tiny_vision_config(text_hidden_size=text["hidden_size"], **(vision_overrides or {}))
    tensors = random_vision_tensors(vision, seed=seed + 1, dtype=dtype)
    return write_checkpoint(
        directory,
        config=text,
        seed=seed,
        dtype=dtype,
        extra_tensors=tensors,
        extra_config={"vision_config": vision},
        **text_kw,
    )
