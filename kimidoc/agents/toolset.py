"""The tools an agent is given: kimidoc tools, plain functions and LangChain tools alike.

LangChain tools are converted by :mod:`kimidoc.integrations.langchain` (imported only when one is
given, so LangChain stays optional); everything else goes through :func:`kimidoc.tools.base.as_tools`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kimidoc.tools.base import Tool, as_tools, is_langchain_tool


def agent_tools(items: Sequence[Any]) -> list[Tool]:
    """``items`` as kimidoc :class:`~kimidoc.tools.base.Tool` objects, in order."""
    if any(is_langchain_tool(item) for item in items):
        from kimidoc.integrations.langchain import from_langchain_tool

        items = [from_langchain_tool(item) if is_langchain_tool(item) else item for item in items]
    return as_tools(items)
