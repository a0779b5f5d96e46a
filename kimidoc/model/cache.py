"""The latent KV cache: per token and layer, only ``kv_lora_rank + qk_rope_head_dim`` values.

Each layer keeps one ``[batch, capacity, kv_lora_rank + qk_rope_head_dim]`` buffer holding the
normalised ``c_kv`` followed by the rotated ``k_pe`` (576 values for K2.6, 70,272 bytes per token
over 61 layers in bf16). Per-head keys and values are never stored: prefill expands them on the
fly and decode works in the absorbed form straight on these latents (see :mod:`.mla`).

``tokens`` records which ids the cached positions hold, so a later call can reuse a shared prefix.

Capacity comes in multiples of ``PAD`` tokens, and :meth:`LatentCache.padded` gives a layer's
latents up to the next multiple, with finite values past the cached ones: a decode step then
multiplies by a key matrix whose shape changes once every ``PAD`` tokens, not every token
(oneDNN builds a kernel per shape, see :mod:`.mla`). The fused attention kernel
(:mod:`.decode_ops`) reads the cached latents as they are, without the padding.
"""

from __future__ import annotations

import torch

# A new shape costs oneDNN ~0.4 ms to build a kernel for; padding costs up to PAD-1 rows of work
# per layer and step: 64 keeps both to a few percent of a step's attention at 1K tokens.
PAD = 64


class LatentCache:
    def __init__(
        self,
        num_layers: int,
        latent_dim: int,
        *,
        batch_size: int = 1,
        capacity: int = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        self.num_layers = num_layers
        self.latent_dim = latent_dim
        self.batch_size = batch_size
        self.dtype = dtype
        self.device = torch.device(device)
        self.length = 0
        self.tokens: list[int] = []
        self._buffers = [self._alloc(capacity) for _ in range(num_layers)]
        self._finite = [0] * num_layers  # per layer, positions before this hold finite values

    def _alloc(self, capacity: int) -> torch.Tensor:
        capacity = -(-capacity // PAD) * PAD
        # A normal tensor even when the cache grows inside a step (inference mode), so that code
        # outside inference mode may still append to it.
        with torch.inference_mode(False):
            return torch.empty(self.batch_size, capacity, self.latent_dim, dtype=self.dtype, device=self.device)

    @property
    def capacity(self) -> int:
        return self._buffers[0].shape[1]

    def reserve(self, capacity: int) -> None:
        """Make room for ``capacity`` tokens (copies what is cached when it has to grow)."""
        if capacity <= self.capacity:
            return
        for i, old in enumerate(self._buffers):
            new = self._alloc(capacity)
            new[:, : self.length] = old[:, : self.length]
            self._buffers[i] = new
            self._finite[i] = self.length

    def append(self, layer: int, latent: torch.Tensor) -> torch.Tensor:
        """Write ``latent`` ``[B, T, D]`` after the cached tokens of ``layer``; return all ``[B, length+T, D]``.

        Every layer of one forward writes at the same offset; :meth:`advance` moves it afterwards.
        """
        rows = self.claim(layer, latent.shape[1])
        rows[:, self.length :] = latent
        return rows

    def claim(self, layer: int, count: int) -> torch.Tensor:
        """``layer``'s latents ``[B, length+count, D]``, the last ``count`` rows for the caller to
        write the new tokens' latents into (what :meth:`append` does, for a writer of its own)."""
        end = self.length + count
        if end > self.capacity:
            self.reserve(max(end, 2 * self.capacity))
        self._finite[layer] = max(self._finite[layer], end)
        return self._buffers[layer][:, :end]

    def padded(self, layer: int, end: int) -> torch.Tensor:
        """``layer``'s latents ``[B, n, D]`` up to ``n``, ``end`` rounded up to a multiple of ``PAD``:
        positions from ``end`` on hold finite values (zeros or stale latents) to be masked out."""
        n = -(-end // PAD) * PAD
        buf = self._buffers[layer]
        if self._finite[layer] < n:
            buf[:, self._finite[layer] : n] = 0
            self._finite[layer] = n
        return buf[:, :n]

    def advance(self, count: int) -> None:
        self.length += count

    def layer(self, index: int) -> torch.Tensor:
        """The cached latents of one layer, ``[B, length, kv_lora_rank + qk_rope_head_dim]``."""
        return self._buffers[index][:, : self.length]

    def truncate(self, length: int) -> None:
        """Forget everything after the first ``length`` tokens."""
        self.length = min(self.length, length)
        del self.tokens[length:]

    def nbytes(self) -> int:
        """Bytes of cached values (excluding spare capacity)."""
        return self.num_layers * self.batch_size * self.length * self.latent_dim * self._buffers[0].element_size()
