"""OpenAI-compatible chat-completions endpoints (vLLM, SGLang, llama.cpp's server, Moonshot, OpenRouter).

* :mod:`~kimidoc.backends.openai.client` -- :class:`OpenAICompatible`, the backend (requests, streaming, retries).
* :mod:`~kimidoc.backends.openai.wire` -- request bodies and replies in the wire format, to and from kimidoc messages.
* :mod:`~kimidoc.backends.openai.sse` -- server-sent-events decoding of a streamed reply.
* :mod:`~kimidoc.backends.openai.retry` -- which failures are retried, and when.
* :mod:`~kimidoc.backends.openai.providers` -- known providers: base URLs, key variables, model names.
"""

from kimidoc.backends.openai.client import OpenAICompatible, pick_model

__all__ = ["OpenAICompatible", "pick_model"]
