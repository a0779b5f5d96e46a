"""Hosted providers of K2.6 and where their keys live.

Keys are looked up so that a provider only ever receives its own key: ``KIMIDOC_API_KEY``
(explicitly for kimidoc) first, then the provider's variable; ``OPENAI_API_KEY`` (the usual
variable for self-hosted vLLM/SGLang with ``--api-key``) only for hosts that are not a known provider.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

# Hosted providers: base URL, the environment variable holding their key, the K2.6 model id,
# and how they switch thinking.
PROVIDERS: dict[str, dict[str, str]] = {
    "moonshot": {
        "base_url": "https://api.moonshot.ai/v1",
        "key_env": "MOONSHOT_API_KEY",
        "model": "kimi-k2.6",
        "thinking_style": "moonshot",
    },
    "openrouter": {
        "base_url": "https://openrouter.ai/api/v1",
        "key_env": "OPENROUTER_API_KEY",
        "model": "moonshotai/kimi-k2.6",
        "thinking_style": "openrouter",
    },
}


def provider_of(base_url: str) -> str | None:
    host = urlparse(base_url).hostname or ""
    if host.endswith(("moonshot.ai", "moonshot.cn")):
        return "moonshot"
    if host.endswith("openrouter.ai"):
        return "openrouter"
    return None


def api_key_for(base_url: str, api_key: str | None = None) -> str | None:
    """The key to send: the argument, ``KIMIDOC_API_KEY``, the provider's own variable, else
    ``OPENAI_API_KEY`` for self-hosted servers (never another provider's key)."""
    if api_key:
        return api_key
    if os.environ.get("KIMIDOC_API_KEY"):
        return os.environ["KIMIDOC_API_KEY"]
    provider = provider_of(base_url)
    if provider is not None:
        return os.environ.get(PROVIDERS[provider]["key_env"]) or None
    return os.environ.get("OPENAI_API_KEY") or None
