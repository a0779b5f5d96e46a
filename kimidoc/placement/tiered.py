"""Routed experts that run where they live: per-device banks plus a disk tier read on demand.

:class:`TieredExperts` replaces one MoE layer's :class:`~kimidoc.model.moe.ExpertBank`. Each
expert of the layer is in exactly one place: a resident sub-bank on a GPU or in RAM (same class
and kernel layout as the bank it replaces, holding only that device's experts), or the disk tier,
where only the (shard file, tensor name) references are kept and the expert is read when a token
is routed to it, into an :class:`ExpertCache` shared by all layers and bounded in bytes.

A forward moves the few routed activations to the experts, never the weights: host-side
activations are copied off the accelerator first, then the GPU experts are launched (CUDA runs
them asynchronously), then RAM and disk experts compute on the CPU while the GPU works, and the
results are summed in expert order, exactly as :meth:`ExpertBank.forward` sums them.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from kimidoc.model.moe import ExpertBank, combine, group_by_expert
from kimidoc.model.shards import CheckpointError, ShardReader
from kimidoc.model.slots import Slot

Device = int | str  # the plan's vocabulary: GPU index, "cpu" or "disk"

# Builds a bank of the replaced bank's class holding ``n`` experts on a device.
BankFactory = Callable[[int, torch.device], ExpertBank]


def torch_device(dev: Device) -> torch.device:
    """The torch device of a plan device (``"disk"`` experts compute on the CPU)."""
    if isinstance(dev, int):
        return torch.device("cuda", dev)
    return torch.device("cpu")


def bank_bytes(bank: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(bank.parameters()) + list(bank.buffers()))


class ExpertCache:
    """Least-recently-used one-expert banks read from the disk tier, at most ``budget`` bytes.

    With ``converted_dir``, the first read of an expert also writes it in the kernel layout there
    (the role of accelerate's ``offload_folder``), and later reads are plain reads of those bytes.
    Shard files stay open (their headers parsed once, one handle per reading thread); each miss
    reads the expert's few tensors with plain file reads into fresh memory, so nothing but the
    cached experts stays resident. With ``workers`` > 0, the disk experts a layer is about to run
    are read and converted on a thread pool, up to ``workers`` at a time, while earlier experts
    compute; room for the ones in flight is kept free inside the budget.
    """

    def __init__(self, budget: int, workers: int = 0, converted_dir: Path | None = None):
        if budget <= 0:
            raise ValueError(f"the disk-tier expert cache needs a positive byte budget, got {budget}")
        self.budget = budget
        self.used = 0
        self.hits = 0
        self.misses = 0
        self.bytes_read = 0
        self._entries: OrderedDict[tuple[int, int], tuple[ExpertBank, int]] = OrderedDict()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="kimidoc-disk-experts") if workers > 0 else None
        self._window = workers
        self._inflight: dict[tuple[int, int], Future[ExpertBank]] = {}
        self._queue: deque[tuple[tuple[int, int], Loader]] = deque()
        self._expert_size = 0  # bytes of one cached expert, once one has been read
        self._local = threading.local()
        self._readers: list[ShardReader] = []
        self._lock = threading.Lock()
        self.converted_dir = converted_dir
        if converted_dir is not None:
            converted_dir.mkdir(parents=True, exist_ok=True)

    def converted_file(self, layer: int, expert: int) -> Path | None:
        """Where expert ``(layer, expert)`` is kept in the kernel layout, if there is a folder for it."""
        return None if self.converted_dir is None else self.converted_dir / f"layer{layer}.expert{expert}.safetensors"

    def save_converted(self, file: Path, bank: nn.Module) -> None:
        """Keep ``bank`` in its kernel layout, so the next read skips unpacking and re-layout."""
        tmp = file.with_name(f"{file.name}.{threading.get_ident()}.tmp")
        save_file({name: t.contiguous() for name, t in bank.state_dict().items()}, str(tmp))
        os.replace(tmp, file)  # atomic: a reader never sees half a file

    def prefetch(self, wanted: list[tuple[tuple[int, int], Loader]]) -> None:
        """Start reading the experts in ``wanted`` (in order) that are neither cached nor in flight."""
        if self._pool is None:
            return
        self._queue = deque(
            (key, load) for key, load in wanted if key not in self._entries and key not in self._inflight
        )
        self._top_up()

    def _top_up(self) -> None:
        while self._queue and len(self._inflight) < self._window:
            if not self._expert_size and self._inflight:
                break  # the first read tells how much room each one needs
            if self._expert_size and self._expert_size * (len(self._inflight) + 1) > self.budget:
                break
            key, load = self._queue.popleft()
            if key not in self._entries and key not in self._inflight:
                self._make_room(self._expert_size * (len(self._inflight) + 1))
                self._inflight[key] = self._pool.submit(load, self)

    def _make_room(self, size: int) -> None:
        while self._entries and self.used + size > self.budget:
            _, (_, freed) = self._entries.popitem(last=False)
            self.used -= freed

    def get(self, key: tuple[int, int], load: Loader) -> ExpertBank:
        entry = self._entries.get(key)
        if entry is not None:
            self.hits += 1
            self._entries.move_to_end(key)
            return entry[0]
        self.misses += 1
        future = self._inflight.pop(key, None)
        bank = future.result() if future is not None else load(self)
        size = bank_bytes(bank)
        if size > self.budget:
            raise ValueError(
                f"layer {key[0]} expert {key[1]} needs {size:,} bytes, more than the disk-tier cache budget of {self.budget:,} bytes"
            )
        self._expert_size = max(self._expert_size, size)
        self._make_room(size + self._expert_size * len(self._inflight))
        self._entries[key] = (bank, size)
        self.used += size
        if self._pool is not None:
            self._top_up()
        return bank

    def fill(self, slot: Slot, path: Path, name: str) -> None:
        """Fill ``slot`` with tensor ``name`` of shard ``path``: straight into the bank when the
        bank keeps the file's bytes, else through ``slot.fill`` (safe from any thread: each has its
        own file handles)."""
        readers = self._local.__dict__.setdefault("readers", {})
        reader = readers.get(path)
        if reader is None:
            reader = readers[path] = ShardReader(path)
            with self._lock:
                self._readers.append(reader)
        slot.read_from(reader, name)
        with self._lock:
            self.bytes_read += reader.tensors[name].nbytes

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        for reader in self._readers:
            reader.close()
        self._readers.clear()
        self._local = threading.local()
        self._entries.clear()
        self._inflight.clear()
        self.used = 0


# Reads one disk-tier expert into a fresh one-expert bank (runs on a worker thread when prefetched).
Loader = Callable[[ExpertCache], ExpertBank]


def _never_filled(t: torch.Tensor) -> None:
    raise AssertionError("a disk-tier slot is deferred, never filled at load time")


class TieredExperts(ExpertBank):
    """One layer's routed experts, each on the device the plan gave it (see the module docstring)."""

    def __init__(
        self, layer: int, template: ExpertBank, where: dict[int, Device], make: BankFactory, cache: ExpertCache | None
    ):
        super().__init__()
        self.layer = layer
        self.num_experts, self.hidden, self.width = template.num_experts, template.hidden, template.width
        missing = sorted(set(range(self.num_experts)) - set(where))
        if missing:
            raise ValueError(f"layer {layer}: the plan places no device for experts {missing[:8]}")
        if "disk" in where.values() and cache is None:
            raise ValueError(f"layer {layer}: experts on the disk tier need an ExpertCache")
        self.where = dict(where)
        self.cache = cache
        self._make = make
        self.resident = nn.ModuleDict()  # "gpu0", "gpu1", ..., "ram" -> sub-bank
        self._home: dict[int, tuple[str, int]] = {}  # expert -> (device name, index in its sub-bank)
        devices = sorted({d for d in where.values() if d != "disk"}, key=str)
        for dev in devices:
            experts = sorted(e for e, d in where.items() if d == dev)
            key = f"gpu{dev}" if isinstance(dev, int) else "ram"  # ("cpu" would shadow Module.cpu)
            self.resident[key] = make(len(experts), torch_device(dev))
            self._home.update({e: (key, i) for i, e in enumerate(experts)})
        # Disk-tier experts: official-name suffix ("gate_proj.weight_packed") -> (shard, tensor name).
        self.disk_refs: dict[int, dict[str, tuple[Path, str]]] = {e: {} for e, d in where.items() if d == "disk"}
        self.disk_hits = 0  # routed (token, expert) pairs served from the disk tier

    # -- loading ------------------------------------------------------------------------------

    def checkpoint_slots(self, prefix: str) -> dict[str, Slot]:
        """Official names of every expert of this layer: resident slots fill a sub-bank, disk slots
        only record where the tensor lives."""
        slots: dict[str, Slot] = {}
        for key, bank in self.resident.items():
            local_to_expert = {i: e for e, (k, i) in self._home.items() if k == key}
            for name, slot in bank.checkpoint_slots("").items():
                local, rest = name.split(".", 1)
                slots[f"{prefix}{local_to_expert[int(local)]}.{rest}"] = slot
        if self.disk_refs:
            shapes = self._make(1, torch.device("meta")).checkpoint_slots("")
            for e, refs in self.disk_refs.items():
                for name, slot in shapes.items():
                    rest = name.split(".", 1)[1]
                    slots[f"{prefix}{e}.{rest}"] = Slot(
                        slot.shape,
                        _never_filled,
                        dtype=slot.dtype,
                        defer=lambda path, full, refs=refs, rest=rest: refs.__setitem__(rest, (path, full)),
                    )
        return slots

    def unfinished(self) -> list[str]:
        """Experts loaded incompletely (for errors): a sub-bank's unpaired gate/up, or a disk
        expert whose tensors were not all found."""
        out = []
        for key, bank in self.resident.items():
            check = getattr(bank, "unfinished", None)
            if callable(check):
                local_to_expert = {i: e for e, (k, i) in self._home.items() if k == key}
                out += [f"{local_to_expert[int(n.split('.', 1)[0])]}.{n.split('.', 1)[1]}" for n in check()]
        if self.disk_refs:
            want = len(self._make(1, torch.device("meta")).checkpoint_slots(""))
            out += [f"{e} (disk)" for e, refs in self.disk_refs.items() if len(refs) != want]
        return out

    def _load_from_disk(self, e: int) -> Loader:
        def load(cache: ExpertCache) -> ExpertBank:
            bank = self._make(1, torch.device("cpu"))
            converted = cache.converted_file(self.layer, e)
            if converted is not None and converted.exists():
                with ShardReader(converted) as reader:  # already in the kernel layout: plain reads
                    for name, t in bank.state_dict().items():
                        reader.read_into(name, t)
                return bank
            slots = bank.checkpoint_slots("")
            with torch.no_grad():
                for rest, (path, name) in self.disk_refs[e].items():
                    try:
                        cache.fill(slots["0." + rest], path, name)
                    except (OSError, ValueError) as exc:
                        raise CheckpointError(
                            f"{path}: tensor {name} (disk-tier expert {e} of layer {self.layer}): {exc}"
                        ) from exc
            if converted is not None:
                cache.save_converted(converted, bank)
            return bank

        return load

    # -- running ------------------------------------------------------------------------------

    def _run(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Expert ``e`` on ``x`` already on the expert's device."""
        dev = self.where[e]
        if dev == "disk":
            assert self.cache is not None
            return self.cache.get((self.layer, e), self._load_from_disk(e)).run_expert(0, x)
        key, local = self._home[e]
        return self.resident[key].run_expert(local, x)

    def run_expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        return self._run(e, x.to(torch_device(self.where[e]))).to(x.device)

    def by_expert(self) -> ExpertBank | None:
        """The one resident sub-bank when the plan put every expert of the layer there (in expert
        order, so expert ``e`` is its ``e``), else None."""
        if self.disk_refs or len(self.resident) != 1:
            return None
        return next(iter(self.resident.values()))

    def expert_weights(self, e: int) -> dict[str, torch.Tensor]:
        if self.where[e] == "disk":
            assert self.cache is not None
            return self.cache.get((self.layer, e), self._load_from_disk(e)).expert_weights(0)
        key, local = self._home[e]
        return self.resident[key].expert_weights(local)

    def forward(self, x: torch.Tensor, topk_idx: torch.Tensor, topk_weight: torch.Tensor) -> torch.Tensor:
        ids, counts, token, xs, ws = group_by_expert(x, topk_idx, topk_weight)
        groups: dict[torch.device, list[tuple[int, int, int]]] = {}
        start = 0
        for e, n in zip(ids, counts):
            groups.setdefault(torch_device(self.where[e]), []).append((e, start, n))
            start += n
        # Per device, one copy of the routed rows there; host copies first, so that copying off
        # the accelerator does not wait behind the GPU experts launched next.
        inputs: dict[torch.device, torch.Tensor] = {}
        for dev in sorted(groups, key=lambda d: d.type != "cpu"):
            if dev == x.device:
                continue
            rows = torch.cat([torch.arange(s, s + n, device=x.device) for _, s, n in groups[dev]])
            inputs[dev] = xs[rows].to(dev, non_blocking=dev.type == "cuda")
        if self.cache is not None:
            self.cache.prefetch([((self.layer, e), self._load_from_disk(e)) for e in ids if self.where[e] == "disk"])
        ys: dict[int, torch.Tensor] = {}
        for dev in sorted(groups, key=lambda d: d.type == "cpu"):  # accelerators first: they run async
            offset = 0
            for e, s, n in groups[dev]:
                if dev == x.device:
                    ys[e] = self._run(e, xs[s : s + n])
                else:
                    ys[e] = self._run(e, inputs[dev][offset : offset + n])
                    offset += n
                if self.where[e] == "disk":
                    self.disk_hits += n
        if x.shape[0] == 1:  # summed as ExpertBank.decode sums one token: placement must not change it
            return combine(torch.cat([ys[e].to(x.device) for e in topk_idx[0].tolist()]), topk_weight[0], x.dtype)
        out = torch.zeros_like(x)
        for e, s, n in sorted((g for gs in groups.values() for g in gs), key=lambda g: g[0]):
            y = ys[e].to(x.device) * ws[s : s + n]
            out.index_add_(0, token[s : s + n], y.to(out.dtype))
        return out
