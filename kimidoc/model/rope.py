"""YaRN rotary embedding in DeepSeek's interleaved layout.

DeepSeek rotates adjacent pairs ``(x0, x1), (x2, x3), ...`` by one frequency each and writes the
result de-interleaved: ``[x_even*cos - x_odd*sin, x_odd*cos + x_even*sin]`` (transformers'
``apply_rotary_pos_emb_interleave``). Queries and keys use the same layout, so dot products match
the original; the latent cache stores ``k_pe`` already rotated, in this layout.

YaRN blends interpolated and extrapolated frequencies with a linear ramp between the correction
dims of ``beta_fast`` / ``beta_slow`` (floored / ceiled when ``truncate``), and scales cos/sin by
``attention_factor``; the softmax-scale part of YaRN lives in :meth:`RopeConfig.softmax_scale`.
"""

from __future__ import annotations

import math

import torch

from . import decode_ops
from .config import RopeConfig


def inverse_frequencies(rope: RopeConfig, dim: int) -> torch.Tensor:
    """``dim // 2`` inverse frequencies in float32 (transformers' ``_compute_yarn_parameters``)."""
    pos_freqs = rope.theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device="cpu") / dim)
    extrapolation = 1.0 / pos_freqs
    if rope.rope_type != "yarn":
        return extrapolation
    interpolation = 1.0 / (rope.factor * pos_freqs)

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(rope.original_max_position_embeddings / (rotations * 2 * math.pi))) / (
            2 * math.log(rope.theta)
        )

    low, high = correction_dim(rope.beta_fast), correction_dim(rope.beta_slow)
    if rope.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float32, device="cpu") - low) / (high - low)).clamp(0, 1)
    extrapolation_weight = 1 - ramp
    return interpolation * (1 - extrapolation_weight) + extrapolation * extrapolation_weight


class Rotary:
    """cos/sin tables for positions, grown on demand and kept per device and dtype.

    Not an ``nn.Module`` buffer on purpose: the model is built on the meta device and filled from
    the checkpoint, and these values are derived from the config, not stored in it.
    """

    def __init__(self, rope: RopeConfig, dim: int):
        self.inv_freq = inverse_frequencies(rope, dim)
        self.scale = rope.cos_sin_scale()
        self._tables: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin ``[T, dim/2]`` for integer ``positions`` ``[T]``."""
        needed = int(positions.max()) + 1 if positions.numel() else 0
        cos, sin = self._table(positions.device, dtype, needed)
        return cos[positions], sin[positions]

    def at(self, position: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin ``[1, dim/2]`` for one position: views into the table (a decode step's lookup)."""
        cos, sin = self._table(device, dtype, position + 1)
        return cos[position : position + 1], sin[position : position + 1]

    def _table(self, device: torch.device, dtype: torch.dtype, needed: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (device, dtype)
        table = self._tables.get(key)
        if table is None or table[0].shape[0] < needed:
            length = max(needed, 2 * table[0].shape[0] if table else 4096)
            freqs = torch.arange(length, dtype=torch.float32, device="cpu")[:, None] * self.inv_freq[None, :]
            table = ((freqs.cos() * self.scale).to(device, dtype), (freqs.sin() * self.scale).to(device, dtype))
            self._tables[key] = table
        return table


def apply_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the last dim of ``x`` (pairs interleaved); ``cos``/``sin`` broadcast to ``x[..., ::2]``."""
    if decode_ops.rope_usable(x, cos, sin):  # one position (decode): one C call for the 9 ops below
        return decode_ops.rope(x, cos, sin)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
