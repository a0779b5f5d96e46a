"""How many tokens an image will cost, computed from its size alone (no decoding, no tower).

The context packer budgets images with this before any pixel is touched, so it must agree
exactly with what :mod:`kimidoc.vision.preprocess` produces; preprocessing calls
:func:`target_size` and :func:`pad_size` itself, so there is one formula, not two.

The rule is K2.6's NaViT resize (``navit_resize_image`` in the official processor, ``navit_resize``
in transformers' ``image_processing_kimi_k25.py``):

* the patch budget is checked on *whole* patches (``width // 14``, at least 1), not ``width / 14``;
* the scale is the smallest of 1 (never upscale), ``sqrt(max_patches / patches)`` and
  ``512 * 14 / side`` for each side; sizes are truncated (``int``), at least 1 pixel;
* the resized image is then zero-padded right and bottom to a multiple of 28 (2x2 merge of 14-pixel
  patches), and every 28x28 block is one token.

Swapping width and height gives the same count, so EXIF rotation never changes a budget.
"""

from __future__ import annotations

import math

PATCH = 14
MERGE = 2
UNIT = PATCH * MERGE  # 28: one merged token covers 28x28 pixels
MAX_PATCHES = 16384
MAX_PATCHES_PER_SIDE = 512
FRAMES_PER_CHUNK = 4  # video frames per tower entry (rows of the time embedding)
FRAME_MAX_PATCHES = 4096  # per-frame patch budget of K2.6's video processor


def target_size(
    width: int, height: int, *, max_patches: int = MAX_PATCHES, max_side: int = MAX_PATCHES_PER_SIDE
) -> tuple[int, int]:
    """The (width, height) an image is resized to: never upscaled, at most ``max_patches`` patches
    of 14 pixels and ``max_side`` patches per side, aspect ratio kept."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image has no pixels ({width}x{height})")
    patches = max(1, width // PATCH) * max(1, height // PATCH)
    scale = min(1.0, math.sqrt(max_patches / patches), max_side * PATCH / width, max_side * PATCH / height)
    new_w = min(max(1, int(width * scale)), max_side * PATCH)
    new_h = min(max(1, int(height * scale)), max_side * PATCH)
    return new_w, new_h


def pad_size(width: int, height: int) -> tuple[int, int]:
    """An already resized (width, height) rounded up to multiples of 28 (the zero padding)."""
    return math.ceil(width / UNIT) * UNIT, math.ceil(height / UNIT) * UNIT


def padded_size(width: int, height: int, **limits: int) -> tuple[int, int]:
    """(width, height) of an original image after the resize and the zero padding."""
    return pad_size(*target_size(width, height, **limits))


def padded_grid(width: int, height: int, **limits: int) -> tuple[int, int]:
    """(rows, cols) of 14-pixel patches after zero-padding the resized image to a multiple of 28."""
    w, h = padded_size(width, height, **limits)
    return h // PATCH, w // PATCH


def image_tokens(width: int, height: int, **limits: int) -> int:
    """Tokens one image costs in K2.6's context: one per 2x2 block of patches."""
    rows, cols = padded_grid(width, height, **limits)
    return (rows // MERGE) * (cols // MERGE)


def frames_tokens(
    width: int,
    height: int,
    num_frames: int,
    *,
    frames_per_chunk: int = FRAMES_PER_CHUNK,
    max_patches: int = FRAME_MAX_PATCHES,
) -> int:
    """Tokens a clip of ``num_frames`` equally sized frames costs: each chunk of up to
    ``frames_per_chunk`` frames is averaged over time into one frame's worth of tokens."""
    return math.ceil(num_frames / frames_per_chunk) * image_tokens(width, height, max_patches=max_patches)
