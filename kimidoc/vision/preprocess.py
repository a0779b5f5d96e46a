"""Images (and short frame sequences) to the patches and grids the MoonViT tower reads.

Public API (used by the chat template, the local backend and the documents tools):

* ``preprocess(images) -> VisionInputs``: ``images`` is a list of PIL images, encoded bytes or
  paths. Each image is decoded upright to RGB (:mod:`kimidoc.vision.images`), resized with Pillow's
  bicubic filter to :func:`kimidoc.vision.budget.target_size` (never upscaled, at most 16384 patches
  and 512 per side), zero-padded right/bottom to a multiple of 28, scaled to [-1, 1]
  (mean = std = 0.5) and cut into 14x14 patches in raster order.
* ``preprocess_frames(frames) -> VisionInputs``: equally sized frames of one clip, grouped into
  chunks of up to 4 frames; each chunk is one entry with ``t`` = its frame count, and costs one
  frame's worth of tokens (the merger averages over time).

``VisionInputs.pixel_values`` is ``[patches, 3, 14, 14]`` float32, ``grid_thw`` is ``[entries, 3]``
(frames, patch rows, patch columns) and ``tokens_per_image[i]`` is the number of ``<|media_pad|>``
placeholders entry ``i`` needs; it always equals :func:`kimidoc.vision.budget.image_tokens` of the
decoded size (the padding is black *before* normalisation, i.e. -1, as in the official processor).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from kimidoc.progress import progress
from kimidoc.vision import budget
from kimidoc.vision.budget import FRAME_MAX_PATCHES, FRAMES_PER_CHUNK
from kimidoc.vision.images import MAX_PIXELS, ImageError, ImageSource, decode_image, describe


@dataclass
class VisionInputs:
    pixel_values: torch.Tensor  # [patches, 3, 14, 14]
    grid_thw: torch.Tensor  # [entries, 3] long
    tokens_per_image: list[int]
    sizes: list[tuple[int, int]] = field(default_factory=list)  # decoded (width, height) per entry

    def __len__(self) -> int:
        return len(self.tokens_per_image)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> VisionInputs:
        return VisionInputs(
            self.pixel_values.to(device=device, dtype=dtype),
            self.grid_thw.to(device),
            self.tokens_per_image,
            self.sizes,
        )


def preprocess(
    images: Sequence[ImageSource],
    *,
    max_patches: int = budget.MAX_PATCHES,
    max_side: int = budget.MAX_PATCHES_PER_SIDE,
    max_pixels: int = MAX_PIXELS,
) -> VisionInputs:
    """Decode, resize, pad and patchify ``images``; errors name the offending file."""
    if isinstance(images, (Image.Image, bytes, str, os.PathLike)):
        raise TypeError("preprocess() takes a list of images, not one image")
    pixels, grids, tokens, sizes = [], [], [], []
    for index, source in enumerate(progress(images, desc="preprocess images", unit="img")):
        image = decode_image(source, name=describe(source, index), max_pixels=max_pixels)
        frame = _resize_pad(image, max_patches, max_side)
        patches, grid = _patchify(frame[None])
        pixels.append(patches)
        grids.append(grid)
        tokens.append(budget.image_tokens(*image.size, max_patches=max_patches, max_side=max_side))
        sizes.append(image.size)
    return _batch(pixels, grids, tokens, sizes)


def preprocess_frames(
    frames: Sequence[ImageSource],
    *,
    frames_per_chunk: int = FRAMES_PER_CHUNK,
    max_patches: int = FRAME_MAX_PATCHES,
    max_side: int = budget.MAX_PATCHES_PER_SIDE,
    max_pixels: int = MAX_PIXELS,
) -> VisionInputs:
    """One clip's frames (all the same size) as chunks of up to ``frames_per_chunk`` frames."""
    if not 1 <= frames_per_chunk <= FRAMES_PER_CHUNK:
        raise ValueError(
            f"frames_per_chunk must be 1..{FRAMES_PER_CHUNK} (rows of the time embedding), got {frames_per_chunk}"
        )
    if not frames:
        raise ValueError("preprocess_frames() needs at least one frame")
    decoded = [decode_image(f, name=describe(f, i), max_pixels=max_pixels) for i, f in enumerate(frames)]
    size = decoded[0].size
    for i, image in enumerate(decoded):
        if image.size != size:
            raise ImageError(
                f"{describe(frames[i], i)}: frame is {image.size[0]}x{image.size[1]}, the clip's first frame is {size[0]}x{size[1]}"
            )
    resized = [_resize_pad(image, max_patches, max_side) for image in decoded]
    pixels, grids, tokens, sizes = [], [], [], []
    per_chunk = budget.image_tokens(*size, max_patches=max_patches, max_side=max_side)
    for start in range(0, len(resized), frames_per_chunk):
        patches, grid = _patchify(np.stack(resized[start : start + frames_per_chunk]))
        pixels.append(patches)
        grids.append(grid)
        tokens.append(per_chunk)
        sizes.append(size)
    return _batch(pixels, grids, tokens, sizes)


def _resize_pad(image: Image.Image, max_patches: int, max_side: int) -> np.ndarray:
    """uint8 [H, W, 3], resized to the budget's size and zero-padded to the budget's padded size."""
    limits = {"max_patches": max_patches, "max_side": max_side}
    new_size = budget.target_size(*image.size, **limits)
    if new_size != image.size:
        image = image.resize(new_size, Image.Resampling.BICUBIC)
    pad_w, pad_h = budget.pad_size(*new_size)
    out = np.zeros((pad_h, pad_w, 3), dtype=np.uint8)
    out[: new_size[1], : new_size[0]] = np.asarray(image, dtype=np.uint8)
    return out


def _patchify(frames: np.ndarray) -> tuple[torch.Tensor, list[int]]:
    """[T, H, W, 3] uint8 -> ([T*rows*cols, 3, 14, 14] in [-1, 1], [T, rows, cols])."""
    t, h, w, _ = frames.shape
    p = budget.PATCH
    x = torch.from_numpy(frames).to(torch.float32).div_(255.0).sub_(0.5).div_(0.5)
    x = x.view(t, h // p, p, w // p, p, 3).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(-1, 3, p, p).contiguous(), [t, h // p, w // p]


def _batch(
    pixels: list[torch.Tensor], grids: list[list[int]], tokens: list[int], sizes: list[tuple[int, int]]
) -> VisionInputs:
    if not pixels:
        return VisionInputs(torch.zeros(0, 3, budget.PATCH, budget.PATCH), torch.zeros(0, 3, dtype=torch.long), [], [])
    return VisionInputs(torch.cat(pixels), torch.tensor(grids, dtype=torch.long), tokens, sizes)
