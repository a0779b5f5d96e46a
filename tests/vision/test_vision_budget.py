"""The image token formula against transformers' own ``navit_resize`` (K2.6's resize rule)."""

from __future__ import annotations

import ast
import math
import random
from pathlib import Path

import pytest
import transformers

from kimidoc.vision import budget

EDGE_SIZES = [
    (1, 1),
    (1, 2000),
    (2000, 1),
    (4000, 30),
    (30, 4000),
    (13, 13),
    (14, 14),
    (27, 29),
    (28, 28),
    (7168, 7168),
    (7169, 7168),
    (7183, 7183),
    (10_000, 10),
    (100_000, 14),
    (1792, 1792),
    (1793, 1793),
    (3000, 2000),
    (4032, 3024),
    (1920, 1080),
    (612, 792),
    (1224, 1584),
    (2480, 3508),
    (999, 1),
]


def _hf_navit_resize():
    """``navit_resize`` from transformers' image_processing_kimi_k25.py, executed on its own: the
    module imports torchvision at the top, which this machine does not have."""
    path = Path(transformers.__file__).parent / "models" / "kimi_k25" / "image_processing_kimi_k25.py"
    tree = ast.parse(path.read_text())
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "navit_resize")
    scope: dict = {"math": math}
    exec(compile(ast.Module(body=[func], type_ignores=[]), str(path), "exec"), scope)  # noqa: S102 - transformers source, not input
    return scope["navit_resize"]


def _sizes():
    rng = random.Random(1234)
    sizes = list(EDGE_SIZES)
    for _ in range(3000):
        sizes.append((rng.randint(1, 9000), rng.randint(1, 9000)))
    for _ in range(500):  # extreme aspect ratios
        sizes.append((rng.randint(1, 60), rng.randint(1, 40_000)))
    return sizes


def test_budget_matches_transformers_navit_resize():
    navit = _hf_navit_resize()
    for w, h in _sizes():
        (new_h, new_w), (pad_h, pad_w) = navit(
            h, w, patch_size=14, merge_kernel_size=2, max_patches=16384, max_size_per_side=512
        )
        assert budget.target_size(w, h) == (new_w, new_h), (w, h)
        assert budget.padded_size(w, h) == (pad_w, pad_h), (w, h)
        assert budget.image_tokens(w, h) == (pad_h // 28) * (pad_w // 28), (w, h)


def test_budget_never_upscales_and_respects_limits():
    for w, h in _sizes():
        nw, nh = budget.target_size(w, h)
        assert nw <= w and nh <= h
        rows, cols = budget.padded_grid(w, h)
        assert rows <= 512 and cols <= 512
        assert rows % 2 == 0 and cols % 2 == 0
        assert budget.image_tokens(w, h) == budget.image_tokens(h, w)  # EXIF rotation is free


def test_known_counts():
    assert budget.image_tokens(1, 2000) == 72 * 1  # 28 x 2016 after padding
    assert budget.image_tokens(4000, 30) == 143 * 2  # 4004 x 56
    assert budget.image_tokens(28, 28) == 1
    assert budget.image_tokens(7168, 7168) == 4096  # capped by 16384 patches: 128 x 128 patches
    # A photo is scaled down to the patch budget, keeping its aspect ratio.
    assert budget.target_size(4032, 3024) == (2069, 1551)
    assert budget.frames_tokens(100, 60, 9) == 3 * budget.image_tokens(100, 60)


def test_empty_image_is_refused():
    with pytest.raises(ValueError, match="no pixels"):
        budget.image_tokens(0, 10)
