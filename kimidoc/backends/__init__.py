"""Every way of reaching a model behind one interface (see :mod:`kimidoc.backends.base`)."""

from kimidoc.backends.base import Backend, BaseBackend
from kimidoc.backends.scripted import Scripted

__all__ = ["Backend", "BaseBackend", "Scripted"]
