"""The one interface over every way of reaching a model.

A backend takes OpenAI-style messages and tool schemas and returns an
:class:`~kimidoc.messages.AssistantMessage` (or streams :class:`~kimidoc.messages.Delta`).
Implementations only need ``stream``; ``complete`` folds the stream and the async forms run
the sync ones in a worker thread unless a backend has a native async path (the HTTP one does).
Every backend must be safe to call from many threads and tasks at once: a swarm shares one.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from kimidoc.messages import AssistantMessage, Delta, Message, ToolSchema, accumulate, estimate_tokens, text_of

# Sampling keywords every backend accepts (others are passed through where a backend knows them):
#   temperature, top_p, top_k, max_tokens, stop (list[str]), seed, thinking (bool | None),
#   tool_choice ("auto" | "none" | "required" | {"type": "function", "function": {"name": ...}})


class BackendError(RuntimeError):
    """A backend could not produce an answer (server refused, kept failing, timed out).

    ``status`` is the HTTP status when there was one; ``body`` what the server said, so the cause
    (a bad key, an unknown model, an oversized prompt) reaches the user verbatim.
    """

    def __init__(self, message: str, *, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@runtime_checkable
class Backend(Protocol):
    name: str
    context_window: int

    def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None, **sampling: Any
    ) -> AssistantMessage: ...

    def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None, **sampling: Any
    ) -> Iterator[Delta]: ...

    async def acomplete(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None, **sampling: Any
    ) -> AssistantMessage: ...

    def astream(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None, **sampling: Any
    ) -> AsyncIterator[Delta]: ...

    def count_tokens(self, text: str) -> int: ...

    def count_message_tokens(self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None) -> int: ...

    def image_tokens(self, width: int, height: int) -> int: ...


class BaseBackend(ABC):
    """Shared plumbing: subclasses implement :meth:`stream` (and may override the rest)."""

    name: str = "backend"
    context_window: int = 8192
    # A model too small to write a grounded answer: `kimidoc ask` retrieves the evidence and lets it
    # choose among the figures the passages state (kimidoc.agents.evidence) instead of a tool loop.
    evidence_first: bool = False

    @abstractmethod
    def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None, **sampling: Any
    ) -> Iterator[Delta]: ...

    def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None, **sampling: Any
    ) -> AssistantMessage:
        return accumulate(self.stream(messages, tools, **sampling))

    async def acomplete(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None, **sampling: Any
    ) -> AssistantMessage:
        return await asyncio.to_thread(self.complete, list(messages), tools, **sampling)

    def _stream_until(
        self,
        cancel: threading.Event,
        messages: Sequence[Message],
        tools: Sequence[ToolSchema] | None = None,
        **sampling: Any,
    ) -> Iterator[Delta]:
        """:meth:`stream`, which a backend that can stop mid-call (the embedded engines) ends soon
        after ``cancel`` is set; by default the stream is only abandoned between deltas."""
        return self.stream(messages, tools, **sampling)

    async def astream(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None, **sampling: Any
    ) -> AsyncIterator[Delta]:
        # Pull the sync stream in a worker thread so a slow backend never blocks the event loop;
        # a cancelled consumer sets ``stop``, and waits for the worker to see it.
        queue: asyncio.Queue[Any] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        done = object()
        stop = threading.Event()

        def pump() -> None:
            try:
                for d in self._stream_until(stop, list(messages), tools, **sampling):
                    if stop.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, d)
            except BaseException as exc:  # re-raised in the consumer
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, done)

        worker = loop.run_in_executor(None, pump)
        try:
            while True:
                item = await queue.get()
                if item is done:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            await worker

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)  # backends without a tokenizer

    def count_message_tokens(self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None) -> int:
        import json

        total = 0
        for m in messages:
            total += (
                4 + self.count_tokens(text_of(m.get("content"))) + self.count_tokens(m.get("reasoning_content") or "")
            )
            for c in m.get("tool_calls") or []:
                total += (
                    4
                    + self.count_tokens(c["function"]["name"])
                    + self.count_tokens(c["function"].get("arguments") or "")
                )
            if isinstance(m.get("content"), list):
                total += sum(self._part_image_tokens(p) for p in m["content"] if p.get("type") == "image_url")
        if tools:
            total += self.count_tokens(json.dumps(list(tools)))
        return total

    def _part_image_tokens(self, part: dict[str, Any]) -> int:
        from kimidoc.messages import image_of

        try:
            w, h = image_of(part).size
        except Exception:
            return 0
        return self.image_tokens(w, h)

    def image_tokens(self, width: int, height: int) -> int:
        # K2.6's formula (one token per 28x28 merged patch) unless a backend knows better.
        from kimidoc.vision.budget import image_tokens

        return image_tokens(width, height)
