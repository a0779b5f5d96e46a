"""Official K2.6 vision names -> transformers' native ``kimi_k25`` names, for the parity tests.

transformers renames norm0/norm1 -> norm1/norm2, mlp.fc0/fc1 -> mlp.fc1/fc2, wo -> attn.proj,
``blocks`` -> ``layers``, splits ``wqkv`` into q/k/v and permutes the q/k rows from interleaved
(complex) RoPE pairs to the rotate-half layout; we use its own ``PermuteForRope`` for that last step
so this mapping cannot drift from the one transformers applies to the official checkpoint.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import torch
from transformers.core_model_loading import PermuteForRope
from transformers.models.kimi_k25.configuration_kimi_k25 import Kimi_K25VisionConfig
from transformers.models.kimi_k25.modeling_kimi_k25 import Kimi_K25MultimodalProjection, Kimi_K25VisionModel

from kimidoc.vision.config import VisionConfig

_RENAMES = [
    (r"^patch_embed\.pos_emb\.weight$", "patch_embed.pos_emb.position_embeddings"),
    (r"^encoder\.blocks\.(\d+)\.norm1\.", r"layers.\1.norm2."),
    (r"^encoder\.blocks\.(\d+)\.norm0\.", r"layers.\1.norm1."),
    (r"^encoder\.blocks\.(\d+)\.mlp\.fc1\.", r"layers.\1.mlp.fc2."),
    (r"^encoder\.blocks\.(\d+)\.mlp\.fc0\.", r"layers.\1.mlp.fc1."),
    (r"^encoder\.blocks\.(\d+)\.wo\.", r"layers.\1.attn.proj."),
    (r"^encoder\.final_layernorm\.", "final_layernorm."),
]


def hf_vision_config(cfg: VisionConfig) -> Kimi_K25VisionConfig:
    return Kimi_K25VisionConfig(
        patch_size=cfg.patch_size,
        pos_emb_height=cfg.pos_emb_height,
        pos_emb_width=cfg.pos_emb_width,
        pos_emb_time=cfg.pos_emb_time,
        num_attention_heads=cfg.num_heads,
        num_hidden_layers=cfg.num_layers,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        merge_kernel_size=list(cfg.merge_kernel),
    )


def vision_to_hf(official: dict[str, torch.Tensor], hf_cfg: Kimi_K25VisionConfig) -> dict[str, torch.Tensor]:
    """``vision_tower.*`` tensors (prefix stripped or not) -> Kimi_K25VisionModel state dict."""
    permute = PermuteForRope()
    out = {}
    for name, tensor in official.items():
        name = name.removeprefix("vision_tower.")
        m = re.match(r"^encoder\.blocks\.(\d+)\.wqkv\.(weight|bias)$", name)
        if m:
            q, k, v = tensor.chunk(3, dim=0)
            layer, kind = m.groups()
            out[f"layers.{layer}.attn.q_proj.{kind}"] = permute._permute_for_rope(q.contiguous(), hf_cfg)
            out[f"layers.{layer}.attn.k_proj.{kind}"] = permute._permute_for_rope(k.contiguous(), hf_cfg)
            out[f"layers.{layer}.attn.v_proj.{kind}"] = v
            continue
        for pattern, repl in _RENAMES:
            name, hit = re.subn(pattern, repl, name)
            if hit:
                break
        out[name] = tensor
    return out


def projector_to_hf(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    names = {"pre_norm": "pre_norm", "proj.0": "in_proj", "proj.2": "out_proj"}
    out = {}
    for name, tensor in official.items():
        name = name.removeprefix("mm_projector.")
        module, _, kind = name.rpartition(".")
        out[f"{names[module]}.{kind}"] = tensor
    return out


def hf_vision(
    official: dict[str, torch.Tensor], cfg: VisionConfig
) -> tuple[Kimi_K25VisionModel, Kimi_K25MultimodalProjection]:
    """transformers' tower and projector in float32 holding the given official tensors."""
    hf_cfg = hf_vision_config(cfg)
    tower = Kimi_K25VisionModel(hf_cfg).float().eval()
    tower_sd = {k: v.float() for k, v in official.items() if k.startswith("vision_tower.")}
    tower.load_state_dict(vision_to_hf(tower_sd, hf_cfg), strict=True)
    proj_cfg = SimpleNamespace(
        vision_config=hf_cfg,
        projection_hidden_size=cfg.mm_hidden_size,
        projection_layer_norm_eps=cfg.projector_ln_eps,
        text_config=SimpleNamespace(hidden_size=cfg.text_hidden_size),
    )
    projector = Kimi_K25MultimodalProjection(proj_cfg).float().eval()
    projector.load_state_dict(
        projector_to_hf({k: v.float() for k, v in official.items() if k.startswith("mm_projector.")}), strict=True
    )
    return tower, projector


def text_to_hf(official: dict[str, torch.Tensor], prefix: str = "language_model.") -> dict[str, torch.Tensor]:
    """Dequantized official text tensors -> transformers' deepseek_v3 names inside Kimi_K25
    (``model.language_model.*``, ``lm_head``), fusing per-expert weights into its expert banks."""
    out: dict[str, torch.Tensor] = {}
    experts: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
    for name, tensor in official.items():
        if not name.startswith(prefix):
            continue
        name = name.removeprefix(prefix)
        m = re.match(r"^model\.(layers\.\d+\.mlp\.experts)\.(\d+)\.(gate|up|down)_proj\.weight$", name)
        if m:
            experts.setdefault(m.group(1), {}).setdefault(int(m.group(2)), {})[m.group(3)] = tensor
        elif name.startswith("model."):
            out["model.language_model." + name.removeprefix("model.")] = tensor
        else:
            out[name] = tensor  # lm_head.weight
    for bank, by_index in experts.items():
        order = [by_index[i] for i in sorted(by_index)]
        out[f"model.language_model.{bank}.gate_up_proj"] = torch.stack([torch.cat([e["gate"], e["up"]]) for e in order])
        out[f"model.language_model.{bank}.down_proj"] = torch.stack([e["down"] for e in order])
    return out


def hf_multimodal(official: dict[str, torch.Tensor], config: dict):
    """transformers' Kimi_K25ForConditionalGeneration (float32) holding a dequantized official checkpoint."""
    from transformers.models.kimi_k25.configuration_kimi_k25 import Kimi_K25Config
    from transformers.models.kimi_k25.modeling_kimi_k25 import Kimi_K25ForConditionalGeneration

    cfg = VisionConfig.from_dict(config["vision_config"], config["text_config"]["hidden_size"])
    text = {k: v for k, v in config["text_config"].items() if k not in ("architectures", "quantization_config")}
    text["model_type"] = "deepseek_v3"
    hf_cfg = Kimi_K25Config(
        text_config=text,
        vision_config=hf_vision_config(cfg).to_dict(),
        projection_hidden_size=cfg.mm_hidden_size,
        projection_layer_norm_eps=cfg.projector_ln_eps,
        image_token_id=config["media_placeholder_token_id"],
        tie_word_embeddings=False,
    )
    model = Kimi_K25ForConditionalGeneration(hf_cfg).float().eval()
    state = text_to_hf({k: v.float() for k, v in official.items()})
    tower_sd = {k: v.float() for k, v in official.items() if k.startswith("vision_tower.")}
    state.update(
        {"model.vision_tower." + k: v for k, v in vision_to_hf(tower_sd, model.model.vision_tower.config).items()}
    )
    proj_sd = {k: v.float() for k, v in official.items() if k.startswith("mm_projector.")}
    state.update({"model.mm_projector." + k: v for k, v in projector_to_hf(proj_sd).items()})
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert not [m for m in missing if "inv_freq" not in m], missing
    return model
