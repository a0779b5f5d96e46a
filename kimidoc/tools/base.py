"""The tool type every agent uses: a name, a description, a JSON schema and a callable.

A tool's callable returns a string, a :class:`ToolResult`, an image (PIL), PNG bytes, or
anything JSON-serialisable. Calling a :class:`Tool` never raises: bad arguments and
exceptions come back as an error result the model can read and recover from.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from kimidoc.messages import ToolSchema, image_part


@dataclass
class ToolResult:
    text: str = ""
    images: list[bytes] = field(default_factory=list)  # PNG bytes, handed to the vision path
    is_error: bool = False

    def to_content(self) -> str | list[dict[str, Any]]:
        """OpenAI message content: a plain string when text-only, else text and image parts."""
        if not self.images:
            return self.text
        parts: list[dict[str, Any]] = [{"type": "text", "text": self.text}] if self.text else []
        return parts + [image_part(png) for png in self.images]


def to_result(value: Any) -> ToolResult:
    """Normalise what a tool function returned into a :class:`ToolResult`."""
    if isinstance(value, ToolResult):
        return value
    if value is None:
        return ToolResult("")
    if isinstance(value, str):
        return ToolResult(value)
    if isinstance(value, (bytes, bytearray)) and bytes(value[:8]) == b"\x89PNG\r\n\x1a\n":
        return ToolResult(images=[bytes(value)])
    if hasattr(value, "save") and hasattr(value, "size"):  # a PIL image
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return ToolResult(images=[buf.getvalue()])
    try:
        return ToolResult(json.dumps(value, ensure_ascii=False, default=str))
    except (TypeError, ValueError):
        return ToolResult(str(value))


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of an object
    fn: Callable[..., Any]

    def schema(self) -> ToolSchema:
        return {"type": "function", "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}

    def validate(self, arguments: dict[str, Any]) -> str | None:
        """A message describing why ``arguments`` do not fit the schema, or None when they do."""
        from kimidoc.tools.schema import validate

        return validate(arguments, self.parameters, where=self.name)

    def __call__(self, **arguments: Any) -> ToolResult:
        problem = self.validate(arguments)
        if problem:
            return ToolResult(f"Error: {problem}", is_error=True)
        try:
            value = self.fn(**arguments)
            if inspect.isawaitable(value):
                value = asyncio.run(value)  # type: ignore[arg-type]
            return to_result(value)
        except Exception as exc:  # returned to the model, never raised into the agent loop
            tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
            return ToolResult(f"Error in tool {self.name}: {tb}", is_error=True)

    async def acall(self, **arguments: Any) -> ToolResult:
        if inspect.iscoroutinefunction(self.fn):
            problem = self.validate(arguments)
            if problem:
                return ToolResult(f"Error: {problem}", is_error=True)
            try:
                return to_result(await self.fn(**arguments))
            except Exception as exc:
                return ToolResult(f"Error in tool {self.name}: {type(exc).__name__}: {exc}", is_error=True)
        return await asyncio.to_thread(self.__call__, **arguments)


def tool(fn: Callable[..., Any] | None = None, *, name: str | None = None, description: str | None = None) -> Any:
    """Make a :class:`Tool` from a function; the schema comes from its type hints and docstring.

    >>> @tool
    ... def add(a: int, b: int = 0) -> int:
    ...     '''Add two numbers.
    ...
    ...     Args:
    ...         a: the first number
    ...         b: the second number
    ...     '''
    ...     return a + b
    """

    def wrap(f: Callable[..., Any]) -> Tool:
        from kimidoc.tools.schema import schema_from_function

        desc, params = schema_from_function(f)
        return Tool(name=name or f.__name__, description=description or desc, parameters=params, fn=f)

    return wrap(fn) if fn is not None else wrap


def as_tools(items: Sequence[Any]) -> list[Tool]:
    """Accept kimidoc tools, plain functions and LangChain tools alike."""
    out: list[Tool] = []
    for item in items:
        if isinstance(item, Tool):
            out.append(item)
        elif hasattr(item, "args_schema") and hasattr(item, "invoke"):
            from kimidoc.integrations.langchain import from_langchain_tool

            out.append(from_langchain_tool(item))
        elif callable(item):
            out.append(tool(item))
        else:
            raise TypeError(f"cannot use {item!r} as a tool: expected a kimidoc Tool, a function or a LangChain tool")
    return out
