"""Where the parts of K2.6 live on a user's machine: inventory (what there is), plan (where it goes).

Running a plan needs torch and lives in submodules imported on demand (so ``kimidoc plan`` stays
light): :mod:`.runtime` (``load_placed``), :mod:`.tiered` (experts per device + disk tier),
:mod:`.shrink` (bitsandbytes), :mod:`.quantize` (INT4 on load), :mod:`.routing` (statistics hook).
:func:`machine_for` (:mod:`.detect`) makes the :class:`Machine` of given and detected budgets.
"""

from kimidoc.placement.detect import machine_for
from kimidoc.placement.inventory import TensorSpec, inventory_from_checkpoint, inventory_from_config, read_config
from kimidoc.placement.plan import DEFAULT_CONTEXT, DoesNotFit, Machine, Plan, parse_bytes, parse_gpus, plan

__all__ = [
    "DEFAULT_CONTEXT",
    "DoesNotFit",
    "Machine",
    "Plan",
    "TensorSpec",
    "inventory_from_checkpoint",
    "inventory_from_config",
    "machine_for",
    "parse_bytes",
    "parse_gpus",
    "plan",
    "read_config",
]
