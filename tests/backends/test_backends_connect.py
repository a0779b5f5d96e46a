"""connect(): arguments, then environment, then the embedded default."""

import pytest
import torch

from kimidoc.backends.connect import connect
from kimidoc.backends.embedded import Embedded
from kimidoc.backends.openai.client import OpenAICompatible

ENV = (
    "KIMIDOC_MODEL",
    "KIMIDOC_ENDPOINT",
    "KIMIDOC_API_KEY",
    "MOONSHOT_API_KEY",
    "OPENROUTER_API_KEY",
    "OPENAI_API_KEY",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ENV:
        monkeypatch.delenv(var, raising=False)


def test_fresh_machine_gets_the_embedded_model():
    b = connect()
    assert isinstance(b, Embedded) and b.context_window == 8192
    assert "8,192-token window" in b.limits and "weak reasoning" in b.limits
    assert isinstance(connect("embedded"), Embedded)


def test_endpoint_from_argument_or_environment(fault_server, monkeypatch):
    b = connect(endpoint=fault_server.url, api_key="k", backoff=0.01)
    assert isinstance(b, OpenAICompatible) and b.complete([{"role": "user", "content": "hi"}]).content == "echo: hi"
    assert fault_server.headers[-1]["authorization"] == "Bearer k"
    monkeypatch.setenv("KIMIDOC_ENDPOINT", fault_server.url)
    b = connect("served-name")
    assert isinstance(b, OpenAICompatible) and b.model == "served-name"


def test_hosted_providers_by_name_and_by_key(monkeypatch):
    b = connect(endpoint="moonshot", api_key="m")
    assert (b.base_url, b.model, b.thinking_style) == ("https://api.moonshot.ai/v1", "kimi-k2.6", "moonshot")
    monkeypatch.setenv("OPENROUTER_API_KEY", "or-key")
    b = connect()
    assert (b.base_url, b.model, b.thinking_style) == (
        "https://openrouter.ai/api/v1",
        "moonshotai/kimi-k2.6",
        "openrouter",
    )
    assert b._headers["Authorization"] == "Bearer or-key"


def test_local_paths(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        connect(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        monkeypatch.setenv("KIMIDOC_MODEL", str(tmp_path / "missing"))
        connect()
    with pytest.raises(FileNotFoundError, match="embedded model file not found"):
        connect(str(tmp_path / "m.gguf"))
    with pytest.raises(ValueError, match="no endpoint is set"):
        connect("kimi-k2.6")
    with pytest.raises(ValueError, match="neither a URL"):
        connect(endpoint="localhost:8000")


def test_checkpoint_folder_runs_locally(tmp_path):
    from kimidoc.backends.local import LocalKimi
    from kimidoc.testing import write_checkpoint

    b = connect(str(write_checkpoint(tmp_path / "k26")), dtype=torch.float32, max_tokens=2)
    assert isinstance(b, LocalKimi)
