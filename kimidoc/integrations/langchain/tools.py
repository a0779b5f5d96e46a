"""kimidoc tools as LangChain tools, and LangChain tools as kimidoc tools.

A kimidoc tool becomes a ``StructuredTool`` with ``response_format="content_and_artifact"``: the
content is what the model reads (text, plus the images as standard image blocks unless
``images="artifact"``), the artifact is the full :class:`~kimidoc.tools.base.ToolResult`. Error
results become error ``ToolMessage``s (``status="error"``), which is how LangChain agents tell
the model a call failed.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from typing import Any, Literal

from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from langchain_core.utils.function_calling import convert_to_openai_tool

from kimidoc.messages import image_bytes
from kimidoc.tools.base import Tool, ToolResult

_METADATA_KEY = "kimidoc_tool"


def to_langchain_tool(tool: Tool, *, images: Literal["content", "artifact"] = "content") -> StructuredTool:
    """Wrap a kimidoc tool for LangChain agents (``create_agent``, ``ToolNode``).

    ``images="content"`` shows result images to the model (a vision model such as K2.6);
    ``images="artifact"`` keeps them out of the model's context, in the artifact only.
    """
    if images not in ("content", "artifact"):
        raise ValueError(f"to_langchain_tool({tool.name}): images must be 'content' or 'artifact', got {images!r}")

    def run(**arguments: Any) -> tuple[Any, ToolResult]:
        return _content_and_artifact(tool(**arguments), images)

    async def arun(**arguments: Any) -> tuple[Any, ToolResult]:
        return _content_and_artifact(await tool.acall(**arguments), images)

    return StructuredTool(
        name=tool.name,
        description=tool.description,
        args_schema=tool.parameters,
        func=run,
        coroutine=arun,
        response_format="content_and_artifact",
        handle_tool_error=True,
        metadata={_METADATA_KEY: tool},
    )


def _content_and_artifact(result: ToolResult, images: str) -> tuple[Any, ToolResult]:
    if result.is_error:
        raise ToolException(result.text)  # handle_tool_error turns it into an error ToolMessage
    if not result.images:
        return result.text, result
    if images == "artifact":
        note = f"[{len(result.images)} image(s) returned as the tool's artifact]"
        return f"{result.text}\n{note}" if result.text else note, result
    blocks: list[dict[str, Any]] = [{"type": "text", "text": result.text}] if result.text else []
    blocks += [
        {"type": "image", "base64": base64.b64encode(png).decode(), "mime_type": "image/png"} for png in result.images
    ]
    return blocks, result


def from_langchain_tool(lc_tool: BaseTool) -> Tool:
    """Wrap a LangChain tool so kimidoc agents can call it (a round trip gives back the original)."""
    original = (lc_tool.metadata or {}).get(_METADATA_KEY)
    if isinstance(original, Tool):
        return original
    fn = convert_to_openai_tool(lc_tool)["function"]
    name = fn["name"]

    def call(arguments: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "args": arguments, "id": f"call_{uuid.uuid4().hex[:24]}", "type": "tool_call"}

    if isinstance(lc_tool, StructuredTool) and lc_tool.func is None and lc_tool.coroutine is not None:

        async def run(**arguments: Any) -> ToolResult:
            return tool_message_result(await lc_tool.ainvoke(call(arguments)), name)

    else:

        def run(**arguments: Any) -> ToolResult:  # type: ignore[misc]
            return tool_message_result(lc_tool.invoke(call(arguments)), name)

    parameters = fn.get("parameters") or {"type": "object", "properties": {}}
    return Tool(name=name, description=fn.get("description") or name, parameters=parameters, fn=run)


def tool_message_result(output: Any, tool_name: str = "tool") -> ToolResult:
    """A LangChain tool's output (a ToolMessage, or plain content) as a kimidoc ToolResult."""
    if isinstance(output, ToolMessage):
        result = _content_result(output.content, tool_name)
        result.is_error = output.status == "error"
        return result
    return _content_result(output, tool_name)


def _content_result(content: Any, tool_name: str) -> ToolResult:
    if isinstance(content, str):
        return ToolResult(content)
    if not isinstance(content, list):
        return ToolResult(json.dumps(content, ensure_ascii=False, default=str))
    texts: list[str] = []
    pngs: list[bytes] = []
    for block in content:
        if isinstance(block, str):
            texts.append(block)
        elif block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") in ("image", "image_url"):
            data = _image_data(block, tool_name)
            if data is None:
                texts.append(f"[image at {block.get('url') or block.get('image_url', {}).get('url', '')}: not fetched]")
            else:
                pngs.append(_as_png(data, tool_name))
        else:
            texts.append(json.dumps(block, ensure_ascii=False, default=str))
    return ToolResult("\n".join(t for t in texts if t), images=pngs)


def _image_data(block: dict[str, Any], tool_name: str) -> bytes | None:
    """Inline image bytes of a LangChain or OpenAI image block; None for a remote URL (never fetched)."""
    if block.get("base64"):
        return base64.b64decode(block["base64"])
    url = block.get("url") or block.get("image_url", {}).get("url", "")
    if url.startswith("data:"):
        try:
            return image_bytes({"type": "image_url", "image_url": {"url": url}})
        except ValueError as exc:
            raise ValueError(f"tool {tool_name}: {exc}") from exc
    return None


def _as_png(data: bytes, tool_name: str) -> bytes:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return data
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"tool {tool_name}: returned an image that cannot be decoded: {exc}") from exc
    return buf.getvalue()
