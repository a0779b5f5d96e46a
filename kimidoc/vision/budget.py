"""How many tokens an image will cost, computed from its size alone (no decoding, no tower).

The context packer budgets images with this before any pixel is touched, so it must agree
exactly with what :mod:`kimidoc.vision.preprocess` produces.
"""

from __future__ import annotations

import math

PATCH = 14
MERGE = 2
UNIT = PATCH * MERGE  # 28: one merged token covers 28x28 pixels
MAX_PATCHES = 16384
MAX_PATCHES_PER_SIDE = 512


def target_size(width: int, height: int, *, max_patches: int = MAX_PATCHES, max_side: int = MAX_PATCHES_PER_SIDE) -> tuple[int, int]:
    """The (width, height) an image is resized to: never upscaled, at most ``max_patches`` patches
    of 14 pixels and ``max_side`` patches per side, aspect ratio kept."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image has no pixels ({width}x{height})")
    scale = 1.0
    pw, ph = width / PATCH, height / PATCH
    if pw * ph > max_patches:
        scale = min(scale, math.sqrt(max_patches / (pw * ph)))
    if pw > max_side:
        scale = min(scale, max_side / pw)
    if ph > max_side:
        scale = min(scale, max_side / ph)
    return max(1, int(width * scale)), max(1, int(height * scale))


def padded_grid(width: int, height: int) -> tuple[int, int]:
    """(rows, cols) of 14-pixel patches after zero-padding the resized image to a multiple of 28."""
    w, h = target_size(width, height)
    return math.ceil(h / UNIT) * MERGE, math.ceil(w / UNIT) * MERGE


def image_tokens(width: int, height: int) -> int:
    """Tokens one image costs in K2.6's context: one per 2x2 block of patches."""
    rows, cols = padded_grid(width, height)
    return (rows // MERGE) * (cols // MERGE)
