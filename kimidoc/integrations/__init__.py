"""Adapters to other frameworks (LangChain: :mod:`kimidoc.integrations.langchain`)."""
