"""The embedded default model, run in-process on the CPU.

* :mod:`~kimidoc.backends.embedded.backend` -- :class:`Embedded`, the backend.
* :mod:`~kimidoc.backends.embedded.engines` -- llama.cpp and transformers behind one small surface.
* :mod:`~kimidoc.backends.embedded.model` -- finding the packaged GGUF and reading its metadata.
* :mod:`~kimidoc.backends.embedded.prompt` -- tool calls in the small model's own format, and parsing its replies.
"""

from kimidoc.backends.embedded.backend import ENGINES, Embedded

__all__ = ["ENGINES", "Embedded"]
