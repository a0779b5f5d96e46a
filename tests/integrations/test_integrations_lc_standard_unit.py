"""LangChain's standard unit tests for chat models, over the Scripted backend (no model needed)."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_tests")

from langchain_tests.unit_tests import ChatModelUnitTests  # noqa: E402

from kimidoc.backends.scripted import Scripted  # noqa: E402
from kimidoc.integrations.langchain import ChatKimi  # noqa: E402


class TestChatKimiUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatKimi]:
        return ChatKimi

    @property
    def chat_model_params(self) -> dict:
        return {"backend": Scripted(["Hello."]), "model": "kimi-k2.6"}

    @property
    def supports_image_inputs(self) -> bool:
        return True

    @property
    def supports_image_tool_message(self) -> bool:
        return True

    @property
    def supported_usage_metadata_details(self) -> dict:
        return {"invoke": ["reasoning_output"], "stream": ["reasoning_output"]}

    @property
    def supports_model_override(self) -> bool:
        # The model is fixed by the backend a ChatKimi is built over.
        return False
