"""Where the parts of K2.6 live on a user's machine: inventory (what there is), plan (where it goes)."""

from kimidoc.placement.inventory import TensorSpec, inventory_from_checkpoint, inventory_from_config, load_config
from kimidoc.placement.plan import DoesNotFit, Machine, Plan, parse_bytes, parse_gpus, plan

__all__ = ["DoesNotFit", "Machine", "Plan", "TensorSpec", "inventory_from_checkpoint", "inventory_from_config", "load_config", "parse_bytes", "parse_gpus", "plan"]
