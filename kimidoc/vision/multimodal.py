"""K2.5/K2.6 as one model: the text backbone, the MoonViT tower and the projector.

:func:`load_multimodal` loads a checkpoint with its tower: :func:`kimidoc.model.loading.load` with
:func:`build_multimodal` as the ``wrap`` for a config that has ``vision_config``; the returned :class:`KimiK25` names its tensors exactly as the checkpoint does
(``language_model.*``, ``vision_tower.*``, ``mm_projector.*``), so loading is a fill by name.

Use::

    inputs = preprocess([page_png, "chart.jpg"])           # kimidoc.vision.preprocess
    ids = expand_media_pads(prompt_ids, inputs.tokens_per_image)
    logits = model(torch.tensor([ids]), images=inputs)       # prefill with images
    logits = model(next_ids, cache=cache)                    # later steps: text only

Image features replace the ``<|media_pad|>`` embeddings in order (row-major over the batch), as
transformers' ``masked_scatter`` does; every other call is the text model's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kimidoc.model.config import KimiConfig
from kimidoc.model.loading import load
from kimidoc.model.slots import Slot, module_slots
from kimidoc.progress import progress
from kimidoc.vision.config import VisionConfig
from kimidoc.vision.placeholders import MEDIA_PAD_ID, scatter_media
from kimidoc.vision.preprocess import VisionInputs
from kimidoc.vision.projector import PatchMergerMLP
from kimidoc.vision.tower import VisionTower

PATCHES_PER_PASS = 16384  # one full-budget image, or several smaller ones packed together


class KimiK25(nn.Module):
    def __init__(self, vision_config: VisionConfig, language_model: nn.Module, *, media_pad_id: int = MEDIA_PAD_ID):
        super().__init__()
        self.vision_config = vision_config
        self.media_pad_id = media_pad_id
        self.language_model = language_model
        self.vision_tower = VisionTower(vision_config)
        self.mm_projector = PatchMergerMLP(vision_config)

    # The text model's surface, so generation code written for it runs unchanged.
    @property
    def config(self) -> Any:
        return self.language_model.config

    @property
    def dtype(self) -> torch.dtype:
        return self.language_model.dtype

    @property
    def device(self) -> torch.device:
        return self.language_model.device

    def new_cache(self, *args: Any, **kwargs: Any) -> Any:
        return self.language_model.new_cache(*args, **kwargs)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.language_model.logits(hidden)

    def expert_banks(self) -> list:
        return self.language_model.expert_banks()

    def checkpoint_slots(self, prefix: str = "") -> dict[str, Slot]:
        """Official tensor name -> slot for every tensor of the checkpoint."""
        slots = dict(self.language_model.checkpoint_slots(prefix + "language_model."))
        slots.update(module_slots(self.vision_tower, prefix + "vision_tower."))
        slots.update(module_slots(self.mm_projector, prefix + "mm_projector."))
        return slots

    @torch.no_grad()
    def encode_images(
        self, pixel_values: torch.Tensor, grid_thw: torch.Tensor, *, patches_per_pass: int = PATCHES_PER_PASS
    ) -> torch.Tensor:
        """Projected features ``[tokens, text hidden]``, tokens of all entries concatenated.

        Entries are encoded in packed passes of about ``patches_per_pass`` patches (one entry may
        exceed it), which bounds activation memory and drives the progress bar; attention never
        crosses entries, so the split does not change the result."""
        weight = self.vision_tower.patch_embed.proj.weight
        pixel_values, grid_thw = pixel_values.to(weight.device, weight.dtype), grid_thw.to(weight.device)
        sizes = grid_thw.prod(-1).tolist()
        passes, start = [], 0
        while start < len(sizes):
            end, total = start + 1, sizes[start]
            while end < len(sizes) and total + sizes[end] <= patches_per_pass:
                total += sizes[end]
                end += 1
            passes.append((start, end))
            start = end
        offsets = [0]
        for n in sizes:
            offsets.append(offsets[-1] + n)
        out = []
        for a, b in progress(passes, desc="encoding images", unit="pass"):
            merged = self.vision_tower(pixel_values[offsets[a] : offsets[b]], grid_thw[a:b])
            out.append(self.mm_projector(merged))
        return torch.cat(out)

    @torch.no_grad()
    def embed(
        self,
        input_ids: torch.Tensor,
        images: VisionInputs | None = None,
        *,
        pixel_values: torch.Tensor | None = None,
        grid_thw: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Text embeddings with image features in the ``<|media_pad|>`` positions."""
        if images is not None:
            if pixel_values is not None or grid_thw is not None:
                raise ValueError("give images or pixel_values/grid_thw, not both")
            pixel_values, grid_thw = images.pixel_values, images.grid_thw
        if (pixel_values is None) != (grid_thw is None):
            raise ValueError("pixel_values and grid_thw go together")
        # The pad id is a real vocabulary row, but what it embeds to is overwritten below anyway.
        embeds = self.language_model.embed(input_ids)
        if pixel_values is None:
            if bool((input_ids == self.media_pad_id).any()):
                raise ValueError("the prompt has <|media_pad|> tokens but no images were given")
            return embeds
        features = self.encode_images(pixel_values, grid_thw)
        return scatter_media(embeds, input_ids.to(embeds.device), features, self.media_pad_id)

    @torch.no_grad()
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        *,
        images: VisionInputs | None = None,
        pixel_values: torch.Tensor | None = None,
        grid_thw: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """The text model's output for ``input_ids`` with images merged in (``kwargs`` such as
        ``cache`` and ``logits_to_keep`` go to the text model). Without images this is the text
        model's own call, so decode steps cost nothing extra."""
        if images is None and pixel_values is None:
            return self.language_model(input_ids, inputs_embeds=inputs_embeds, **kwargs)
        if input_ids is None or inputs_embeds is not None:
            raise ValueError("images need input_ids with <|media_pad|> placeholders (not inputs_embeds)")
        embeds = self.embed(input_ids, images, pixel_values=pixel_values, grid_thw=grid_thw)
        return self.language_model(inputs_embeds=embeds, **kwargs)


def build_multimodal(config: KimiConfig, text_model: nn.Module) -> KimiK25:
    """A :class:`KimiK25` around ``text_model`` for a ``kimi_k25`` config, with the vision modules
    on the text model's device (the loader builds on ``meta``) and in its dtype; the loader then
    fills every tensor by its official name."""
    if not config.vision_config:
        raise ValueError("config.json has no vision_config: not a multimodal checkpoint")
    cfg = VisionConfig.from_dict(config.vision_config, config.text.hidden_size)
    pad_id = MEDIA_PAD_ID if config.media_placeholder_token_id is None else int(config.media_placeholder_token_id)
    weight = text_model.model.embed_tokens.weight
    with torch.device(weight.device):
        model = KimiK25(cfg, text_model, media_pad_id=pad_id)
    for module in (model.vision_tower, model.mm_projector):
        module.to(weight.dtype).requires_grad_(False)
    return model


def load_multimodal(path: str | Path, **options: Any) -> nn.Module:
    """Load a K2.5/K2.6 checkpoint folder with its vision tower: a :class:`KimiK25`, or the text model
    alone when ``config.json`` has no ``vision_config``. ``options`` are :func:`kimidoc.model.loading.load`'s."""
    return load(path, wrap=with_tower, **options)


def with_tower(config: KimiConfig, text_model: nn.Module) -> nn.Module:
    return build_multimodal(config, text_model) if config.vision_config else text_model
