"""The whole K2.6 model with images, loaded from a tiny official checkpoint, against transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from vision_hf_kimi import hf_multimodal

from kimidoc.model.shards import CheckpointError
from kimidoc.testing import read_tensors, write_dequantized_copy
from kimidoc.testing.vision import write_multimodal_checkpoint
from kimidoc.vision.multimodal import KimiK25, load_multimodal
from kimidoc.vision.placeholders import (
    MEDIA_BEGIN_ID,
    MEDIA_CONTENT_ID,
    MEDIA_END_ID,
    MEDIA_PAD_ID,
    expand_media_pads,
)
from kimidoc.vision.preprocess import preprocess

IMAGE_WORD = 1901  # stands in for the token of "image" after <|media_begin|>


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_multimodal_checkpoint(tmp_path_factory.mktemp("k25"), seed=7)


@pytest.fixture(scope="module")
def model(checkpoint):
    # float32 activations into the INT4 experts too, so the comparison is exact arithmetic
    return load_multimodal(checkpoint, dtype=torch.float32, int4_compute_dtype=torch.float32)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(5)
    photo = Image.fromarray(rng.integers(0, 256, (150, 100, 3), dtype=np.uint8))
    strip = Image.fromarray(rng.integers(0, 256, (30, 200, 3), dtype=np.uint8), "RGB").convert("RGBA")
    return preprocess([photo, strip])


def _prompt(tokens_per_image: list[int]) -> torch.Tensor:
    block = [MEDIA_BEGIN_ID, IMAGE_WORD, MEDIA_CONTENT_ID, MEDIA_PAD_ID, MEDIA_END_ID]
    ids = [100, 2000, 31] + block + [77, 5000] + block + [9, 1234, 42]
    return torch.tensor([expand_media_pads(ids, tokens_per_image)])


def test_loads_official_vision_names_in_bf16(checkpoint, model, images):
    f32_model = model
    model = load_multimodal(checkpoint, dtype=torch.bfloat16)
    assert isinstance(model, KimiK25)
    stored = read_tensors(checkpoint)
    vision = {k: v for k, v in stored.items() if k.startswith(("vision_tower.", "mm_projector."))}
    state = model.state_dict()
    assert vision and set(vision) <= set(state)
    assert {k for k in state if k.startswith(("vision_tower.", "mm_projector."))} == set(vision)
    for name, tensor in vision.items():
        assert tensor.dtype == torch.bfloat16
        assert state[name].dtype == torch.bfloat16 and torch.equal(state[name], tensor), name
    # The BF16 tower runs and agrees with the float32 one to BF16 precision.
    features = model.encode_images(images.pixel_values, images.grid_thw)
    reference = f32_model.encode_images(images.pixel_values, images.grid_thw)
    assert features.dtype == torch.bfloat16
    assert (features.float() - reference).norm() / reference.norm() < 0.03


@torch.no_grad()
def test_text_and_two_images_match_transformers(model, checkpoint, images, tmp_path):
    config = json.loads((checkpoint / "config.json").read_text())
    reference = hf_multimodal(read_tensors(write_dequantized_copy(checkpoint, tmp_path / "f32")), config)
    ids = _prompt(images.tokens_per_image)
    assert int((ids == MEDIA_PAD_ID).sum()) == sum(images.tokens_per_image)

    features = model.encode_images(images.pixel_values, images.grid_thw)
    hf_features = torch.cat(reference.get_image_features(images.pixel_values, images.grid_thw).pooler_output)
    torch.testing.assert_close(features, hf_features, atol=1e-4, rtol=1e-4)
    one_by_one = model.encode_images(images.pixel_values, images.grid_thw, patches_per_pass=1)
    torch.testing.assert_close(one_by_one, features, atol=1e-5, rtol=1e-5)

    logits = model(ids, images=images)
    hf_logits = reference(input_ids=ids, pixel_values=images.pixel_values, image_grid_thw=images.grid_thw).logits
    assert logits.shape == hf_logits.shape
    torch.testing.assert_close(logits, hf_logits, atol=1e-4, rtol=1e-4)
    assert torch.equal(logits.argmax(-1), hf_logits.argmax(-1))
    # The images matter: the same prompt with blank images gives different logits after them.
    blank = preprocess([Image.new("RGB", (100, 150)), Image.new("RGB", (200, 30))])
    assert not torch.allclose(model(ids, images=blank)[0, -1], logits[0, -1], atol=1e-3)


@torch.no_grad()
def test_placeholder_count_mismatch_is_an_error(model, images):
    ids = _prompt(images.tokens_per_image)
    with pytest.raises(ValueError, match="media_pad"):
        model(ids[:, :-8], images=images)  # the prompt lost the last pads of the second image
    with pytest.raises(ValueError, match="no images were given"):
        model.embed(ids)
    with pytest.raises(ValueError, match="placeholders"):
        expand_media_pads([MEDIA_PAD_ID], [3, 4])


def test_vision_tensor_of_the_wrong_shape_is_named(tmp_path):
    path = write_multimodal_checkpoint(tmp_path / "bad", seed=1)
    config = json.loads((path / "config.json").read_text())
    config["vision_config"]["vt_intermediate_size"] = 48  # the files hold 64-wide MLPs
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match=r"vision_tower\.encoder\.blocks\.\d\.mlp\.fc[01]\.(weight|bias) has shape"
    ):
        load_multimodal(path, dtype=torch.float32)
