"""MoonViT-3d, the K2.5/K2.6 vision tower, with the official module names.

State-dict names (under ``vision_tower.``): ``patch_embed.proj``, ``patch_embed.pos_emb.weight``
[H0, W0, D], ``encoder.blocks.N.{norm0, wqkv, wo, norm1, mlp.fc0, mlp.fc1}``,
``encoder.final_layernorm``. Weights keep the official layout: ``wqkv`` rows are [q | k | v], and q/k
head dimensions hold interleaved (real, imaginary) RoPE pairs, pair ``2i`` rotated by the patch
column and pair ``2i+1`` by its row, both at frequency ``theta ** (-4i / head_dim)``.

A packed batch is a flat sequence of patches from several entries (images or frame chunks) with
``grid_thw`` giving (frames, rows, cols) for each; attention never crosses entries, and all frames of
one chunk attend to each other. :meth:`VisionTower.forward` returns the final-LayerNormed patch
states merged 2x2 (mean over frames): ``[tokens, 4, D]``, tokens in raster order of 2x2 blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kimidoc.vision.config import VisionConfig


def _grids(grid_thw: torch.Tensor) -> list[tuple[int, int, int]]:
    return [(int(t), int(h), int(w)) for t, h, w in grid_thw.tolist()]


def sincos_time_embedding(frames: int, dim: int) -> torch.Tensor:
    """[frames, dim] fixed embedding: sin then cos of ``frame * 10000 ** (-2i / dim)`` (float64 like the official numpy code)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = torch.arange(frames, dtype=torch.float64)[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1).to(torch.float32)


class PositionEmbedding(nn.Module):
    """Learned [H0, W0, D] table resampled bicubically to each grid, plus the time embedding for t > 1.

    The time embedding is fixed, so it is computed here rather than stored: the module holds only
    checkpoint tensors and can be built on the meta device and filled by the loader.
    """

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.max_frames = cfg.pos_emb_time
        self.weight = nn.Parameter(torch.zeros(cfg.pos_emb_height, cfg.pos_emb_width, cfg.hidden_size))

    def table(self, rows: int, cols: int) -> torch.Tensor:
        """[rows * cols, D] embedding for one frame."""
        if (rows, cols) == tuple(self.weight.shape[:2]):
            return self.weight.flatten(0, 1)
        grid = self.weight.permute(2, 0, 1)[None].float()
        out = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False)
        return out[0].permute(1, 2, 0).reshape(rows * cols, -1).to(self.weight.dtype)

    def forward(self, x: torch.Tensor, grids: list[tuple[int, int, int]]) -> torch.Tensor:
        cache: dict[tuple[int, int], torch.Tensor] = {}
        time = None
        parts = []
        for t, h, w in grids:
            if t > self.max_frames:
                raise ValueError(
                    f"an entry has {t} frames; the time embedding allows at most {self.max_frames} per chunk"
                )
            spatial = cache.get((h, w))
            if spatial is None:
                spatial = cache[(h, w)] = self.table(h, w)
            if t == 1:
                parts.append(spatial)
                continue
            if time is None:
                time = sincos_time_embedding(self.max_frames, self.weight.shape[-1]).to(
                    self.weight.device, spatial.dtype
                )
            parts.append((spatial[None] + time[:t, None]).flatten(0, 1))
        return x + torch.cat(parts).to(x.dtype)


class PatchEmbed(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.hidden_size, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.pos_emb = PositionEmbedding(cfg)

    def forward(self, pixel_values: torch.Tensor, grids: list[tuple[int, int, int]]) -> torch.Tensor:
        # One 14x14 window per patch, so the convolution is a single matrix product.
        x = F.linear(pixel_values.flatten(1), self.proj.weight.flatten(1), self.proj.bias)
        return self.pos_emb(x, grids)


class Rope2D(nn.Module):
    """cos/sin of the 2-D rotary angles for every patch of a packed batch ([N, head_dim/2] each)."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.head_dim = cfg.head_dim
        self.theta = cfg.rope_theta

    def forward(self, grids: list[tuple[int, int, int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        quarter = torch.arange(0, self.head_dim, 4, device=device)[: self.head_dim // 4].float()
        freqs = 1.0 / self.theta ** (quarter / self.head_dim)
        angles = []
        for t, h, w in grids:
            rows = torch.arange(h, device=device, dtype=torch.float32).repeat_interleave(w)
            cols = torch.arange(w, device=device, dtype=torch.float32).repeat(h)
            pair = torch.stack([cols[:, None] * freqs, rows[:, None] * freqs], dim=-1).flatten(1)
            angles.append(pair.repeat(t, 1))
        theta = torch.cat(angles)
        return theta.cos(), theta.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved (real, imaginary) pairs of ``x`` [N, heads, head_dim] in float32."""
    pairs = x.float().unflatten(-1, (-1, 2))
    re, im = pairs[..., 0], pairs[..., 1]
    cos, sin = cos[:, None], sin[:, None]
    return torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1).flatten(-2).to(x.dtype)


class MLP(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.fc0 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc1 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc1(F.gelu(self.fc0(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.norm0 = nn.LayerNorm(cfg.hidden_size, eps=1e-5)
        self.wqkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size, bias=True)
        self.wo = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=True)
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=1e-5)
        self.mlp = MLP(cfg)

    def attention(self, x: torch.Tensor, lengths: list[int], rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        n = x.shape[0]
        q, k, v = self.wqkv(x).view(n, 3, self.num_heads, self.head_dim).unbind(1)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        # [1, heads, N, head_dim]: CPU SDPA has a fused (flash) kernel only for 4-D inputs; 3-D
        # inputs fall back to materialising the full score matrix, ~3x slower.
        q, k, v = (y.transpose(0, 1)[None] for y in (q, k, v))
        if len(lengths) == 1:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = torch.cat(
                [
                    F.scaled_dot_product_attention(a, b, c)
                    for a, b, c in zip(q.split(lengths, 2), k.split(lengths, 2), v.split(lengths, 2))
                ],
                dim=2,
            )
        return self.wo(out[0].transpose(0, 1).reshape(n, -1))

    def forward(self, x: torch.Tensor, lengths: list[int], rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.attention(self.norm0(x), lengths, rope)
        return x + self.mlp(self.norm1(x))


class Encoder(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.rope_2d = Rope2D(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.final_layernorm = nn.LayerNorm(cfg.hidden_size, eps=1e-5)

    def forward(self, x: torch.Tensor, grids: list[tuple[int, int, int]]) -> torch.Tensor:
        lengths = [t * h * w for t, h, w in grids]
        rope = self.rope_2d(grids, x.device)
        for block in self.blocks:
            x = block(x, lengths, rope)
        return self.final_layernorm(x)


def merge_patches(x: torch.Tensor, grids: list[tuple[int, int, int]], kernel: tuple[int, int]) -> torch.Tensor:
    """[patches, D] -> [tokens, kh*kw, D]: each kh x kw block of patches, averaged over frames."""
    kh, kw = kernel
    out, start = [], 0
    for t, h, w in grids:
        seq = x[start : start + t * h * w].view(t, h // kh, kh, w // kw, kw, -1)
        out.append(seq.permute(0, 1, 3, 2, 4, 5).mean(0).reshape((h // kh) * (w // kw), kh * kw, -1))
        start += t * h * w
    return torch.cat(out)


class VisionTower(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.config = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.encoder = Encoder(cfg)

    def check_inputs(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> list[tuple[int, int, int]]:
        grids = _grids(grid_thw)
        kh, kw = self.config.merge_kernel
        p = self.config.patch_size
        total = sum(t * h * w for t, h, w in grids)
        if tuple(pixel_values.shape[1:]) != (3, p, p) or pixel_values.shape[0] != total:
            raise ValueError(
                f"pixel_values {tuple(pixel_values.shape)} does not match grid_thw (expects [{total}, 3, {p}, {p}])"
            )
        for i, (t, h, w) in enumerate(grids):
            if t < 1 or h % kh or w % kw or h < kh or w < kw:
                raise ValueError(f"grid_thw[{i}] = {(t, h, w)}: rows/cols must be positive multiples of {kh}x{kw}")
        return grids

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        grids = self.check_inputs(pixel_values, grid_thw)
        x = self.patch_embed(pixel_values.to(self.patch_embed.proj.weight.dtype), grids)
        x = self.encoder(x, grids)
        return merge_patches(x, grids, self.config.merge_kernel)


def tokens_of(grid_thw: torch.Tensor, kernel: tuple[int, int] = (2, 2)) -> list[int]:
    """Merged tokens per entry of ``grid_thw`` (frames are averaged, so ``t`` does not count)."""
    return [(h // kernel[0]) * (w // kernel[1]) for _, h, w in _grids(grid_thw)]
