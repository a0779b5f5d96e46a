"""``nn.Linear`` / ``nn.Embedding`` without random initialisation, and mixed-precision matmuls.

Weights always come from a checkpoint. Initialising them is wasted work on real tensors, and on
the meta device the init functions route through torch's reference ops, which import
``torch._dynamo`` (seconds) for nothing.

Weights may be stored in a narrower dtype than the activations (BF16 weights, float32
activations: half the memory and the bytes a decode step reads, while CPUs without BF16 units
multiply many rows far faster in float32). :func:`linear` then runs a single row in the weight's
dtype and several rows in the activation dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    if weight.dtype == x.dtype:
        return F.linear(x, weight, bias)
    if x.numel() == x.shape[-1]:  # one row: bandwidth-bound, read the narrow weight as is
        return F.linear(x.to(weight.dtype), weight, bias).to(x.dtype)
    return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))


class Linear(nn.Linear):
    def reset_parameters(self) -> None:
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class Embedding(nn.Embedding):
    def reset_parameters(self) -> None:
        self.weight.requires_grad_(False)
