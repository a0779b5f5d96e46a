"""Every tensor of a K2.6-family checkpoint, by official name, shape and storage dtype, without weights.

The inventory comes either from ``config.json`` alone (the tensor list is fully determined by the
config: for the full K2.6 config it yields the official 208,550 tensors) or from a checkpoint
folder's ``model.safetensors.index.json`` plus each shard's JSON header (a few KB read per shard).
Placement plans and ``kimidoc plan`` are computed from it, so a user knows what a machine can run
before downloading 555 GB.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kimidoc.model.config import QuantConfig, quantization_of

# The full K2.6 config ships with kimidoc so plans need no download.
K26_CONFIG = Path(__file__).resolve().parents[1] / "data" / "kimi-k2.6-config.json"

DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "I32": 4, "I64": 8, "U8": 1, "I8": 1, "F8_E4M3": 1, "BOOL": 1}

# What a tensor is for: placement treats each kind differently.
KINDS = (
    "embed",
    "lm_head",
    "norm",
    "attention",
    "dense_mlp",
    "router",
    "shared_expert",
    "routed_expert",
    "vision",
    "projector",
)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype string (BF16, I32, F32...)
    kind: str
    layer: int | None = None
    expert: int | None = None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def params(self) -> int:
        """Logical parameters: a packed int32 holds 8 INT4 weights; scales and shapes add none."""
        if self.name.endswith(".weight_packed"):
            return self.numel * 8
        if self.name.endswith((".weight_scale", ".weight_shape")):
            return 0
        return self.numel


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    return config.get("text_config", config)


def _ignored(name: str, q: QuantConfig) -> bool:
    for pat in q.ignore:
        if pat.startswith("re:") and re.match(pat[3:], name):
            return True
        if not pat.startswith("re:") and (name == pat or name.endswith("." + pat) or name.startswith(pat + ".")):
            return True
    return False


def inventory_from_config(config: dict[str, Any]) -> list[TensorSpec]:
    """The official checkpoint's tensors, derived from its config (kimi_k25, kimi_k2 or deepseek_v3)."""
    tc = _text_config(config)
    multimodal = "text_config" in config
    prefix = "language_model." if multimodal else ""
    q = quantization_of(config)
    h, inter, moe_inter = tc["hidden_size"], tc["intermediate_size"], tc["moe_intermediate_size"]
    heads = tc["num_attention_heads"]
    q_lora, kv_lora = tc.get("q_lora_rank"), tc["kv_lora_rank"]
    nope, rope, v = tc["qk_nope_head_dim"], tc["qk_rope_head_dim"], tc["v_head_dim"]
    vocab, n_layers = tc["vocab_size"], tc["num_hidden_layers"]
    n_experts, n_shared = tc["n_routed_experts"], tc.get("n_shared_experts") or 0
    first_dense = tc.get("first_k_dense_replace", 0)
    freq = tc.get("moe_layer_freq", 1)
    out: list[TensorSpec] = []

    def add(
        name: str,
        shape: tuple[int, ...],
        kind: str,
        layer: int | None = None,
        expert: int | None = None,
        dtype: str = "BF16",
    ) -> None:
        full = prefix + name
        if kind == "routed_expert" and q is not None and not _ignored(full, q) and name.endswith(".weight"):
            g = q.group_size
            o, i = shape
            base = full[: -len(".weight")]
            out.append(TensorSpec(base + ".weight_packed", (o, i // 8), "I32", kind, layer, expert))
            out.append(TensorSpec(base + ".weight_scale", (o, i // g), "BF16", kind, layer, expert))
            out.append(TensorSpec(base + ".weight_shape", (2,), "I32", kind, layer, expert))
        else:
            out.append(TensorSpec(full, shape, dtype, kind, layer, expert))

    add("model.embed_tokens.weight", (vocab, h), "embed")
    for i in range(n_layers):
        p = f"model.layers.{i}."
        add(p + "input_layernorm.weight", (h,), "norm", i)
        add(p + "post_attention_layernorm.weight", (h,), "norm", i)
        a = p + "self_attn."
        if q_lora:
            add(a + "q_a_proj.weight", (q_lora, h), "attention", i)
            add(a + "q_a_layernorm.weight", (q_lora,), "attention", i)
            add(a + "q_b_proj.weight", (heads * (nope + rope), q_lora), "attention", i)
        else:
            add(a + "q_proj.weight", (heads * (nope + rope), h), "attention", i)
        add(a + "kv_a_proj_with_mqa.weight", (kv_lora + rope, h), "attention", i)
        add(a + "kv_a_layernorm.weight", (kv_lora,), "attention", i)
        add(a + "kv_b_proj.weight", (heads * (nope + v), kv_lora), "attention", i)
        add(a + "o_proj.weight", (h, heads * v), "attention", i)
        m = p + "mlp."
        if i < first_dense or (i - first_dense) % freq:
            for proj, shape in (("gate_proj", (inter, h)), ("up_proj", (inter, h)), ("down_proj", (h, inter))):
                add(f"{m}{proj}.weight", shape, "dense_mlp", i)
            continue
        add(m + "gate.weight", (n_experts, h), "router", i)
        add(m + "gate.e_score_correction_bias", (n_experts,), "router", i, dtype="F32")
        if n_shared:
            w = moe_inter * n_shared
            for proj, shape in (("gate_proj", (w, h)), ("up_proj", (w, h)), ("down_proj", (h, w))):
                add(f"{m}shared_experts.{proj}.weight", shape, "shared_expert", i)
        for e in range(n_experts):
            for proj, shape in (
                ("gate_proj", (moe_inter, h)),
                ("up_proj", (moe_inter, h)),
                ("down_proj", (h, moe_inter)),
            ):
                add(f"{m}experts.{e}.{proj}.weight", shape, "routed_expert", i, e)
    add("model.norm.weight", (h,), "norm")
    add("lm_head.weight", (vocab, h), "lm_head")
    if multimodal and config.get("vision_config"):
        out.extend(_vision_inventory(config["vision_config"], tc["hidden_size"]))
    return out


def _vision_inventory(vc: dict[str, Any], text_hidden: int) -> list[TensorSpec]:
    d, inter, layers, p = vc["vt_hidden_size"], vc["vt_intermediate_size"], vc["vt_num_hidden_layers"], vc["patch_size"]
    mh, mw = vc.get("merge_kernel_size", [2, 2])
    out = [
        TensorSpec("vision_tower.patch_embed.proj.weight", (d, 3, p, p), "BF16", "vision"),
        TensorSpec("vision_tower.patch_embed.proj.bias", (d,), "BF16", "vision"),
        TensorSpec(
            "vision_tower.patch_embed.pos_emb.weight",
            (vc.get("init_pos_emb_height", 64), vc.get("init_pos_emb_width", 64), d),
            "BF16",
            "vision",
        ),
    ]
    for i in range(layers):
        b = f"vision_tower.encoder.blocks.{i}."
        for name, shape in (
            ("norm0.weight", (d,)),
            ("norm0.bias", (d,)),
            ("wqkv.weight", (3 * d, d)),
            ("wqkv.bias", (3 * d,)),
            ("wo.weight", (d, d)),
            ("wo.bias", (d,)),
            ("norm1.weight", (d,)),
            ("norm1.bias", (d,)),
            ("mlp.fc0.weight", (inter, d)),
            ("mlp.fc0.bias", (inter,)),
            ("mlp.fc1.weight", (d, inter)),
            ("mlp.fc1.bias", (d,)),
        ):
            out.append(TensorSpec(b + name, shape, "BF16", "vision", i))
    out += [
        TensorSpec("vision_tower.encoder.final_layernorm.weight", (d,), "BF16", "vision"),
        TensorSpec("vision_tower.encoder.final_layernorm.bias", (d,), "BF16", "vision"),
    ]
    merged = d * mh * mw
    for name, shape in (
        ("mm_projector.pre_norm.weight", (d,)),
        ("mm_projector.pre_norm.bias", (d,)),
        ("mm_projector.proj.0.weight", (merged, merged)),
        ("mm_projector.proj.0.bias", (merged,)),
        ("mm_projector.proj.2.weight", (text_hidden, merged)),
        ("mm_projector.proj.2.bias", (text_hidden,)),
    ):
        out.append(TensorSpec(name, shape, "BF16", "projector"))
    return out


_LAYER = re.compile(r"model\.layers\.(\d+)\.")
_EXPERT = re.compile(r"\.experts\.(\d+)\.")


def classify(name: str) -> tuple[str, int | None, int | None]:
    """(kind, layer, expert) of an official tensor name."""
    lm = _LAYER.search(name)
    layer = int(lm.group(1)) if lm else None
    if name.startswith("vision_tower."):
        return "vision", None, None
    if name.startswith("mm_projector."):
        return "projector", None, None
    if "embed_tokens" in name:
        return "embed", None, None
    if name.endswith("lm_head.weight"):
        return "lm_head", None, None
    em = _EXPERT.search(name)
    if em and ".shared_experts." not in name:
        return "routed_expert", layer, int(em.group(1))
    if ".shared_experts." in name:
        return "shared_expert", layer, None
    if ".self_attn." in name:
        return "attention", layer, None
    if ".mlp.gate." in name:
        return "router", layer, None
    if ".mlp." in name:
        return "dense_mlp", layer, None
    return "norm", layer, None


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (names, dtypes, shapes, offsets); reads no tensor data."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: truncated safetensors file (no header)")
        (n,) = struct.unpack("<Q", head)
        if n > 100 * 1024 * 1024:
            raise ValueError(f"{path}: implausible safetensors header size {n}")
        raw = f.read(n)
        if len(raw) < n:
            raise ValueError(f"{path}: truncated safetensors header")
    header = json.loads(raw)
    header.pop("__metadata__", None)
    return header


def inventory_from_checkpoint(directory: str | Path) -> list[TensorSpec]:
    """The tensors a checkpoint folder actually holds, from its index and shard headers."""
    directory = Path(directory)
    index = directory / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        shards = sorted(p.name for p in directory.glob("*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"{directory}: no model.safetensors.index.json and no .safetensors shards")
    out: list[TensorSpec] = []
    for shard in shards:
        path = directory / shard
        if not path.exists():
            raise FileNotFoundError(f"{path}: shard named in the index is missing")
        for name, info in read_safetensors_header(path).items():
            kind, layer, expert = classify(name)
            out.append(TensorSpec(name, tuple(info["shape"]), info["dtype"], kind, layer, expert))
    return out


def read_config(path: str | Path) -> dict[str, Any]:
    """config.json from a checkpoint folder or a config file path ("k2.6" names the shipped one)."""
    p = K26_CONFIG if str(path).lower() in ("k2.6", "kimi-k2.6") else Path(path)
    if p.is_dir():
        p = p / "config.json"
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: no config.json") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: config is not valid JSON: {exc}") from None


def iter_units(specs: list[TensorSpec]) -> Iterator[tuple[str, list[TensorSpec]]]:
    """Group tensors into the units a plan places whole: one routed expert, one layer's attention,
    one layer's other MLP parts, the embedding, the head, the vision tower, the projector."""
    groups: dict[str, list[TensorSpec]] = {}
    for s in specs:
        if s.kind == "routed_expert":
            key = f"layers.{s.layer}.experts.{s.expert}"
        elif s.kind in ("attention",) or (s.kind == "norm" and s.name.endswith("input_layernorm.weight")):
            key = f"layers.{s.layer}.attention"
        elif s.kind in ("router", "shared_expert", "dense_mlp") or (s.kind == "norm" and s.layer is not None):
            key = f"layers.{s.layer}.mlp"
        elif s.kind == "norm":  # final norm travels with the head
            key = "lm_head"
        else:
            key = s.kind
        groups.setdefault(key, []).append(s)
    yield from groups.items()
