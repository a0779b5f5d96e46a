"""Tiny checkpoints in the official K2.x format, for tests and benchmarks.

A folder written here goes through exactly the loading code a real 555 GB checkpoint does:
``config.json`` with the real field names (``kimi_k25`` with ``text_config``, or a text-only
``kimi_k2``), ``generation_config.json``, ``model.safetensors.index.json`` and
``model-0000i-of-0000n.safetensors`` shards with the official tensor names, routed experts
INT4-packed exactly as compressed-tensors packs them (``weight_packed`` / ``weight_scale`` /
``weight_shape``) with the matching ``quantization_config``, and a tiktoken tokenizer with the
real special ids (:mod:`kimidoc.testing.tokenizer`).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from kimidoc.model import int4

BOS, EOS, IM_END, PAD, MEDIA_PAD = 163584, 163585, 163586, 163839, 163605

QUANTIZATION_CONFIG: dict[str, Any] = {
    "quant_method": "compressed-tensors",
    "format": "pack-quantized",
    "quantization_status": "compressed",
    "kv_cache_scheme": None,
    "config_groups": {
        "group_0": {
            "targets": ["Linear"],
            "input_activations": None,
            "output_activations": None,
            "weights": {
                "num_bits": 4,
                "type": "int",
                "symmetric": True,
                "strategy": "group",
                "group_size": 32,
                "dynamic": False,
                "observer": "minmax",
                "observer_kwargs": {},
                "actorder": None,
                "block_structure": None,
            },
        }
    },
    "ignore": [
        "lm_head",
        "re:.*self_attn.*",
        "re:.*shared_experts.*",
        "re:.*mlp\\.(gate|up|gate_up|down)_proj.*",
        "re:vision_tower.*",
        "re:mm_projector.*",
    ],
}


def tiny_text_config(**overrides: Any) -> dict[str, Any]:
    """A K2.6-shaped ``text_config`` (official field names), small enough for unit tests.

    ``vocab_size`` stays 163840 so the real special-token ids exist.
    """
    cfg: dict[str, Any] = {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "kimi_k2",
        "vocab_size": 163840,
        "hidden_size": 64,
        "intermediate_size": 128,
        "moe_intermediate_size": 32,
        "num_hidden_layers": 3,
        "first_k_dense_replace": 1,
        "moe_layer_freq": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "q_lora_rank": 48,
        "kv_lora_rank": 32,
        "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 8,
        "v_head_dim": 16,
        "n_routed_experts": 8,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "n_group": 1,
        "topk_group": 1,
        "routed_scaling_factor": 2.827,
        "scoring_func": "sigmoid",
        "topk_method": "noaux_tc",
        "norm_topk_prob": True,
        "seq_aux": True,
        "aux_loss_alpha": 0.001,
        "num_nextn_predict_layers": 0,
        "hidden_act": "silu",
        "attention_bias": False,
        "rms_norm_eps": 1e-05,
        "rope_theta": 50000.0,
        "rope_scaling": {
            "type": "yarn",
            "factor": 64.0,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
            "original_max_position_embeddings": 4096,
        },
        "max_position_embeddings": 262144,
        "tie_word_embeddings": False,
        "bos_token_id": BOS,
        "eos_token_id": EOS,
        "torch_dtype": "bfloat16",
    }
    cfg.update(overrides)
    if "num_attention_heads" in overrides and "num_key_value_heads" not in overrides:
        cfg["num_key_value_heads"] = cfg["num_attention_heads"]  # MLA: one kv head per query head
    return cfg


def text_tensors(
    cfg: dict[str, Any], *, seed: int = 0, dtype: torch.dtype = torch.bfloat16, int4_experts: bool = False
) -> dict[str, torch.Tensor]:
    """Random weights for ``cfg`` under their official names (no prefix); with ``int4_experts``
    each routed expert weight is packed as soon as it is drawn (big test checkpoints stay cheap)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int, std: float) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * std).to(dtype)

    def norm(n: int) -> torch.Tensor:
        return (1.0 + 0.1 * torch.randn(n, generator=g)).to(dtype)

    h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    nope, rope, v = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    kv_rank, q_rank = cfg["kv_lora_rank"], cfg.get("q_lora_rank")
    std = lambda fan_in: fan_in**-0.5  # noqa: E731  keeps activations O(1) through the layers
    t: dict[str, torch.Tensor] = {"model.embed_tokens.weight": randn(cfg["vocab_size"], h, std=1.0)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = norm(h)
        t[p + "post_attention_layernorm.weight"] = norm(h)
        a = p + "self_attn."
        if q_rank:
            t[a + "q_a_proj.weight"] = randn(q_rank, h, std=std(h))
            t[a + "q_a_layernorm.weight"] = norm(q_rank)
            t[a + "q_b_proj.weight"] = randn(heads * (nope + rope), q_rank, std=std(q_rank))
        else:
            t[a + "q_proj.weight"] = randn(heads * (nope + rope), h, std=std(h))
        t[a + "kv_a_proj_with_mqa.weight"] = randn(kv_rank + rope, h, std=std(h))
        t[a + "kv_a_layernorm.weight"] = norm(kv_rank)
        t[a + "kv_b_proj.weight"] = randn(heads * (nope + v), kv_rank, std=std(kv_rank))
        t[a + "o_proj.weight"] = randn(h, heads * v, std=std(heads * v))
        m = p + "mlp."
        moe = cfg["n_routed_experts"] and i >= cfg["first_k_dense_replace"] and i % cfg.get("moe_layer_freq", 1) == 0
        if not moe:
            w = cfg["intermediate_size"]
            t[m + "gate_proj.weight"] = randn(w, h, std=std(h))
            t[m + "up_proj.weight"] = randn(w, h, std=std(h))
            t[m + "down_proj.weight"] = randn(h, w, std=std(w))
            continue
        w, n = cfg["moe_intermediate_size"], cfg["n_routed_experts"]
        t[m + "gate.weight"] = randn(n, h, std=std(h))
        t[m + "gate.e_score_correction_bias"] = (0.1 * torch.randn(n, generator=g)).float()
        for e in range(n):
            for proj, shape in (("gate_proj", (w, h)), ("up_proj", (w, h)), ("down_proj", (h, w))):
                name = m + f"experts.{e}.{proj}."
                if int4_experts:
                    t.update(packed_random(name, shape, std(shape[1]), g))
                else:
                    t[name + "weight"] = randn(*shape, std=std(shape[1]))
        if cfg.get("n_shared_experts"):
            sw = w * cfg["n_shared_experts"]
            t[m + "shared_experts.gate_proj.weight"] = randn(sw, h, std=std(h))
            t[m + "shared_experts.up_proj.weight"] = randn(sw, h, std=std(h))
            t[m + "shared_experts.down_proj.weight"] = randn(h, sw, std=std(sw))
    t["model.norm.weight"] = norm(h)
    if not cfg.get("tie_word_embeddings"):
        t["lm_head.weight"] = randn(cfg["vocab_size"], h, std=std(h))
    return t


def packed_random(base: str, shape: tuple[int, int], std: float, g: torch.Generator) -> dict[str, torch.Tensor]:
    """A random INT4 weight drawn straight on the grid (q in [-7, 7], jittered bf16 scales),
    packed as compressed-tensors stores it; far cheaper than drawing floats and quantizing."""
    out_f, in_f = shape
    q = torch.randint(-7, 8, shape, generator=g, dtype=torch.int8)
    scale = (std / 4.3 * (0.5 + torch.rand(out_f, in_f // int4.GROUP_SIZE, generator=g))).to(torch.bfloat16)
    return {
        base + "weight_packed": int4.pack(q),
        base + "weight_scale": scale,
        base + "weight_shape": torch.tensor([out_f, in_f], dtype=torch.int32),
    }


def _write_shards(directory: Path, tensors: dict[str, torch.Tensor], num_shards: int) -> None:
    names = list(tensors)
    num_shards = max(1, min(num_shards, len(names)))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    shards: list[list[str]] = [[] for _ in range(num_shards)]
    acc = 0
    for name in names:  # contiguous split by bytes (by each tensor's midpoint), like the official shards
        size = tensors[name].numel() * tensors[name].element_size()
        shards[min(num_shards - 1, int((acc + size / 2) * num_shards / max(total, 1)))].append(name)
        acc += size
    shards = [s for s in shards if s]
    num_shards = len(shards)
    weight_map: dict[str, str] = {}
    for i, shard in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{num_shards:05d}.safetensors"
        save_file({n: tensors[n].contiguous() for n in shard}, str(directory / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in shard})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def write_checkpoint(
    directory: str | Path,
    *,
    config: dict[str, Any] | None = None,
    int4: bool = True,
    num_shards: int = 2,
    seed: int = 0,
    dtype: torch.dtype = torch.bfloat16,
    text_only: bool = False,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    extra_config: dict[str, Any] | None = None,
) -> Path:
    """Write a complete tiny model folder and return its path.

    ``config`` is a text config (default :func:`tiny_text_config`). ``text_only`` writes a K2-style
    text checkpoint (no ``language_model.`` prefix); otherwise a K2.6 ``kimi_k25`` layout with the
    text config under ``text_config``. ``extra_tensors`` are added under their given names (e.g.
    ``vision_tower.*``) and ``extra_config`` is merged into the top-level config (e.g.
    ``vision_config``). ``int4`` packs the routed experts (``dtype`` is for everything else).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    text = copy.deepcopy(config) if config is not None else tiny_text_config()
    text["torch_dtype"] = str(dtype).removeprefix("torch.")
    tensors = text_tensors(text, seed=seed, dtype=dtype, int4_experts=int4)
    if text_only:
        top = dict(text)
        if int4:
            top["quantization_config"] = copy.deepcopy(QUANTIZATION_CONFIG)
    else:
        tensors = {"language_model." + k: v for k, v in tensors.items()}
        top = {
            "architectures": ["KimiK25ForConditionalGeneration"],
            "model_type": "kimi_k25",
            "bos_token_id": BOS,
            "eos_token_id": EOS,
            "pad_token_id": PAD,
            "media_placeholder_token_id": MEDIA_PAD,
            "ignore_index": -100,
            "tie_word_embeddings": bool(text.get("tie_word_embeddings", False)),
            "torch_dtype": text["torch_dtype"],
            "text_config": text,
        }
        if int4:
            top["quantization_config"] = copy.deepcopy(QUANTIZATION_CONFIG)
    top.update(copy.deepcopy(extra_config or {}))
    tensors.update(extra_tensors or {})
    _write_shards(directory, tensors, num_shards)
    (directory / "config.json").write_text(json.dumps(top, indent=2))
    (directory / "generation_config.json").write_text(
        json.dumps({"bos_token_id": BOS, "eos_token_id": IM_END, "pad_token_id": PAD}, indent=2)
    )
    from kimidoc.testing.tokenizer import (
        write_tokenizer,  # imported here: it pulls in kimidoc.chat
    )

    write_tokenizer(directory)
    return directory


def read_tensors(directory: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder, by name (for tests)."""
    directory = Path(directory)
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    out: dict[str, torch.Tensor] = {}
    for file in sorted(set(index["weight_map"].values())):
        with safe_open(str(directory / file), framework="pt") as f:
            for name in f.keys():
                out[name] = f.get_tensor(name)
    return out


def write_dequantized_copy(src: str | Path, dst: str | Path, *, dtype: torch.dtype = torch.float32) -> Path:
    """Copy a checkpoint with INT4 experts replaced by float weights (the reference dequantize).

    transformers cannot read compressed-tensors packing offline; this gives it the same weights.
    """
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    tensors = read_tensors(src)
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if name.endswith((".weight_scale", ".weight_shape")):
            continue
        if name.endswith(".weight_packed"):
            base = name[: -len("_packed")]
            shape = tuple(tensors[base + "_shape"].tolist())
            out[base] = int4.dequantize(t, tensors[base + "_scale"], shape, dtype=dtype)
        else:
            out[name] = t.to(dtype) if t.is_floating_point() else t
    cfg = json.loads((src / "config.json").read_text())
    cfg.pop("quantization_config", None)
    cfg.get("text_config", {}).pop("quantization_config", None)
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    num_shards = len(set(json.loads((src / "model.safetensors.index.json").read_text())["weight_map"].values()))
    _write_shards(dst, out, num_shards)
    return dst
