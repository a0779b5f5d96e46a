"""A persistent Python interpreter in an isolated process, safe to point at untrusted documents."""

from kimidoc.tools.sandbox.host import DEFAULT_REQUIRE, LAYERS, CellResult, Limits, PythonSandbox, SandboxUnavailable

__all__ = ["DEFAULT_REQUIRE", "LAYERS", "CellResult", "Limits", "PythonSandbox", "SandboxUnavailable"]
