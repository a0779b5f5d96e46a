"""The live view of an agent run on stderr: thinking dimmed, tool calls and results as one-liners,
the answer streamed as it is written. Stdout stays clean for the final answer (or ``--json``)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape

from kimidoc.agents import Event


class LiveView:
    def __init__(self, *, show_thinking: bool = True, quiet: bool = False) -> None:
        self.console = Console(file=sys.stderr, highlight=False, soft_wrap=True)
        self.show_thinking = show_thinking
        self.quiet = quiet
        self._mode = ""

    def _switch(self, mode: str) -> None:
        if self._mode in ("thinking", "content") and mode != self._mode:
            self.console.print()
        self._mode = mode

    def __call__(self, e: Event) -> None:
        if self.quiet:
            return
        who = "" if e.agent == "main" else f"[cyan]{escape(e.agent)}[/cyan] "
        d = e.data
        if e.type == "thinking":
            if self.show_thinking and e.agent == "main":
                self._switch("thinking")
                self.console.print(escape(d["text"]), style="dim italic", end="")
        elif e.type == "content":
            if e.agent == "main":
                self._switch("content")
                self.console.print(escape(d["text"]), end="")
        elif e.type == "step":
            self._switch("step")
            if e.agent == "main":
                self.console.print(f"[bold blue]step {e.step}[/bold blue]")
        elif e.type == "tool_call":
            self._switch("tool")
            args = d.get("arguments", "")
            args = args if len(args) <= 160 else args[:157] + "..."
            rerun = " [yellow](re-run after a crash)[/yellow]" if d.get("rerun") else ""
            self.console.print(f"{who}[magenta]→ {escape(d['name'])}[/magenta] {escape(args)}{rerun}")
        elif e.type == "tool_result":
            self._switch("tool")
            style = "red" if d.get("is_error") else "green"
            preview = " ".join(str(d.get("preview", "")).split())[:160]
            self.console.print(f"{who}[{style}]← {escape(d['name'])}[/{style}] {escape(preview)}")
        elif e.type == "invalid_call":
            self._switch("tool")
            self.console.print(
                f"{who}[red]unreadable tool call sent back to the model:[/red] {escape(str(d.get('errors')))[:200]}"
            )
        elif e.type == "compaction":
            self._switch("note")
            self.console.print(
                f"[yellow]compacted the conversation: {d.get('tokens_before'):,} → {d.get('tokens_after'):,} tokens[/yellow]"
            )
        elif e.type == "retry":
            self._switch("note")
            self.console.print(
                f"[yellow]backend error, retry {d.get('attempt')} in {d.get('wait', 0):.1f}s: {escape(str(d.get('error')))[:200]}[/yellow]"
            )
        elif e.type == "stop" and e.agent == "main":
            self._switch("stop")
            if d.get("unsupported"):
                found = ", ".join(d["unsupported"])
                self.console.print(f"[bold red]not found in any passage read: {escape(found)}[/bold red]")
        elif e.type == "swarm":
            self._switch("note")
            self.console.print(
                f"[cyan]swarm: {d.get('agents')} sub-agents, {d.get('ok', d.get('answered'))} answered, {d.get('failed')} failed[/cyan]"
            )
