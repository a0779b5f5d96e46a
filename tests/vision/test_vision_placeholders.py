"""Placeholder text/ids for images and frame chunks, and the vision config reader."""

from __future__ import annotations

import json

import pytest
import torch

from kimidoc.placement.inventory import K26_CONFIG
from kimidoc.testing.vision import tiny_vision_config
from kimidoc.vision.config import VisionConfig
from kimidoc.vision.placeholders import (
    MEDIA_PAD,
    MEDIA_PAD_ID,
    expand_media_pads,
    frames_placeholder,
    image_placeholder,
    scatter_media,
    timestamp,
)

REFERENCE_CONFIG = K26_CONFIG  # the official config, shipped with kimidoc


def test_image_placeholder_text():
    assert image_placeholder(3) == "<|media_begin|>image<|media_content|>" + MEDIA_PAD * 3 + "<|media_end|>"
    with pytest.raises(ValueError):
        image_placeholder(0)


def test_frames_placeholder_has_the_chunk_start_time():
    assert timestamp(3723.25) == "01:02:03.250"
    assert (
        frames_placeholder(2, 0.5)
        == "00:00:00.500<|media_begin|>video<|media_content|>" + MEDIA_PAD * 2 + "<|media_end|>"
    )


def test_expand_media_pads_in_order():
    assert (
        expand_media_pads([1, MEDIA_PAD_ID, 2, MEDIA_PAD_ID], [2, 3])
        == [1] + [MEDIA_PAD_ID] * 2 + [2] + [MEDIA_PAD_ID] * 3
    )
    with pytest.raises(ValueError, match="2 media placeholders but 1 images"):
        expand_media_pads([MEDIA_PAD_ID, MEDIA_PAD_ID], [1])


def test_scatter_media_fills_pads_row_major():
    ids = torch.tensor([[5, MEDIA_PAD_ID, 6], [MEDIA_PAD_ID, MEDIA_PAD_ID, 7]])
    embeds = torch.zeros(2, 3, 2)
    features = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    out = scatter_media(embeds, ids, features)
    assert out[0, 1].tolist() == [1, 1] and out[1, 0].tolist() == [2, 2] and out[1, 1].tolist() == [3, 3]
    assert out[0, 0].tolist() == [0, 0] and embeds.abs().sum() == 0  # input untouched


def test_vision_config_reads_the_official_config():
    raw = json.loads(REFERENCE_CONFIG.read_text())
    cfg = VisionConfig.from_dict(raw["vision_config"], raw["text_config"]["hidden_size"])
    assert (cfg.hidden_size, cfg.num_heads, cfg.num_layers, cfg.intermediate_size) == (1152, 16, 27, 4304)
    assert (cfg.pos_emb_height, cfg.pos_emb_width, cfg.pos_emb_time, cfg.merge_kernel) == (64, 64, 4, (2, 2))
    assert cfg.head_dim == 72 and cfg.text_hidden_size == 7168


@pytest.mark.parametrize(
    "key, value", [("merge_type", "sd2"), ("pos_emb_type", "learned"), ("projector_hidden_act", "relu")]
)
def test_vision_config_refuses_unknown_architectures(key, value):
    with pytest.raises(ValueError, match=key):
        VisionConfig.from_dict(tiny_vision_config(**{key: value}))
