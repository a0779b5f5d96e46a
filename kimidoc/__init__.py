"""kimidoc: put Kimi K2.6 to work on real documents.

    import kimidoc
    backend = kimidoc.connect()                      # local weights, an endpoint, or the embedded model
    docs = kimidoc.load_many(["report.pdf"])
    result = kimidoc.Agent(backend, tools=kimidoc.default_tools(docs), documents=docs).run("question")

Heavy parts (torch, the model runtime) load only when used.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "connect": "kimidoc.backends.connect",
    "Agent": "kimidoc.agents",
    "Budget": "kimidoc.agents",
    "Swarm": "kimidoc.agents",
    "run_swarm": "kimidoc.agents",
    "load": "kimidoc.documents",
    "load_many": "kimidoc.documents",
    "default_tools": "kimidoc.tools",
    "tool": "kimidoc.tools",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kimidoc' has no attribute {name!r}")


__all__ = list(_EXPORTS)
