"""Tools an agent can call: the sandboxed ``python`` interpreter, document and file tools, and
adapters that turn plain functions and LangChain tools into :class:`Tool` objects."""

from __future__ import annotations

from collections.abc import Sequence

from kimidoc.documents.base import Document
from kimidoc.tools.base import Tool, ToolResult, as_tools, run_tool_call, run_tool_calls, to_result, tool
from kimidoc.tools.documents import document_tools
from kimidoc.tools.files import file_tools
from kimidoc.tools.paths import PathRefused, Roots
from kimidoc.tools.python_tool import python_tool
from kimidoc.tools.sandbox import LAYERS, Limits, PythonSandbox, SandboxUnavailable


def default_tools(
    documents: Sequence[Document],
    *,
    python: bool = True,
    limits: Limits | None = None,
    allow_weaker: bool = False,
) -> list[Tool]:
    """Document tools over ``documents`` and, with ``python``, a sandboxed interpreter that sees the
    documents read-only (started on its first call; it refuses to run without full isolation
    unless ``allow_weaker``)."""
    import os

    tools = document_tools(documents)
    if python:
        paths = [d.path for d in documents if os.path.exists(d.path)]
        tools.append(python_tool(PythonSandbox(paths, limits=limits, allow_weaker=allow_weaker)))
    return tools


__all__ = [
    "LAYERS",
    "Limits",
    "PathRefused",
    "PythonSandbox",
    "Roots",
    "SandboxUnavailable",
    "Tool",
    "ToolResult",
    "as_tools",
    "default_tools",
    "document_tools",
    "file_tools",
    "python_tool",
    "run_tool_call",
    "run_tool_calls",
    "to_result",
    "tool",
]
