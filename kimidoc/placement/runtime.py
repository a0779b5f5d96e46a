"""``load_placed``: load a checkpoint so that it runs the way a placement plan says.

Everything a token always reads (embeddings, attention with its latent cache, routers, shared
experts, the dense layer, the head) lives on one *main* device; each routed expert lives where the
plan put it -- a GPU, RAM, or the disk tier (read on demand into a bounded cache). The swap
happens on the meta-built model before any memory is allocated, so each official tensor is filled
into exactly one device's memory or registered as a disk reference, never both.

    from kimidoc.placement import Machine
    from kimidoc.placement.runtime import load_placed
    model = load_placed("/models/Kimi-K2.6", Machine(gpus=[24 * 2**30], cpu=700 * 2**30, disk=2**40),
                        disk_cache_bytes=8 * 2**30)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kimidoc.model.loading import Wrap, load, materialize
from kimidoc.model.model import KimiForCausalLM, default_dtype
from kimidoc.model.moe import DenseExperts, ExpertBank, Int4Experts, MoE
from kimidoc.model.shards import CheckpointError
from kimidoc.placement.inventory import read_config
from kimidoc.placement.plan import (
    DEFAULT_CONTEXT,
    OFF_PATH,
    Device,
    Machine,
    Plan,
    default_cache_bytes,
    int4_native_here,
    plan_for_checkpoint,
    refuse_disk_resident,
)
from kimidoc.placement.quantize import QuantizedOnLoad
from kimidoc.placement.tiered import BankFactory, ExpertCache, TieredExperts, torch_device


def bank_factory(
    template: ExpertBank, *, quantize: bool = False, compute_dtype: torch.dtype = torch.bfloat16
) -> BankFactory:
    """Banks of ``template``'s class, dtype and kernel settings, for any number of experts; with
    ``quantize``, INT4 banks filled from ``template``'s float weights (see :mod:`.quantize`)."""
    if quantize:
        if not isinstance(template, DenseExperts):
            raise ValueError(
                "quantize_experts=True is for checkpoints with BF16 routed experts; these are already INT4"
            )

        def make_quantized(n: int, device: torch.device) -> ExpertBank:
            with torch.device(device):
                return QuantizedOnLoad(n, template.hidden, template.width, compute_dtype=compute_dtype, device=device)

        return make_quantized
    if isinstance(template, Int4Experts):

        def make_int4(n: int, device: torch.device) -> ExpertBank:
            with torch.device(device):  # the bank allocates on the default device; ``device`` picks its kernel layout
                return Int4Experts(
                    n,
                    template.hidden,
                    template.width,
                    group_size=template.group_size,
                    compute_dtype=template.compute_dtype,
                    device=device,
                    vnni=template.vnni,
                )

        return make_int4
    if isinstance(template, DenseExperts):
        dtype = template.gate_up.dtype

        def make_dense(n: int, device: torch.device) -> ExpertBank:
            with default_dtype(dtype), torch.device(device):
                return DenseExperts(n, template.hidden, template.width)

        return make_dense
    raise TypeError(f"cannot place experts of type {type(template).__name__}")


class HostEmbeddingLM(KimiForCausalLM):
    """A causal LM whose embedding table stays in RAM while everything else runs on the main
    device (the plan does this when the table does not fit next to attention): the look-up runs
    in RAM and only the looked-up rows travel."""

    @property
    def device(self) -> torch.device:
        return self.model.norm.weight.device

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        table = self.model.embed_tokens.weight
        return self.model.embed_tokens(input_ids.to(table.device)).to(self.device)


def main_device(p: Plan) -> Device:
    """The one device of every non-expert part but the embedding table (which may also be in RAM);
    raises when the plan splits them."""
    per_token = ("routed_expert", "embed", *OFF_PATH)
    devices = {dev for unit, dev in p.units.items() if p.unit_kind[unit] not in per_token}
    embed = {dev for unit, dev in p.units.items() if p.unit_kind[unit] == "embed"}
    if embed - devices - {"cpu"}:
        raise NotImplementedError(
            f"the plan puts the embedding table on {sorted(map(str, embed))}; it must be in RAM or on the main device"
        )
    if len(devices) != 1:
        spread = {
            str(d): sorted(u for u, dv in p.units.items() if dv == d and p.unit_kind[u] not in per_token)[:3]
            for d in devices
        }
        raise NotImplementedError(
            f"the plan puts attention/dense parts on several devices {spread}; this runtime keeps them on one device "
            "(give that device more memory, a shorter context, or shrink='nf4')"
        )
    dev = devices.pop()
    if dev == "disk":
        raise NotImplementedError(
            "the plan puts attention/dense parts on the disk tier; only routed experts may live on disk"
        )
    return dev


def experts_by_layer(p: Plan) -> dict[int, dict[int, Device]]:
    out: dict[int, dict[int, Device]] = {}
    for unit, dev in p.units.items():
        if p.unit_kind[unit] == "routed_expert":
            _, layer, _, expert = unit.split(".")
            out.setdefault(int(layer), {})[int(expert)] = dev
    return out


def _check_devices(p: Plan) -> None:
    gpus = sorted({d for d in p.units.values() if isinstance(d, int)})
    if gpus and not torch.cuda.is_available():
        raise RuntimeError(
            f"the plan places parts on GPU {gpus} but CUDA is not available here; plan for this machine (gpus=[])"
        )
    if gpus and max(gpus) >= torch.cuda.device_count():
        raise RuntimeError(f"the plan uses GPU {max(gpus)} but only {torch.cuda.device_count()} are visible")


def load_placed(
    path: str | Path,
    where: Plan | Machine,
    *,
    dtype: torch.dtype = torch.bfloat16,
    int4_compute_dtype: torch.dtype = torch.bfloat16,
    disk_cache_bytes: int | None = None,
    context: int = DEFAULT_CONTEXT,
    shrink: str | None = None,
    expert_freq: dict[tuple[int, int], float] | None = None,
    quantize_experts: bool = False,
    disk_workers: int | None = None,
    offload_folder: str | Path | None = None,
    activation_dtype: torch.dtype | None = None,
    wrap: Wrap | None = None,
) -> nn.Module:
    """Load the text model of ``path`` placed by ``where`` (a :class:`Plan`, or a :class:`Machine`
    to plan for with :func:`plan_for_checkpoint`). The result carries ``model.plan`` and
    ``model.expert_cache`` (None without a disk tier). ``disk_cache_bytes`` bounds the RAM that
    disk-tier experts use (default :func:`default_cache_bytes`; with a Machine it comes out of
    ``machine.cpu``, so weights in RAM stay within ``machine.cpu``).
    ``shrink`` ("int8"/"nf4", or the plan's) swaps attention, shared-expert and dense-MLP linears
    for bitsandbytes ones (see :mod:`kimidoc.placement.shrink`). ``quantize_experts`` (or the
    plan's) quantizes a BF16 checkpoint's routed experts to INT4 as they load. ``disk_workers``
    threads (default ``min(4, cpus)``; 0 = read in the calling thread) read disk-tier experts
    ahead while earlier experts compute. ``offload_folder`` keeps each disk-tier expert there in the
    kernel layout after its first read (costs disk space up to the disk tier's size; later reads
    skip the conversion), in a subfolder tied to this checkpoint's index. ``activation_dtype``
    as in :func:`kimidoc.model.load`. ``wrap`` (as in :func:`kimidoc.model.load`, e.g.
    :func:`kimidoc.vision.multimodal.with_tower`) also loads the vision tower and projector of a
    multimodal checkpoint: the plan then counts them and they go where it puts them (the main device
    or RAM); the result is the multimodal model.
    """
    path = Path(path)
    vision = wrap is not None
    config = read_config(path)
    # The plan counts INT4 experts in RAM in the layout the banks built here will have.
    native = int4_native_here(config, int4_compute_dtype)
    if isinstance(where, Machine):
        if where.int4_native is None:
            where = replace(where, int4_native=native)
        p = plan_for_checkpoint(
            path,
            where,
            context=context,
            shrink=shrink,
            expert_freq=expert_freq,
            disk_cache_bytes=disk_cache_bytes,
            quantize_experts=quantize_experts,
            vision=vision,
        )
        disk_cache_bytes = p.disk_cache_bytes
    else:
        p = where
        if shrink is not None and shrink != p.shrink:
            raise ValueError(
                f"shrink={shrink!r} differs from the plan's shrink={p.shrink!r}; plan with the shrink you run"
            )
        if quantize_experts and not p.quantize_experts:
            raise ValueError("quantize_experts=True but the plan was made without it; plan with quantize_experts=True")
    if p.machine.int4_native and not native:
        raise ValueError(
            "the plan counts INT4 experts in RAM in the checkpoint's layout, but here they are converted to PyTorch's "
            f"(larger) layout (int4_compute_dtype={int4_compute_dtype}, or no VNNI kernel): plan with Machine(int4_native=False)"
        )
    _check_devices(p)
    refuse_disk_resident(p)
    main = main_device(p)
    vision_devices = {d for u, d in p.units.items() if p.unit_kind[u] in OFF_PATH}
    if vision and not vision_devices and config.get("vision_config"):
        raise ValueError(
            "a wrap (vision tower) was given but the plan has no vision parts: plan with plan_for_checkpoint(..., vision=True)"
        )
    if len(vision_devices) > 1:
        raise NotImplementedError(
            "the plan splits the vision tower and projector over several devices; this runtime keeps them together"
        )
    vision_device = next(iter(vision_devices), main)
    embed_device = next((d for u, d in p.units.items() if p.unit_kind[u] == "embed"), main)
    placement = experts_by_layer(p)
    cache: ExpertCache | None = None
    if any(dev == "disk" for layer in placement.values() for dev in layer.values()):
        per_expert = max(b for u, b in p.unit_bytes.items() if p.unit_kind[u] == "routed_expert")
        workers = min(4, os.cpu_count() or 1) if disk_workers is None else disk_workers
        settings = f"{p.quantize_experts}|{dtype}|{int4_compute_dtype}"
        converted = _converted_dir(path, Path(offload_folder), settings) if offload_folder is not None else None
        cache = ExpertCache(
            disk_cache_bytes or p.disk_cache_bytes or default_cache_bytes(config, per_expert), workers, converted
        )

    def customize(model: nn.Module) -> None:
        text = getattr(model, "language_model", model)
        if embed_device != main:
            if text.lm_head is None:
                raise NotImplementedError(
                    "tied embeddings must live on the main device (the head reads them every token)"
                )
            materialize(text.model.embed_tokens, torch.device("cpu"))
            text.__class__ = HostEmbeddingLM
        for i, layer in enumerate(text.model.layers):
            if not isinstance(layer.mlp, MoE):
                continue
            if i not in placement:
                raise CheckpointError(f"{path}: the plan has no routed experts for MoE layer {i}")
            template = layer.mlp.experts
            make = bank_factory(template, quantize=p.quantize_experts, compute_dtype=int4_compute_dtype)
            layer.mlp.experts = TieredExperts(i, template, placement[i], make, cache)
        if p.shrink:
            from kimidoc.placement.shrink import shrinkable_linears

            for name in shrinkable_linears(text):  # quantized on their way to the main device
                materialize(text.get_submodule(name), torch.device("cpu"))
        if model is not text and vision_device != main:
            for name, child in model.named_children():
                if name != "language_model":
                    materialize(child, torch_device(vision_device))

    model = load(
        path,
        dtype=dtype,
        device=torch_device(main),
        int4_compute_dtype=int4_compute_dtype,
        activation_dtype=activation_dtype,
        customize=customize,
        wrap=wrap,
        pack=False,
    )
    for bank in model.expert_banks():
        assert isinstance(bank, TieredExperts)
        if bank.unfinished():
            raise CheckpointError(
                f"{path}: layer {bank.layer} experts {bank.unfinished()[:4]} were not loaded completely"
            )
    if p.shrink:
        from kimidoc.placement.shrink import shrink_linears

        shrink_linears(getattr(model, "language_model", model), p.shrink, torch_device(main))
    getattr(model, "language_model", model).pack_linears()  # last: packed weights stay where they are
    model.plan = p
    model.expert_cache = cache
    return model


def _converted_dir(path: Path, folder: Path, settings: str) -> Path:
    """A subfolder of ``folder`` named for this checkpoint and load settings, so converted experts
    of another checkpoint (or of the same one rewritten) are never read back by mistake."""
    index = path / "model.safetensors.index.json"
    stamp = index if index.exists() else path / "model.safetensors"
    st = stamp.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{settings}"
    return folder / hashlib.sha1(key.encode()).hexdigest()[:16]


def placement_report(model: KimiForCausalLM) -> dict[str, Any]:
    """Where the routed experts are and how the disk tier has done so far."""
    experts: dict[str, int] = {}
    for bank in model.expert_banks():
        for dev in bank.where.values():
            experts[str(dev)] = experts.get(str(dev), 0) + 1
    cache: ExpertCache | None = getattr(model, "expert_cache", None)
    out: dict[str, Any] = {
        "routed_experts_by_device": experts,
        "shrink": model.plan.shrink,
        "quantize_experts": model.plan.quantize_experts,
    }
    if cache is not None:
        out["disk_cache"] = {
            "budget": cache.budget,
            "used": cache.used,
            "experts": len(cache),
            "hits": cache.hits,
            "misses": cache.misses,
            "bytes_read": cache.bytes_read,
            "routed_tokens_served": sum(b.disk_hits for b in model.expert_banks()),
        }
    return out
