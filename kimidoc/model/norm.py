"""RMSNorm, computed in float32 and cast back exactly as transformers' DeepseekV3RMSNorm does."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import decode_ops

# Up to this many rows the C kernel (one thread) beats PyTorch's dispatch; prefill's many rows
# keep PyTorch's threaded ops.
ROWS_IN_ONE_CALL = 8


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size), requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A decode step runs ~4 norms a layer on one row, where PyTorch's ops cost far more than
        # the arithmetic: one C call there (float32 rows; a bf16 weight is widened exactly, as the
        # promotion below does).
        if x.numel() <= ROWS_IN_ONE_CALL * x.shape[-1] and decode_ops.norm_usable(x, self.weight):
            return decode_ops.rms_norm(x, self.weight, self.eps)
        if x.dtype == self.weight.dtype == torch.float32:  # the same two roundings, in one call
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
