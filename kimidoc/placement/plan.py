"""Where each part of K2.6 should live on a given machine, computed without loading a weight.

The rule the field's best single-node results follow: every token reads attention, the shared
expert, the dense layer and the head, so those go to the GPU first (with the latent cache);
routed experts are read 8-of-384 per layer, so they fill what is left, hottest first (by routing
statistics when given, else spread evenly over layers), then CPU RAM, then memory-mapped disk.
Moving whole layers per forward (plain ``device_map="auto"``) is what this avoids.

Devices use accelerate's device-map vocabulary: GPU index ``0, 1, ...``, ``"cpu"``, ``"disk"``.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kimidoc.placement.inventory import TensorSpec, _text_config, inventory_from_checkpoint, iter_units, read_config

Device = int | str

GiB = 1024**3
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1e3,
    "kb": 1e3,
    "m": 1e6,
    "mb": 1e6,
    "g": 1e9,
    "gb": 1e9,
    "t": 1e12,
    "tb": 1e12,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}

# bitsandbytes storage per BF16 parameter when a part must shrink: int8 keeps one fp32 scale per row
# (negligible), NF4 packs two weights per byte plus an fp32 absmax per 64-weight block.
SHRINK_BYTES_PER_PARAM = {"int8": 1.0, "nf4": 0.5 + 4 / 64}
SHRINKABLE = ("attention", "shared_expert", "dense_mlp")
# Parts that run once per image, not per token; text-only loading skips them.
OFF_PATH = ("vision", "projector")
# INT4 routed experts in memory. PyTorch's kernel layout (kimidoc.model.int4: GPUs, and CPUs
# without the VNNI kernel) keeps the packed values as stored, but each group's bf16 scale sits in
# a (scale, zero) pair table, twice the checkpoint's scale bytes. The VNNI kernel
# (kimidoc.model.int4_vnni) keeps the checkpoint's bytes. ``weight_shape`` is only checked. A BF16
# expert quantized on load ends up the same.
INT4_SCALE_TABLE_FACTOR = 2
QUANTIZED_EXPERT_BYTES_PER_PARAM = 0.5 + INT4_SCALE_TABLE_FACTOR * 2 / 32
QUANTIZED_EXPERT_NATIVE_BYTES_PER_PARAM = 0.5 + 2 / 32


def parse_bytes(text: str | int | float) -> int:
    """'24GiB', '768GB', '1TB', '512 MiB' or a plain number of bytes."""
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*([\d.]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read a memory size from {text!r} (try 24GiB, 768GB, 1TB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_gpus(specs: list[str] | None) -> list[int]:
    """GPU budgets from ['24GiB'] or ['8x141GiB'] or ['80GB', '80GB']."""
    out: list[int] = []
    for spec in specs or []:
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(.+)", spec)
        out += [parse_bytes(m.group(2))] * int(m.group(1)) if m else [parse_bytes(spec)]
    return out


@dataclass
class Machine:
    gpus: list[int] = field(default_factory=list)  # usable bytes per GPU
    cpu: int = 0  # usable RAM bytes for weights
    disk: int | None = None  # bytes allowed on the disk tier; None = no disk tier
    gpu_bandwidth: float = 1.0e12  # bytes/s per GPU (H200 ~4.8e12, RTX 4090 ~1.0e12)
    cpu_bandwidth: float = 1.0e11  # bytes/s of RAM reads
    disk_bandwidth: float = 3.0e9  # bytes/s of NVMe reads
    gpu_reserve: int = 2 * GiB  # per GPU: activations, kernels' workspace, allocator slack
    # INT4 experts in RAM (and read from the disk tier) keep the checkpoint's bytes, as the VNNI
    # kernel runs them; False: PyTorch's layout with its scale table. None: as on this machine
    # (resolved by :func:`int4_native`).
    int4_native: bool | None = None


@dataclass
class Plan:
    units: dict[str, Device]  # unit (see inventory.iter_units) -> device
    unit_bytes: dict[str, int]
    unit_kind: dict[str, str]
    tensors: dict[str, Device]  # every tensor name -> device
    cache_bytes_per_token: int
    cache_device: dict[int, Device]  # layer -> where its latent cache lives
    context: int
    shrink: str | None
    machine: Machine
    expert_freq: dict[tuple[int, int], float]
    warnings: list[str] = field(default_factory=list)
    quantize_experts: bool = False  # BF16 routed experts stored as INT4 at load
    disk_cache_bytes: int | None = None  # RAM set aside for disk-tier experts (kimidoc.placement.runtime)

    def device_map(self, prefix: str = "") -> dict[str, Device]:
        """accelerate-style ``{module name: device}`` for every module holding parameters."""
        out: dict[str, Device] = {}
        for name, dev in self.tensors.items():
            module = name.rsplit(".", 1)[0]
            out[prefix + module] = dev
        return out

    def bytes_by_device(self) -> dict[Device, int]:
        out: dict[Device, int] = defaultdict(int)
        for unit, dev in self.units.items():
            out[dev] += self.unit_bytes[unit]
        for dev in self.cache_device.values():
            out[dev] += self.cache_bytes // max(1, len(self.cache_device))
        return dict(out)

    def bytes_by_kind(self) -> dict[str, dict[Device, int]]:
        out: dict[str, dict[Device, int]] = defaultdict(lambda: defaultdict(int))
        for unit, dev in self.units.items():
            out[self.unit_kind[unit]][dev] += self.unit_bytes[unit]
        return {k: dict(v) for k, v in out.items()}

    @property
    def cache_bytes(self) -> int:
        return self.cache_bytes_per_token * self.context

    def bytes_read_per_token(self) -> dict[Device, float]:
        """Expected weight and cache bytes one decode step reads from each device."""
        reads: dict[Device, float] = defaultdict(float)
        for unit, dev in self.units.items():
            kind = self.unit_kind[unit]
            if kind in ("vision", "projector"):
                continue  # runs once per image, not per token
            if kind == "embed":
                reads[dev] += self.unit_bytes[unit] / max(1, self._vocab)  # one row
            elif kind == "routed_expert":
                layer, expert = _expert_of(unit)
                reads[dev] += self.unit_bytes[unit] * self.expert_freq[(layer, expert)]
            else:
                reads[dev] += self.unit_bytes[unit]
        for dev in self.cache_device.values():
            reads[dev] += self.cache_bytes / max(1, len(self.cache_device))
        return dict(reads)

    _vocab: int = 1

    def decode_ceiling(self) -> float:
        """Tokens/s if every byte a decode step needs were read at its device's bandwidth.
        One sequence's decode walks the layers in order, so the tiers' times add up."""
        t = 0.0
        for dev, b in self.bytes_read_per_token().items():
            bw = (
                self.machine.disk_bandwidth
                if dev == "disk"
                else self.machine.cpu_bandwidth
                if dev == "cpu"
                else self.machine.gpu_bandwidth
            )
            t += b / bw
        return 1.0 / t if t else float("inf")

    def summary(self) -> dict[str, Any]:
        kinds = self.bytes_by_kind()
        experts = [u for u, k in self.unit_kind.items() if k == "routed_expert"]
        expert_tiers: dict[str, int] = defaultdict(int)
        for u in experts:
            expert_tiers[_dev_name(self.units[u])] += 1
        return {
            "context_tokens": self.context,
            "shrink": self.shrink,
            "quantize_experts": self.quantize_experts,
            "int4_native_in_ram": bool(self.machine.int4_native),
            "bytes_by_part": {k: {_dev_name(d): b for d, b in v.items()} for k, v in kinds.items()},
            "bytes_by_device": {_dev_name(d): b for d, b in self.bytes_by_device().items()},
            "routed_experts_by_device": dict(expert_tiers),
            "latent_cache_bytes_per_token": self.cache_bytes_per_token,
            "latent_cache_bytes": self.cache_bytes,
            "latent_cache_device": sorted({_dev_name(d) for d in self.cache_device.values()}),
            "bytes_read_per_token": {_dev_name(d): b for d, b in self.bytes_read_per_token().items()},
            "decode_tokens_per_s_ceiling": self.decode_ceiling(),
            "warnings": self.warnings,
        }


def _dev_name(d: Device) -> str:
    return f"cuda:{d}" if isinstance(d, int) else d


def _expert_of(unit: str) -> tuple[int, int]:
    _, layer, _, expert = unit.split(".")
    return int(layer), int(expert)


DEFAULT_CONTEXT = 32768  # tokens of latent cache a plan reserves unless told otherwise


class DoesNotFit(ValueError):
    """The machine's budgets cannot hold the model. ``needed`` and ``offered`` are bytes (weights
    plus latent cache, and the budgets' sum); ``shortfall`` is what is missing (0 when the total
    would do but one part is larger than any single device's room)."""

    def __init__(self, message: str, *, needed: int = 0, offered: int = 0) -> None:
        super().__init__(message)
        self.needed, self.offered = needed, offered
        self.shortfall = max(0, needed - offered)


def _gib(b: float) -> str:
    return f"{b / GiB:,.2f} GiB"


def budgets_text(machine: Machine) -> str:
    """The machine's budgets in words, for messages."""
    gpus = ", ".join(_gib(g - machine.gpu_reserve) for g in machine.gpus)
    gpu = f"GPU [{gpus}] (after a {_gib(machine.gpu_reserve)} reserve each)" if machine.gpus else "no GPU"
    disk = "off" if machine.disk is None else _gib(machine.disk)
    return f"{gpu}, RAM {_gib(machine.cpu)}, disk tier {disk}"


def offered_bytes(machine: Machine) -> int:
    return int(sum(max(0, g - machine.gpu_reserve) for g in machine.gpus) + machine.cpu + (machine.disk or 0))


def plan(
    config: dict[str, Any],
    specs: list[TensorSpec],
    machine: Machine,
    *,
    context: int = DEFAULT_CONTEXT,
    batch: int = 1,
    shrink: str | None = None,
    expert_freq: dict[tuple[int, int], float] | None = None,
    quantize_experts: bool = False,
) -> Plan:
    """Place every unit of ``specs`` on ``machine``; raises :class:`DoesNotFit` when it cannot.

    ``shrink`` ("int8" / "nf4") stores attention, shared-expert and dense-MLP linears with
    bitsandbytes; ``expert_freq`` maps (layer, expert) to the fraction of tokens routed to it;
    ``quantize_experts`` counts BF16 routed experts at INT4 size (quantized on load).
    """
    if shrink is not None and shrink not in SHRINK_BYTES_PER_PARAM:
        raise ValueError(f"shrink must be one of {sorted(SHRINK_BYTES_PER_PARAM)}, got {shrink!r}")
    tc = _text_config(config)
    n_layers = tc["num_hidden_layers"]
    cache_per_token = (tc["kv_lora_rank"] + tc["qk_rope_head_dim"]) * 2 * n_layers * batch

    machine = replace(machine, int4_native=int4_native(machine, config))
    # Bytes of each unit on a GPU, and in RAM or on the disk tier (INT4 experts' layouts differ);
    # ``unit_bytes`` takes the figure of the device each unit is put on.
    unit_bytes: dict[str, int] = {}
    host_bytes: dict[str, int] = {}
    unit_kind: dict[str, str] = {}
    unit_tensors: dict[str, list[TensorSpec]] = {}
    for unit, group in iter_units(specs):
        unit_tensors[unit] = group
        unit_kind[unit] = _unit_kind(group)
        unit_bytes[unit] = sum(resident_bytes(s, shrink, quantize_experts) for s in group)
        host_bytes[unit] = sum(resident_bytes(s, shrink, quantize_experts, machine.int4_native) for s in group)

    freq = _expert_freq(tc, unit_kind, expert_freq)
    free: dict[Device, float] = {i: g - machine.gpu_reserve for i, g in enumerate(machine.gpus)}
    free["cpu"] = machine.cpu
    if machine.disk is not None:
        free["disk"] = machine.disk
    placed: dict[str, Device] = {}
    cache_device: dict[int, Device] = {}
    warnings: list[str] = []
    per_layer_cache = cache_per_token // n_layers * context
    cache_total = per_layer_cache * n_layers
    total_need = sum(host_bytes.values()) + cache_total  # the least any placement needs

    def put(unit: str, order: list[Device], extra: int = 0) -> Device:
        for dev in order:
            size = unit_bytes[unit] if isinstance(dev, int) else host_bytes[unit]
            if free.get(dev, -1) >= size + extra:
                free[dev] -= size + extra
                placed[unit] = dev
                return dev
        need = host_bytes[unit] + extra
        gpu_free = [round(free[i] / GiB, 1) for i in range(len(machine.gpus))]
        disk_free = "off" if machine.disk is None else f"{free['disk'] / GiB:.1f} GiB"
        needed, offered = total_need, offered_bytes(machine)
        short = (
            f"{_gib(needed - offered)} short"
            if needed > offered
            else "enough in total, but no single device has room for this part"
        )
        raise DoesNotFit(
            f"the model does not fit: it needs {_gib(needed)} (weights {_gib(needed - cache_total)} + latent cache "
            f"{_gib(cache_total)} at {context:,} tokens) and this machine offers {_gib(offered)} ({budgets_text(machine)}): "
            f"{short}. {unit} ({need / GiB:.2f} GiB) fits nowhere: free GPU {gpu_free} GiB, "
            f"CPU {free['cpu'] / GiB:.1f} GiB, disk {disk_free}; raise a budget, add a disk tier, shorten the context or pass shrink",
            needed=needed,
            offered=offered,
        )

    # Layers are cut into contiguous slices, one per GPU, in proportion to GPU size (weights of the
    # whole layer, experts included), so a layer's experts can stay on the GPU that runs its attention.
    gpus = list(range(len(machine.gpus)))
    layer_gpu = _slice_layers(unit_bytes, n_layers, per_layer_cache, machine.gpus)
    for unit in [u for u in unit_bytes if unit_kind[u] not in ("routed_expert", "embed", "vision", "projector")]:
        layer = _layer_of(unit)
        home = layer_gpu.get(layer, gpus[-1] if gpus else None)
        extra = per_layer_cache if unit.endswith(".attention") else 0
        dev = put(unit, list(dict.fromkeys(([home] if home is not None else []) + gpus)) + ["cpu", "disk"], extra)
        if extra:
            cache_device[layer] = dev
        if dev == "disk":
            warnings.append(f"{unit} is on disk: every token reads it from disk")
    # Once-per-image and once-per-token-row parts: GPU when there is room, else CPU.
    for unit in [u for u in unit_bytes if unit_kind[u] in ("vision", "projector", "embed")]:
        put(unit, gpus + ["cpu", "disk"])
    # Routed experts, hottest first; each tries its layer's GPU, then any GPU, then RAM, then disk.
    experts = sorted(
        (u for u in unit_bytes if unit_kind[u] == "routed_expert"), key=lambda u: (-freq[_expert_of(u)], _spread_key(u))
    )
    for unit in experts:
        layer = _expert_of(unit)[0]
        home = layer_gpu.get(layer)
        order = ([home] if isinstance(home, int) else []) + gpus + ["cpu", "disk"]
        put(unit, list(dict.fromkeys(order)))

    unit_bytes = {u: b if isinstance(placed[u], int) else host_bytes[u] for u, b in unit_bytes.items()}
    tensors = {s.name: placed[u] for u, group in unit_tensors.items() for s in group}
    p = Plan(
        placed,
        unit_bytes,
        unit_kind,
        tensors,
        cache_per_token,
        cache_device,
        context,
        shrink,
        machine,
        freq,
        warnings,
        quantize_experts,
    )
    p._vocab = tc["vocab_size"]
    return p


def _unit_kind(group: list[TensorSpec]) -> str:
    kinds = {s.kind for s in group} - {"norm"}
    if not kinds:
        return "lm_head" if any(s.layer is None for s in group) else "norm"
    for k in (
        "routed_expert",
        "attention",
        "dense_mlp",
        "shared_expert",
        "router",
        "lm_head",
        "embed",
        "vision",
        "projector",
    ):
        if k in kinds:
            return "shared_expert" if k == "router" else k  # a layer's router travels with its shared expert
    return kinds.pop()


def resident_bytes(
    s: TensorSpec, shrink: str | None = None, quantize_experts: bool = False, int4_native: bool = False
) -> int:
    """Bytes tensor ``s`` takes once loaded (see :data:`INT4_SCALE_TABLE_FACTOR`,
    :data:`SHRINK_BYTES_PER_PARAM`); ``int4_native``: INT4 experts keep the checkpoint's layout."""
    if s.kind == "routed_expert" and s.name.endswith(".weight_scale"):
        return s.nbytes if int4_native else INT4_SCALE_TABLE_FACTOR * s.nbytes
    if s.kind == "routed_expert" and s.name.endswith(".weight_shape"):
        return 0
    if quantize_experts and s.kind == "routed_expert" and len(s.shape) == 2 and s.dtype in ("BF16", "F16", "F32"):
        per_param = QUANTIZED_EXPERT_NATIVE_BYTES_PER_PARAM if int4_native else QUANTIZED_EXPERT_BYTES_PER_PARAM
        return math.ceil(s.numel * per_param)
    # kv_b_proj stays BF16: absorbed MLA decode reads its weight directly, not through a linear.
    if (
        shrink
        and s.kind in SHRINKABLE
        and len(s.shape) == 2
        and s.dtype == "BF16"
        and not s.name.endswith("kv_b_proj.weight")
    ):
        return math.ceil(s.numel * SHRINK_BYTES_PER_PARAM[shrink])
    return s.nbytes


def _slice_layers(unit_bytes: dict[str, int], n_layers: int, per_layer_cache: int, gpus: list[int]) -> dict[int, int]:
    if not gpus:
        return {}
    per_layer = [per_layer_cache] * n_layers
    for unit, b in unit_bytes.items():
        layer = _layer_of(unit)
        if layer is not None:
            per_layer[layer] += b
    total, bounds, acc = sum(per_layer), [], 0.0
    for g in gpus:
        acc += g / sum(gpus)
        bounds.append(acc * total)
    out, seen, gpu = {}, 0.0, 0
    for layer, b in enumerate(per_layer):
        mid = seen + b / 2
        while gpu < len(gpus) - 1 and mid > bounds[gpu]:
            gpu += 1
        out[layer] = gpu
        seen += b
    return out


def _layer_of(unit: str) -> int | None:
    m = re.match(r"layers\.(\d+)\.", unit)
    return int(m.group(1)) if m else None


def _spread_key(unit: str) -> tuple[int, int]:
    # Without statistics, expert e of every layer comes before expert e+1 of any layer, so each
    # layer gets the same number of GPU-resident experts.
    layer, expert = _expert_of(unit)
    return expert, layer


def _expert_freq(
    tc: dict[str, Any], unit_kind: dict[str, str], given: dict[tuple[int, int], float] | None
) -> dict[tuple[int, int], float]:
    uniform = tc["num_experts_per_tok"] / tc["n_routed_experts"]
    out = {}
    for u, k in unit_kind.items():
        if k == "routed_expert":
            key = _expert_of(u)
            out[key] = given.get(key, 0.0) if given else uniform
    return out


def int4_native(machine: Machine, config: dict[str, Any]) -> bool:
    """Whether ``machine`` keeps INT4 experts in the checkpoint's layout in RAM: as it says, else
    as this machine's kernel does with bf16 activations (imports torch only then)."""
    if machine.int4_native is not None:
        return machine.int4_native
    import torch

    return int4_native_here(config, torch.bfloat16)


def int4_native_here(config: dict[str, Any], compute_dtype: Any) -> bool:
    """Whether INT4 expert banks of ``config`` built on this CPU with activations of
    ``compute_dtype`` (a torch dtype) keep the checkpoint's bytes (the VNNI kernel runs them)."""
    from kimidoc.model import int4_vnni

    tc = _text_config(config)
    return int4_vnni.runs(tc["hidden_size"], tc["moe_intermediate_size"], compute_dtype, "cpu")


def default_cache_bytes(config: dict[str, Any], expert_bytes: int) -> int:
    """Room for two layers' worth of routed experts (``2 * num_experts_per_tok`` experts)."""
    return 2 * config.get("text_config", config)["num_experts_per_tok"] * expert_bytes


def plan_for_checkpoint(
    path: str | Path,
    machine: Machine,
    *,
    context: int = DEFAULT_CONTEXT,
    shrink: str | None = None,
    expert_freq: dict[tuple[int, int], float] | None = None,
    disk_cache_bytes: int | None = None,
    quantize_experts: bool = False,
    vision: bool = False,
) -> Plan:
    """The plan of a checkpoint folder on ``machine``, as :func:`load_placed` runs it. With a disk
    tier, ``disk_cache_bytes`` (default :func:`default_cache_bytes`) of ``machine.cpu`` is set aside
    for disk-tier experts. ``vision`` counts the vision tower and projector (when the checkpoint
    has them). Raises :class:`DoesNotFit`, naming the shortfall, when the model cannot run here:
    over all budgets, or with a part other than routed experts pushed to the disk tier."""
    config = read_config(path)
    specs = [s for s in inventory_from_checkpoint(path) if vision or s.kind not in OFF_PATH]
    machine = replace(machine, int4_native=int4_native(machine, config))
    if machine.disk is not None:
        if disk_cache_bytes is None:
            first = next(s for s in specs if s.kind == "routed_expert")
            one = sum(
                resident_bytes(s, None, quantize_experts, machine.int4_native)
                for s in specs
                if s.kind == "routed_expert" and (s.layer, s.expert) == (first.layer, first.expert)
            )
            disk_cache_bytes = default_cache_bytes(config, one)
        if disk_cache_bytes >= machine.cpu:
            raise DoesNotFit(
                f"the disk tier's expert cache ({disk_cache_bytes:,} bytes) must be smaller than the RAM budget ({machine.cpu:,} bytes): "
                f"{disk_cache_bytes - machine.cpu:,} bytes short before any weight is placed",
                needed=disk_cache_bytes,
                offered=machine.cpu,
            )
        machine = replace(machine, cpu=machine.cpu - disk_cache_bytes)
    p = plan(
        config,
        specs,
        machine,
        context=context,
        shrink=shrink,
        expert_freq=expert_freq,
        quantize_experts=quantize_experts,
    )
    p.disk_cache_bytes = disk_cache_bytes
    refuse_disk_resident(p)
    return p


def refuse_disk_resident(p: Plan) -> None:
    """Only routed experts are read from the disk tier; anything else the plan put there means the
    RAM/GPU budgets are short by (at least) its size."""
    on_disk = {u: b for u, b in p.unit_bytes.items() if p.units[u] == "disk" and p.unit_kind[u] != "routed_expert"}
    if not on_disk:
        return
    need = sum(on_disk.values())
    first = sorted(on_disk)[:3]
    raise DoesNotFit(
        f"the model does not fit: {_gib(need)} of parts that every token (or image) reads would be on the disk tier "
        f"({', '.join(first)}{', ...' if len(on_disk) > 3 else ''}), and only routed experts may live there; "
        f"RAM/GPU are {_gib(need)} short ({budgets_text(p.machine)}). Raise the RAM/GPU budgets, shorten the context or pass shrink",
        needed=need,
        offered=0,
    )
