"""Float rows times a bank of BF16 weights (``bf16_rows.c``): decode's one-row BF16 products.

A one-row product with BF16 weights reads them at 26 GB/s through ``F.linear`` on the 2-core
development machine, and oneDNN's faster blocked layout (:func:`.linear.pack_rows`) would need one
opaque tensor per expert. ``bf16_rows.c`` reads the bank as it is stored, at the memory's speed,
all of a token's experts in one call, and multiplies the float32 activations by the exactly widened
weights (no bf16 rounding of the activations). :func:`matmul_nn` multiplies by untransposed
weights, for absorbed attention's ``q_nope @ W_uk``. Built by :mod:`.ckernels`; used on CPUs with
AVX512F unless ``KIMIDOC_BF16_KERNEL`` is ``aten``, where :func:`load` returns ``None`` and callers
keep PyTorch's ops.
"""

from __future__ import annotations

import ctypes
import functools
import os

import torch

from . import ckernels

STEP = 32  # the kernel's columns per step: in_features must be a multiple


def cpu_has_avx512() -> bool:
    return torch.backends.cpu.get_cpu_capability() in ("AVX512", "AVX512_BF16", "AMX")


@functools.cache
def load() -> dict[str, ctypes._CFuncPtr] | None:
    """The kernel, or ``None`` where it cannot run here (the reason is logged once)."""
    if os.environ.get("KIMIDOC_BF16_KERNEL", "").lower() == "aten":
        return None
    if not cpu_has_avx512():
        ckernels.log.info("BF16 experts use PyTorch's linear: this CPU has no AVX512")
        return None
    symbols = ("kimidoc_bf16_matmul", "kimidoc_bf16_matmul_nn")
    return ckernels.load("bf16_rows.c", symbols, ["-mavx512f"], 1, "BF16 one-row products use PyTorch's ops")


def usable(in_features: int, device: torch.device | str) -> bool:
    """Whether BF16 weights with ``in_features`` columns on ``device`` go through this kernel."""
    return torch.device(device).type == "cpu" and in_features % STEP == 0 and load() is not None


def _kernel(symbol: str, weight: torch.Tensor) -> ctypes._CFuncPtr:
    lib = load()
    if lib is None:
        raise RuntimeError("the BF16 row kernel is not available on this machine (see bf16_rows.usable)")
    if weight.dtype != torch.bfloat16 or not weight.is_contiguous() or weight.device.type != "cpu":
        raise ValueError(f"BF16 weights must be a contiguous CPU bf16 tensor, got {weight.dtype} on {weight.device}")
    return lib[symbol]


def matmul(x: torch.Tensor, weight: torch.Tensor, experts: list[int], *, shared_x: bool) -> torch.Tensor:
    """``y[j] = x[j] @ W[experts[j]].T`` as float32 ``[J, T, N]``: ``weight`` bf16 ``[E, N, K]``;
    ``x`` ``[T, K]`` used by every job (``shared_x``) or ``[J, T, K]``."""
    fn = _kernel("kimidoc_bf16_matmul", weight)
    e, n, k = weight.shape
    if k % STEP:
        raise ValueError(f"BF16 weights of {k} columns: the kernel needs a multiple of {STEP}")
    return ckernels.run_jobs(fn, x, [weight], experts, n=n, k=k, num_experts=e, shared_x=shared_x)


_FIRST = (ctypes.c_int64 * 1)(0)  # the job list of a single weight


def row(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T`` as float32 ``[N]`` for one row ``x`` (``K`` values) and a bf16 ``[N, K]``
    weight that :func:`kimidoc.model.linear.rows_kernel` accepted: the one-row linear of decode,
    with as little Python around the call as it can have (it runs ~10 times per layer)."""
    n, k = weight.shape
    if x.numel() != k:
        raise ValueError(f"activation of {x.numel()} values for a weight of {k} columns")
    if x.dtype != torch.float32 or not x.is_contiguous():
        x = x.float().contiguous()
    y = torch.empty(n)
    fn = load()["kimidoc_bf16_matmul"]
    if fn(
        x.data_ptr(), 0, 1, k, weight.data_ptr(), ctypes.addressof(_FIRST), 1, n, y.data_ptr(), torch.get_num_threads()
    ):
        raise MemoryError(f"the kernel could not allocate scratch for a row of {k}")
    return y


def matmul_nn(x: torch.Tensor, weight: torch.Tensor, experts: list[int], *, shared_x: bool) -> torch.Tensor:
    """``y[j] = x[j] @ W[experts[j]]`` (no transpose) as float32 ``[J, T, N]``: ``weight`` bf16
    ``[E, K, N]`` with ``N`` a multiple of 16; ``x`` as for :func:`matmul`."""
    fn = _kernel("kimidoc_bf16_matmul_nn", weight)
    e, k, n = weight.shape
    if n % 16:
        raise ValueError(f"BF16 weights of {n} output columns: the kernel needs a multiple of 16")
    return ckernels.run_jobs(fn, x, [weight], experts, n=n, k=k, num_experts=e, shared_x=shared_x)
