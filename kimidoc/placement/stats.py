"""Routing statistics: how often each expert fires, saved from one run and fed to the next plan."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path


class RoutingStats:
    """Counts (layer, expert) selections; ``frequencies()`` gives the fraction of tokens per expert."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[int, int]] = Counter()
        self.tokens: Counter[int] = Counter()  # tokens routed per layer

    def record(self, layer: int, expert_ids: list[int] | object) -> None:
        """Add one batch of selections for ``layer`` (a [tokens, k] tensor or a flat list)."""
        import torch

        ids = expert_ids if isinstance(expert_ids, torch.Tensor) else torch.tensor(expert_ids)
        if ids.dim() == 1:
            ids = ids[None]
        self.tokens[layer] += ids.shape[0]
        values, counts = torch.unique(ids.flatten(), return_counts=True)
        for e, c in zip(values.tolist(), counts.tolist()):
            self.counts[(layer, e)] += c

    def frequencies(self) -> dict[tuple[int, int], float]:
        return {(layer, e): c / self.tokens[layer] for (layer, e), c in self.counts.items() if self.tokens[layer]}

    def save(self, path: str | Path) -> None:
        data = {
            "tokens": {str(k): v for k, v in self.tokens.items()},
            "counts": [[layer, e, c] for (layer, e), c in sorted(self.counts.items())],
        }
        Path(path).write_text(json.dumps(data))


def load_routing_stats(path: str | Path) -> dict[tuple[int, int], float]:
    """Frequencies from a file written by :meth:`RoutingStats.save`."""
    try:
        data = json.loads(Path(path).read_text())
        tokens = {int(k): v for k, v in data["tokens"].items()}
        return {(layer, e): c / tokens[layer] for layer, e, c in data["counts"] if tokens.get(layer)}
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a routing-statistics file ({exc})") from None
