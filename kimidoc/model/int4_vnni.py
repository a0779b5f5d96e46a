"""The AVX512-VNNI INT4 kernel (``int4_vnni.c``): built on first use, with PyTorch's kernel as the fallback.

At one row, PyTorch's ``_weight_int4pack_mm_for_cpu`` is bound by compute on x86 (about 20 GB/s a
core: it dequantizes every weight to float and FMAs it), so decode read the experts at half the
memory bandwidth. ``int4_vnni.c`` quantizes the activation row to int8 per 32-column group (the
error is of the order of bf16 activations'; see the C file), does the dot products with
``vpdpbusd``, and reads the checkpoint's bytes as they are.
For one token, :func:`swiglu` runs the chosen experts whole (both products and the SwiGLU between
them) in one call. ``benchmarks/bench_int4.py`` compares the kernel with PyTorch's.

It is built by :mod:`.ckernels` and used when the CPU has AVX512-VNNI, the build works and
``KIMIDOC_INT4_KERNEL`` is not ``aten``; otherwise :func:`load` returns ``None`` and callers keep
PyTorch's kernel.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from . import ckernels

_P, _I = ctypes.c_void_p, ctypes.c_int
CHUNK = 128  # the kernel's columns per step: in_features must be a multiple
GROUP = 32  # the scales' group size the kernel reads
FLAGS = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-mfma"]


def cpu_has_vnni() -> bool:
    try:
        return bool(torch._C._cpu._is_avx512_vnni_supported())
    except AttributeError:  # a torch without the query: read the flags ourselves
        return "avx512_vnni" in ckernels.cpu_flags()


@functools.cache
def load() -> dict[str, ctypes._CFuncPtr] | None:
    """The kernel, or ``None`` where it cannot run here (the reason is logged once)."""
    return ckernels.load(
        "int4_vnni.c",
        {
            "kimidoc_int4_matmul": ckernels.jobs(2),
            # x, H, W, W_gu, S_gu, W_d, S_d, experts, k, Y, threads
            "kimidoc_int4_swiglu": [_P, _I, _I, _P, _P, _P, _P, _P, _I, _P, _I],
        },
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
    lib = _lib()
    e, n, k = _bank(weight, scale)
    fn = lib["kimidoc_int4_matmul"]
    return ckernels.run_jobs(fn, x, [weight, scale], experts, n=n, k=k, num_experts=e, shared_x=shared_x)


def _lib() -> dict[str, ctypes._CFuncPtr]:
    lib = load()
    if lib is None:
        raise RuntimeError("the VNNI INT4 kernel is not available on this machine (see int4_vnni.usable)")
    return lib


def _bank(weight: torch.Tensor, scale: torch.Tensor) -> tuple[int, int, int]:
    """``(E, N, K)`` of a bank the C code can read as it is: uint8 ``[E, N, K/2]`` and bf16 scales
    ``[E, N, K/32]``, contiguous on the CPU, ``K`` a multiple of the kernel's chunk."""
    e, n, half_k = weight.shape
    k = 2 * half_k
    if weight.dtype != torch.uint8 or scale.dtype != torch.bfloat16 or scale.shape != (e, n, k // GROUP):
        raise ValueError(
            f"INT4 weight {tuple(weight.shape)} {weight.dtype} / scale {tuple(scale.shape)} {scale.dtype}: "
            "expected uint8 [E, N, K/2] and bf16 [E, N, K/32]"
        )
    if not (weight.is_contiguous() and scale.is_contiguous()) or weight.device.type != "cpu":
        raise ValueError("INT4 weight and scale must be contiguous CPU tensors")
    if k % CHUNK:
        raise ValueError(f"INT4 weights of {k} columns: the kernel needs a multiple of {CHUNK}")
    return e, n, k


def swiglu(
    x: torch.Tensor,
    gate_up: tuple[torch.Tensor, torch.Tensor],
    down: tuple[torch.Tensor, torch.Tensor],
    experts: list[int],
) -> torch.Tensor:
    """Each of ``experts``' SwiGLU ``down(silu(gate x) * up x)`` of one row ``x`` (``H`` values) as
    bf16 ``[len(experts), H]``, in one call: :func:`matmul`'s two calls and the SwiGLU between them.
    ``gate_up`` is the fused ``(weight uint8 [E, 2W, H/2], scale bf16 [E, 2W, H/32])``, ``down``
    ``([E, H, W/2], [E, H, W/32])``."""
    lib = _lib()
    (w_gu, s_gu), (w_d, s_d) = gate_up, down
    e, h, w = _swiglu_bank(gate_up, down)
    if x.numel() != h:
        raise ValueError(f"one row of {h} values expected, got {tuple(x.shape)}")
    if not experts or min(experts) < 0 or max(experts) >= e:
        raise IndexError(f"experts {experts} out of range for a bank of {e}")
    x = x.reshape(h).float().contiguous()
    index = (ctypes.c_int64 * len(experts))(*experts)
    y = torch.empty(len(experts), h, dtype=torch.bfloat16)
    rc = lib["kimidoc_int4_swiglu"](
        x.data_ptr(), h, w, w_gu.data_ptr(), s_gu.data_ptr(), w_d.data_ptr(), s_d.data_ptr(),
        ctypes.addressof(index), len(experts), y.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    if rc:
        raise MemoryError(f"the kernel could not allocate scratch for {len(experts)} experts of {h} x {w}")
    return y


def _swiglu_bank(
    gate_up: tuple[torch.Tensor, torch.Tensor], down: tuple[torch.Tensor, torch.Tensor]
) -> tuple[int, int, int]:
    """``(E, H, W)`` of a SwiGLU bank :func:`swiglu` can run: :func:`_bank`'s checks, and down's
    shapes matching gate/up's."""
    (w_gu, s_gu), (w_d, s_d) = gate_up, down
    e, two_w, h = _bank(w_gu, s_gu)
    w = two_w // 2
    if _bank(w_d, s_d) != (e, h, w) or two_w % 2:
        raise ValueError(
            f"down experts {tuple(w_d.shape)}: expected [{e}, {h}, {w // 2}] after gate/up {tuple(w_gu.shape)}"
        )
    return e, h, w


def swiglu_kernel(
    gate_up: tuple[torch.Tensor, torch.Tensor], down: tuple[torch.Tensor, torch.Tensor]
) -> tuple[int, tuple[torch.Tensor, ...], int, int]:
    """What a C caller needs to run :func:`swiglu` itself (``decode_ops.fused_ffn``): the address of
    ``kimidoc_int4_swiglu``, the bank's ``(gate_up, gate_up_scale, down, down_scale)``, ``H`` and ``W``."""
    fn = _lib()["kimidoc_int4_swiglu"]
    _, h, w = _swiglu_bank(gate_up, down)
    return ctypes.cast(fn, ctypes.c_void_p).value, (*gate_up, *down), h, w
