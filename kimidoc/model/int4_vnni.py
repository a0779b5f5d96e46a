"""The AVX512-VNNI INT4 kernel (``int4_vnni.c``): built on first use, with PyTorch's kernel as the fallback.

At one row, PyTorch's ``_weight_int4pack_mm_for_cpu`` is bound by compute on x86 (about 20 GB/s a
core: it dequantizes every weight to float and FMAs it), so decode read the experts at half the
memory bandwidth. ``int4_vnni.c`` quantizes the activation row to int8 per 32-column group (the
error is of the order of bf16 activations'; see the C file), does the dot products with
``vpdpbusd``, and reads the checkpoint's bytes as they are.
``benchmarks/bench_int4.py`` compares the two.

It is built by :mod:`.ckernels` and used when the CPU has AVX512-VNNI, the build works and
``KIMIDOC_INT4_KERNEL`` is not ``aten``; otherwise :func:`load` returns ``None`` and callers keep
PyTorch's kernel.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from . import ckernels

CHUNK = 128  # the kernel's columns per step: in_features must be a multiple
GROUP = 32  # the scales' group size the kernel reads
FLAGS = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-mfma"]


def cpu_has_vnni() -> bool:
    try:
        return bool(torch._C._cpu._is_avx512_vnni_supported())
    except AttributeError:  # an older torch: read the flags ourselves
        try:
            return " avx512_vnni" in Path("/proc/cpuinfo").read_text()
        except OSError:
            return False


@functools.cache
def load() -> dict[str, ctypes._CFuncPtr] | None:
    """The kernel, or ``None`` where it cannot run here (the reason is logged once)."""
    return ckernels.load(
        "int4_vnni.c",
        {"kimidoc_int4_matmul": ckernels.jobs(2)},
        FLAGS,
        switch="KIMIDOC_INT4_KERNEL",
        feature="AVX512-VNNI",
        cpu_has=cpu_has_vnni,  # looked up at each load(), so tests can stand in for the CPU
        what="INT4 experts use PyTorch's kernel (about 1.5x slower at decode)",
    )


def usable(in_features: int, device: torch.device | str) -> bool:
    """Whether weights with ``in_features`` columns on ``device`` go through this kernel."""
    return torch.device(device).type == "cpu" and in_features % CHUNK == 0 and load() is not None


def runs(hidden: int, width: int, compute_dtype: torch.dtype, device: torch.device | str) -> bool:
    """Whether an INT4 expert bank of these widths, activation dtype and device runs this kernel,
    and so keeps the checkpoint's bytes as they are (the plan counts its memory by this)."""
    return compute_dtype == torch.bfloat16 and usable(hidden, device) and usable(width, device)


def matmul(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, experts: list[int], *, shared_x: bool
) -> torch.Tensor:
    """``y[j] = x[j] @ W[experts[j]].T`` as float32 ``[J, T, N]``.

    ``weight`` uint8 ``[E, N, K/2]`` and ``scale`` bf16 ``[E, N, K/32]``; ``x`` ``[T, K]`` used by
    every job (``shared_x``: quantized once) or ``[J, T, K]``.
    """
    lib = load()
    if lib is None:
        raise RuntimeError("the VNNI INT4 kernel is not available on this machine (see int4_vnni.usable)")
    e, n, half_k = weight.shape
    k = 2 * half_k
    if weight.dtype != torch.uint8 or scale.dtype != torch.bfloat16 or scale.shape != (e, n, k // GROUP):
        raise ValueError(f"INT4 weight {tuple(weight.shape)} {weight.dtype} / scale {tuple(scale.shape)} {scale.dtype}")
    if not (weight.is_contiguous() and scale.is_contiguous()):
        raise ValueError("INT4 weight and scale must be contiguous")
    if k % CHUNK:
        raise ValueError(f"INT4 weights of {k} columns: the kernel needs a multiple of {CHUNK}")
    fn = lib["kimidoc_int4_matmul"]
    return ckernels.run_jobs(fn, x, [weight, scale], experts, n=n, k=k, num_experts=e, shared_x=shared_x)
