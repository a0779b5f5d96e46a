"""The tool type every agent uses: a name, a description, a JSON schema and a callable.

A tool's callable returns a string, a :class:`ToolResult`, an image (PIL), PNG bytes, a list
mixing text and images, or anything JSON-serialisable. Calling a :class:`Tool` never raises: bad
arguments, unknown tools, unreadable arguments and exceptions come back as an error result the
model can read and recover from. :func:`run_tool_calls` runs one turn's calls concurrently.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import io
import json
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kimidoc.documents.base import Source
from kimidoc.messages import ToolCall, ToolCallError, ToolSchema, image_part


@dataclass
class ToolResult:
    text: str = ""
    images: list[bytes] = field(default_factory=list)  # PNG bytes, handed to the vision path
    is_error: bool = False
    sources: list[Source] = field(default_factory=list)  # the document passages this result shows, citable

    def to_content(self) -> str | list[dict[str, Any]]:
        """OpenAI message content: a plain string when text-only, else text and image parts."""
        if not self.images:
            return self.text
        parts: list[dict[str, Any]] = [{"type": "text", "text": self.text}] if self.text else []
        return parts + [image_part(png) for png in self.images]


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png(value: Any) -> bytes | None:
    """PNG bytes of an image value (PNG bytes or a PIL image), or None for anything else."""
    if isinstance(value, (bytes, bytearray)) and bytes(value[:8]) == _PNG_MAGIC:
        return bytes(value)
    if hasattr(value, "save") and hasattr(value, "size") and hasattr(value, "mode"):  # a PIL image
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return buf.getvalue()
    return None


def to_result(value: Any) -> ToolResult:
    """Normalise what a tool function returned into a :class:`ToolResult`."""
    if isinstance(value, ToolResult):
        return value
    if value is None:
        return ToolResult("")
    if isinstance(value, str):
        return ToolResult(value)
    png = _png(value)
    if png is not None:
        return ToolResult(images=[png])
    if isinstance(value, (list, tuple)) and value and any(_png(v) is not None for v in value):
        if all(isinstance(v, str) or _png(v) is not None for v in value):
            texts = [v for v in value if isinstance(v, str)]
            return ToolResult("\n".join(texts), images=[p for p in map(_png, value) if p is not None])
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
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def validate(self, arguments: dict[str, Any]) -> str | None:
        """A message describing why ``arguments`` do not fit the schema, or None when they do."""
        from kimidoc.tools.schema import validate

        return validate(arguments, self.parameters, where=self.name)

    def _check(self, arguments: dict[str, Any]) -> tuple[dict[str, Any], ToolResult | None]:
        problem = self.validate(arguments)
        if problem:
            return arguments, ToolResult(f"Error: {problem}", is_error=True)
        return _integral_floats_to_int(arguments, self.parameters), None

    def _error(self, exc: BaseException) -> ToolResult:
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return ToolResult(f"Error in tool {self.name}: {detail}", is_error=True)

    def __call__(self, **arguments: Any) -> ToolResult:
        arguments, refused = self._check(arguments)
        if refused:
            return refused
        try:
            value = self.fn(**arguments)
            if inspect.isawaitable(value):
                value = _run_sync(value)
            return to_result(value)
        except (Exception, SystemExit) as exc:  # returned to the model, never raised into the agent loop
            return self._error(exc)

    async def acall(self, **arguments: Any) -> ToolResult:
        """Call without blocking the event loop: coroutines are awaited, plain functions run in a thread."""
        if not inspect.iscoroutinefunction(self.fn):
            return await asyncio.to_thread(self.__call__, **arguments)
        arguments, refused = self._check(arguments)
        if refused:
            return refused
        try:
            return to_result(await self.fn(**arguments))
        except (Exception, SystemExit) as exc:
            return self._error(exc)


def _run_sync(awaitable: Any) -> Any:
    """Await from synchronous code, also when this thread already runs an event loop."""

    async def wait() -> Any:
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, wait()).result()


def _integral_floats_to_int(arguments: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema counts 3.0 as an integer; hand the function the int its type hint promised."""
    props = schema.get("properties") or {}
    out = dict(arguments)
    for key, value in arguments.items():
        if isinstance(value, float) and value.is_integer() and (props.get(key) or {}).get("type") == "integer":
            out[key] = int(value)
    return out


def find_tool(tools: Sequence[Tool] | Mapping[str, Tool], name: str) -> Tool | None:
    if isinstance(tools, Mapping):
        return tools.get(name)
    return next((t for t in tools if t.name == name), None)


async def run_tool_call(tools: Sequence[Tool] | Mapping[str, Tool], call: ToolCall) -> ToolResult:
    """One model tool call to its result; an unknown tool or unreadable arguments is an error result."""
    found = find_tool(tools, call.name)
    if found is None:
        names = ", ".join(t.name for t in (tools.values() if isinstance(tools, Mapping) else tools))
        return ToolResult(f"Error: there is no tool named {call.name!r} (available: {names or 'none'})", is_error=True)
    try:
        arguments = call.parsed_arguments()
    except ToolCallError as exc:
        return ToolResult(f"Error: {exc}", is_error=True)
    return await found.acall(**arguments)


async def run_tool_calls(tools: Sequence[Tool] | Mapping[str, Tool], calls: Sequence[ToolCall]) -> list[ToolResult]:
    """Run one turn's tool calls concurrently; results come back in the order of ``calls``."""
    return list(await asyncio.gather(*(run_tool_call(tools, c) for c in calls)))


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
        from kimidoc.tools.schema import enum_parameters, schema_from_function

        desc, params = schema_from_function(f)
        enums = enum_parameters(f)
        fn = f
        if enums:
            # the model sends an Enum's value; the function was promised the member

            @functools.wraps(f)
            def fn(*args: Any, **kwargs: Any) -> Any:
                for key, cls in enums.items():
                    if key in kwargs and not isinstance(kwargs[key], cls):
                        kwargs[key] = cls(kwargs[key])
                return f(*args, **kwargs)

        return Tool(name=name or f.__name__, description=description or desc, parameters=params, fn=fn)

    return wrap(fn) if fn is not None else wrap


def is_langchain_tool(item: Any) -> bool:
    """Whether ``item`` looks like a LangChain tool (checked by shape; LangChain is never imported here)."""
    return hasattr(item, "args_schema") and hasattr(item, "invoke")


def as_tools(items: Sequence[Any]) -> list[Tool]:
    """Accept kimidoc tools and plain functions. LangChain tools are converted one floor up, by
    :func:`kimidoc.integrations.langchain.from_langchain_tool` (an agent does that for you)."""
    out: list[Tool] = []
    for item in items:
        if isinstance(item, Tool):
            out.append(item)
        elif is_langchain_tool(item):
            raise TypeError(
                f"{getattr(item, 'name', item)!r} is a LangChain tool: convert it with "
                "kimidoc.integrations.langchain.from_langchain_tool, or give it to an Agent, which converts it"
            )
        elif callable(item):
            out.append(tool(item))
        else:
            raise TypeError(f"cannot use {item!r} as a tool: expected a kimidoc Tool, a function or a LangChain tool")
    return out
