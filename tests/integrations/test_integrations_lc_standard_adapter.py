"""LangChain's standard integration tests over a rule-based Scripted responder.

The responder is not a model: it calls a bound tool when the user speaks and tools are bound,
filling the arguments from the tool's JSON schema and the words of the prompt (numbers in order,
quoted text for strings), and otherwise answers in plain text. That is enough to drive every
tool-calling, streaming, structured-output and usage test of the standard suite through ChatKimi's
real conversion code and LangChain's own assertions, which is what these tests check: the
adapter, not a model's quality (the embedded model runs in test_integrations_lc_standard_embedded).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest

pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests import ChatModelIntegrationTests  # noqa: E402

from kimidoc.backends.scripted import Scripted  # noqa: E402
from kimidoc.integrations.langchain import ChatKimi  # noqa: E402
from kimidoc.messages import AssistantMessage, Message, ToolCall, ToolSchema, text_of  # noqa: E402


def _fill(schema: dict[str, Any], text: str, numbers: Iterator[str]) -> Any:
    """A value that fits ``schema``, taken from the prompt where the prompt has one."""
    if "anyOf" in schema:
        return _fill(next(s for s in schema["anyOf"] if s.get("type") != "null"), text, numbers)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "string")
    if kind in ("integer", "number"):
        n = next(numbers, "0")
        return int(n) if kind == "integer" else float(n)
    if kind == "boolean":
        return True
    if kind == "array":
        return [_fill(schema.get("items", {}), text, numbers)]
    if kind == "object":
        return {k: _fill(v, text, numbers) for k, v in schema.get("properties", {}).items()}
    quoted = re.search(r"'([^']+)'|\"([^\"]+)\"", text)
    return (quoted.group(1) or quoted.group(2)) if quoted else text.strip()


def responder(messages: Sequence[Message], tools: Sequence[ToolSchema] | None) -> AssistantMessage:
    last = messages[-1]
    if last["role"] == "tool":
        return AssistantMessage(
            content=f"The tool answered: {text_of(last['content'])}", reasoning="Read the tool result."
        )
    text = text_of(last["content"])
    if tools and last["role"] == "user":
        named = [t for t in tools if t["function"]["name"] in text]
        fn = (named or list(tools))[0]["function"]
        args = _fill(fn.get("parameters") or {"type": "object"}, text, iter(re.findall(r"-?\d+", text)))
        call = ToolCall(f"call_{len(messages)}", fn["name"], json.dumps(args, ensure_ascii=False))
        return AssistantMessage(reasoning=f"Call {fn['name']}.", tool_calls=[call], finish_reason="tool_calls")
    return AssistantMessage(content=f"Hello! You said: {text or '(nothing)'}", reasoning="Greet the user.")


def _png() -> bytes:
    from PIL import Image

    img = Image.new("RGB", (64, 48))
    img.putdata([(x * 4, y * 5, 128) for y in range(48) for x in range(64)])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class TestChatKimiAdapterIntegration(ChatModelIntegrationTests):
    @pytest.fixture(autouse=True)
    def _offline_images(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # The image tests download their picture; here it is drawn locally (tests never go online).
        monkeypatch.setattr(
            httpx, "get", lambda url, **kw: httpx.Response(200, content=_png(), request=httpx.Request("GET", url))
        )

    @property
    def chat_model_class(self) -> type[ChatKimi]:
        return ChatKimi

    @property
    def chat_model_params(self) -> dict:
        return {"backend": Scripted(responder), "model": "kimi-k2.6"}

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        # The model is fixed by the backend a ChatKimi is built over.
        return False

    @property
    def supports_anthropic_inputs(self) -> bool:
        return True

    @property
    def supports_image_inputs(self) -> bool:
        return True

    @property
    def supports_image_tool_message(self) -> bool:
        return True

    @property
    def supported_usage_metadata_details(self) -> dict:
        return {"invoke": ["reasoning_output"], "stream": ["reasoning_output"]}

    def invoke_with_reasoning_output(self, *, stream: bool = False) -> Any:
        model = ChatKimi(**self.chat_model_params)
        if not stream:
            return model.invoke("Think, then say hello.")
        full = None
        for chunk in model.stream("Think, then say hello."):
            full = chunk if full is None else full + chunk
        return full
