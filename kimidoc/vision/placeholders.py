"""Where images go in K2.6's text: media markers and one ``<|media_pad|>`` per merged token.

An image in a prompt is ``<|media_begin|>image<|media_content|>`` + N x ``<|media_pad|>`` +
``<|media_end|>``, N being the image's token count (:func:`kimidoc.vision.budget.image_tokens`,
or ``VisionInputs.tokens_per_image``). A chunk of video frames is the same block with the word
``video`` after a ``HH:MM:SS.mmm`` timestamp of its first frame.

* :func:`image_placeholder` / :func:`frames_placeholder` give that text for one entry.
* :func:`expand_media_pads` turns token ids rendered with a single ``<|media_pad|>`` per image (as
  the chat template writes them) into ids with N pads per image.
* :func:`scatter_media` puts projected image features into the pad positions of text embeddings.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

MEDIA_BEGIN = "<|media_begin|>"
MEDIA_CONTENT = "<|media_content|>"
MEDIA_END = "<|media_end|>"
MEDIA_PAD = "<|media_pad|>"
MEDIA_BEGIN_ID = 163602
MEDIA_CONTENT_ID = 163603
MEDIA_END_ID = 163604
MEDIA_PAD_ID = 163605


def image_placeholder(tokens: int) -> str:
    """The text of one image costing ``tokens`` tokens."""
    if tokens < 1:
        raise ValueError(f"an image costs at least one token, got {tokens}")
    return f"{MEDIA_BEGIN}image{MEDIA_CONTENT}{MEDIA_PAD * tokens}{MEDIA_END}"


def timestamp(seconds: float) -> str:
    """``HH:MM:SS.mmm`` as K2.6's video prompts write a chunk's start time."""
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1000):03d}"


def frames_placeholder(tokens: int, start_seconds: float) -> str:
    """The text of one chunk of video frames costing ``tokens`` tokens, starting at ``start_seconds``."""
    if tokens < 1:
        raise ValueError(f"a frame chunk costs at least one token, got {tokens}")
    return f"{timestamp(start_seconds)}{MEDIA_BEGIN}video{MEDIA_CONTENT}{MEDIA_PAD * tokens}{MEDIA_END}"


def expand_media_pads(
    input_ids: Sequence[int], tokens_per_image: Sequence[int], pad_id: int = MEDIA_PAD_ID
) -> list[int]:
    """Replace the i-th single ``pad_id`` by ``tokens_per_image[i]`` copies; the counts must match."""
    found = sum(1 for token in input_ids if token == pad_id)
    if found != len(tokens_per_image):
        raise ValueError(f"the prompt has {found} media placeholders but {len(tokens_per_image)} images were given")
    counts = iter(tokens_per_image)
    out: list[int] = []
    for token in input_ids:
        out.extend([pad_id] * next(counts) if token == pad_id else [token])
    return out


def scatter_media(
    inputs_embeds: torch.Tensor, input_ids: torch.Tensor, features: torch.Tensor, pad_id: int = MEDIA_PAD_ID
) -> torch.Tensor:
    """Embeddings with the ``pad_id`` positions replaced, in order, by the rows of ``features``."""
    mask = input_ids == pad_id
    count = int(mask.sum())
    if count != features.shape[0]:
        raise ValueError(f"the prompt has {count} {MEDIA_PAD} tokens but the images give {features.shape[0]} features")
    out = inputs_embeds.clone()
    out[mask] = features.to(out.dtype)
    return out
