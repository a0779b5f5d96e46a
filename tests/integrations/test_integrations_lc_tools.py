"""Tool adapters both ways: kimidoc tools in LangChain, LangChain tools in kimidoc."""

from __future__ import annotations

import base64
import io

import pytest

pytest.importorskip("langchain_core")

from langchain_core.messages import ToolMessage  # noqa: E402
from langchain_core.tools import StructuredTool, ToolException  # noqa: E402
from langchain_core.tools import tool as lc_tool  # noqa: E402
from langchain_core.utils.function_calling import convert_to_openai_tool  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from kimidoc.agents.toolset import agent_tools  # noqa: E402
from kimidoc.integrations.langchain import from_langchain_tool, to_langchain_tool  # noqa: E402
from kimidoc.tools.base import Tool, ToolResult, as_tools  # noqa: E402
from kimidoc.tools.base import tool as kimi_tool  # noqa: E402


def _png(color: str = "red") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 3), color).save(buf, format="PNG")
    return buf.getvalue()


@kimi_tool
def render(page: int, note: str = "") -> ToolResult:
    """Render a page.

    Args:
        page: 1-based page number
        note: text to return with the image
    """
    if page < 1:
        raise ValueError("pages start at 1")
    return ToolResult(note, images=[_png()])


def _call(name: str, args: dict, id_: str = "t1") -> dict:
    return {"name": name, "args": args, "id": id_, "type": "tool_call"}


def test_kimidoc_tool_in_langchain_returns_content_and_artifact():
    lc = to_langchain_tool(render)
    assert lc.name == "render" and lc.description == "Render a page."
    assert convert_to_openai_tool(lc) == render.schema()
    msg = lc.invoke(_call("render", {"page": 2, "note": "page two"}))
    assert isinstance(msg, ToolMessage) and msg.status == "success"
    assert msg.content[0] == {"type": "text", "text": "page two"}
    assert msg.content[1]["type"] == "image" and base64.b64decode(msg.content[1]["base64"]) == _png()
    assert isinstance(msg.artifact, ToolResult) and msg.artifact.images == [_png()]


def test_images_can_stay_out_of_the_models_context():
    msg = to_langchain_tool(render, images="artifact").invoke(_call("render", {"page": 2}))
    assert msg.content == "[1 image(s) returned as the tool's artifact]" and msg.artifact.images == [_png()]


def test_kimidoc_tool_errors_become_error_tool_messages():
    lc = to_langchain_tool(render)
    failed = lc.invoke(_call("render", {"page": 0}))
    assert failed.status == "error" and "pages start at 1" in failed.content
    bad_args = lc.invoke(_call("render", {"page": "two"}))
    assert bad_args.status == "error" and "render.page: expected integer" in bad_args.content


async def test_kimidoc_tool_in_langchain_async():
    msg = await to_langchain_tool(render).ainvoke(_call("render", {"page": 1, "note": "x"}))
    assert msg.content[0]["text"] == "x" and msg.artifact.images


class SearchArgs(BaseModel):
    query: str = Field(description="what to look for")
    limit: int = Field(default=3, ge=1)


def test_langchain_tool_in_kimidoc_keeps_schema_and_validates():
    @lc_tool(args_schema=SearchArgs)
    def search(query: str, limit: int = 3) -> str:
        """Search the index."""
        return ", ".join(f"{query}#{i}" for i in range(limit))

    t = from_langchain_tool(search)
    assert t.name == "search" and t.description == "Search the index."
    assert t.parameters["properties"]["query"]["description"] == "what to look for"
    assert t.parameters["required"] == ["query"]
    assert t(query="mla", limit=2) == ToolResult("mla#0, mla#1")
    missing = t()
    assert missing.is_error and "missing required argument 'query'" in missing.text


def test_langchain_tool_images_and_errors_reach_kimidoc():
    @lc_tool(response_format="content_and_artifact")
    def snapshot(color: str) -> tuple[list[dict], dict]:
        """Draw a swatch."""
        jpeg = io.BytesIO()
        from PIL import Image

        Image.new("RGB", (4, 3), color).save(jpeg, format="JPEG")
        b64 = base64.b64encode(jpeg.getvalue()).decode()
        return [
            {"type": "text", "text": f"a {color} swatch"},
            {"type": "image", "base64": b64, "mime_type": "image/jpeg"},
        ], {"color": color}

    result = from_langchain_tool(snapshot)(color="blue")
    assert result.text == "a blue swatch" and not result.is_error
    assert (
        len(result.images) == 1 and result.images[0][:8] == b"\x89PNG\r\n\x1a\n"
    )  # JPEG converted for the vision path

    def boom(x: int) -> int:
        raise ToolException("x is cursed")

    handled = StructuredTool.from_function(boom, name="boom", description="Fails.", handle_tool_error=True)
    assert from_langchain_tool(handled)(x=1) == ToolResult("x is cursed", is_error=True)
    raised = from_langchain_tool(StructuredTool.from_function(boom, name="boom", description="Fails."))(x=1)
    assert raised.is_error and "x is cursed" in raised.text


async def test_async_only_langchain_tool_in_kimidoc():
    async def fetch(key: str) -> str:
        return key.upper()

    t = from_langchain_tool(StructuredTool.from_function(coroutine=fetch, name="fetch", description="Fetch a key."))
    assert await t.acall(key="abc") == ToolResult("ABC")


def test_round_trips_give_back_the_same_tool():
    assert from_langchain_tool(to_langchain_tool(render)) is render
    assert agent_tools([to_langchain_tool(render)]) == [render]


def test_agent_tools_accept_langchain_tools():
    @lc_tool
    def shout(text: str) -> str:
        """Upper-case text."""
        return text.upper()

    (t,) = agent_tools([shout])
    assert isinstance(t, Tool) and t(text="hi") == ToolResult("HI")
    # The core does not import LangChain: it names the converter instead of guessing.
    with pytest.raises(TypeError, match="from_langchain_tool"):
        as_tools([shout])
