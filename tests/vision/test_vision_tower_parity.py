"""The tower, merger and projector against transformers' Kimi_K25VisionModel on the same weights."""

from __future__ import annotations

import pytest
import torch
from vision_hf_kimi import hf_vision

from kimidoc.testing.vision import random_vision_tensors, tiny_vision_config
from kimidoc.vision.config import VisionConfig
from kimidoc.vision.projector import PatchMergerMLP
from kimidoc.vision.tower import VisionTower, tokens_of

# Grids cover: smaller than the 8x8 position table, exactly it (no interpolation), larger than it
# in one and both directions, a 2x2 minimum, and frame chunks of 3 and 4 frames.
GRIDS = [(1, 4, 6), (1, 8, 8), (1, 2, 2), (1, 12, 16), (1, 20, 2), (3, 4, 4), (4, 2, 6)]


def _ours(tensors: dict[str, torch.Tensor], cfg: VisionConfig) -> tuple[VisionTower, PatchMergerMLP]:
    tower, projector = VisionTower(cfg).eval(), PatchMergerMLP(cfg).eval()
    tower.load_state_dict(
        {k.removeprefix("vision_tower."): v.float() for k, v in tensors.items() if k.startswith("vision_tower.")}
    )
    projector.load_state_dict(
        {k.removeprefix("mm_projector."): v.float() for k, v in tensors.items() if k.startswith("mm_projector.")}
    )
    return tower, projector


@pytest.fixture(scope="module")
def models():
    raw = tiny_vision_config(
        vt_hidden_size=48,
        vt_num_attention_heads=3,
        vt_intermediate_size=80,
        vt_num_hidden_layers=3,
        text_hidden_size=40,
    )
    cfg = VisionConfig.from_dict(raw)
    tensors = random_vision_tensors(raw, seed=1, dtype=torch.float32)
    return cfg, _ours(tensors, cfg), hf_vision(tensors, cfg)


@torch.no_grad()
def test_tower_and_projector_match_transformers(models):
    cfg, (tower, projector), (hf_tower, hf_projector) = models
    grid = torch.tensor(GRIDS)
    pixels = torch.randn(sum(t * h * w for t, h, w in GRIDS), 3, 14, 14, generator=torch.Generator().manual_seed(0))
    merged = tower(pixels, grid)
    hf_merged = hf_tower(pixels, grid_thw=grid).pooler_output
    assert merged.shape == hf_merged.shape == (sum(tokens_of(grid)), 4, cfg.hidden_size)
    torch.testing.assert_close(merged, hf_merged, atol=1e-4, rtol=1e-4)
    features, hf_features = projector(merged), hf_projector(hf_merged).squeeze(1)
    assert features.shape == (sum(tokens_of(grid)), cfg.text_hidden_size)
    torch.testing.assert_close(features, hf_features, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_attention_stays_inside_each_image(models):
    _, (tower, _), _ = models
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(24, 3, 14, 14, generator=gen), torch.randn(16, 3, 14, 14, generator=gen)
    alone = tower(a, torch.tensor([[1, 4, 6]]))
    packed = tower(torch.cat([a, b]), torch.tensor([[1, 4, 6], [1, 4, 4]]))
    torch.testing.assert_close(packed[:6], alone, atol=1e-5, rtol=1e-5)
    # and a changed neighbour changes nothing
    packed2 = tower(torch.cat([a, -b]), torch.tensor([[1, 4, 6], [1, 4, 4]]))
    torch.testing.assert_close(packed2[:6], alone, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_frames_in_a_chunk_see_each_other_and_the_time_embedding(models):
    _, (tower, _), _ = models
    frame = torch.randn(16, 3, 14, 14, generator=torch.Generator().manual_seed(4))
    still = tower(frame, torch.tensor([[1, 4, 4]]))
    # Two identical frames differ only by the time embedding, so the chunk is not the still image.
    clip = tower(torch.cat([frame, frame]), torch.tensor([[2, 4, 4]]))
    assert clip.shape == still.shape
    assert not torch.allclose(clip, still, atol=1e-3)


def test_bad_grid_is_refused(models):
    _, (tower, _), _ = models
    with pytest.raises(ValueError, match="grid_thw"):
        tower(torch.zeros(12, 3, 14, 14), torch.tensor([[1, 3, 4]]))
    with pytest.raises(ValueError, match="does not match grid_thw"):
        tower(torch.zeros(10, 3, 14, 14), torch.tensor([[1, 2, 4]]))
    with pytest.raises(ValueError, match="at most 4"):
        tower(torch.zeros(20, 3, 14, 14), torch.tensor([[5, 2, 2]]))
