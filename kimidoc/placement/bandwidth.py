"""The machine's memory bandwidth, which bounds decode speed: each token must read its weights once."""

from __future__ import annotations

import time


def measure_read_bandwidth(nbytes: int = 512 * 1024**2, repeats: int = 5, device: str = "cpu") -> float:
    """Bytes/s of a streaming read (``t.sum()`` over ``nbytes``), best of ``repeats``."""
    import torch

    t = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    t.sum()  # fault the pages in before timing
    best = float("inf")
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        t.sum()
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return nbytes / best
