"""The ``python`` tool: a notebook-like interpreter session in the sandbox, one per agent."""

from __future__ import annotations

from kimidoc.tools.base import Tool, ToolResult
from kimidoc.tools.sandbox import PythonSandbox


class PythonCell:
    """The tool's callable; ``sandbox`` stays reachable (``tool.fn.sandbox``) to close or inspect it."""

    def __init__(self, sandbox: PythonSandbox) -> None:
        self.sandbox = sandbox

    def __call__(self, code: str) -> ToolResult:
        return self.sandbox.run(code).to_tool_result()


def python_tool(sandbox: PythonSandbox, *, name: str = "python") -> Tool:
    """A tool that runs code in ``sandbox`` (started on first use; state persists between calls)."""
    lim = sandbox.limits
    readable = ", ".join(sandbox.read_only) or "none"
    description = (
        "Run Python code in a persistent, isolated interpreter (like a notebook cell): variables and imports "
        "survive between calls. Printed output is returned, and the value of the last expression is shown. "
        "Every open matplotlib figure is returned as an image after the call (no need for plt.show()). "
        f"The working directory is private and writable. The documents are readable, read-only, at their own paths: {readable}. "
        f"There is no network. Limits per call: {lim.timeout:g} s wall-clock, {lim.cell_cpu_seconds:g} s CPU, "
        f"{lim.memory_bytes >> 20} MiB memory for all its processes together, {lim.output_chars} characters of output. "
        "If the interpreter had to be restarted, the result says so and why."
    )
    parameters = {
        "type": "object",
        "properties": {"code": {"type": "string", "description": "Python source to run"}},
        "required": ["code"],
        "additionalProperties": False,
    }
    return Tool(name=name, description=description, parameters=parameters, fn=PythonCell(sandbox))
