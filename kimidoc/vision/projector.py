"""``mm_projector``: merged 2x2 patch groups of the tower to text-embedding vectors.

Official names: ``pre_norm`` (LayerNorm over the tower width), ``proj.0`` (Linear 4D -> 4D),
``proj.1`` GELU (exact, no weights), ``proj.2`` (Linear 4D -> text hidden size).
"""

from __future__ import annotations

import torch
from torch import nn

from kimidoc.vision.config import VisionConfig


class PatchMergerMLP(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        width = cfg.mm_hidden_size * cfg.merge_kernel[0] * cfg.merge_kernel[1]
        self.pre_norm = nn.LayerNorm(cfg.mm_hidden_size, eps=cfg.projector_ln_eps)
        self.proj = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, cfg.text_hidden_size))

    def forward(self, merged: torch.Tensor) -> torch.Tensor:
        """[tokens, kh*kw, D] -> [tokens, text hidden size]."""
        return self.proj(self.pre_norm(merged).flatten(1))
