"""``load(path)``: an official checkpoint folder -> a ready model, tensor by tensor.

Steps: parse ``config.json``; read ``model.safetensors.index.json`` (or a lone
``model.safetensors``); build the model on the meta device; allocate it uninitialised on the
target device; then fill every slot (see :mod:`.slots`) from the shards, one shard at a time with
a progress bar, reading each tensor straight into its destination where dtypes agree. Peak memory
stays near the size of the weights themselves.

This module loads the text model; ``vision_tower.`` / ``mm_projector.`` tensors are skipped unless
a ``wrap`` builds a larger model around it: :func:`kimidoc.vision.multimodal.load_multimodal` passes
the vision tower's builder (the text model becomes its ``language_model``), so the text runtime never
imports the floor above it. ``wrap`` is called under the meta device: the modules it creates are
filled from the checkpoint like the text model, so buffers not stored in the checkpoint must be
created lazily.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from kimidoc.progress import progress

from . import hugepages
from .config import ConfigError, KimiConfig, load_config
from .model import KimiForCausalLM
from .moe import Int4Experts
from .shards import CheckpointError, ShardReader
from .slots import Slot, module_slots

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
_VISION_PREFIXES = ("vision_tower.", "mm_projector.")
_LAYER = re.compile(r"(?:^|\.)model\.layers\.(\d+)\.")


def read_weight_map(path: Path) -> tuple[dict[str, str], Path]:
    """Tensor name -> shard file name, and the file that said so."""
    index = path / INDEX_FILE
    if index.exists():
        try:
            data = json.loads(index.read_text())
            return dict(data["weight_map"]), index
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from e
    single = path / SINGLE_FILE
    if single.exists():
        with ShardReader(single) as reader:
            return {name: SINGLE_FILE for name in reader.tensors}, single
    raise CheckpointError(f"{path}: neither {INDEX_FILE} nor {SINGLE_FILE} found")


Wrap = Callable[[KimiConfig, KimiForCausalLM], nn.Module]


def _skippable(name: str, config: KimiConfig, with_vision: bool) -> bool:
    """Tensors present in official checkpoints that this model does not run."""
    bare = name.removeprefix(config.tensor_prefix)
    if bare.startswith(_VISION_PREFIXES) or name.startswith(_VISION_PREFIXES):
        return not with_vision
    m = _LAYER.search(name)  # multi-token-prediction layers after the last decoder layer
    if m and int(m.group(1)) >= config.text.num_hidden_layers:
        return True
    return name.endswith("rotary_emb.inv_freq")


def _check_quantized_names(weight_map: dict[str, str], config: KimiConfig, index_file: Path) -> bool:
    packed = [n for n in weight_map if n.endswith(".weight_packed")]
    if not packed:
        return False
    if config.quantization is None:
        raise CheckpointError(
            f"{index_file}: tensor {packed[0]} is INT4-packed but config.json has no quantization_config"
        )
    for name in packed:
        if ".mlp.experts." not in name:
            raise CheckpointError(
                f"{weight_map[name]}: tensor {name} is quantized; only routed experts may be INT4 "
                "(quantized attention/dense/shared weights are not supported)"
            )
    return True


def materialize(model: nn.Module, device: torch.device) -> None:
    """Give every meta parameter and buffer real, uninitialised storage on ``device``.

    (``Module.to_empty`` does the same through torch's reference ops, which import sympy and
    the compiler stack on first use -- seconds of start-up for nothing.) In RAM, weights of 2 MB
    and more go on huge pages (:mod:`.hugepages`): decode streams them every step.
    """

    def empty(t: torch.Tensor) -> torch.Tensor:
        if device.type == "cpu":
            return hugepages.empty(t.shape, t.dtype)
        return torch.empty(t.shape, dtype=t.dtype, device=device)

    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None and p.is_meta:
                module._parameters[name] = nn.Parameter(empty(p), requires_grad=False)
        for name, b in list(module._buffers.items()):
            if b is not None and b.is_meta:
                module._buffers[name] = empty(b)


def _fill(reader: ShardReader, name: str, slot: Slot) -> None:
    info = reader.tensors[name]
    if info.shape != slot.shape:
        raise CheckpointError(f"{reader.path}: tensor {name} has shape {list(info.shape)}, expected {list(slot.shape)}")
    if slot.dtype is not None and info.dtype != slot.dtype:
        raise CheckpointError(f"{reader.path}: tensor {name} has dtype {info.dtype}, expected {slot.dtype}")
    if slot.dtype is None and not info.dtype.is_floating_point:
        raise CheckpointError(f"{reader.path}: tensor {name} has dtype {info.dtype}, expected a floating dtype")
    if slot.defer is not None:
        slot.defer(reader.path, name)
        return
    try:
        slot.read_from(reader, name)
    except ValueError as e:
        raise CheckpointError(f"{reader.path}: tensor {name}: {e}") from e


def load(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str = "cpu",
    int4_compute_dtype: torch.dtype = torch.bfloat16,
    activation_dtype: torch.dtype | None = None,
    strict: bool = True,
    customize: Callable[[nn.Module], None] | None = None,
    wrap: Wrap | None = None,
    pack: bool = True,
) -> nn.Module:
    """Load a K2.x checkpoint folder; returns :class:`KimiForCausalLM`, or what ``wrap(config, text_model)``
    builds around it (the multimodal model: see :func:`kimidoc.vision.multimodal.load_multimodal`).

    ``dtype`` is for every non-INT4 weight (BF16 as stored, or float32 for CPU prefill speed and
    exact parity); ``int4_compute_dtype`` is the INT4 kernel's activation dtype (bf16 is the fast
    one). ``activation_dtype`` (default: ``dtype``) lets BF16 weights run with float32
    activations and cache -- on CPUs without BF16 units that keeps prefill fast while decode reads
    half the bytes. ``strict`` rejects tensors the model has no place for. ``customize`` is called with the
    meta-built model before any memory is allocated (see :func:`kimidoc.placement.runtime.load_placed`).
    ``pack`` stores BF16 linears in RAM in the layout decode reads fastest
    (:meth:`KimiForCausalLM.pack_linears`); pass False to keep plain weights (to move or save them).
    """
    path = Path(path)
    device = torch.device(device)
    try:
        config = load_config(path)
    except ConfigError as e:
        raise CheckpointError(str(e)) from e
    weight_map, index_file = read_weight_map(path)
    int4 = _check_quantized_names(weight_map, config, index_file)
    prefix = config.tensor_prefix
    if prefix and not any(n.startswith(prefix) for n in weight_map):
        prefix = ""  # some multimodal exports keep text tensors unprefixed

    with torch.device("meta"):
        text = KimiForCausalLM(
            config.text,
            dtype=dtype,
            int4_experts=int4,
            group_size=config.quantization.group_size if config.quantization else 32,
            int4_compute_dtype=int4_compute_dtype,
            activation_dtype=activation_dtype,
            device=device,
        )
        model: nn.Module = text if wrap is None else wrap(config, text)
    with_vision = model is not text
    if customize is not None:
        customize(model)  # e.g. swap expert banks and place modules before memory is allocated
    materialize(model, device)
    slots = module_slots(model) if with_vision else text.checkpoint_slots(prefix)

    missing = [n for n in slots if n not in weight_map]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{index_file}: tensor {missing[0]} is missing from the index{more}")
    by_file: dict[str, list[str]] = defaultdict(list)
    for name, file in weight_map.items():
        if name in slots:
            by_file[file].append(name)
        elif strict and not _skippable(name, config, with_vision):
            raise CheckpointError(f"{path / file}: tensor {name} has no place in the model (unexpected tensor)")

    for file in progress(sorted(by_file), desc="loading shards", unit="shard"):
        shard = path / file
        if not shard.exists():
            raise CheckpointError(f"{shard}: shard file not found (the index lists tensor {by_file[file][0]} in it)")
        with ShardReader(shard) as reader:
            for name in by_file[file]:
                if name not in reader.tensors:
                    raise CheckpointError(
                        f"{shard}: tensor {name} is listed in {index_file.name} but not in this shard"
                    )
                _fill(reader, name, slots[name])

    for bank in text.expert_banks():
        if isinstance(bank, Int4Experts) and bank.unfinished():
            raise CheckpointError(f"{path}: experts {bank.unfinished()} have gate_proj or up_proj but not both")
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointError(f"{path}: {left[0]} was never filled (built on the meta device, not in the checkpoint)")
    if pack:
        text.pack_linears()
    return model.eval()
