"""The package's C kernels (``kimidoc/model/*.c``): built on first use, cached, called through ctypes.

No package on PyPI ships these kernels prebuilt for x86 (see the note in
``benchmarks/bench_int4.py``), so each C file is compiled here, once per source, compiler and
flags, with the C compiler found on the machine (``$CC``, else ``cc``/``gcc``) into
``$KIMIDOC_CACHE`` (default ``~/.cache/kimidoc``)/kernels. Where a kernel cannot be built or
cannot run, :func:`load` returns ``None`` (the reason is logged) and callers keep PyTorch's ops.

The products (``int4_vnni.c``, ``rows.c``) share one calling convention, a batch of
one-row-at-a-time products ("jobs"): ``y[j] = x[j] @ W[experts[j]].T`` for a bank of weights
``W`` ``[E, N, ...]``, one OpenMP loop over every (job, weight row), so that a token's chosen
experts run in one call (:func:`run_jobs`). The fused decode ops (``decode_ops.c``: RMSNorm, the
rotary embedding, the router's choice, the attention's projections, one token's attention, a
SwiGLU MLP, and a decoder layer's two halves built from them) and a token's whole INT4 SwiGLU
experts (``int4_vnni.c``) have signatures of their own. Headers beside the sources hold what two kernels share: ``rows.h`` (one-row dot products),
``vmath.h`` (exp, silu, bf16 rounding).
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
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
BASE_FLAGS = ["-O3", "-fopenmp", "-shared", "-fPIC"]
_P = ctypes.c_void_p
# (X, x_stride, T, K, *weight pointers, experts, J, N, Y, threads)
_HEAD = [_P, ctypes.c_int64, ctypes.c_int, ctypes.c_int]
_TAIL = [_P, ctypes.c_int, ctypes.c_int, _P, ctypes.c_int]


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (``avx512_vnni``, ``avx512_bf16``, ...); empty
    where /proc/cpuinfo cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc"):
        if name and shutil.which(name):
            return name
    return None


def build(source: Path, flags: list[str], cc: str) -> Path:
    """The shared library for ``source`` (and the headers beside it), ``flags`` and ``cc``, built once
    (atomically) into the cache."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout
    # the headers beside it (rows.h, vmath.h) are part of what is built
    headers = b"".join(h.read_bytes() for h in sorted(source.parent.glob("*.h")))
    key = hashlib.sha256(source.read_bytes() + headers + version.encode() + " ".join(flags).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("KIMIDOC_CACHE", Path.home() / ".cache" / "kimidoc")) / "kernels"
    target = cache / f"{source.stem}-{key}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        built = Path(tmp) / target.name
        result = subprocess.run([cc, *flags, str(source), "-o", str(built)], capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"{cc} could not build {source.name}: {result.stderr.strip()[-500:]}")
        os.replace(built, target)  # another process building the same file at once is harmless
    return target


def jobs(weights: int) -> list[type]:
    """The argument types of a kernel with the jobs convention and ``weights`` weight pointers."""
    return _HEAD + [_P] * weights + _TAIL


def load(
    source: str,
    symbols: dict[str, list[type]],
    flags: list[str],
    *,
    switch: str,
    feature: str,
    cpu_has: Callable[[], bool],
    what: str,
) -> dict[str, ctypes._CFuncPtr] | None:
    """Functions ``symbols`` of ``source`` (a C file here; each symbol with its argument types,
    :func:`jobs` for the jobs convention; each returns an int), or ``None`` where they cannot run:
    the environment variable ``switch`` is ``aten``, the CPU lacks ``feature`` (``cpu_has()`` is
    false), or the build fails. ``what`` says what runs instead, for the log."""
    if os.environ.get(switch, "").lower() == "aten":
        return None
    if not cpu_has():
        log.info("%s: this CPU has no %s", what, feature)
        return None
    if sys.platform != "linux":
        log.info("%s: the C kernels are built on Linux only", what)
        return None
    cc = compiler()
    if cc is None:
        log.warning("%s: no C compiler found", what)
        return None
    try:
        lib = ctypes.CDLL(str(build(HERE / source, BASE_FLAGS + flags, cc)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        log.warning("%s: %s", what, e)
        return None
    functions = {}
    for symbol, argtypes in symbols.items():
        fn = functions[symbol] = getattr(lib, symbol)
        fn.restype = ctypes.c_int
        fn.argtypes = argtypes
    return functions


def run_jobs(
    fn: ctypes._CFuncPtr,
    x: torch.Tensor,
    weights: list[torch.Tensor],
    experts: list[int],
    *,
    n: int,
    k: int,
    num_experts: int,
    shared_x: bool,
) -> torch.Tensor:
    """``y[j] = x[j] @ W[experts[j]].T`` as float32 ``[J, T, n]`` through kernel ``fn``; ``x``
    ``[T, k]`` used by every job (``shared_x``) or ``[J, T, k]``. The weights' own shapes and
    dtypes are the caller's to check: here, what every kernel reads the same way."""
    # The C side trusts every pointer and index: check what it will read.
    if x.shape[-1] != k:
        raise ValueError(f"activation width {x.shape[-1]} does not fit weights of {k} columns")
    if not experts or min(experts) < 0 or max(experts) >= num_experts:
        raise IndexError(f"experts {experts} out of range for a bank of {num_experts}")
    j = len(experts)
    if not shared_x and (x.dim() != 3 or x.shape[0] != j):
        raise ValueError(f"per-job activations must be [{j}, T, {k}], got {tuple(x.shape)}")
    if x.dtype != torch.float32 or not x.is_contiguous():
        x = x.float().contiguous()
    t = x.shape[-2]
    # A ctypes array, not a tensor: each torch call costs microseconds more when a decode step's
    # weight stream has just flushed the caches, and a MoE layer makes two of these calls.
    index = (ctypes.c_int64 * j)(*experts)
    y = torch.empty(j, t, n)
    rc = fn(
        x.data_ptr(), 0 if shared_x else t * k, t, k, *(w.data_ptr() for w in weights),
        ctypes.addressof(index), j, n, y.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    if rc:
        raise MemoryError(f"the kernel could not allocate scratch for {j} x {t} rows of {k}")
    return y
