"""The machine a plan is made for: budgets given as flags, the rest detected here.

Detected budgets are what is free *now*: each GPU's free memory (``torch.cuda.mem_get_info``),
RAM available to a new process (``MemAvailable`` in ``/proc/meminfo``, else psutil) less a
reserve for the Python process, activations and allocator slack, and, when a disk-cache folder is
given, the free space of its file system for the disk tier (disk-tier experts are read from the
checkpoint and kept there in the kernel layout). No disk tier without a folder: reading experts
from disk is slow, so it is something a user asks for.

    machine = machine_for(cpu_memory="64GiB", disk_cache="/scratch/kimi")
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kimidoc.placement.plan import GiB, Machine, parse_bytes, parse_gpus

# RAM left out of a detected budget: the interpreter, the tokenizer, activations and logits,
# allocator slack. A tenth of what is available, at least 1 GiB (or all of it on a tiny machine).
RAM_RESERVE_FRACTION = 0.1
RAM_RESERVE_MIN = 1 * GiB


def available_ram() -> int:
    """Bytes of RAM a new allocation can get without swapping."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil
    except ImportError as e:
        raise RuntimeError(
            "cannot tell how much RAM is free (no /proc/meminfo, no psutil): pass a RAM budget (--cpu-memory)"
        ) from e
    return int(psutil.virtual_memory().available)


def ram_budget(available: int) -> int:
    """The weights' share of ``available`` RAM (see :data:`RAM_RESERVE_FRACTION`)."""
    return max(0, available - max(RAM_RESERVE_MIN, int(available * RAM_RESERVE_FRACTION)))


def free_gpu_memory() -> list[int]:
    """Free bytes on each visible CUDA device; none when torch or CUDA is absent."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [int(torch.cuda.mem_get_info(i)[0]) for i in range(torch.cuda.device_count())]


def machine_for(
    gpu_memory: list[str] | list[int] | None = None,
    cpu_memory: str | int | None = None,
    disk_cache: str | Path | None = None,
    disk_memory: str | int | None = None,
) -> Machine:
    """A :class:`Machine` from the budgets given (sizes like ``"24GiB"``), detecting the others.

    ``gpu_memory`` per GPU (``["24GiB"]``, ``["8x141GB"]``, bytes; ``[]`` or ``["0"]`` for none); ``cpu_memory``
    the RAM for weights; ``disk_cache`` a folder that turns the disk tier on, sized by
    ``disk_memory`` or else by the folder's free space.
    """
    gpus = free_gpu_memory() if gpu_memory is None else parse_gpus([str(g) for g in gpu_memory])
    if not any(gpus):  # "--gpu-memory 0": plan without the GPUs
        gpus = []
    cpu = ram_budget(available_ram()) if cpu_memory is None else parse_bytes(cpu_memory)
    disk: int | None = None
    if disk_memory is not None:
        disk = parse_bytes(disk_memory)
    elif disk_cache is not None:
        folder = Path(disk_cache).expanduser()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"disk cache folder {folder}: cannot create it ({e.strerror})") from e
        if not os.access(folder, os.W_OK):
            raise ValueError(f"disk cache folder {folder} is not writable")
        disk = shutil.disk_usage(folder).free
    return Machine(gpus=gpus, cpu=cpu, disk=disk)
