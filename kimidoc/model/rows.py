"""Decode's one-row products on x86 CPUs (``rows.c``): float rows times BF16 or float32 weights.

A decode step multiplies one row by each weight, so it runs at the speed the weight is read. On
the 2-core development machine PyTorch's paths read far below the memory's speed at one row:
``F.linear`` on a BF16 weight 26 GB/s, oneDNN 20-80% of the ceiling depending on the shape, worst
on the small ones where its per-call cost dominates (``benchmarks/bench_linear.py``). ``rows.c``
reads the weight as it is stored, at the memory's speed, in float32 arithmetic (BF16 weights
widened exactly, the activations never rounded to bf16), and takes a bank of weights with a list
of jobs, so that a token's chosen experts run in one call per projection.

Built by :mod:`.ckernels`; used on CPUs with AVX512 unless ``KIMIDOC_ROW_KERNEL`` is ``aten``,
where :func:`load` returns ``None`` and callers keep PyTorch's ops.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from . import ckernels

STEP = 32  # the kernels' columns per step: in_features must be a multiple
_SYMBOLS = {torch.bfloat16: "kimidoc_bf16_matmul", torch.float32: "kimidoc_f32_matmul"}
_FIRST = (ctypes.c_int64 * 1)(0)  # the job list of a single weight


def cpu_has_avx512() -> bool:
    return torch.backends.cpu.get_cpu_capability() in ("AVX512", "AVX512_BF16", "AMX")


@functools.cache
def load() -> dict[str, ctypes._CFuncPtr] | None:
    """The kernels, or ``None`` where they cannot run here (the reason is logged once)."""
    return ckernels.load(
        "rows.c",
        {symbol: ckernels.jobs(1) for symbol in _SYMBOLS.values()},
        ["-mavx512f"],
        switch="KIMIDOC_ROW_KERNEL",
        feature="AVX512",
        cpu_has=cpu_has_avx512,
        what="one-row products use PyTorch's ops",
    )


def usable(weight: torch.Tensor, x: torch.Tensor | None = None) -> bool:
    """Whether one-row products with ``weight`` (``[N, K]`` or a bank ``[E, N, K]``), of
    activations ``x``, run here: a contiguous BF16 or float32 CPU weight, ``K`` a multiple of 32,
    the kernels built, and no gradient wanted of either (the kernels have no backward)."""
    wants_grad = torch.is_grad_enabled() and (weight.requires_grad or (x is not None and x.requires_grad))
    return (
        weight.dtype in _SYMBOLS
        and not wants_grad
        and weight.device.type == "cpu"
        and not weight.is_mkldnn
        and weight.is_contiguous()
        and weight.shape[-1] % STEP == 0
        and load() is not None
    )


def _kernel(symbol: str, weight: torch.Tensor) -> ctypes._CFuncPtr:
    lib = load()
    if lib is None:
        raise RuntimeError("the row kernels are not available on this machine (see rows.usable)")
    if weight.device.type != "cpu" or not weight.is_contiguous():
        raise ValueError(f"weights must be a contiguous CPU tensor, got one on {weight.device}")
    return lib[symbol]


def matmul(x: torch.Tensor, weight: torch.Tensor, experts: list[int], *, shared_x: bool) -> torch.Tensor:
    """``y[j] = x[j] @ W[experts[j]].T`` as float32 ``[J, T, N]``: ``weight`` bf16 or float32
    ``[E, N, K]``; ``x`` ``[T, K]`` used by every job (``shared_x``) or ``[J, T, K]``."""
    if weight.dtype not in _SYMBOLS:
        raise ValueError(f"the row kernels take bf16 or float32 weights, not {weight.dtype}")
    fn = _kernel(_SYMBOLS[weight.dtype], weight)
    e, n, k = weight.shape
    if k % STEP:
        raise ValueError(f"weights of {k} columns: the kernel needs a multiple of {STEP}")
    return ckernels.run_jobs(fn, x, [weight], experts, n=n, k=k, num_experts=e, shared_x=shared_x)


def row(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T`` as float32 ``[N]`` for one row ``x`` (``K`` values) and an ``[N, K]``
    weight :func:`usable` accepted: the one-row linear of decode, with as little Python around
    the call as it can have (it runs ~10 times per layer)."""
    n, k = weight.shape
    if x.numel() != k:
        raise ValueError(f"activation of {x.numel()} values for a weight of {k} columns")
    if x.dtype != torch.float32 or not x.is_contiguous():
        x = x.float().contiguous()
    y = torch.empty(n)
    fn = load()[_SYMBOLS[weight.dtype]]
    if fn(
        x.data_ptr(), 0, 1, k, weight.data_ptr(), ctypes.addressof(_FIRST), 1, n, y.data_ptr(), torch.get_num_threads()
    ):
        raise MemoryError(f"the kernel could not allocate scratch for a row of {k}")
    return y
