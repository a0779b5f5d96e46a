"""The vision half of a K2.5/K2.6 ``config.json``, read by its official key names."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Settings the official checkpoints use; anything else is a different architecture we would run wrongly.
_SUPPORTED = {
    "pos_emb_type": "divided_fixed",
    "merge_type": "sd2_tpool",
    "mm_projector_type": "patchmerger",
    "video_attn_type": "spatial_temporal",
}


@dataclass(frozen=True)
class VisionConfig:
    patch_size: int = 14
    pos_emb_height: int = 64
    pos_emb_width: int = 64
    pos_emb_time: int = 4
    num_heads: int = 16
    num_layers: int = 27
    hidden_size: int = 1152
    intermediate_size: int = 4304
    merge_kernel: tuple[int, int] = (2, 2)
    mm_hidden_size: int = 1152
    text_hidden_size: int = 7168
    projector_ln_eps: float = 1e-5
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_dict(cls, vision: Mapping[str, Any], text_hidden_size: int | None = None) -> VisionConfig:
        """Build from ``config["vision_config"]``; ``text_hidden_size`` (from ``text_config``) wins
        over the vision config's own copy of it."""
        for key, value in _SUPPORTED.items():
            if key in vision and vision[key] != value:
                raise ValueError(f"vision_config.{key} = {vision[key]!r} is not supported (only {value!r})")
        act = vision.get("projector_hidden_act", "gelu")
        if act != "gelu":
            raise ValueError(f"vision_config.projector_hidden_act = {act!r} is not supported (only 'gelu')")
        merge = vision.get("merge_kernel_size", (2, 2))
        merge = (merge, merge) if isinstance(merge, int) else tuple(merge)
        cfg = cls(
            patch_size=int(vision.get("patch_size", 14)),
            pos_emb_height=int(vision.get("init_pos_emb_height", 64)),
            pos_emb_width=int(vision.get("init_pos_emb_width", 64)),
            pos_emb_time=int(vision.get("init_pos_emb_time", 4)),
            num_heads=int(vision.get("vt_num_attention_heads", 16)),
            num_layers=int(vision.get("vt_num_hidden_layers", 27)),
            hidden_size=int(vision.get("vt_hidden_size", 1152)),
            intermediate_size=int(vision.get("vt_intermediate_size", 4304)),
            merge_kernel=(int(merge[0]), int(merge[1])),
            mm_hidden_size=int(vision.get("mm_hidden_size", vision.get("vt_hidden_size", 1152))),
            text_hidden_size=int(text_hidden_size or vision.get("text_hidden_size", 7168)),
            projector_ln_eps=float(vision.get("projector_ln_eps", 1e-5)),
        )
        if cfg.hidden_size % cfg.num_heads or cfg.head_dim % 4:
            raise ValueError(
                f"vision_config: vt_hidden_size {cfg.hidden_size} / {cfg.num_heads} heads must give a head size divisible by 4 (2-D RoPE)"
            )
        if cfg.mm_hidden_size != cfg.hidden_size:
            raise ValueError(
                f"vision_config: mm_hidden_size {cfg.mm_hidden_size} must equal vt_hidden_size {cfg.hidden_size}"
            )
        return cfg
