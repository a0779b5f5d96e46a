"""CPU weight storage on 2 MB pages (Linux transparent huge pages), where the system allows it.

A decode step streams every weight it uses once. On 4 KB pages each page of that stream begins with
a TLB miss, and the hardware prefetchers stop at every page boundary; after the step has flushed
the caches even the page-table walk goes to memory. On 2 MB pages the INT4 expert kernel read its
weights 1.07-1.13x faster here (``benchmarks/bench_int4.py`` prints both), and K2.6's 570 GB of
experts need 280K page-table entries instead of 140M.

PyTorch's allocator only asks for huge pages when ``THP_MEM_ALLOC_ENABLE`` is set before its
first allocation, which a library cannot arrange. So :func:`empty` maps the memory itself: a
private anonymous mapping, madvised ``MADV_HUGEPAGE`` over the 2 MB blocks the tensor fills. That
is honoured under THP's usual ``madvise`` setting (and ``always``), not under ``never``. The tensor's
tail past its last whole block is kept on 4 KB pages (``MADV_NOHUGEPAGE``), so resident memory is
the tensor's size, as with ``torch.empty``. Where free 2 MB blocks are scarce (or, as on the
development VM, the hypervisor has taken them back) the first touch of each block costs more than
4 KB pages would: a 2 GB load took 2-4 s instead of 1.4-1.7 s there. ``KIMIDOC_HUGEPAGES=0`` turns
this off.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
import sys
from pathlib import Path

import torch

HUGE = 2 << 20  # the x86-64 / arm64 THP size
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@functools.cache
def available() -> bool:
    """Whether :func:`empty` maps huge-page memory here: Linux, THP not ``[never]``, not switched off."""
    if os.environ.get("KIMIDOC_HUGEPAGES", "1") == "0" or sys.platform != "linux":
        return False
    if not hasattr(mmap, "MADV_HUGEPAGE"):
        return False
    try:
        return "[never]" not in THP_SETTING.read_text()
    except OSError:
        return False


def empty(shape: tuple[int, ...] | torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised CPU tensor; on 2 MB pages when it spans at least one and :func:`available`."""
    nbytes = torch.Size(shape).numel() * dtype.itemsize
    if nbytes < HUGE or not available():
        return torch.empty(shape, dtype=dtype)
    # One block more than needed, so that the tensor can start on a 2 MB boundary: the untouched
    # head and tail of the mapping cost address space only.
    region = mmap.mmap(-1, nbytes + HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    start = _address(region)
    offset = -start % HUGE
    whole = nbytes // HUGE * HUGE
    region.madvise(mmap.MADV_HUGEPAGE, offset, whole)
    # Not the tail: under THP "always" a 2 MB page there would be resident beyond the tensor.
    region.madvise(mmap.MADV_NOHUGEPAGE, offset + whole, len(region) - offset - whole)
    # frombuffer keeps the mapping alive as long as the tensor's storage: it is unmapped with it.
    flat = torch.frombuffer(region, dtype=torch.uint8, count=nbytes, offset=offset)
    return flat.view(dtype).view(shape)


def _address(region: mmap.mmap) -> int:
    view = (ctypes.c_char * 1).from_buffer(region)
    try:
        return ctypes.addressof(view)
    finally:
        del view  # release the export, or the mapping could never be unmapped
