"""Collecting routing statistics from a running model, for the next plan.

    with collect_routing(model) as stats:
        generate(model, prompt_ids, max_new_tokens=256)      # or a calibration prompt set
    stats.save("routing.json")                               # kimidoc plan --routing-stats routing.json
    # or: load_placed(path, machine, expert_freq=stats.frequencies())

A forward hook on each MoE layer's router records the experts it picks per token; nothing else
changes in the forward.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from kimidoc.model.moe import MoE
from kimidoc.placement.stats import RoutingStats


def record_routing(model: nn.Module, stats: RoutingStats) -> list:
    """Hook every router of ``model`` into ``stats``; returns the hook handles (``.remove()`` them)."""
    text = getattr(model, "language_model", model)
    handles = []
    for i, layer in enumerate(text.model.layers):
        if isinstance(layer.mlp, MoE):
            handles.append(layer.mlp.gate.register_forward_hook(lambda _m, _inp, out, i=i: stats.record(i, out[0])))
    if not handles:
        raise ValueError("the model has no MoE layers to collect routing statistics from")
    return handles


@contextmanager
def collect_routing(model: nn.Module, stats: RoutingStats | None = None) -> Iterator[RoutingStats]:
    """Count expert selections of every forward inside the ``with`` block (adds to ``stats`` if given)."""
    stats = stats if stats is not None else RoutingStats()
    handles = record_routing(model, stats)
    try:
        yield stats
    finally:
        for h in handles:
            h.remove()
