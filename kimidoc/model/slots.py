"""Where each checkpoint tensor goes: a name -> :class:`Slot` map built from a module tree.

Loading is a fill: every official tensor name maps to a slot that knows the shape the file must
hold and how to put the tensor in place. Plain parameters and persistent buffers are their own
slots (their names equal the official ones); a module that stores weights in another layout
(the INT4 expert bank, which converts to the kernel's layout) provides ``checkpoint_slots``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .shards import ShardReader


@dataclass
class Slot:
    shape: tuple[int, ...]
    fill: Callable[[torch.Tensor], None]
    # When set and the file's dtype equals its dtype, the loader reads the bytes straight into it.
    target: torch.Tensor | None = None
    # Required dtype in the file; None accepts any floating dtype (converted on fill).
    dtype: torch.dtype | None = None
    # When set, the loader calls it with (shard path, tensor name) instead of reading the tensor:
    # the tensor stays on disk and is read on demand (the placement disk tier).
    defer: Callable[[Path, str], None] | None = None

    def read_from(self, reader: ShardReader, name: str) -> None:
        """Fill from tensor ``name`` of ``reader``: its bytes straight into ``target`` when the
        dtypes match (no intermediate tensor), else through ``fill``."""
        t = self.target
        if t is not None and t.dtype == reader.tensors[name].dtype and t.device.type == "cpu" and t.is_contiguous():
            reader.read_into(name, t)
        else:
            self.fill(reader.read(name))


def tensor_slot(tensor: torch.Tensor) -> Slot:
    def fill(src: torch.Tensor) -> None:
        with torch.no_grad():
            tensor.copy_(src)

    return Slot(tuple(tensor.shape), fill, target=tensor)


def module_slots(module: nn.Module, prefix: str = "") -> dict[str, Slot]:
    """Slots for ``module`` and its children, named ``prefix + official name``."""
    custom = getattr(module, "checkpoint_slots", None)
    if callable(custom):
        return custom(prefix)
    slots: dict[str, Slot] = {}
    for name, param in module.named_parameters(recurse=False):
        slots[prefix + name] = tensor_slot(param)
    for name, buf in module.named_buffers(recurse=False):
        if name not in module._non_persistent_buffers_set:
            slots[prefix + name] = tensor_slot(buf)
    for name, child in module.named_children():
        slots.update(module_slots(child, f"{prefix}{name}."))
    return slots
