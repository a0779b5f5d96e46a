"""Loading official-format checkpoints, and the errors bad ones produce (naming file and tensor)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from kimidoc.model import CheckpointError, KimiForCausalLM, load, load_config
from kimidoc.model.moe import DenseExperts, Int4Experts
from kimidoc.placement.inventory import K26_CONFIG
from kimidoc.testing import read_tensors, tiny_text_config, write_checkpoint

SMALL = dict(num_hidden_layers=2, vocab_size=163840)


@pytest.fixture(scope="module")
def int4_ckpt(tmp_path_factory):
    return write_checkpoint(
        tmp_path_factory.mktemp("ld") / "k25", config=tiny_text_config(**SMALL), int4=True, num_shards=3
    )


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _index(path: Path) -> dict:
    return json.loads((path / "model.safetensors.index.json").read_text())


def test_official_names_with_and_without_prefix(int4_ckpt, tmp_path):
    names = _index(int4_ckpt)["weight_map"]
    assert "language_model.model.layers.1.mlp.experts.0.gate_proj.weight_packed" in names
    assert "language_model.lm_head.weight" in names
    model = load(int4_ckpt, dtype=torch.float32)
    assert isinstance(model, KimiForCausalLM)
    assert isinstance(model.model.layers[1].mlp.experts, Int4Experts)
    text = write_checkpoint(tmp_path / "k2", config=tiny_text_config(**SMALL), int4=False, text_only=True)
    assert "model.embed_tokens.weight" in _index(text)["weight_map"]
    model = load(text, dtype=torch.bfloat16)
    assert isinstance(model.model.layers[1].mlp.experts, DenseExperts)
    assert model.dtype == torch.bfloat16
    assert model.model.layers[1].mlp.gate.weight.dtype == torch.float32  # router stays fp32


def test_loaded_values_equal_the_files(int4_ckpt):
    tensors = read_tensors(int4_ckpt)
    model = load(int4_ckpt, dtype=torch.float32)
    p = "language_model."
    assert torch.equal(model.model.embed_tokens.weight, tensors[p + "model.embed_tokens.weight"].float())
    attn = model.model.layers[1].self_attn
    assert torch.equal(attn.kv_b_proj.weight, tensors[p + "model.layers.1.self_attn.kv_b_proj.weight"].float())
    bias = tensors[p + "model.layers.1.mlp.gate.e_score_correction_bias"]
    assert bias.dtype == torch.float32 and torch.equal(model.model.layers[1].mlp.gate.e_score_correction_bias, bias)


def test_config_layouts_parse(int4_ckpt):
    cfg = load_config(int4_ckpt)
    assert cfg.model_type == "kimi_k25" and cfg.tensor_prefix == "language_model."
    assert cfg.quantization.group_size == 32
    official = load_config(K26_CONFIG)
    assert official.text.num_hidden_layers == 61 and official.text.latent_dim == 576
    assert official.text.softmax_scale == pytest.approx(0.144680, abs=1e-6)
    assert official.vision_config["vt_hidden_size"] == 1152


def test_mtp_and_vision_tensors_are_skipped(tmp_path):
    extra = {
        "language_model.model.layers.2.self_attn.o_proj.weight": torch.zeros(4, 4),  # an MTP layer (index >= layers)
        "vision_tower.patch_embed.proj.weight": torch.zeros(4, 3, 14, 14),
        "mm_projector.pre_norm.weight": torch.zeros(4),
    }
    path = write_checkpoint(
        tmp_path / "mm",
        config=tiny_text_config(**SMALL),
        int4=False,
        extra_tensors=extra,
        extra_config={"vision_config": {"vt_hidden_size": 4}},
    )
    model = load(path, dtype=torch.float32)
    assert isinstance(model, KimiForCausalLM)


def test_missing_shard(int4_ckpt, tmp_path):
    path = _copy(int4_ckpt, tmp_path / "c")
    (path / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(
        CheckpointError, match=r"model-00002-of-00003\.safetensors: shard file not found.*tensor language_model\."
    ):
        load(path)


def test_truncated_shard(int4_ckpt, tmp_path):
    path = _copy(int4_ckpt, tmp_path / "c")
    shard = path / "model-00003-of-00003.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=r"model-00003-of-00003\.safetensors: truncated shard: tensor \S+ needs"):
        load(path)


def test_tensor_missing_from_index(int4_ckpt, tmp_path):
    path = _copy(int4_ckpt, tmp_path / "c")
    index = _index(path)
    del index["weight_map"]["language_model.model.layers.1.self_attn.kv_b_proj.weight"]
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(
        CheckpointError,
        match=r"index\.json: tensor language_model\.model\.layers\.1\.self_attn\.kv_b_proj\.weight is missing",
    ):
        load(path)


def test_index_points_to_a_shard_without_the_tensor(int4_ckpt, tmp_path):
    path = _copy(int4_ckpt, tmp_path / "c")
    index = _index(path)
    name = "language_model.model.norm.weight"
    other = next(f for f in set(index["weight_map"].values()) if f != index["weight_map"][name])
    index["weight_map"][name] = other
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=rf"{other}: tensor language_model\.model\.norm\.weight is listed"):
        load(path)


def _rewrite_tensor(path: Path, name: str, value: torch.Tensor) -> str:
    file = _index(path)["weight_map"][name]
    tensors = {k: v for k, v in read_tensors(path).items() if _index(path)["weight_map"][k] == file}
    tensors[name] = value
    save_file(tensors, str(path / file), metadata={"format": "pt"})
    return file


def test_unexpected_shape(int4_ckpt, tmp_path):
    path = _copy(int4_ckpt, tmp_path / "c")
    name = "language_model.model.layers.0.self_attn.q_a_proj.weight"
    file = _rewrite_tensor(path, name, torch.zeros(5, 64, dtype=torch.bfloat16))
    with pytest.raises(
        CheckpointError, match=rf"{file}: tensor {name.replace('.', '[.]')} has shape \[5, 64\], expected \[48, 64\]"
    ):
        load(path)


def test_wrong_packed_dtype(int4_ckpt, tmp_path):
    path = _copy(int4_ckpt, tmp_path / "c")
    name = "language_model.model.layers.1.mlp.experts.3.up_proj.weight_packed"
    _rewrite_tensor(path, name, torch.zeros(32, 8, dtype=torch.int64))
    with pytest.raises(
        CheckpointError, match=r"experts\.3\.up_proj\.weight_packed has dtype torch.int64, expected torch.int32"
    ):
        load(path)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda q: q.update(format="float-quantized"), "compressed-tensors/float-quantized is not supported"),
        (lambda q: q["config_groups"]["group_0"]["weights"].update(num_bits=8), "num_bits=8"),
        (lambda q: q["config_groups"]["group_0"]["weights"].update(symmetric=False), "symmetric=False"),
        (lambda q: q.update(quant_method="awq"), "awq/pack-quantized is not supported"),
    ],
)
def test_unsupported_quantization_scheme(int4_ckpt, tmp_path, change, message):
    path = _copy(int4_ckpt, tmp_path / "c")
    cfg = json.loads((path / "config.json").read_text())
    change(cfg["quantization_config"])
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=rf"config\.json.*{message}"):
        load(path)


def test_quantized_attention_is_rejected_by_name(int4_ckpt, tmp_path):
    path = _copy(int4_ckpt, tmp_path / "c")
    index = _index(path)
    name = "language_model.model.layers.0.self_attn.o_proj.weight"
    index["weight_map"][name.replace(".weight", ".weight_packed")] = index["weight_map"].pop(name)
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"o_proj\.weight_packed is quantized; only routed experts"):
        load(path)


def test_unexpected_tensor_is_named(int4_ckpt, tmp_path):
    path = _copy(int4_ckpt, tmp_path / "c")
    index = _index(path)
    index["weight_map"]["language_model.model.layers.0.self_attn.mystery.weight"] = "model-00001-of-00003.safetensors"
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(
        CheckpointError, match=r"model-00001-of-00003\.safetensors: tensor \S+mystery\.weight has no place"
    ):
        load(path)


def test_missing_index_and_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(tiny_text_config()))
    with pytest.raises(CheckpointError, match="model.safetensors.index.json nor model.safetensors"):
        load(tmp_path)
    with pytest.raises(CheckpointError, match="config.json not found"):
        load(tmp_path / "nowhere")
