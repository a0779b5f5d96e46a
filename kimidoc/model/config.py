"""Model configuration read from an official ``config.json``.

Three layouts exist in the field and all parse here:

* K2.5 / K2.6 (``model_type "kimi_k25"``): the text backbone sits under ``text_config``, the vision
  tower under ``vision_config``; tensors carry a ``language_model.`` prefix.
* K2 / K2-Thinking (``model_type "kimi_k2"``) and DeepSeek-V3 (``"deepseek_v3"``): the text config
  is the top level; tensors have no prefix.

Values are read, never assumed: YaRN's ``beta_fast`` differs between releases, DeepSeek-V3 uses
grouped routing, and so on. Bytes per part (INT4 experts vs. the BF16 rest) are counted in one
place, :mod:`kimidoc.placement.inventory`, from the tensor list a config implies.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEXT_MODEL_TYPES = ("kimi_k2", "deepseek_v3", "deepseek_v2")
MULTIMODAL_MODEL_TYPES = ("kimi_k25",)


class ConfigError(ValueError):
    """A config.json that kimidoc cannot run, with the file and field named."""


@dataclass(frozen=True)
class RopeConfig:
    """RoPE parameters; ``rope_type`` is ``"default"`` or ``"yarn"``."""

    theta: float
    rope_type: str = "default"
    factor: float = 1.0
    original_max_position_embeddings: int | None = None
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None
    truncate: bool = True

    @staticmethod
    def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
        if scale <= 1:
            return 1.0
        return 0.1 * mscale * math.log(scale) + 1.0

    def cos_sin_scale(self) -> float:
        """Factor applied to cos/sin (YaRN's ``attention_factor``; 1 for K2.x)."""
        if self.rope_type != "yarn":
            return 1.0
        if self.attention_factor is not None:
            return self.attention_factor
        if self.mscale and self.mscale_all_dim:
            return self.yarn_mscale(self.factor, self.mscale) / self.yarn_mscale(self.factor, self.mscale_all_dim)
        return self.yarn_mscale(self.factor)

    def softmax_scale(self, qk_head_dim: int) -> float:
        """Attention softmax scale: ``qk_head_dim**-0.5`` times ``mscale(factor, mscale_all_dim)**2``."""
        scale = qk_head_dim**-0.5
        if self.rope_type != "default" and self.mscale_all_dim:
            m = self.yarn_mscale(self.factor, self.mscale_all_dim)
            scale = scale * m * m
        return scale


@dataclass(frozen=True)
class QuantConfig:
    """compressed-tensors ``pack-quantized`` weights: INT4, symmetric, grouped along the input."""

    num_bits: int = 4
    group_size: int = 32
    ignore: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class TextConfig:
    """The DeepSeek-V3-style text backbone (field names as in the official config)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    moe_intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    q_lora_rank: int | None
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    n_routed_experts: int
    n_shared_experts: int
    num_experts_per_tok: int
    first_k_dense_replace: int
    moe_layer_freq: int
    n_group: int
    topk_group: int
    routed_scaling_factor: float
    norm_topk_prob: bool
    scoring_func: str
    topk_method: str
    hidden_act: str
    rms_norm_eps: float
    rope: RopeConfig
    max_position_embeddings: int
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    num_nextn_predict_layers: int = 0
    model_type: str = "kimi_k2"
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def latent_dim(self) -> int:
        """Values the latent cache holds per token per layer: ``kv_lora_rank + qk_rope_head_dim``."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    @property
    def softmax_scale(self) -> float:
        return self.rope.softmax_scale(self.qk_head_dim)

    def is_moe_layer(self, index: int) -> bool:
        return self.n_routed_experts > 0 and index >= self.first_k_dense_replace and index % self.moe_layer_freq == 0


@dataclass(frozen=True)
class KimiConfig:
    """A whole checkpoint's config: the text backbone plus what surrounds it."""

    text: TextConfig
    model_type: str
    quantization: QuantConfig | None = None
    vision_config: dict[str, Any] | None = None
    tensor_prefix: str = ""
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    media_placeholder_token_id: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def _require(d: dict, key: str, where: str) -> Any:
    if key not in d:
        raise ConfigError(f"{where}: missing field {key!r}")
    return d[key]


def _rope_from(d: dict, where: str) -> RopeConfig:
    # transformers >= 5 saves ``rope_parameters`` (theta inside); official files use ``rope_scaling``.
    params = d.get("rope_parameters") or d.get("rope_scaling") or {}
    theta = params.get("rope_theta", d.get("rope_theta"))
    if theta is None:
        raise ConfigError(f"{where}: missing field 'rope_theta'")
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ("default", "yarn"):
        raise ConfigError(f"{where}: rope type {rope_type!r} is not supported (default or yarn)")
    if rope_type == "default":
        return RopeConfig(theta=float(theta))
    factor = params.get("factor")
    original = params.get("original_max_position_embeddings", d.get("max_position_embeddings"))
    if factor is None:
        factor = d["max_position_embeddings"] / original
    return RopeConfig(
        theta=float(theta),
        rope_type="yarn",
        factor=float(factor),
        original_max_position_embeddings=int(original),
        beta_fast=float(params.get("beta_fast") or 32),
        beta_slow=float(params.get("beta_slow") or 1),
        mscale=params.get("mscale"),
        mscale_all_dim=params.get("mscale_all_dim"),
        attention_factor=params.get("attention_factor"),
        truncate=bool(params.get("truncate", True)),
    )


def text_config_from_dict(d: dict[str, Any], where: str = "config.json") -> TextConfig:
    """Parse a DeepSeek-V3-style text config (the ``text_config`` of K2.5/K2.6, or a K2 top level)."""
    r = lambda k: _require(d, k, where)  # noqa: E731
    heads = r("num_attention_heads")
    kv_heads = d.get("num_key_value_heads") or heads
    if kv_heads != heads:
        raise ConfigError(f"{where}: MLA needs num_key_value_heads == num_attention_heads, got {kv_heads} vs {heads}")
    scoring = d.get("scoring_func", "sigmoid")
    topk_method = d.get("topk_method", "noaux_tc")
    if scoring != "sigmoid" or topk_method != "noaux_tc":
        raise ConfigError(f"{where}: router {scoring}/{topk_method} is not supported (sigmoid/noaux_tc)")
    if d.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"{where}: hidden_act {d.get('hidden_act')!r} is not supported (silu)")
    return TextConfig(
        vocab_size=r("vocab_size"),
        hidden_size=r("hidden_size"),
        intermediate_size=r("intermediate_size"),
        moe_intermediate_size=d.get("moe_intermediate_size", 0),
        num_hidden_layers=r("num_hidden_layers"),
        num_attention_heads=heads,
        q_lora_rank=d.get("q_lora_rank"),
        kv_lora_rank=r("kv_lora_rank"),
        qk_nope_head_dim=r("qk_nope_head_dim"),
        qk_rope_head_dim=r("qk_rope_head_dim"),
        v_head_dim=r("v_head_dim"),
        n_routed_experts=d.get("n_routed_experts") or 0,
        n_shared_experts=d.get("n_shared_experts") or 0,
        num_experts_per_tok=d.get("num_experts_per_tok") or 0,
        first_k_dense_replace=d.get("first_k_dense_replace", 0),
        moe_layer_freq=d.get("moe_layer_freq", 1),
        n_group=d.get("n_group") or 1,
        topk_group=d.get("topk_group") or 1,
        routed_scaling_factor=float(d.get("routed_scaling_factor", 1.0)),
        norm_topk_prob=bool(d.get("norm_topk_prob", True)),
        scoring_func=scoring,
        topk_method=topk_method,
        hidden_act="silu",
        rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
        rope=_rope_from(d, where),
        max_position_embeddings=r("max_position_embeddings"),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
        attention_bias=bool(d.get("attention_bias", False)),
        bos_token_id=d.get("bos_token_id"),
        eos_token_id=d.get("eos_token_id"),
        num_nextn_predict_layers=d.get("num_nextn_predict_layers", 0) or 0,
        model_type=d.get("model_type", "kimi_k2"),
        raw=dict(d),
    )


def quant_config_from_dict(q: dict[str, Any] | None, where: str = "config.json") -> QuantConfig | None:
    """Validate ``quantization_config``; only compressed-tensors INT4 pack-quantized is supported."""
    if not q:
        return None
    method, fmt = q.get("quant_method"), q.get("format")
    if method != "compressed-tensors" or fmt != "pack-quantized":
        raise ConfigError(
            f"{where}: quantization scheme {method}/{fmt} is not supported "
            "(only compressed-tensors/pack-quantized INT4)"
        )
    groups = q.get("config_groups") or {}
    if not groups:
        raise ConfigError(f"{where}: quantization_config has no config_groups")
    schemes = set()
    for name, group in groups.items():
        w = group.get("weights") or {}
        scheme = (w.get("num_bits"), w.get("type"), w.get("symmetric"), w.get("strategy"), w.get("group_size"))
        if scheme[:4] != (4, "int", True, "group") or not scheme[4]:
            raise ConfigError(
                f"{where}: quantization group {name!r} uses num_bits={scheme[0]} type={scheme[1]} "
                f"symmetric={scheme[2]} strategy={scheme[3]} group_size={scheme[4]}; "
                "only 4-bit int symmetric group-wise weights are supported"
            )
        if group.get("input_activations") or group.get("output_activations"):
            raise ConfigError(f"{where}: quantization group {name!r} quantizes activations; not supported")
        schemes.add(scheme)
    if len(schemes) != 1:
        raise ConfigError(f"{where}: quantization groups disagree ({sorted(map(str, schemes))}); not supported")
    (scheme,) = schemes
    return QuantConfig(num_bits=4, group_size=int(scheme[4]), ignore=tuple(q.get("ignore") or ()), raw=dict(q))


def quantization_of(d: dict[str, Any], where: str = "config.json") -> QuantConfig | None:
    """The checkpoint's ``quantization_config`` (top level, or inside ``text_config`` for multimodal
    exports), validated; ``None`` for an unquantized checkpoint."""
    text_dict = d.get("text_config") if isinstance(d.get("text_config"), dict) else {}
    return quant_config_from_dict(d.get("quantization_config") or text_dict.get("quantization_config"), where)


def config_from_dict(d: dict[str, Any], where: str = "config.json") -> KimiConfig:
    """Parse any of the supported layouts (see the module docstring)."""
    model_type = d.get("model_type")
    if model_type in MULTIMODAL_MODEL_TYPES:
        text_dict = _require(d, "text_config", where)
        text = text_config_from_dict(text_dict, f"{where} (text_config)")
        prefix = "language_model."
    elif model_type in TEXT_MODEL_TYPES:
        text = text_config_from_dict(d, where)
        prefix = ""
    else:
        raise ConfigError(
            f"{where}: model_type {model_type!r} is not supported "
            f"(expected one of {MULTIMODAL_MODEL_TYPES + TEXT_MODEL_TYPES})"
        )
    return KimiConfig(
        text=text,
        model_type=model_type,
        quantization=quantization_of(d, where),
        vision_config=d.get("vision_config"),
        tensor_prefix=prefix,
        bos_token_id=d.get("bos_token_id", text.bos_token_id),
        eos_token_id=d.get("eos_token_id", text.eos_token_id),
        pad_token_id=d.get("pad_token_id"),
        media_placeholder_token_id=d.get("media_placeholder_token_id"),
        raw=dict(d),
    )


def load_config(path: str | Path) -> KimiConfig:
    """Read ``config.json`` from a checkpoint folder (or the file itself)."""
    path = Path(path)
    file = path / "config.json" if path.is_dir() else path
    if not file.exists():
        raise ConfigError(f"{file}: config.json not found")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{file}: not valid JSON ({e})") from e
    return config_from_dict(data, str(file))
