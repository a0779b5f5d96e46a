"""RMSNorm, computed in float32 and cast back exactly as transformers' DeepseekV3RMSNorm does."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size), requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused kernel for x * rsqrt(mean(x^2) + eps) in float32 (a decode step runs ~4 norms a
        # layer on one row, where five separate ops cost more than the arithmetic).
        if x.dtype == self.weight.dtype == torch.float32:  # the same two roundings, in one call
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
