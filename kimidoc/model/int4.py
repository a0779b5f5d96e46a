"""INT4 weights: the checkpoint's packing, the reference dequantize path, and the kernel layout.

Checkpoint format (compressed-tensors ``pack-quantized``, symmetric, group size 32), per linear
``[out, in]``:

* ``weight_packed`` int32 ``[out, in/8]``: nibble ``j`` (bits ``4j..4j+3``, least significant
  first) of word ``k`` holds input column ``8k+j`` as ``q + 8`` for ``q`` in ``[-8, 7]``;
* ``weight_scale`` bf16 ``[out, in/group]``; ``weight_shape`` int32 ``[2]`` = ``(out, in)``;
* dequantized weight ``W[o, i] = q[o, i] * scale[o, i // group]``.

:class:`PackedInt4` holds those tensors untouched; :func:`dequantize` is the plain reference.
Unpacking per call is far too slow for decode, so :func:`to_kernel_layout` converts a weight once
(at load time) into what PyTorch's tinygemm-style kernels take: the 0..15 values (= the stored
``q + 8``) reordered by ``_convert_weight_to_int4pack[_for_cpu]`` and a ``[in/group, out, 2]``
table of (scale, zero) pairs with zero = 0, since the kernels compute ``(u - 8) * scale + zero``.
:func:`int4_matmul` runs that kernel (CPU: ``_weight_int4pack_mm_for_cpu``; CUDA:
``_weight_int4pack_mm``).
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass

import numpy as np
import torch

if sys.byteorder != "little":  # the packed words are reinterpreted as bytes below
    raise ImportError("kimidoc's INT4 code assumes a little-endian machine")

GROUP_SIZE = 32
_NIBBLES = 8  # int4 values per int32 word
_OFFSET = 8  # stored value = q + 8
_CUDA_INNER_K_TILES = 8


@dataclass
class PackedInt4:
    """One quantized linear exactly as the checkpoint stores it."""

    weight_packed: torch.Tensor  # int32 [out, in/8]
    weight_scale: torch.Tensor  # bf16 [out, in/group]
    weight_shape: tuple[int, int]  # (out, in)
    group_size: int = GROUP_SIZE

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize(self.weight_packed, self.weight_scale, self.weight_shape, self.group_size, dtype)


def quantize(weight: torch.Tensor, group_size: int = GROUP_SIZE, qmax: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric group-wise quantization: returns ``q`` int8 in ``[-8, 7]`` and bf16 scales.

    ``scale = max|w| / qmax`` per group (K2's QAT grid uses ``qmax = 7``); the scale is rounded to
    bf16 *before* rounding ``w / scale``, so the bf16 scale stored is the one that reproduces ``q``.
    """
    out_features, in_features = weight.shape
    if in_features % group_size:
        raise ValueError(f"in_features {in_features} is not a multiple of the group size {group_size}")
    w = weight.float().view(out_features, in_features // group_size, group_size)
    scale = (w.abs().amax(-1) / qmax).clamp_min(1e-8).to(torch.bfloat16)
    q = torch.round(w / scale.float().unsqueeze(-1)).clamp_(-8, 7).to(torch.int8)
    return q.view(out_features, in_features), scale


def pack(q: torch.Tensor) -> torch.Tensor:
    """Pack int ``q`` in ``[-8, 7]`` ``[out, in]`` into int32 ``[out, in/8]`` (compressed-tensors order).

    Nibble ``j`` of word ``k`` is column ``8k+j``: on a little-endian machine that is byte ``j//2``
    of the word holding columns ``8k+j`` (low nibble, even ``j``) and ``8k+j+1`` (high nibble).
    """
    out_features, in_features = q.shape
    if in_features % _NIBBLES:
        raise ValueError(f"in_features {in_features} is not a multiple of {_NIBBLES}")
    if q.device.type == "cpu":  # numpy's single-threaded small ops beat torch's threaded ones on a busy machine
        a = q.to(torch.int8).contiguous().numpy().view(np.uint8) + np.uint8(_OFFSET)  # wraps -8..7 to 0..15
        return torch.from_numpy(np.ascontiguousarray(a[:, 0::2] | (a[:, 1::2] << 4))).view(torch.int32)
    u = (q.to(torch.int16) + _OFFSET).to(torch.uint8)
    return (u[:, 0::2] | (u[:, 1::2] << 4)).contiguous().view(torch.int32)


def unpack(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """Stored 0..15 values (``q + 8``) as int32 ``[out, in]`` from int32 ``[out, in/8]``."""
    shifts = torch.arange(0, 4 * _NIBBLES, 4, dtype=torch.int32, device=packed.device)
    u = (packed.unsqueeze(-1) >> shifts) & 0xF
    return u.reshape(packed.shape[0], -1)[:, :in_features]


def dequantize(
    packed: torch.Tensor,
    scale: torch.Tensor,
    shape: tuple[int, int],
    group_size: int = GROUP_SIZE,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The reference path: ``W = (u - 8) * scale[:, col // group]``."""
    out_features, in_features = shape
    q = (unpack(packed, in_features) - _OFFSET).float()
    w = q.view(out_features, in_features // group_size, group_size) * scale.float().unsqueeze(-1)
    return w.view(out_features, in_features).to(dtype)


def scales_and_zeros(scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[out, in/group]`` scales -> the kernels' ``[in/group, out, 2]`` (scale, zero=0) table."""
    s = scale.t().to(dtype)
    return torch.stack([s, torch.zeros_like(s)], dim=-1).contiguous()


def kernel_weight_shape(out_features: int, in_features: int, device: torch.device) -> tuple[int, ...]:
    """Shape of :func:`to_kernel_layout`'s packed weight on ``device``."""
    if device.type == "cuda":
        tiles = _CUDA_INNER_K_TILES
        return (out_features // 8, in_features // (tiles * 16), 32, tiles // 2)
    return (out_features, in_features // 2)


def kernel_weight_dtype(device: torch.device) -> torch.dtype:
    return torch.int32 if device.type == "cuda" else torch.uint8


def unpack_u8(packed: torch.Tensor) -> torch.Tensor:
    """Stored 0..15 values as uint8 ``[out, in]``: the int32 words read as little-endian bytes are
    plain two-per-byte packing, low nibble = even column (a cheaper :func:`unpack`)."""
    b = packed.contiguous().view(torch.uint8)
    return torch.stack([b & 0xF, b >> 4], dim=-1).view(packed.shape[0], -1)


def _cpu_blocked(u: torch.Tensor, block: int) -> torch.Tensor:
    """The CPU kernel's layout: per block of ``block`` output rows, for each input column, ``block/2``
    bytes holding row ``i`` (low nibble) and row ``i + block/2`` (high nibble)."""
    n, k = u.shape
    halves = u.to(torch.uint8).view(n // block, 2, block // 2, k)
    return (halves[:, 0] | (halves[:, 1] << 4)).transpose(1, 2).reshape(n, k // 2)


@functools.cache
def _cpu_block_size() -> int | None:
    """The row block the CPU converter uses on this machine (it depends on the ISA the kernel was
    dispatched to), found by comparing with ``_convert_weight_to_int4pack_for_cpu``; ``None`` if
    the layout is none of the known ones (then the converter itself is called per weight)."""
    u = torch.randint(0, 16, (128, 64), generator=torch.Generator().manual_seed(0), dtype=torch.int32, device="cpu")
    reference = torch.ops.aten._convert_weight_to_int4pack_for_cpu(u, 1)
    for block in (32, 64, 16):
        if torch.equal(_cpu_blocked(u, block), reference):
            return block
    return None


def to_kernel_layout(u: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """Convert stored 0..15 values ``[out, in]`` (see :func:`unpack`) to the kernel's packed layout.

    On CPU this is a pure reshuffle of nibbles (the aten converter is slow for large weights);
    the layout is checked against the aten converter once per process.
    """
    device = torch.device(device)
    if device.type == "cuda":
        u = u.to(device)
        # The CUDA converter takes two values per byte, high nibble first.
        byte_packed = ((u[:, ::2] << 4) | u[:, 1::2]).to(torch.uint8)
        return torch.ops.aten._convert_weight_to_int4pack(byte_packed, _CUDA_INNER_K_TILES)
    block = _cpu_block_size()
    if block is not None and u.shape[0] % block == 0:
        return _cpu_blocked(u, block)
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(u.to(torch.int32).contiguous(), 1)


def int4_matmul(
    x: torch.Tensor, weight: torch.Tensor, scale_zeros: torch.Tensor, group_size: int = GROUP_SIZE
) -> torch.Tensor:
    """``x @ W.T`` for a kernel-layout INT4 weight; ``x`` is ``[M, in]`` in ``scale_zeros.dtype``."""
    if x.device.type == "cuda":
        return torch.ops.aten._weight_int4pack_mm(x, weight, group_size, scale_zeros)
    return torch.ops.aten._weight_int4pack_mm_for_cpu(x, weight, group_size, scale_zeros)


class Int4Linear(torch.nn.Module):
    """A single INT4 linear in kernel layout, built from a :class:`PackedInt4`.

    ``compute_dtype`` is the activation dtype the kernel runs in: bf16 is the fast one on CPU;
    float32 gives exact parity with the dequantized reference (the stored scales are bf16, so
    they are exact in either).
    """

    def __init__(
        self, packed: PackedInt4, compute_dtype: torch.dtype = torch.bfloat16, device: torch.device | str = "cpu"
    ):
        super().__init__()
        self.out_features, self.in_features = packed.weight_shape
        self.group_size = packed.group_size
        self.compute_dtype = compute_dtype
        self.register_buffer("weight", to_kernel_layout(unpack_u8(packed.weight_packed), device))
        self.register_buffer("scale_zeros", scales_and_zeros(packed.weight_scale, compute_dtype).to(device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = int4_matmul(x.reshape(-1, shape[-1]).to(self.compute_dtype), self.weight, self.scale_zeros, self.group_size)
        return y.to(x.dtype).view(*shape[:-1], self.out_features)
