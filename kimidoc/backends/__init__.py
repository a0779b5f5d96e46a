"""Every way of reaching a model behind one interface (see :mod:`kimidoc.backends.base`).

Heavy backends import lazily: ``from kimidoc.backends import Embedded`` loads nothing until used.
"""

from typing import Any

from kimidoc.backends.base import Backend, BackendError, BaseBackend
from kimidoc.backends.connect import connect
from kimidoc.backends.scripted import Scripted

_LAZY = {
    "OpenAICompatible": "kimidoc.backends.openai.client",
    "Embedded": "kimidoc.backends.embedded",
    "LocalKimi": "kimidoc.backends.local",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kimidoc.backends' has no attribute {name!r}")


__all__ = ["Backend", "BackendError", "BaseBackend", "Scripted", "connect", *_LAZY]
