"""The AVX512-VNNI INT4 kernel (``int4_vnni.c``): built on first use, with PyTorch's kernel as the fallback.

At one row, PyTorch's ``_weight_int4pack_mm_for_cpu`` is bound by compute on x86 (about 20 GB/s a
core: it dequantizes every weight to float and FMAs it), so decode read the experts at half the
memory bandwidth. ``int4_vnni.c`` quantizes the activation row to int8 per 32-column group (the
error is of the order of bf16 activations'; see the C file), does the dot products with
``vpdpbusd``, and reads the checkpoint's bytes as they are.
``benchmarks/bench_int4.py`` compares the two.

No package on PyPI ships such a kernel prebuilt for x86 (see the note in ``bench_int4.py``), so the C
file is compiled here, once per source and compiler, with the C compiler found on the machine
(``$CC``, else ``cc``/``gcc``) into ``$KIMIDOC_CACHE`` (default ``~/.cache/kimidoc``)/kernels. It
is used when the CPU has AVX512-VNNI, the build works and ``KIMIDOC_INT4_KERNEL`` is not ``aten``;
otherwise :func:`load` returns ``None`` and callers keep PyTorch's kernel.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("int4_vnni.c")
CHUNK = 128  # the kernel's columns per step: in_features must be a multiple
GROUP = 32  # the scales' group size the kernel reads
FLAGS = ["-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-mfma", "-fopenmp", "-shared", "-fPIC"]
_P = ctypes.c_void_p


def cpu_has_vnni() -> bool:
    try:
        return bool(torch._C._cpu._is_avx512_vnni_supported())
    except AttributeError:  # an older torch: read the flags ourselves
        try:
            return " avx512_vnni" in Path("/proc/cpuinfo").read_text()
        except OSError:
            return False


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc"):
        if name and shutil.which(name):
            return name
    return None


def _build(cc: str) -> Path:
    """The shared library for this source and compiler, built once (atomically) into the cache."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256(SOURCE.read_bytes() + version.encode() + " ".join(FLAGS).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("KIMIDOC_CACHE", Path.home() / ".cache" / "kimidoc")) / "kernels"
    target = cache / f"int4_vnni-{key}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        built = Path(tmp) / target.name
        result = subprocess.run([cc, *FLAGS, str(SOURCE), "-o", str(built)], capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"{cc} could not build {SOURCE.name}: {result.stderr.strip()[-500:]}")
        os.replace(built, target)  # another process building the same file at once is harmless
    return target


@functools.cache
def load() -> ctypes.CDLL | None:
    """The kernel library, or ``None`` where it cannot run here (the reason is logged once)."""
    if os.environ.get("KIMIDOC_INT4_KERNEL", "").lower() == "aten":
        return None
    if sys.platform != "linux" or not cpu_has_vnni():
        log.info("INT4 experts use PyTorch's kernel: this CPU has no AVX512-VNNI")
        return None
    cc = _compiler()
    if cc is None:
        log.warning("INT4 experts use PyTorch's kernel (about 1.5x slower at decode): no C compiler found")
        return None
    try:
        lib = ctypes.CDLL(str(_build(cc)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        log.warning("INT4 experts use PyTorch's kernel: %s", e)
        return None
    fn = lib.kimidoc_int4_matmul
    fn.restype = ctypes.c_int
    fn.argtypes = [
        _P,
        ctypes.c_int64,
        ctypes.c_int,
        ctypes.c_int,
        _P,
        _P,
        _P,
        ctypes.c_int,
        ctypes.c_int,
        _P,
        ctypes.c_int,
    ]
    return lib


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
    # The C side trusts every pointer and index: check what it will read.
    if weight.dtype != torch.uint8 or scale.dtype != torch.bfloat16 or scale.shape != (e, n, k // GROUP):
        raise ValueError(f"INT4 weight {tuple(weight.shape)} {weight.dtype} / scale {tuple(scale.shape)} {scale.dtype}")
    if not (weight.is_contiguous() and scale.is_contiguous()):
        raise ValueError("INT4 weight and scale must be contiguous")
    if x.shape[-1] != k or k % CHUNK:
        raise ValueError(
            f"activation width {x.shape[-1]} does not fit INT4 weights of {k} columns (multiple of {CHUNK})"
        )
    if not experts or min(experts) < 0 or max(experts) >= e:
        raise IndexError(f"experts {experts} out of range for a bank of {e}")
    j = len(experts)
    if not shared_x and (x.dim() != 3 or x.shape[0] != j):
        raise ValueError(f"per-job activations must be [{j}, T, {k}], got {tuple(x.shape)}")
    if x.dtype != torch.float32 or not x.is_contiguous():
        x = x.float().contiguous()
    t = x.shape[-2]
    # A ctypes array, not a tensor: each torch call costs microseconds more when a decode step's
    # weight stream has just flushed the caches, and this wrapper runs twice per MoE layer.
    index = (ctypes.c_int64 * j)(*experts)
    y = torch.empty(j, t, n)
    rc = lib.kimidoc_int4_matmul(
        x.data_ptr(), 0 if shared_x else t * k, t, k, weight.data_ptr(), scale.data_ptr(),
        ctypes.addressof(index), j, n, y.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    if rc:
        raise MemoryError(f"the INT4 kernel could not allocate scratch for {j} x {t} rows of {k}")
    return y
