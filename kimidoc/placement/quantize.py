"""4-bit routed experts for BF16-only checkpoints (base models), quantized as they load.

Chosen explicitly (``quantize_experts=True``): each routed expert's ``gate_proj`` / ``up_proj`` /
``down_proj`` ``.weight`` is quantized on arrival with the same symmetric group-32 INT4 scheme the
K2.6 checkpoint ships (:func:`kimidoc.model.int4.quantize`) and stored in the INT4 kernel layout,
so a BF16 base model runs with the INT4 kernels at a quarter of the expert memory. Disk-tier
experts are quantized each time they are read into the cache.
"""

from __future__ import annotations

import torch

from kimidoc.model import int4
from kimidoc.model.moe import Int4Experts
from kimidoc.model.slots import Slot

_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


class QuantizedOnLoad(Int4Experts):
    """:class:`Int4Experts` whose checkpoint slots take float ``*.weight`` tensors."""

    def checkpoint_slots(self, prefix: str) -> dict[str, Slot]:
        packed = super().checkpoint_slots("")
        slots: dict[str, Slot] = {}
        for e in range(self.num_experts):
            for proj in _PROJECTIONS:
                shape = (self.hidden, self.width) if proj == "down_proj" else (self.width, self.hidden)
                base = f"{e}.{proj}."

                def fill(w: torch.Tensor, base: str = base) -> None:
                    q, scale = int4.quantize(w, self.group_size)
                    packed[base + "weight_packed"].fill(int4.pack(q))
                    packed[base + "weight_scale"].fill(scale)

                slots[f"{prefix}{base}weight"] = Slot(shape, fill)
        return slots
