"""LangChain integration: ``ChatKimi``, tool adapters both ways, and a document loader.

Needs the optional extra: ``pip install "kimidoc[langchain]"``.
"""

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError('kimidoc.integrations.langchain needs langchain-core: pip install "kimidoc[langchain]"') from exc

from kimidoc.integrations.langchain.chat_model import ChatKimi
from kimidoc.integrations.langchain.loaders import KimidocLoader, part_to_document
from kimidoc.integrations.langchain.messages import to_kimidoc_messages, to_langchain_messages
from kimidoc.integrations.langchain.tools import from_langchain_tool, to_langchain_tool

__all__ = [
    "ChatKimi",
    "KimidocLoader",
    "from_langchain_tool",
    "part_to_document",
    "to_kimidoc_messages",
    "to_langchain_messages",
    "to_langchain_tool",
]
